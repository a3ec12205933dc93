"""The Parquet data lake under OBSERVER_DATA_DIR: Hive-style paths, atomic writes.

Paths are ``<root>/<dataset>/date=YYYY-MM-DD[/slot=HHMM]/<name>.parquet`` (no colons), readable by pandas,
pyarrow and DuckDB as a hive-partitioned dataset with no project code. A partition is written to a temp file in
the same directory, fsynced, then renamed over the target: a crash leaves either the old file or the new one,
never a half-written partition, and re-running a partition replaces it (idempotent).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_DATA_DIR = "./data"


def data_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("OBSERVER_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def partition_dir(root: Path, dataset: str, day: date, slot: str | None = None) -> Path:
    d = root / dataset / f"date={day.isoformat()}"
    return d / f"slot={slot}" if slot else d


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic(target: Path) -> Iterator[BinaryIO]:
    """A file that becomes `target` only when the block ends without error: temp + fsync + rename + dir fsync."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def write_bytes_atomic(target: Path, data: bytes) -> Path:
    with _atomic(target) as f:
        f.write(data)
    return target


def write_table_atomic(target: Path, table: pa.Table) -> Path:
    """Write a Parquet file atomically (temp + fsync + rename + directory fsync)."""
    with _atomic(target) as f:
        pq.write_table(table, f, compression="zstd")
    return target


def sweep_temp_files(root: Path) -> list[Path]:
    """Remove temp files a killed writer left behind; they are never visible as partitions."""
    removed = []
    if root.exists():
        for p in root.rglob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
