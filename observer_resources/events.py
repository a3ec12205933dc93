"""The system event log: JSON lines, one file per KST day and host, under `<data_dir>/system/events/`.

Every component that changes state (WebSocket sessions, slots, mitigation, gaps, tokens, backups, retention)
records it here, so a day's story can be read back. Events are rare (seconds apart, not per tick), so each one is
written with a single `write` + `fsync` on an O_APPEND file: an event that returned is on disk. Secrets never go
in: `emit` refuses fields whose names say token/secret/appkey.

Files are ``YYYYMMDD.<host>.jsonl``: O_APPEND is atomic only among the processes of one kernel, and on a directory
shared by several hosts (NFS) their appends to one file can tear each other's lines. ``<host>`` is
``OBSERVER_HOST_ID`` if set, else ``socket.gethostname()``, made filesystem-safe. Files written before this
(``YYYYMMDD.jsonl``) are still read. Names start with the day, which the backup uses to date them.

Reading (:func:`load_day`, and :func:`read_events` / :func:`gaps` on top of it) merges a day's files in
timestamp order and never raises on content: a line that is not a JSON event, or a torn last line (a writer
died mid-write), is skipped and counted per file in :class:`DayEvents`, so one bad line never hides the day.
:func:`parse_line` is that line policy on its own, for a reader that follows a file as it grows (the exporter).

Gap markers follow docs/collector-rules.md §8.2: a gap opens with a marker without an end and closes with a second
marker carrying the end and the duration; both share `gap_id`. :func:`merge_gaps` is the one place they are merged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from observer_resources import clock, settings
from observer_resources.calendar import KST
from observer_resources.storage import dirs

Severity = Literal["minor", "major", "critical"]
Scope = Literal["scalp", "swing", "all"]
REASONS = frozenset(
    {
        "ws_disconnect",
        "ws_timeout",
        "api_error",
        "rate_limit",
        "no_data_received",
        "slot_manager_error",
        "system_error",
        "manual_stop",
    }
)
_FORBIDDEN = ("token", "secret", "appkey", "app_key", "approval")


HOST_ID_ENV = "OBSERVER_HOST_ID"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
log = logging.getLogger("observer.events")


def host_id(environ: Mapping[str, str] | None = None) -> str:
    """This host's part of event file names: ``OBSERVER_HOST_ID`` or the host name, reduced to ``[A-Za-z0-9_-]``
    (dots too: the name's fields are dot-separated)."""
    env = os.environ if environ is None else environ
    raw = settings.get(HOST_ID_ENV, env) or socket.gethostname()
    return _UNSAFE.sub("-", raw).strip("-")[:64] or "host"


def events_dir(data_dir: Path) -> Path:
    return data_dir / "system" / "events"


def events_path(data_dir: Path, day: date, host: str | None = None) -> Path:
    """The file this host (or ``host``) appends the day's events to."""
    return events_dir(data_dir) / f"{day.strftime('%Y%m%d')}.{host or host_id()}.jsonl"


def legacy_events_path(data_dir: Path, day: date) -> Path:
    """The single per-day file of earlier versions, still read."""
    return events_dir(data_dir) / f"{day.strftime('%Y%m%d')}.jsonl"


def events_files(data_dir: Path, day: date) -> list[Path]:
    """Every existing file of the day: the legacy one first, then one per host, by name."""
    d, ymd = events_dir(Path(data_dir)), day.strftime("%Y%m%d")
    legacy = legacy_events_path(Path(data_dir), day)
    hosts = sorted(p for p in d.glob(f"{ymd}.*.jsonl") if p.is_file())
    return ([legacy] if legacy.is_file() else []) + hosts


def append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    """One line, one write on an O_APPEND file, fsynced: never interleaved among this host's processes, on disk
    when this returns. A file left ending mid-line (a writer died) gets that line ended first, so the fragment
    stays one bad line and this event a good one."""
    line = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # racing a live writer at worst adds an empty line, which readers skip
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(KST).isoformat()
    return v


class EventLog:
    def __init__(self, data_dir: Path | str, *, source: str = "observer"):
        from observer_resources.secrets import secret_values  # noqa: PLC0415

        self.data_dir = Path(data_dir)
        self.source = source
        self._lock = threading.Lock()
        # the process's secrets, looked up once: every string an event carries is scrubbed of them
        self._secrets = secret_values(os.environ)

    def emit(self, event_type: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event. Secret-named fields are refused; a secret value inside any string (an error message
        quoting a URL, say) is masked as ``***``, in nested dicts and lists too."""
        from observer_resources.secrets import scrub  # noqa: PLC0415

        for k in fields:
            if any(bad in k.lower() for bad in _FORBIDDEN):
                raise ValueError(f"event field {k!r} looks like a secret; events never carry secrets")

        def clean(v: Any) -> Any:
            if isinstance(v, str):
                return scrub(v, values=self._secrets)
            if isinstance(v, Mapping):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if v is None or isinstance(v, (bool, int, float)):
                return v
            return scrub(str(v), values=self._secrets)  # what json's default=str would have written

        now = (at or clock.now()).astimezone(KST)
        rec = {"event_type": event_type, "timestamp": now.isoformat(), "source": self.source}
        rec.update({k: clean(_iso(v)) for k, v in fields.items()})
        with self._lock:
            append_jsonl(events_path(self.data_dir, now.date()), rec)
        return rec

    def gap_open(
        self,
        *,
        scope: Scope,
        reason: str,
        severity: Severity,
        start: datetime,
        session_id: str,
        symbol: str | None = None,
        **metadata: Any,
    ) -> str:
        if reason not in REASONS:
            raise ValueError(f"unknown gap reason {reason!r}")
        gap_id = uuid.uuid4().hex[:16]
        self.emit(
            "gap_marker",
            gap_id=gap_id,
            state="open",
            symbol=symbol,
            gap_start_ts=start,
            gap_end_ts=None,
            gap_seconds=None,
            scope=scope,
            reason=reason,
            severity=severity,
            session_id=session_id,
            metadata={k: _iso(v) for k, v in metadata.items()},
        )
        return gap_id

    def gap_close(
        self,
        gap_id: str,
        *,
        scope: Scope,
        reason: str,
        severity: Severity,
        start: datetime,
        end: datetime,
        session_id: str,
        symbol: str | None = None,
        **metadata: Any,
    ) -> None:
        self.emit(
            "gap_marker",
            gap_id=gap_id,
            state="closed",
            symbol=symbol,
            gap_start_ts=start,
            gap_end_ts=end,
            gap_seconds=round((end - start).total_seconds(), 3),
            scope=scope,
            reason=reason,
            severity=severity,
            session_id=session_id,
            metadata={k: _iso(v) for k, v in metadata.items()},
        )


def record(event_type: str, *, source: str, logger: Any = None, data_dir: Path | None = None, **fields: Any) -> bool:
    """Emit one event for an asset; a failure to write it is logged as an error, never raised (it must not
    replace the error the asset is about to raise, nor fail a good materialization). ``data_dir`` defaults to the
    host's local directory (``dirs.local_dir``)."""
    try:
        EventLog(data_dir or dirs.local_dir(), source=source).emit(event_type, **fields)
        return True
    except Exception as exc:  # noqa: BLE001 - reported, see docstring
        (logger or log).error(f"could not record the {event_type} system event: {type(exc).__name__}: {exc}")
        return False


@dataclass(frozen=True)
class Gap:
    gap_id: str
    scope: str
    reason: str
    severity: str
    symbol: str | None
    start: datetime
    end: datetime | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class DayEvents:
    """One day's events from every file of the day: the good records, merged in timestamp order (stable; records
    without a readable timestamp last), and what could not be read, per file name — never silently dropped.

    A bad line is one that is not JSON, not an object, or has no ``event_type``; a line holding a torn fragment
    followed by a whole event (an older writer appended after a crashed one) is a bad line whose event is kept.
    A torn line is a file's last line without its newline (a writer died mid-write, or is writing now)."""

    day: date
    directory: Path
    files: tuple[Path, ...] = ()
    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: dict[str, list[int]] = field(default_factory=dict)  # file name -> 1-based line numbers (0: unreadable)
    torn_lines: dict[str, int] = field(default_factory=dict)  # file name -> 1 when its last line is torn

    @property
    def exists(self) -> bool:
        return bool(self.files)

    @property
    def bad_count(self) -> int:
        return sum(len(v) for v in self.bad_lines.values())

    @property
    def torn_count(self) -> int:
        return sum(self.torn_lines.values())

    def problems(self, limit: int | None = None) -> list[str]:
        """``file:line`` of every unreadable line (``file:end`` for a torn last line), at most ``limit``."""
        out = [f"{name}:{n}" for name, ns in self.bad_lines.items() for n in ns]
        out += [f"{name}:end (torn)" for name, n in self.torn_lines.items() if n]
        return out[:limit] if limit is not None else out


_EVENT_START = b'{"event_type"'  # how every emitted line begins (emit puts event_type first)


def _event(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except ValueError:  # not UTF-8, not JSON
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("event_type"), str) else None


def _salvage(raw: bytes) -> dict[str, Any] | None:
    """The whole event after a torn fragment on the same line, if there is one."""
    i = raw.find(_EVENT_START, 1)
    while i > 0:
        rec = _event(raw[i:])
        if rec is not None:
            return rec
        i = raw.find(_EVENT_START, i + 1)
    return None


def _order(rec: Mapping[str, Any]) -> tuple[int, float]:
    try:
        t = datetime.fromisoformat(str(rec.get("timestamp")))
    except ValueError:
        return (1, 0.0)
    return (0, (t if t.tzinfo else t.replace(tzinfo=KST)).timestamp())


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, bool]:
    """One complete line of an events file (without its newline): ``(event or None, is_bad)``.

    The one line policy of every reader (the day reader here, the exporter's incremental tail): an empty line is
    neither; a line that is not a JSON event is bad, and still yields the whole event glued after a torn fragment
    (see :class:`DayEvents`)."""
    if not raw.strip():
        return None, False
    rec = _event(raw)
    if rec is not None:
        return rec, False
    return _salvage(raw), True


def read_file(path: Path) -> tuple[list[dict[str, Any]], list[int], int]:
    """One events file: (records in file order, 1-based numbers of bad lines, 1 if the last line is torn)."""
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else the torn remainder
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for n, raw in enumerate(lines, start=1):
        rec, is_bad = parse_line(raw)
        if is_bad:
            bad.append(n)
        if rec is not None:
            records.append(rec)
    return records, bad, 1 if tail.strip() else 0


def load_day(data_dir: Path | str, day: date) -> DayEvents:
    """Every file of the day read and merged (see :class:`DayEvents`). A file that vanishes meanwhile (retention)
    is skipped; one that cannot be read is logged and reported as one bad line, so the rest still counts."""
    directory = events_dir(Path(data_dir))
    files: list[Path] = []
    records: list[dict[str, Any]] = []
    bad: dict[str, list[int]] = {}
    torn: dict[str, int] = {}
    for path in events_files(Path(data_dir), day):
        try:
            recs, bad_n, torn_n = read_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("events file %s unreadable: %s", path, exc)
            files.append(path)
            bad[path.name] = [0]
            continue
        files.append(path)
        records += recs
        if bad_n:
            bad[path.name] = bad_n
            log.warning("events file %s: %d unreadable line(s) skipped (%s)", path, len(bad_n), bad_n[:20])
        if torn_n:
            torn[path.name] = torn_n
    records.sort(key=_order)
    return DayEvents(day, directory, tuple(files), records, bad, torn)


def read_events(data_dir: Path | str, day: date) -> Iterator[dict[str, Any]]:
    """The day's events of every host in timestamp order; unreadable lines skipped (see :func:`load_day`)."""
    yield from load_day(data_dir, day).records


@dataclass(frozen=True)
class MarkedGap:
    """One gap as the markers read tell it: the merged :class:`Gap`; whether its open marker was among them (False:
    it opened before them, e.g. the day before); the closing marker's ``gap_seconds`` as written (None while open).
    The day's summary counts these; the gap report needs only ``gap``."""

    gap: Gap
    opened: bool
    seconds: Any = None


def merge_gaps(events: Iterable[Mapping[str, Any]]) -> list[MarkedGap]:
    """The gap markers among ``events`` merged by ``gap_id``, in the order of each gap's first marker — the one
    merge rule of every reader: a later marker (a close, or an open one re-marking the severity) supersedes an open
    gap; once closed, later markers change nothing. A marker that lacks a field or has an unreadable time is
    logged and skipped."""
    by_id: dict[str, MarkedGap] = {}
    for e in events:
        if e.get("event_type") != "gap_marker":
            continue
        try:
            g = Gap(
                e["gap_id"],
                e["scope"],
                e["reason"],
                e["severity"],
                e.get("symbol"),
                datetime.fromisoformat(e["gap_start_ts"]),
                datetime.fromisoformat(e["gap_end_ts"]) if e.get("gap_end_ts") else None,
                e.get("metadata") or {},
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("gap marker skipped, %s: %s", f"{type(exc).__name__}: {exc}", str(dict(e))[:300])
            continue
        prev = by_id.get(g.gap_id)
        if prev is None or prev.gap.end is None:
            opened = (prev is not None and prev.opened) or g.end is None
            by_id[g.gap_id] = MarkedGap(g, opened, e.get("gap_seconds") if g.end is not None else None)
    return list(by_id.values())


def gaps_from(events: Iterable[Mapping[str, Any]]) -> list[Gap]:
    """Gaps with open/close merged (:func:`merge_gaps`), by start; a gap without a close marker is still open (end
    None)."""
    return sorted((m.gap for m in merge_gaps(events)), key=lambda g: g.start)


def gaps(data_dir: Path | str, day: date) -> list[Gap]:
    """The day's gaps (every host's markers, see :func:`gaps_from`)."""
    return gaps_from(read_events(data_dir, day))
