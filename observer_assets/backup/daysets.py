"""Which local files belong to which day, and which calendar days one trading day's package carries.

A file belongs to a day by the lake's own naming, never by a list kept in sync by hand: a path part
``date=YYYY-MM-DD`` (every Parquet dataset, the raw archives, the gap report) or, under ``system/``, a file name that
starts with ``YYYYMMDD`` (events, overflow ledger, anomaly marker). A dataset added later is backed up and retained
without touching this module. Excluded on purpose: ``state/`` (the token cache: secrets), ``system/capture/`` (live
status, not a day's data), temp files of writers (``.*.tmp``) and the backup destination when it lies inside the
data directory.

With the lake on a URL (``OBSERVER_DATA_DIR=s3://…``) a day's files live in two places: the lake's datasets on the
object store and what needs appends on the local directory (``layout.LOCAL_ONLY``: the journal, ``system/``). A
:class:`Tree` names both; a path relative to the lake resolves to the one it lives in, so a package, a restore and
retention see one tree either way.

Events and other files dated on a non-trading day (a weekend restart, a retention run on Sunday) travel with the
*next* trading day's package, so every dated file has exactly one package and retention can reach it.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from observer_resources.calendar import CalendarRangeError
from observer_resources.calendar.market import MarketCalendar
from observer_resources.storage import lake, layout
from observer_resources.storage.lake import LakePath

EXCLUDED_TOP = ("state",)
EXCLUDED_PREFIXES = (("system", "capture"),)
# The universe and everything it was built from or set aside, kept ``universe_days`` rather than a day's usual
# span (docs/backup.md). Named by path prefix, not by first part alone: the master zips sit under ``raw/``, beside
# raw datasets that follow the ordinary rule, and a refused universe's note under ``_meta/``.
UNIVERSE_DATASETS = frozenset(
    {
        layout.UNIVERSE,
        layout.UNIVERSE_EXCLUSIONS,
        layout.UNIVERSE_PREV_CLOSE,
        layout.UNIVERSE_NXT,
        layout.UNIVERSE_RAW,
        layout.UNIVERSE_REJECTED,
        f"{layout.META}/{layout.UNIVERSE_REJECTED}",
        layout.UNIVERSE_INPUTS_OLD,  # a lake not yet migrated
    }
)
_UNIVERSE_PREFIXES = tuple(sorted(f"{d}/" for d in UNIVERSE_DATASETS))
_DATE_PART = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_DATE_NAME = re.compile(r"^(\d{8})")


@dataclass(frozen=True)
class LocalFile:
    rel: str  # posix path relative to the data directory
    day: date  # the calendar day the file is dated
    size: int
    mtime_ns: int

    @property
    def dataset(self) -> str:
        return self.rel.split("/", 1)[0]

    @property
    def is_universe(self) -> bool:
        return self.rel.startswith(_UNIVERSE_PREFIXES)


def file_day(parts: tuple[str, ...]) -> date | None:
    """The day a lake path (relative parts) is dated, or None for undated files."""
    for p in parts[:-1]:
        m = _DATE_PART.match(p)
        if m:
            try:
                return date.fromisoformat(m.group(1))
            except ValueError:
                return None
    if parts and parts[0] == "system":
        m = _DATE_NAME.match(parts[-1])
        if m:
            s = m.group(1)
            try:
                return date(int(s[:4]), int(s[4:6]), int(s[6:]))
            except ValueError:
                return None
    return None


def _excluded_dir(parts: tuple[str, ...]) -> bool:
    return parts[0] in EXCLUDED_TOP or any(parts[: len(p)] == p for p in EXCLUDED_PREFIXES)


def _excluded(parts: tuple[str, ...]) -> bool:
    name = parts[-1]
    return _excluded_dir(parts[:-1] or ("",)) or (name.startswith(".") and name.endswith(".tmp"))


@dataclass(frozen=True)
class Tree:
    """The lake as backup, restore and retention see it: its local directory and, when the lake is on a URL, the
    object store beside it. ``tree / rel`` is where the file ``rel`` lives."""

    local: Path
    remote: LakePath | None = None  # None: the lake is the local directory

    @property
    def lake(self) -> LakePath:
        """The lake's root (where the datasets are)."""
        return self.local if self.remote is None else self.remote

    def __truediv__(self, rel: str) -> LakePath:
        if self.remote is None or layout.on_local_dir(rel):
            return self.local / rel
        return self.remote / rel

    @classmethod
    def of(cls, root: Path | Tree) -> Tree:
        """A tree from a local directory (a local lake) or a tree."""
        return root if isinstance(root, Tree) else cls(Path(root))

    @classmethod
    def from_env(cls, local: Path | None = None) -> Tree:
        """The tree the environment names; ``local`` when the caller has already resolved the local directory."""
        data = lake.data_dir()
        return cls(local or lake.local_dir(), None if lake.is_local(data) else data)


def scan(root: Path | Tree, skip: Iterable[Path] = ()) -> list[LocalFile]:
    """Every dated file of the tree, sorted by path: one directory walk, and one listing of a URL lake."""
    tree = Tree.of(root)
    out = _walk(tree.local, skip)
    if tree.remote is not None:
        out = [f for f in out if layout.on_local_dir(f.rel)] + _list_remote(tree.remote)
    return sorted(out, key=lambda f: f.rel)


def _list_remote(root: LakePath) -> list[LocalFile]:
    """The dated objects of a lake on a URL (one recursive listing), with the store's size and modification time."""
    fs, base = root.fs, root.path.rstrip("/")
    fs.invalidate_cache(base)  # another process (a run, the capture) may have written since this one last listed
    if not fs.exists(base):
        return []
    out = []
    for path, info in fs.find(base, detail=True).items():
        parts = tuple(path[len(base) + 1 :].split("/"))
        if info.get("type") == "directory" or _excluded(parts) or layout.on_local_dir("/".join(parts)):
            continue
        d = file_day(parts)
        if d is not None:
            out.append(LocalFile("/".join(parts), d, int(info.get("size") or 0), _mtime_ns(info)))
    return out


def _mtime_ns(info: dict) -> int:
    """An object's change stamp for the quick check, in ns: its modification time (S3's LastModified, or the
    filesystem's own field). S3 gives whole seconds, so the sub-second part is taken from the ETag: a rewrite of the
    same size within the same second still reads as changed."""
    t = 0
    for key in ("LastModified", "mtime", "created", "last_modified"):
        v = info.get(key)
        if hasattr(v, "timestamp"):
            t = int(v.timestamp()) * 1_000_000_000
            break
        if isinstance(v, (int, float)):
            t = int(v * 1e9)
            break
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    return t + zlib.crc32(etag.encode()) % 1_000_000_000 if etag else t


def _walk(root: Path, skip: Iterable[Path] = ()) -> list[LocalFile]:
    root = Path(root)
    skip_abs = {Path(s).resolve() for s in skip}
    out: list[LocalFile] = []
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip_abs:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skip_abs]
        rel_dir = here.relative_to(root).parts
        if rel_dir and _excluded_dir(rel_dir):
            dirnames[:] = []
            continue
        for name in filenames:
            parts = rel_dir + (name,)
            if _excluded(parts):
                continue
            d = file_day(parts)
            if d is None:
                continue
            try:
                st = (here / name).stat()
            except FileNotFoundError:
                continue
            out.append(LocalFile("/".join(parts), d, st.st_size, st.st_mtime_ns))
    return out


def package_day(cal: MarketCalendar, d: date) -> date:
    """The trading day whose package carries files dated `d` (itself, or the next trading day)."""
    return d if cal.is_trading_day(d) else cal.next_trading_day(d)


def covered_days(cal: MarketCalendar, trading_day: date) -> list[date]:
    """The calendar days one trading day's package carries: the day itself and the non-trading days before it."""
    try:
        prev = cal.previous_trading_day(trading_day)
    except CalendarRangeError:  # the table's first day: nothing before it can be assigned
        return [trading_day]
    n = (trading_day - prev).days
    return [prev + timedelta(days=i) for i in range(1, n + 1)]


def by_package(cal: MarketCalendar, files: Iterable[LocalFile]) -> dict[date, list[LocalFile]]:
    """Files grouped by the trading day whose package carries them; files dated outside the calendar's table are
    left out (see :func:`outside_calendar`): one stray directory must not stop every other day's backup."""
    out: dict[date, list[LocalFile]] = defaultdict(list)
    for f in files:
        try:
            out[package_day(cal, f.day)].append(f)
        except CalendarRangeError:
            continue
    return dict(out)


def outside_calendar(cal: MarketCalendar, files: Iterable[LocalFile]) -> dict[date, list[LocalFile]]:
    """Files dated where the calendar has no table (``track_a/date=2017-05-05/``): no package can be assigned to
    them, so backup and retention skip them, say so with an event and an alert, and never delete them."""
    out: dict[date, list[LocalFile]] = defaultdict(list)
    for f in files:
        try:
            package_day(cal, f.day)
        except CalendarRangeError:
            out[f.day].append(f)
    return dict(out)
