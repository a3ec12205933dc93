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

A manifest is data from outside (anyone who can write to the bucket can write it): :func:`check_manifest` refuses
any entry whose path could land outside the target, in ``state/`` or ``system/capture/``, or whose fields have the
wrong type, and a restore validates the whole manifest before it places anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from observer_resources.storage import lake
from observer_assets.backup.daysets import EXCLUDED_PREFIXES, EXCLUDED_TOP, LocalFile
from observer_assets.backup.settings import local_path
from observer_resources import clock

FORMAT = "observer-backup/1"
MANIFEST = "manifest.json"
MARKER = "SUCCESS.marker"
FILES = "files"
VERSIONS = "versions"
CHUNK = 1 << 20
COMPRESSED_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".log")
CODECS = ("none", "zstd")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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
    version: int = 1
    added_at: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        if not isinstance(d, dict):
            raise TypeError(f"a manifest entry must be an object, got {type(d).__name__}")
        kw = {k: d.get(k) for k in cls.__dataclass_fields__}
        if kw["version"] is None:
            kw["version"] = 1  # packages written before versions existed
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """How problems name this entry: the lake path, and its version when that is not 1."""
        return self.path if self.version == 1 else f"{self.path} (version {self.version})"


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
        newest = self.by_path()
        doc = {
            "format": FORMAT, "day": self.day, "days": self.days, "created_at": self.created_at,
            "anomaly": self.anomaly, "anomaly_rules": self.anomaly_rules,
            "totals": {"files": len(newest), "versions": len(self.entries),
                       "bytes": sum(e.size for e in newest.values()),
                       "stored_bytes": sum(e.stored_size for e in self.entries),
                       "rows": sum(e.rows or 0 for e in newest.values()), "carried_over": self.carried_over},
            "config": self.config,
            "files": [e.__dict__ for e in sorted(self.entries, key=lambda e: (e.path, e.version))],
        }
        return (json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("the manifest is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown backup format {doc.get('format')!r}")
        if not isinstance(doc.get("files"), list):
            raise ValueError("the manifest's files is not a list")
        return cls(day=doc["day"], created_at=doc["created_at"], days=doc.get("days", []),
                   entries=[Entry.from_json(e) for e in doc["files"]], anomaly=bool(doc.get("anomaly")),
                   anomaly_rules=list(doc.get("anomaly_rules", [])), config=doc.get("config", {}),
                   carried_over=int((doc.get("totals") or {}).get("carried_over", 0)))

    def by_path(self) -> dict[str, Entry]:
        """The newest version of each file: what a restore places and what the local files are compared with."""
        out: dict[str, Entry] = {}
        for e in self.entries:
            if e.path not in out or e.version > out[e.path].version:
                out[e.path] = e
        return out

    def as_of(self, version: int) -> dict[str, Entry]:
        """The package as its `version`-th changing write left it: each file at its highest version <= `version`
        (files first added later are not there)."""
        out: dict[str, Entry] = {}
        for e in self.entries:
            if e.version <= version and (e.path not in out or e.version > out[e.path].version):
                out[e.path] = e
        return out

    @property
    def max_version(self) -> int:
        return max((e.version for e in self.entries), default=0)


@dataclass
class PackageState:
    """What the destination holds for a day, read without touching the files."""
    manifest: Manifest | None
    manifest_sha256: str | None
    marker: dict[str, Any] | None
    error: str | None = None
    manifest_exists: bool = False

    @property
    def committed(self) -> bool:
        """A marker that names this very manifest: the package was verified when written."""
        return (self.manifest is not None and self.marker is not None
                and self.marker.get("manifest_sha256") == self.manifest_sha256)

    @property
    def manifest_unreadable(self) -> bool:
        return self.manifest_exists and self.manifest is None

    @property
    def empty(self) -> bool:
        """Nothing at all at the destination for this day (as opposed to something unreadable)."""
        return not self.manifest_exists and self.marker is None and self.error is None


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


# --- what a manifest may say ------------------------------------------------------------------------------------


def unsafe_path(p: Any) -> str | None:
    """Why `p` cannot be a lake path inside a target directory, or None. Pure: no file is looked at."""
    if not isinstance(p, str) or not p:
        return f"path must be a non-empty string, got {type(p).__name__}"
    if "\x00" in p or "\\" in p:
        return "path contains a NUL or a backslash"
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return "path is absolute"
    parts = p.split("/")
    if any(x in ("", ".", "..") for x in parts) or posixpath.normpath(p) != p:
        return "path is not a plain relative path (empty, '.' or '..' parts)"
    if parts[0] in EXCLUDED_TOP or any(tuple(parts[: len(x)]) == x for x in EXCLUDED_PREFIXES):
        return f"path points into {parts[0]}/, which backups never carry"
    return None


def _stored_problem(e: Entry) -> str | None:
    s = e.stored
    if not isinstance(s, str) or not s:
        return "stored must be a non-empty string"
    if "\x00" in s or "\\" in s or s.startswith("/") or posixpath.normpath(s) != s or ".." in s.split("/"):
        return "stored is not a plain relative path inside the package"
    suffix = ".zst" if e.codec == "zstd" else ""
    allowed = {f"{FILES}/{e.path}{suffix}", f"{VERSIONS}/{e.version}/{e.path}{suffix}"}
    if s not in allowed:
        return f"stored {s!r} is not where version {e.version} of {e.path!r} belongs"
    return None


def _int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def entry_problems(e: Entry) -> list[str]:
    """Every reason `e` cannot be trusted as written (types, paths, hash shape)."""
    out = []
    why = unsafe_path(e.path)
    if why:
        return [why]
    if not _int(e.version, 1):
        out.append(f"version must be a whole number >= 1, got {e.version!r}")
    if not _int(e.size) or not _int(e.stored_size) or not _int(e.mtime_ns):
        out.append("size, stored_size and mtime_ns must be whole numbers >= 0")
    if not isinstance(e.sha256, str) or not _SHA.match(e.sha256):
        out.append("sha256 must be 64 lowercase hex digits")
    if e.codec not in CODECS:
        out.append(f"codec must be one of {CODECS}, got {e.codec!r}")
    if e.rows is not None and not _int(e.rows):
        out.append("rows must be a whole number or null")
    if not isinstance(e.day, str) or not _DAY.match(e.day):
        out.append("day must be YYYY-MM-DD")
    if not out:
        why = _stored_problem(e)
        if why:
            out.append(why)
    return out


def check_manifest(m: Manifest) -> list[tuple[str, str]]:
    """(entry, problem) for everything in `m` that a restore must refuse; [] when every entry is sound."""
    problems: list[tuple[str, str]] = []
    seen: set[tuple[str, int]] = set()
    for i, e in enumerate(m.entries):
        name = e.path if isinstance(e.path, str) and e.path else f"(entry {i})"
        for why in entry_problems(e):
            problems.append((name, why))
        key = (str(e.path), e.version if isinstance(e.version, int) else -1)
        if key in seen:
            problems.append((name, f"version {e.version} is listed twice"))
        seen.add(key)
    return problems


def _inside(root: Path, rel: str) -> str | None:
    """Why `root / rel` resolves outside `root` (a symlink on the way) or into an excluded tree; None when fine."""
    try:
        base = root.resolve()
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop on the way
        return f"cannot be resolved inside the target ({type(e).__name__})"
    if not target.is_relative_to(base):
        return f"resolves outside {base} (a symlink on the way)"
    if target == base:
        return "resolves to the target directory itself"
    return unsafe_path(target.relative_to(base).as_posix())


# --- stored objects ----------------------------------------------------------------------------------------------


def _codec_for(rel: str) -> str:
    return "zstd" if rel.endswith(COMPRESSED_SUFFIXES) else "none"


def stored_name(rel: str, version: int, first: bool) -> str:
    """Where a version is stored: the first copy of a path under files/ (the readable lake), later ones under
    versions/<n>/."""
    suffix = ".zst" if _codec_for(rel) == "zstd" else ""
    return f"{FILES}/{rel}{suffix}" if first else f"{VERSIONS}/{version}/{rel}{suffix}"


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


def hash_file(path: Path, prefix: int | None = None) -> tuple[int, str] | tuple[int, str, str | None]:
    """(size, sha256) of a local file; with `prefix`, also the sha256 of its first `prefix` bytes (None when the file
    is shorter), so an append-only file's growth is told from a rewrite in one read."""
    h = hashlib.sha256()
    hp = hashlib.sha256() if prefix is not None else None
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if hp is not None and n < prefix:  # type: ignore[operator]
                hp.update(chunk[: prefix - n])  # type: ignore[operator]
            h.update(chunk)
            n += len(chunk)
    if hp is None:
        return n, h.hexdigest()
    return n, h.hexdigest(), (hp.hexdigest() if n >= prefix else None)  # type: ignore[operator]


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
        return VerifyResult(day, False, problems, len(st.manifest.by_path()), 0, time.perf_counter() - t0,
                            len(st.manifest.entries))
    bad, total = _verify_entries(package_dir(dest, day), st.manifest.entries)
    problems.extend((e.label, why) for e, why in bad)
    return VerifyResult(day, not problems, problems, len(st.manifest.by_path()), total, time.perf_counter() - t0,
                        len(st.manifest.entries))


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


def write(root: Path, dest: UPath, day: date, files: Sequence[LocalFile], *, covered: Sequence[date] = (),
          anomaly_rules: Sequence[str] = (), config: dict[str, Any] | None = None,
          on_written: Callable[[str], None] | None = None) -> BackupResult:
    """Package `files` (the day's local files) at `dest`, verify by re-reading, then commit with the marker.

    Files already in the package with the same bytes are not copied again; a changed file becomes a new version.
    Raises BackupError, with every bad file named, when verification fails: no marker is written then."""
    t0 = time.perf_counter()
    pkg = package_dir(dest, day)
    local_pkg = _local_pkg(dest, day)
    old = read_state(dest, day)
    if old.manifest_unreadable:
        raise BackupError(f"backup {day}: {old.error}; the package must be set aside first", [(MANIFEST, str(old.error))])
    entries: list[Entry] = list(old.manifest.entries) if old.manifest is not None else []
    unsound = check_manifest(old.manifest) if old.manifest is not None else []
    if unsound:
        raise BackupError(f"backup {day}: the package's manifest holds entries that cannot be trusted; it must be set "
                          "aside first", unsound)
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
        e = Entry(rel, size, sha, _rows(root / rel, rel, lines), codec, stored, stored_size, f.mtime_ns,
                  f.day.isoformat(), version, now)
        entries.append(e)
        written.append(stored)
        changed.append(rel)
        if p is not None:
            versioned.append({"path": rel, "version": version, "kind": kind, "previous_version": p.version,
                              "previous_size": p.size, "previous_sha256": p.sha256, "size": size, "sha256": sha})
        if on_written is not None:
            on_written(rel)
    _sync_tree(local_pkg, written)
    local = {f.rel for f in files}
    carried = [p for rel, p in newest.items() if rel not in local]
    manifest = Manifest(day=day.isoformat(), created_at=now, entries=entries,
                        days=sorted({*(d.isoformat() for d in covered), *(e.day for e in entries)}),
                        anomaly=bool(anomaly_rules), anomaly_rules=sorted(set(anomaly_rules)), config=config or {},
                        carried_over=len(carried))
    raw = manifest.to_bytes()
    _put(pkg, local_pkg, MANIFEST, raw)
    # every object is re-read (from the device, its cached pages dropped) and hashed before anything is committed
    bad, total = _verify_entries(pkg, entries)
    repaired: list[str] = []
    if bad:
        fixable = [(e, why) for e, why in bad if newest.get(e.path) is e and e.path in local
                   and hash_file(root / e.path)[1] == e.sha256]
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
        raise BackupError(f"backup {day}: verification failed for {len(problems)} file(s): "
                          + "; ".join(f"{p}: {w}" for p, w in problems[:5]), problems)
    sha = _sha(raw)
    newest_now = manifest.by_path()
    _put(pkg, local_pkg, MARKER, json.dumps(
        {"day": day.isoformat(), "manifest_sha256": sha, "verified_at": _now(), "files": len(newest_now),
         "versions": len(entries), "bytes": total}, indent=1).encode())
    _drop_stale(pkg, {e.stored for e in entries})
    return BackupResult(day, "written", len(newest_now), sum(e.size for e in newest_now.values()),
                        sum(e.stored_size for e in entries), time.perf_counter() - t0, len(carried), changed, sha,
                        versioned=versioned, repaired=[s for s in repaired])


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
                rel = f"{top}/{str(p)[len(prefix):]}"
                if rel not in keep:
                    p.unlink()


def _rows(path: Path, rel: str, lines: int) -> int | None:
    if rel.endswith(".parquet"):
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):
            return None
    if rel.endswith(".jsonl"):
        return lines
    return None


def restore(dest: UPath, day: date, root: Path, *, overwrite: bool = False,
            only: Callable[[str], bool] | None = None, version: int | None = None) -> dict[str, Any]:
    """Bring a verified package back, byte for byte, atomically per file; all or nothing.

    The whole manifest is checked first (paths, types, hashes' shape), then every file is streamed to a temp file
    beside its target and hashed; only when every file matched its manifest entry are the temps renamed into place
    (mtime set back to the original, so the next backup's quick check sees the day unchanged). A local file that
    already holds the same bytes is left alone; one with other bytes is a conflict, refused unless `overwrite`.
    `version` picks the package as that write left it (1: as first packaged; a version is one write that changed
    something); default the newest."""
    st = read_state(dest, day)
    where = package_dir(dest, day)
    if st.manifest is None:
        raise RestoreError(f"no backup of {day} at {where} ({st.error or 'no manifest.json'})", [(MANIFEST, "missing")])
    if not st.committed:
        why = "no SUCCESS.marker: the package was never verified" if st.marker is None else \
            "SUCCESS.marker does not name this manifest.json (the manifest changed after verification)"
        raise RestoreError(f"refusing to restore {day}: {why}", [(MARKER, why)])
    problems = check_manifest(st.manifest)
    picked: list[Entry] = []
    root = Path(root)
    if not problems and version is not None and (not _int(version, 1) or version > st.manifest.max_version):
        problems.append(("(version)", f"version must be 1..{st.manifest.max_version}, got {version!r}"))
    if not problems:
        chosen = st.manifest.by_path() if version is None else st.manifest.as_of(version)
        picked = [e for p, e in sorted(chosen.items()) if only is None or only(p)]
        for e in picked:
            why = _inside(root, e.path)
            if why:
                problems.append((e.path, why))
    if problems:
        raise RestoreError(f"refusing to restore {day}: the manifest holds {len(problems)} entr(y/ies) that could "
                           "write outside the target or cannot be trusted; nothing was placed: "
                           + "; ".join(f"{p}: {w}" for p, w in problems[:5]), problems)
    temps: list[tuple[Path, Path, Entry]] = []
    made: list[Path] = []  # directories this restore created: removed again when it refuses
    skipped = 0
    placed = False
    try:
        for e in picked:
            target = root / e.path
            if target.exists() or target.is_symlink():
                if target.is_file() and not target.is_symlink():
                    n, sha = hash_file(target)  # type: ignore[misc]
                    if n == e.size and sha == e.sha256:
                        skipped += 1
                        continue
                if not overwrite or not target.is_file() or target.is_symlink():
                    problems.append((e.path, "a different local file is in the way (use overwrite to replace it)"
                                     if target.is_file() and not target.is_symlink()
                                     else "something that is not a regular file is in the way"))
                    continue
            try:
                made.extend(_mkdirs(target.parent))
            except OSError as ex:
                problems.append((e.path, f"cannot create its directory ({type(ex).__name__}: {ex})"))
                continue
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            temps.append((tmp, target, e))
            with open(tmp, "wb") as out:
                _, why = _check_stored(where, e, out)
                out.flush()
                os.fsync(out.fileno())
            if why:
                problems.append((e.label, why))
        if problems:
            raise RestoreError(f"refusing to restore {day}: {len(problems)} file(s) failed: "
                               + "; ".join(f"{p}: {w}" for p, w in problems[:5]), problems)
        dirs = set()
        for tmp, target, e in temps:
            os.replace(tmp, target)
            os.utime(target, ns=(e.mtime_ns, e.mtime_ns))
            dirs.add(target.parent)
        placed = True
        for d in dirs:
            lake.fsync_dir(d)
    finally:
        for tmp, _, _ in temps:
            tmp.unlink(missing_ok=True)
        if not placed:
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
    return {"day": day.isoformat(), "restored": len(temps), "already_present": skipped,
            "bytes": sum(e.size for _, _, e in temps), "files": [e.path for _, _, e in temps],
            "version": version if version is not None else st.manifest.max_version}


def _mkdirs(d: Path) -> list[Path]:
    """mkdir -p that returns the directories it created, outermost first."""
    missing = []
    while not d.exists():
        missing.append(d)
        d = d.parent
    out = []
    for m in reversed(missing):
        m.mkdir()
        out.append(m)
    return out
