"""One verified backup package per trading day, on any fsspec destination (a local directory by default).

Layout at the destination (``<dest>/<YYYY-MM-DD>/``)::

    files/<lake path>            the day's files, byte for byte (Parquet is already compressed)
    files/<lake path>.zst        JSON/JSONL, zstd as a transport wrapper only
    manifest.json                every file: lake path, size, SHA-256 of the original bytes, rows, codec
    SUCCESS.marker               written last, only after every file was re-read and matched; holds the
                                 manifest's own SHA-256, so a changed manifest is caught too

Why files and not one tarball: hashes are over the original files (observer-intent §12), a restore or a reader can
take one file, and the destination itself stays a Hive-style lake pandas/DuckDB can read (Parquet files keep their
names). Measured against ``tar | zstd`` in docs/benchmarks.md.

Commit protocol: the marker is the only commit point. A rewrite removes the marker first, so a kill -9 at any
moment leaves a package without a marker (never deleted by retention, redone by the next run) and never a marker
over unverified bytes. A package never shrinks: a file the manifest holds that is gone locally (retention deleted
it) is carried over, so re-packaging a half-deleted day cannot drop what only the backup still has.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from observer_assets import lake
from observer_assets.ops.daysets import LocalFile
from observer_resources.calendar import KST

FORMAT = "observer-backup/1"
MANIFEST = "manifest.json"
MARKER = "SUCCESS.marker"
FILES = "files"
CHUNK = 1 << 20
COMPRESSED_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".log")


class BackupError(RuntimeError):
    """A package could not be written or verified; `problems` names every file and why."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


class RestoreError(RuntimeError):
    """A restore refused: nothing was placed; `problems` names every file and why."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class Entry:
    path: str
    size: int
    sha256: str
    rows: int | None
    codec: str
    stored: str
    stored_size: int
    mtime_ns: int
    day: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass
class Manifest:
    day: str
    created_at: str
    entries: list[Entry]
    days: list[str] = field(default_factory=list)
    anomaly: bool = False
    anomaly_rules: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    carried_over: int = 0

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT, "day": self.day, "days": self.days, "created_at": self.created_at,
            "anomaly": self.anomaly, "anomaly_rules": self.anomaly_rules,
            "totals": {"files": len(self.entries), "bytes": sum(e.size for e in self.entries),
                       "stored_bytes": sum(e.stored_size for e in self.entries),
                       "rows": sum(e.rows or 0 for e in self.entries), "carried_over": self.carried_over},
            "config": self.config,
            "files": [e.__dict__ for e in sorted(self.entries, key=lambda e: e.path)],
        }
        return (json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown backup format {doc.get('format')!r}")
        return cls(day=doc["day"], created_at=doc["created_at"], days=doc.get("days", []),
                   entries=[Entry.from_json(e) for e in doc["files"]], anomaly=bool(doc.get("anomaly")),
                   anomaly_rules=list(doc.get("anomaly_rules", [])), config=doc.get("config", {}),
                   carried_over=int(doc.get("totals", {}).get("carried_over", 0)))

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}


@dataclass
class PackageState:
    """What the destination holds for a day, read without touching the files."""
    manifest: Manifest | None
    manifest_sha256: str | None
    marker: dict[str, Any] | None
    error: str | None = None

    @property
    def committed(self) -> bool:
        """A marker that names this very manifest: the package was verified when written."""
        return (self.manifest is not None and self.marker is not None
                and self.marker.get("manifest_sha256") == self.manifest_sha256)


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


@dataclass
class VerifyResult:
    day: date
    ok: bool
    problems: list[tuple[str, str]]
    files: int
    bytes: int
    seconds: float


def package_dir(dest: UPath, day: date) -> UPath:
    return dest / day.isoformat()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _now() -> str:
    return datetime.now(KST).isoformat()


def read_state(dest: UPath, day: date) -> PackageState:
    pkg = package_dir(dest, day)
    mpath, kpath = pkg / MANIFEST, pkg / MARKER
    try:
        raw = mpath.read_bytes() if mpath.exists() else None
    except OSError as e:
        return PackageState(None, None, None, f"{MANIFEST}: unreadable ({e})")
    manifest = sha = err = None
    if raw is not None:
        sha = _sha(raw)
        try:
            manifest = Manifest.from_bytes(raw)
        except (ValueError, KeyError, TypeError) as e:
            err = f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"
    marker = None
    if kpath.exists():
        try:
            marker = json.loads(kpath.read_bytes())
        except (OSError, ValueError) as e:
            err = err or f"{MARKER}: unreadable ({e})"
            marker = {"_unreadable": True}
    return PackageState(manifest, sha, marker, err)


def _codec_for(rel: str) -> str:
    return "zstd" if rel.endswith(COMPRESSED_SUFFIXES) else "none"


class _Counting:
    """A write-only file wrapper that counts the bytes that reach the destination."""

    def __init__(self, f: BinaryIO):
        self.f, self.n = f, 0

    def write(self, b: bytes) -> int:
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    @property
    def closed(self) -> bool:
        return self.f.closed


def _copy_out(src: Path, dst: UPath, codec: str) -> tuple[int, str, int, int]:
    """Stream `src` to `dst` (zstd-wrapped when asked), hashing the original bytes on the way.
    Returns (size, sha256, newline count, stored bytes); the hash is over exactly the bytes stored."""
    h = hashlib.sha256()
    size = lines = 0
    with open(src, "rb") as fin:
        raw = _Counting(dst.open("wb"))
        out: Any = pa.CompressedOutputStream(raw, "zstd") if codec == "zstd" else raw
        try:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                out.write(chunk)
        finally:
            out.close()
    return size, h.hexdigest(), lines, raw.n


def _read_stored(src: UPath, codec: str) -> Iterable[bytes]:
    with src.open("rb") as f:
        stream: Any = pa.CompressedInputStream(f, "zstd") if codec == "zstd" else f
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            yield bytes(chunk)


def _hash_stored(src: UPath, codec: str, sink: BinaryIO | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for chunk in _read_stored(src, codec):
        h.update(chunk)
        n += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return n, h.hexdigest()


def _check_stored(pkg: UPath, e: Entry, sink: BinaryIO | None = None) -> tuple[int, str | None]:
    """(bytes read, the problem or None): the stored file, decoded, must give the manifest's size and SHA-256."""
    try:
        n, sha = _hash_stored(pkg / e.stored, e.codec, sink)
    except FileNotFoundError:
        return 0, "missing from the package"
    except (OSError, pa.ArrowException) as ex:
        return 0, f"unreadable in the package ({type(ex).__name__}: {str(ex)[:200]})"
    if n != e.size or sha != e.sha256:
        return n, (f"checksum mismatch: package gives {n} B sha256 {sha[:12]}…, "
                   f"manifest says {e.size} B sha256 {e.sha256[:12]}…")
    return n, None


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def _rows(path: Path, rel: str, lines: int) -> int | None:
    if rel.endswith(".parquet"):
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):
            return None
    if rel.endswith(".jsonl"):
        return lines
    return None


def unchanged(manifest: Manifest, files: Sequence[LocalFile]) -> list[str]:
    """Local files that differ from the manifest by size or mtime (the rsync quick check); [] = nothing to do."""
    known = manifest.by_path()
    out = []
    for f in files:
        e = known.get(f.rel)
        if e is None or e.size != f.size or e.mtime_ns != f.mtime_ns:
            out.append(f.rel)
    return out


def verify(dest: UPath, day: date, *, require_marker: bool = True) -> VerifyResult:
    """Re-read every stored file, undo the transport codec, hash, and compare with the manifest."""
    t0 = time.perf_counter()
    st = read_state(dest, day)
    problems: list[tuple[str, str]] = []
    if st.error:
        problems.append((MANIFEST if MANIFEST in st.error else MARKER, st.error))
    if st.manifest is None:
        problems.append((MANIFEST, "missing"))
        return VerifyResult(day, False, problems, 0, 0, time.perf_counter() - t0)
    if require_marker and not st.committed:
        problems.append((MARKER, "missing" if st.marker is None else "does not name this manifest"))
    pkg = package_dir(dest, day)
    total = 0
    for e in st.manifest.entries:
        n, why = _check_stored(pkg, e)
        total += n
        if why:
            problems.append((e.path, why))
    return VerifyResult(day, not problems, problems, len(st.manifest.entries), total, time.perf_counter() - t0)


def invalidate(dest: UPath, day: date, why: str) -> None:
    """Withdraw a package's marker (kept aside as evidence): the day counts as not backed up from now on."""
    pkg = package_dir(dest, day)
    k = pkg / MARKER
    if k.exists():
        try:
            old = k.read_bytes()
        except OSError:
            old = b""
        (pkg / f"INVALID-{int(time.time())}.json").write_bytes(json.dumps(
            {"withdrawn_at": _now(), "why": why, "marker": old.decode("utf-8", "replace")}).encode())
        k.unlink()


def write(root: Path, dest: UPath, day: date, files: Sequence[LocalFile], *, covered: Sequence[date] = (),
          anomaly_rules: Sequence[str] = (), config: dict[str, Any] | None = None,
          on_written: Callable[[str], None] | None = None) -> BackupResult:
    """Package `files` (the day's local files) at `dest`, verify by re-reading, then commit with the marker.

    Raises BackupError, with every bad file named, when verification fails: no marker is written then."""
    t0 = time.perf_counter()
    pkg = package_dir(dest, day)
    old = read_state(dest, day)
    prior = old.manifest.by_path() if old.manifest is not None else {}
    local = {f.rel: f for f in files}
    # rewrite: the marker goes first, so nothing half-written is ever committed
    k = pkg / MARKER
    if k.exists():
        k.unlink()
    pkg.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    changed: list[str] = []
    for rel, f in sorted(local.items()):
        codec = _codec_for(rel)
        stored = f"{FILES}/{rel}{'.zst' if codec == 'zstd' else ''}"
        target = pkg / stored
        target.parent.mkdir(parents=True, exist_ok=True)
        size, sha, lines, stored_size = _copy_out(root / rel, target, codec)
        p = prior.get(rel)
        if p is None or p.sha256 != sha:
            changed.append(rel)
        entries.append(Entry(rel, size, sha, _rows(root / rel, rel, lines), codec, stored, stored_size,
                             f.mtime_ns, f.day.isoformat()))
        if on_written is not None:
            on_written(rel)
    carried = [e for rel, e in prior.items() if rel not in local]
    entries.extend(carried)
    manifest = Manifest(day=day.isoformat(), created_at=_now(), entries=entries,
                        days=sorted({*(d.isoformat() for d in covered), *(e.day for e in entries)}),
                        anomaly=bool(anomaly_rules), anomaly_rules=sorted(set(anomaly_rules)), config=config or {},
                        carried_over=len(carried))
    raw = manifest.to_bytes()
    (pkg / MANIFEST).write_bytes(raw)
    v = verify(dest, day, require_marker=False)
    if not v.ok:
        raise BackupError(f"backup {day}: verification failed for {len(v.problems)} file(s): "
                          + "; ".join(f"{p}: {w}" for p, w in v.problems[:5]), v.problems)
    sha = _sha(raw)
    k.write_bytes(json.dumps({"day": day.isoformat(), "manifest_sha256": sha, "verified_at": _now(),
                              "files": len(entries), "bytes": v.bytes}, indent=1).encode())
    _drop_stale(pkg, {e.stored for e in entries})
    return BackupResult(day, "written", len(entries), sum(e.size for e in entries),
                        sum(e.stored_size for e in entries), time.perf_counter() - t0, len(carried), changed, sha)


def _drop_stale(pkg: UPath, keep: set[str]) -> None:
    """Objects under files/ no manifest names (a rename, or a killed run's leftovers), removed after the commit."""
    base = pkg / FILES
    if not base.exists():
        return
    prefix = str(base).rstrip("/") + "/"
    for p in base.rglob("*"):
        if p.is_file():
            rel = f"{FILES}/{str(p)[len(prefix):]}"
            if rel not in keep:
                p.unlink()


def restore(dest: UPath, day: date, root: Path, *, overwrite: bool = False,
            only: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Bring a verified package back, byte for byte, atomically per file; all or nothing.

    Every file is streamed to a temp file beside its target and hashed; only when every file matched its
    manifest entry are the temps renamed into place (mtime set back to the original, so the next backup's quick
    check sees the day unchanged). A local file that already holds the same bytes is left alone; one with other
    bytes is a conflict, refused unless `overwrite`."""
    st = read_state(dest, day)
    where = package_dir(dest, day)
    if st.manifest is None:
        raise RestoreError(f"no backup of {day} at {where} ({st.error or 'no manifest.json'})", [(MANIFEST, "missing")])
    if not st.committed:
        why = "no SUCCESS.marker: the package was never verified" if st.marker is None else \
            "SUCCESS.marker does not name this manifest.json (the manifest changed after verification)"
        raise RestoreError(f"refusing to restore {day}: {why}", [(MARKER, why)])
    problems: list[tuple[str, str]] = []
    temps: list[tuple[Path, Path, Entry]] = []
    skipped = 0
    try:
        for e in st.manifest.entries:
            if only is not None and not only(e.path):
                continue
            target = root / e.path
            if target.exists():
                n, sha = hash_file(target)
                if n == e.size and sha == e.sha256:
                    skipped += 1
                    continue
                if not overwrite:
                    problems.append((e.path, "a different local file is in the way (use overwrite to replace it)"))
                    continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            temps.append((tmp, target, e))
            with open(tmp, "wb") as out:
                _, why = _check_stored(where, e, out)
                out.flush()
                os.fsync(out.fileno())
            if why:
                problems.append((e.path, why))
        if problems:
            raise RestoreError(f"refusing to restore {day}: {len(problems)} file(s) failed: "
                               + "; ".join(f"{p}: {w}" for p, w in problems[:5]), problems)
        dirs = set()
        for tmp, target, e in temps:
            os.replace(tmp, target)
            os.utime(target, ns=(e.mtime_ns, e.mtime_ns))
            dirs.add(target.parent)
        for d in dirs:
            lake.fsync_dir(d)
    finally:
        for tmp, _, _ in temps:
            tmp.unlink(missing_ok=True)
    return {"day": day.isoformat(), "restored": len(temps), "already_present": skipped,
            "bytes": sum(e.size for _, _, e in temps), "files": [e.path for _, _, e in temps]}
