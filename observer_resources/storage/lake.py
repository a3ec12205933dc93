"""The Parquet data lake under OBSERVER_DATA_DIR: Hive-style paths, atomic writes.

Paths are ``<root>/<dataset>/date=YYYY-MM-DD[/slot=HHMM]/<name>.parquet`` (no colons), readable by pandas,
pyarrow and DuckDB as a hive-partitioned dataset with no project code. A partition is written to a temp file in
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
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, Union

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

DEFAULT_DATA_DIR = "./data"
LakePath = Union[Path, UPath]  # a local Path, or a UPath on any fsspec filesystem
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


class LakeConfigError(ValueError):
    """OBSERVER_DATA_DIR / OBSERVER_LOCAL_DIR that cannot work together."""


def is_url(s: str) -> bool:
    return bool(_URL.match(s))


def data_dir(environ: dict[str, str] | None = None) -> LakePath:
    """The lake: a resolved local Path, or a UPath for an fsspec URL (``file://`` URLs become local Paths)."""
    env = os.environ if environ is None else environ
    raw = env.get("OBSERVER_DATA_DIR") or DEFAULT_DATA_DIR
    if is_url(raw):
        if raw.startswith("file://"):
            return Path(raw[len("file://"):]).resolve()
        return UPath(raw)
    return Path(raw).resolve()


def local_dir(environ: dict[str, str] | None = None) -> Path:
    """Where appends and fsync are needed (journal, event log, state): the lake itself when it is local (one tree,
    one backup), else OBSERVER_LOCAL_DIR, which a URL lake requires."""
    env = os.environ if environ is None else environ
    raw = env.get("OBSERVER_LOCAL_DIR")
    if raw and is_url(raw):
        raise LakeConfigError(f"OBSERVER_LOCAL_DIR must be a local directory, got a URL ({raw.split('://')[0]}://…)")
    d = data_dir(env)
    if isinstance(d, Path):
        if raw and Path(raw).resolve() != d:
            raise LakeConfigError("OBSERVER_LOCAL_DIR is only for a lake on a URL; with a local OBSERVER_DATA_DIR "
                                  "everything lives there (unset OBSERVER_LOCAL_DIR)")
        return d
    if not raw:
        raise LakeConfigError("OBSERVER_DATA_DIR is a URL: set OBSERVER_LOCAL_DIR to a local (or NFS) directory for "
                              "the Track B journal, the event log and the token cache")
    return Path(raw).resolve()


def existing_local_dir(environ: dict[str, str] | None = None) -> Path:
    """:func:`local_dir`, refused unless it is an existing directory. For commands that read the lake (the
    ``observer`` CLI): one pointed at a typo'd or unmounted path must fail, not report an empty lake. Only
    ``make run`` (and Dagster runs, as they write) create it."""
    env = os.environ if environ is None else environ
    d = local_dir(env)
    var = "OBSERVER_LOCAL_DIR" if env.get("OBSERVER_LOCAL_DIR") and is_url(env.get("OBSERVER_DATA_DIR") or "") \
        else "OBSERVER_DATA_DIR"
    if not d.exists():
        raise LakeConfigError(f"{var} {str(d)!r} does not exist (a typo, or not mounted?); create it first "
                              "(`make run` does) or point the variable at the data directory")
    if not d.is_dir():
        raise LakeConfigError(f"{var} {str(d)!r} is not a directory")
    return d


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
    text = json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":")) if compact else \
        json.dumps(obj, ensure_ascii=False, default=str, indent=1)
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
