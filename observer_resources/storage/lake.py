"""The Parquet data lake under OBSERVER_DATA_DIR: Hive-style paths, atomic writes.

Paths are ``<root>/<dataset>/date=YYYY-MM-DD[/slot=THHMM]/<name>.parquet`` (no colons; ``storage/layout.py`` names
them all), readable by pandas, pyarrow, polars and DuckDB as a hive-partitioned dataset with no project code. A partition is written to a temp file in
the same directory, fsynced, then renamed over the target: a crash leaves either the old file or the new one,
never a half-written partition, and re-running a partition replaces it (idempotent).

``OBSERVER_DATA_DIR`` may be a local path (the default, ``./data``) or any fsspec URL (``s3://bucket/lake``,
``gs://…``, ``file:///…``), so run workers on different hosts share one lake. On a URL the temp object is moved
over the target (an object store's PUT is atomic per object, so readers never see half a file either). What needs
appends and fsync — the Track B journal, the system event log, the token cache — stays on a POSIX directory,
``local_dir()``: ``OBSERVER_LOCAL_DIR``, or the data dir itself when that is local.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from observer_resources.storage.dirs import (  # noqa: F401 - the directory rules, importable from here
    DEFAULT_DATA_DIR,
    LakeConfigError,
    LakePath,
    data_dir,
    existing_local_dir,
    is_url,
    local_dir,
)


def is_local(path: LakePath) -> bool:
    return isinstance(path, Path)


def _fs_path(path: LakePath) -> tuple[Any, Any]:
    """(path, filesystem) as pyarrow takes them: a local path alone, or the fsspec path and filesystem."""
    if isinstance(path, Path):
        return str(path), None
    return path.path, path.fs


def read_table(path: LakePath, **kw: Any) -> pa.Table:
    p, fs = _fs_path(path)
    return pq.read_table(p, filesystem=fs, **kw)


def read_schema(path: LakePath) -> pa.Schema:
    p, fs = _fs_path(path)
    return pq.read_schema(p, filesystem=fs)


def partition_dir(root: LakePath, dataset: str, day: date, slot: str | None = None) -> LakePath:
    d = root / dataset / f"date={day.isoformat()}"
    return d / f"slot={slot}" if slot else d


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic(target: LakePath) -> Iterator[BinaryIO]:
    """A file that becomes `target` only when the block ends without error: temp + fsync + rename + dir fsync
    (on a URL: temp object, then moved over the target)."""
    if not isinstance(target, Path):
        with _atomic_remote(target) as f:
            yield f
        return
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


@contextmanager
def _atomic_remote(target: UPath) -> Iterator[BinaryIO]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as f:
            yield f
        target.fs.mv(tmp.path, target.path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(target: LakePath, data: bytes) -> LakePath:
    with _atomic(target) as f:
        f.write(data)
    return target


def write_json_atomic(target: LakePath, obj: Any, *, compact: bool = False) -> LakePath:
    """A small JSON file (a marker, a manifest, a status), written like a partition: whole or not at all."""
    text = (
        json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":"))
        if compact
        else json.dumps(obj, ensure_ascii=False, default=str, indent=1)
    )
    return write_bytes_atomic(target, text.encode())


def write_table_atomic(target: LakePath, table: pa.Table) -> LakePath:
    """Write a Parquet file atomically (temp + fsync + rename + directory fsync)."""
    with _atomic(target) as f:
        pq.write_table(table, f, compression="zstd")
    return target


def sweep_temp_files(root: LakePath) -> list[LakePath]:
    """Remove temp files a killed writer left behind; they are never visible as partitions."""
    removed = []
    if root.exists():
        for p in root.rglob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
