"""One verified backup package per trading day, on any fsspec destination (a local directory by default).

Layout at the destination (``<dest>/<YYYY-MM-DD>/``)::

    files/<lake path>            the first version of each file, byte for byte (Parquet is already compressed)
    files/<lake path>.zst        JSON/JSONL, zstd as a transport wrapper only
    versions/<n>/<lake path>     a file's bytes as of version n, when it changed after it was first packaged
    manifest.json                every version of every file: lake path, version, size, SHA-256 of the original
                                 bytes, rows, codec, where it is stored
    SUCCESS.marker               written last, only after every stored file was fsynced, re-read and matched; holds
                                 the manifest's own SHA-256, so a changed manifest is caught too

Why files and not one tarball: hashes are over the original files, a restore or a reader can take one file, and the
destination's ``files/`` stays a Hive-style lake pandas/DuckDB can read (Parquet files keep their names). Measured
against ``tar | zstd`` in docs/benchmarks.md.

Never overwritten: a stored object named by a manifest is only ever (re)written with the bytes its entry promises
(a repair from an identical local file). A file that changed after it was packaged becomes a new version beside the
old one, so re-running an old partition after retention cannot silently replace the only copy of a day; a restore
places the newest version unless asked for an older one (docs/backup.md).

Commit protocol: stored objects are written and fsynced first, then the manifest (temp + fsync + rename), then
every object is re-read from the device and hashed, and only then the marker (temp + fsync + rename). The marker
names the manifest's hash, so a kill -9 at any step leaves either the previous commit intact or a package whose
marker does not name its manifest: never a marker over unverified bytes. A package never shrinks: a file the
manifest holds that is gone locally (retention deleted it) is carried over.

Beside this module: ``manifest`` (the manifest model and what it may say; a restore validates the whole manifest
before it places anything), ``stored`` (stored objects: codec, copy, hash, check) and ``restore`` (the restore path,
``restore`` and ``RestoreError``), which imports this module, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from observer_assets.backup.daysets import LocalFile, Tree
from observer_assets.backup.manifest import (
    FILES,
    VERSIONS,
    Entry,
    Manifest,
    PackageState,
    check_manifest,
)
from observer_assets.backup.settings import local_path
from observer_assets.backup.stored import _check_stored, _codec_for, _copy_out, hash_file, stored_name
from observer_resources import clock
from observer_resources.storage import lake

MANIFEST = "manifest.json"
MARKER = "SUCCESS.marker"


class BackupError(RuntimeError):
    """A package could not be written or verified; `problems` names every file and why."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class BackupResult:
    day: date
    action: str  # written | unchanged | empty
    files: int
    bytes: int
    stored_bytes: int
    seconds: float
    carried_over: int = 0
    changed: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    invalidated: list[tuple[str, str]] = field(default_factory=list)  # a committed package that failed re-verification
    versioned: list[dict[str, Any]] = field(default_factory=list)  # files stored as a new version beside the old
    repaired: list[str] = field(default_factory=list)  # stored objects rewritten from identical local bytes


@dataclass
class VerifyResult:
    day: date
    ok: bool
    problems: list[tuple[str, str]]
    files: int
    bytes: int
    seconds: float
    versions: int = 0


def package_dir(dest: UPath, day: date) -> UPath:
    return dest / day.isoformat()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _now() -> str:
    return clock.now().isoformat()


def read_state(dest: UPath, day: date) -> PackageState:
    pkg = package_dir(dest, day)
    mpath, kpath = pkg / MANIFEST, pkg / MARKER
    try:
        exists = mpath.exists()
        raw = mpath.read_bytes() if exists else None
    except OSError as e:
        return PackageState(None, None, None, f"{MANIFEST}: unreadable ({e})", True)
    manifest = sha = err = None
    if raw is not None:
        sha = _sha(raw)
        try:
            manifest = Manifest.from_bytes(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            err = f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"
    marker = None
    if kpath.exists():
        try:
            marker = json.loads(kpath.read_bytes())
            if not isinstance(marker, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            err = err or f"{MARKER}: unreadable ({e})"
            marker = {"_unreadable": True}
    return PackageState(manifest, sha, marker, err, exists)


def _sync_file(path: Path, *, drop_cache: bool = False) -> None:
    """fsync a written file; with `drop_cache`, also evict its pages so the verification re-read hits the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if drop_cache and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _sync_tree(local_pkg: Path | None, stored: Iterable[str]) -> None:
    """fsync every stored object and each directory on its way up to the package (a new directory entry is durable
    only once its parent is fsynced)."""
    if local_pkg is None:
        return
    dirs: set[Path] = set()
    for s in stored:
        p = local_pkg / s
        _sync_file(p, drop_cache=True)
        d = p.parent
        while d != local_pkg and d.is_relative_to(local_pkg):
            dirs.add(d)
            d = d.parent
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        lake.fsync_dir(d)
    lake.fsync_dir(local_pkg)


def _put(pkg: UPath, local_pkg: Path | None, name: str, data: bytes) -> None:
    """Write a package's control file atomically: temp + fsync + rename + directory fsync locally, one PUT remotely."""
    if local_pkg is not None:
        lake.write_bytes_atomic(local_pkg / name, data)
        lake.fsync_dir(local_pkg.parent)
    else:
        (pkg / name).write_bytes(data)


def _local_pkg(dest: UPath, day: date) -> Path | None:
    lp = local_path(dest)
    return None if lp is None else lp / day.isoformat()


def unchanged(manifest: Manifest, files: Sequence[LocalFile]) -> list[str]:
    """Local files that differ from the manifest by size or mtime (the rsync quick check); [] = nothing to do."""
    known = manifest.by_path()
    out = []
    for f in files:
        e = known.get(f.rel)
        if e is None or e.size != f.size or e.mtime_ns != f.mtime_ns:
            out.append(f.rel)
    return out


def _verify_entries(pkg: UPath, entries: Iterable[Entry]) -> tuple[list[tuple[Entry, str]], int]:
    bad: list[tuple[Entry, str]] = []
    total = 0
    for e in entries:
        n, why = _check_stored(pkg, e)
        total += n
        if why:
            bad.append((e, why))
    return bad, total


def verify(dest: UPath, day: date, *, require_marker: bool = True) -> VerifyResult:
    """Re-read every stored version, undo the transport codec, hash, and compare with the manifest."""
    t0 = time.perf_counter()
    st = read_state(dest, day)
    problems: list[tuple[str, str]] = []
    if st.error:
        problems.append((MANIFEST if MANIFEST in st.error else MARKER, st.error))
    if st.manifest is None:
        if not st.error:
            problems.append((MANIFEST, "missing"))
        return VerifyResult(day, False, problems, 0, 0, time.perf_counter() - t0)
    if require_marker and not st.committed:
        problems.append((MARKER, "missing" if st.marker is None else "does not name this manifest"))
    unsound = check_manifest(st.manifest)
    if unsound:  # never follow a path the manifest should not hold, not even to read it
        problems.extend(unsound)
        return VerifyResult(
            day, False, problems, len(st.manifest.by_path()), 0, time.perf_counter() - t0, len(st.manifest.entries)
        )
    bad, total = _verify_entries(package_dir(dest, day), st.manifest.entries)
    problems.extend((e.label, why) for e, why in bad)
    return VerifyResult(
        day,
        not problems,
        problems,
        len(st.manifest.by_path()),
        total,
        time.perf_counter() - t0,
        len(st.manifest.entries),
    )


def invalidate(dest: UPath, day: date, why: str) -> None:
    """Withdraw a package's marker (kept aside as evidence): the day counts as not backed up from now on."""
    pkg = package_dir(dest, day)
    k = pkg / MARKER
    if k.exists():
        try:
            old = k.read_bytes()
        except OSError:
            old = b""
        (pkg / f"INVALID-{int(time.time())}.json").write_bytes(
            json.dumps({"withdrawn_at": _now(), "why": why, "marker": old.decode("utf-8", "replace")}).encode()
        )
        k.unlink()


def set_aside(dest: UPath, day: date, why: str) -> str:
    """Move a package whose manifest cannot be trusted out of the way, whole (nothing deleted: it is evidence and may
    hold the only copy of something); returns the new directory's name."""
    pkg = package_dir(dest, day)
    name = f"{day.isoformat()}.damaged-{int(time.time())}-{uuid.uuid4().hex[:6]}"
    target = dest / name
    lp = local_path(dest)
    if lp is not None:
        os.replace(lp / day.isoformat(), lp / name)
        lake.fsync_dir(lp)
    else:
        pkg.fs.mv(pkg.path, target.path, recursive=True)
    (target / "WHY.json").write_bytes(json.dumps({"set_aside_at": _now(), "why": why}).encode())
    return name


def write(
    root: Path | Tree,
    dest: UPath,
    day: date,
    files: Sequence[LocalFile],
    *,
    covered: Sequence[date] = (),
    anomaly_rules: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    on_written: Callable[[str], None] | None = None,
) -> BackupResult:
    """Package `files` (the day's local files) at `dest`, verify by re-reading, then commit with the marker.

    Files already in the package with the same bytes are not copied again; a changed file becomes a new version.
    Raises BackupError, with every bad file named, when verification fails: no marker is written then."""
    t0 = time.perf_counter()
    root = Tree.of(root)
    pkg = package_dir(dest, day)
    local_pkg = _local_pkg(dest, day)
    old = read_state(dest, day)
    if old.manifest_unreadable:
        raise BackupError(
            f"backup {day}: {old.error}; the package must be set aside first", [(MANIFEST, str(old.error))]
        )
    entries: list[Entry] = list(old.manifest.entries) if old.manifest is not None else []
    unsound = check_manifest(old.manifest) if old.manifest is not None else []
    if unsound:
        raise BackupError(
            f"backup {day}: the package's manifest holds entries that cannot be trusted; it must be set aside first",
            unsound,
        )
    newest = old.manifest.by_path() if old.manifest is not None else {}
    # versions are package generations: everything this write adds is one new version, so `as_of(n)` is the
    # package exactly as the n-th write that changed it left it (a file first added later is not in version 1)
    generation = (old.manifest.max_version if old.manifest is not None else 0) + 1
    pkg.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    versioned: list[dict[str, Any]] = []
    written: list[str] = []
    now = _now()
    for f in sorted(files, key=lambda f: f.rel):
        rel, codec = f.rel, _codec_for(f.rel)
        p = newest.get(rel)
        kind = None
        if p is not None:
            size, sha, prefix_sha = hash_file(root / rel, prefix=p.size)  # type: ignore[misc]
            if sha == p.sha256:
                p.mtime_ns = f.mtime_ns  # same bytes, touched: the quick check should see it unchanged next time
                continue
            kind = "appended" if prefix_sha == p.sha256 and size > p.size else "replaced"
        version = generation
        stored = stored_name(rel, version, first=p is None)
        target = pkg / stored
        target.parent.mkdir(parents=True, exist_ok=True)
        size, sha, lines, stored_size = _copy_out(root / rel, target, codec)
        e = Entry(
            rel,
            size,
            sha,
            _rows(root / rel, rel, lines),
            codec,
            stored,
            stored_size,
            f.mtime_ns,
            f.day.isoformat(),
            version,
            now,
        )
        entries.append(e)
        written.append(stored)
        changed.append(rel)
        if p is not None:
            versioned.append(
                {
                    "path": rel,
                    "version": version,
                    "kind": kind,
                    "previous_version": p.version,
                    "previous_size": p.size,
                    "previous_sha256": p.sha256,
                    "size": size,
                    "sha256": sha,
                }
            )
        if on_written is not None:
            on_written(rel)
    _sync_tree(local_pkg, written)
    local = {f.rel for f in files}
    carried = [p for rel, p in newest.items() if rel not in local]
    manifest = Manifest(
        day=day.isoformat(),
        created_at=now,
        entries=entries,
        days=sorted({*(d.isoformat() for d in covered), *(e.day for e in entries)}),
        anomaly=bool(anomaly_rules),
        anomaly_rules=sorted(set(anomaly_rules)),
        config=config or {},
        carried_over=len(carried),
    )
    raw = manifest.to_bytes()
    _put(pkg, local_pkg, MANIFEST, raw)
    # every object is re-read (from the device, its cached pages dropped) and hashed before anything is committed
    bad, total = _verify_entries(pkg, entries)
    repaired: list[str] = []
    if bad:
        fixable = [
            (e, why)
            for e, why in bad
            if newest.get(e.path) is e and e.path in local and hash_file(root / e.path)[1] == e.sha256
        ]
        for e, _ in fixable:  # a damaged object whose bytes are still here, identical: written again, same place
            (pkg / e.stored).parent.mkdir(parents=True, exist_ok=True)
            _copy_out(root / e.path, pkg / e.stored, e.codec)
            repaired.append(e.stored)
        _sync_tree(local_pkg, repaired)
        if repaired:
            again, _ = _verify_entries(pkg, [e for e, _ in fixable])
            bad = [(e, w) for e, w in bad if (e, w) not in fixable] + again
    if bad:
        problems = [(e.label, why) for e, why in bad]
        raise BackupError(
            f"backup {day}: verification failed for {len(problems)} file(s): "
            + "; ".join(f"{p}: {w}" for p, w in problems[:5]),
            problems,
        )
    sha = _sha(raw)
    newest_now = manifest.by_path()
    _put(
        pkg,
        local_pkg,
        MARKER,
        json.dumps(
            {
                "day": day.isoformat(),
                "manifest_sha256": sha,
                "verified_at": _now(),
                "files": len(newest_now),
                "versions": len(entries),
                "bytes": total,
            },
            indent=1,
        ).encode(),
    )
    _drop_stale(pkg, {e.stored for e in entries})
    return BackupResult(
        day,
        "written",
        len(newest_now),
        sum(e.size for e in newest_now.values()),
        sum(e.stored_size for e in entries),
        time.perf_counter() - t0,
        len(carried),
        changed,
        sha,
        versioned=versioned,
        repaired=[s for s in repaired],
    )


def _drop_stale(pkg: UPath, keep: set[str]) -> None:
    """Objects no manifest names (a killed run's leftovers, temp files), removed after the commit. Only objects under
    files/ and versions/: a stored object the manifest names is never touched here."""
    for top in (FILES, VERSIONS):
        base = pkg / top
        if not base.exists():
            continue
        prefix = str(base).rstrip("/") + "/"
        for p in base.rglob("*"):
            if p.is_file():
                rel = f"{top}/{str(p)[len(prefix) :]}"
                if rel not in keep:
                    p.unlink()


def _rows(path: Path | UPath, rel: str, lines: int) -> int | None:
    if rel.endswith(".parquet"):
        try:
            with path.open("rb") as f:
                return pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException):
            return None
    if rel.endswith(".jsonl"):
        return lines
    return None
