"""The system event log: JSON lines, one file per KST day, under `<data_dir>/system/events/`.

Every component that changes state (WebSocket sessions, slots, mitigation, gaps, tokens, backups, retention)
records it here, so a day's story can be read back with pandas (`pd.read_json(path, lines=True)`). Events are
rare (seconds apart, not per tick), so each one is written with a single `write` + `fsync` on an O_APPEND file:
lines from several processes never interleave, and an event that returned is on disk. Secrets never go in:
`emit` refuses fields whose names say token/secret/appkey.

Gap markers follow observer-intent §8.2: a gap opens with a marker without an end and closes with a second
marker carrying the end and the duration; both share `gap_id`.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from observer_resources.calendar import KST

Severity = Literal["minor", "major", "critical"]
Scope = Literal["scalp", "swing", "all"]
REASONS = frozenset({
    "ws_disconnect", "ws_timeout", "api_error", "rate_limit", "no_data_received", "slot_manager_error",
    "system_error", "manual_stop",
})
_FORBIDDEN = ("token", "secret", "appkey", "app_key", "approval")


def events_dir(data_dir: Path) -> Path:
    return data_dir / "system" / "events"


def events_path(data_dir: Path, day) -> Path:  # noqa: ANN001 - date
    return events_dir(data_dir) / f"{day.strftime('%Y%m%d')}.jsonl"


def append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    """One line, one write on an O_APPEND file, fsynced: never interleaved, on disk when this returns."""
    line = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
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
        self.data_dir = Path(data_dir)
        self.source = source
        self._lock = threading.Lock()

    def emit(self, event_type: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
        for k in fields:
            if any(bad in k.lower() for bad in _FORBIDDEN):
                raise ValueError(f"event field {k!r} looks like a secret; events never carry secrets")
        now = (at or datetime.now(KST)).astimezone(KST)
        rec = {"event_type": event_type, "timestamp": now.isoformat(), "source": self.source}
        rec.update({k: _iso(v) for k, v in fields.items()})
        with self._lock:
            append_jsonl(events_path(self.data_dir, now.date()), rec)
        return rec

    def gap_open(self, *, scope: Scope, reason: str, severity: Severity, start: datetime, session_id: str,
                 symbol: str | None = None, **metadata: Any) -> str:
        if reason not in REASONS:
            raise ValueError(f"unknown gap reason {reason!r}")
        gap_id = uuid.uuid4().hex[:16]
        self.emit("gap_marker", gap_id=gap_id, state="open", symbol=symbol, gap_start_ts=start, gap_end_ts=None,
                  gap_seconds=None, scope=scope, reason=reason, severity=severity, session_id=session_id,
                  metadata={k: _iso(v) for k, v in metadata.items()})
        return gap_id

    def gap_close(self, gap_id: str, *, scope: Scope, reason: str, severity: Severity, start: datetime,
                  end: datetime, session_id: str, symbol: str | None = None, **metadata: Any) -> None:
        self.emit("gap_marker", gap_id=gap_id, state="closed", symbol=symbol, gap_start_ts=start, gap_end_ts=end,
                  gap_seconds=round((end - start).total_seconds(), 3), scope=scope, reason=reason, severity=severity,
                  session_id=session_id, metadata={k: _iso(v) for k, v in metadata.items()})


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


def read_events(data_dir: Path | str, day) -> Iterator[dict[str, Any]]:  # noqa: ANN001 - date
    path = events_path(Path(data_dir), day)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break  # a torn last line (a writer died mid-write): ignored here, never half-parsed
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON event ({e})") from e


def gaps(data_dir: Path | str, day) -> list[Gap]:  # noqa: ANN001 - date
    """The day's gaps with open/close merged; a gap without a close marker is still open (end None)."""
    by_id: dict[str, Gap] = {}
    for e in read_events(data_dir, day):
        if e.get("event_type") != "gap_marker":
            continue
        g = Gap(e["gap_id"], e["scope"], e["reason"], e["severity"], e.get("symbol"),
                datetime.fromisoformat(e["gap_start_ts"]),
                datetime.fromisoformat(e["gap_end_ts"]) if e.get("gap_end_ts") else None, e.get("metadata") or {})
        prev = by_id.get(g.gap_id)
        if prev is None or prev.end is None:  # a later marker (a close, or a re-marked severity) supersedes an open one
            by_id[g.gap_id] = g
    return sorted(by_id.values(), key=lambda g: g.start)
