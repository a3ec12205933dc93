"""What a backup package's manifest holds (and a package's state: manifest plus marker), and what a manifest may say
before anything it names is read or placed.

A manifest is data from outside (anyone who can write to the bucket can write it): :func:`check_manifest` refuses
any entry whose path could land outside the target, in ``state/`` or ``system/capture/``, or whose fields have the
wrong type, and a restore validates the whole manifest before it places anything.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from observer_assets.backup.daysets import EXCLUDED_PREFIXES, EXCLUDED_TOP

FORMAT = "observer-backup/1"
FILES = "files"
VERSIONS = "versions"
CODECS = ("none", "zstd")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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
            "format": FORMAT,
            "day": self.day,
            "days": self.days,
            "created_at": self.created_at,
            "anomaly": self.anomaly,
            "anomaly_rules": self.anomaly_rules,
            "totals": {
                "files": len(newest),
                "versions": len(self.entries),
                "bytes": sum(e.size for e in newest.values()),
                "stored_bytes": sum(e.stored_size for e in self.entries),
                "rows": sum(e.rows or 0 for e in newest.values()),
                "carried_over": self.carried_over,
            },
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
        return cls(
            day=doc["day"],
            created_at=doc["created_at"],
            days=doc.get("days", []),
            entries=[Entry.from_json(e) for e in doc["files"]],
            anomaly=bool(doc.get("anomaly")),
            anomaly_rules=list(doc.get("anomaly_rules", [])),
            config=doc.get("config", {}),
            carried_over=int((doc.get("totals") or {}).get("carried_over", 0)),
        )

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
        return (
            self.manifest is not None
            and self.marker is not None
            and self.marker.get("manifest_sha256") == self.manifest_sha256
        )

    @property
    def manifest_unreadable(self) -> bool:
        return self.manifest_exists and self.manifest is None

    @property
    def empty(self) -> bool:
        """Nothing at all at the destination for this day (as opposed to something unreadable)."""
        return not self.manifest_exists and self.marker is None and self.error is None


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
