"""The exporter's append-only JSON-lines files, followed as they grow: the system event log and the overflow ledger.

A scrape must not re-read a day's files from the start, so each file is followed from where the last scrape stopped
(:class:`Tail`) and its new lines folded into running figures. Only the following is here: what a line of the event
log is — a JSON event, or a bad line counted (and a whole event glued after a torn fragment still kept) — is
``observer_resources.events.parse_line``, the one line policy every reader of the log shares.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from observer_resources.events import parse_line
from observer_resources.metrics import safe_label

log = logging.getLogger("observer.metrics")

TAIL_CHUNK = 4 << 20  # bytes of an append-only file read per scrape at most: a huge file catches up over scrapes
#: overflow-ledger reasons that mean "no slot for it" (the others are duplicates or superseded offers)
NO_SLOT_REASONS = frozenset({"dwell", "all_slots_occupied", "lower_priority"})

#: one complete line (without its newline) -> (its record or None, whether the line counts as bad)
LineParser = Callable[[bytes], tuple[dict[str, Any] | None, bool]]


def json_object(raw: bytes) -> tuple[dict[str, Any] | None, bool]:
    """A line of a JSON-lines file other than the event log (the overflow ledger): any JSON object."""
    if not raw.strip():
        return None, False
    try:
        rec = json.loads(raw)
    except ValueError:
        return None, True
    return (rec, False) if isinstance(rec, dict) else (None, True)


class Tail:
    """An append-only JSONL file read from where the last scrape stopped: ``feed(state, record)`` folds each new
    complete line into ``state``. A replaced or truncated file starts over; a line ``parse`` calls bad is counted in
    ``bad`` (and logged), never fatal. The last line waits for its newline: its writer may be writing it now."""

    def __init__(
        self,
        path: Path,
        new_state: Callable[[], Any],
        feed: Callable[[Any, dict], None],
        parse: LineParser = parse_line,
    ):
        self.path, self._new, self._feed, self._parse = path, new_state, feed, parse
        self.ident: tuple[int, int] | None = None
        self.offset = 0
        self.bad = 0
        self.state = new_state()

    def _reset(self) -> None:
        self.ident, self.offset, self.bad, self.state = None, 0, 0, self._new()

    def read(self) -> Any:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reset()
            return self.state
        ident = (st.st_dev, st.st_ino)
        if ident != self.ident or st.st_size < self.offset:
            self._reset()
            self.ident = ident
        if st.st_size > self.offset:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(min(st.st_size - self.offset, TAIL_CHUNK))
            end = data.rfind(b"\n")
            if end < 0 and len(data) >= TAIL_CHUNK:  # one line longer than a chunk: skip it, counted
                end = len(data) - 1
                self.bad += 1
            if end >= 0:
                bad_before = self.bad
                for raw in data[:end].split(b"\n"):
                    rec, bad = self._parse(raw)
                    self.bad += bad
                    if rec is not None:
                        self._feed(self.state, rec)
                self.offset += end + 1
                if self.bad > bad_before:
                    log.warning("metrics: %d unreadable line(s) in %s skipped", self.bad - bad_before, self.path)
        return self.state


# --- the system event log ---------------------------------------------------------------------------------------


@dataclass
class EventFigures:
    """What the exporter needs from one day's system events (one file's, or a day's summed)."""

    tokens: Counter = field(default_factory=Counter)  # (key_id, result)
    rejections: Counter = field(default_factory=Counter)  # key_id
    triggers: Counter = field(default_factory=Counter)  # trigger
    deleted_files: int = 0
    deleted_bytes: int = 0
    retention: list[tuple[float, str, str]] = field(default_factory=list)  # (epoch, event_type, day)

    def add(self, other: EventFigures) -> None:
        self.tokens += other.tokens
        self.rejections += other.rejections
        self.triggers += other.triggers
        self.deleted_files += other.deleted_files
        self.deleted_bytes += other.deleted_bytes
        self.retention += other.retention


def epoch(ts: Any) -> float | None:
    """Unix time of an ISO timestamp with an offset; None for anything else."""
    try:
        t = datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo else None


def num(v: Any) -> float:
    """A finite number as float; 0 for anything else (bools included)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def feed_event(st: EventFigures, e: dict) -> None:
    t = e.get("event_type")
    key = safe_label(e.get("key_id") or "?")
    if t in ("token_issued", "token_refreshed"):
        if e.get("issued_by") == "this_process":  # asked of KIS; an adoption from the shared store is not
            st.tokens[(key, "issued" if t == "token_issued" else "refreshed")] += 1
    elif t == "token_issue_failed":
        st.tokens[(key, "failed")] += 1
    elif t == "rate_limit_rejected":
        st.rejections[key] += 1
    elif t == "slot_change":
        if e.get("action") in ("allocate", "replace") and e.get("trigger"):
            st.triggers[safe_label(e["trigger"])] += 1
    elif t in ("retention_deleted", "retention_kept", "retention_blocked"):
        if t == "retention_deleted":
            st.deleted_files += int(num(e.get("files")))
            st.deleted_bytes += int(num(e.get("bytes")))
        at = epoch(e.get("timestamp"))
        if at is not None:
            st.retention.append((at, t, str(e.get("day"))))


# --- the overflow ledger ----------------------------------------------------------------------------------------


@dataclass
class Ledger:
    triggers: Counter = field(default_factory=Counter)
    overflows: int = 0


def feed_ledger(st: Ledger, rec: dict) -> None:
    for r in rec.get("rejected") or []:
        if not isinstance(r, dict):
            continue
        st.triggers[safe_label(r.get("trigger_type") or "?")] += 1
        if r.get("reason") in NO_SLOT_REASONS:
            st.overflows += 1
