"""Checkpointed parts of a long fetch (a day's minute bars, a year of daily bars): what a killed run had finished.

A part is one Parquet file holding the rows of the work items it finished; the items themselves (an item may have
no row) and a tag naming the work (a span, a day and endpoint) are in the file's schema metadata. The file is written
atomically, so a part is whole or absent, and a part of other work (another tag) is never mistaken for this run's.
The fetch writes a part every few dozen items; the next run reads the parts, asks only the rest, assembles the table
from the parts and removes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

import pyarrow as pa

from observer_resources.storage import lake
from observer_resources.storage.lake import LakePath

DONE_META = b"observer.parts.done"
TAG_META = b"observer.parts.tag"


def write_part(parts_dir: LakePath, table: pa.Table, done: Sequence[str], tag: str) -> LakePath:
    """One part: ``table`` with the items it finished (``done``) and the work's ``tag`` in its metadata."""
    meta = {DONE_META: json.dumps(sorted(done)).encode(), TAG_META: tag.encode()}
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"  # unique across runs: never overwritten
    return lake.write_table_atomic(parts_dir / name, table.replace_schema_metadata(meta))


def read_parts(parts_dir: LakePath, tag: str) -> tuple[set[str], list[pa.Table], list[LakePath]]:
    """The items finished by earlier attempts at ``tag``, their tables, and the parts of other work found (stale)."""
    done: set[str] = set()
    tables: list[pa.Table] = []
    stale: list[LakePath] = []
    if not parts_dir.exists():
        return done, tables, stale
    for p in sorted(parts_dir.glob("part-*.parquet")):
        meta = lake.read_schema(p).metadata or {}
        if meta.get(TAG_META, b"").decode() != tag:
            stale.append(p)
            continue
        done.update(json.loads(meta[DONE_META]))
        tables.append(lake.read_table(p).replace_schema_metadata(None))
    return done, tables, stale


def clear_parts(parts_dir: LakePath) -> None:
    """Remove every part once the table they make is written (file by file: the lake may be on a URL)."""
    if not parts_dir.exists():
        return
    for p in parts_dir.glob("part-*.parquet"):
        p.unlink()
    if lake.is_local(parts_dir):  # an object store has no directory to leave behind
        parts_dir.rmdir()
