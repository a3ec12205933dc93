"""Restart recovery: a dead predecessor's torn journal tails are cut, and the hole it left becomes a gap."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from observer_assets.track_b.capture.logs import log_event
from observer_assets.track_b.capture.session import KeySession, OpenGap
from observer_assets.track_b.journal import Recovery, recover, restart_tail_bytes, segment_closed, segments
from observer_resources.calendar import KST
from observer_resources.events import EventLog, gaps
from observer_resources.storage.layout import journal_root


class CaptureError(RuntimeError):
    """The capture cannot run (e.g. another process holds a key's journal): exit 1."""


def recover_key(data_dir: Path, key_id: str, day: date) -> list[Recovery]:
    """Recover (cut torn tails of) every unclosed segment of ``day`` for ``key_id``, holding the key's journal
    lock so a live writer is never cut. Raises CaptureError when another process holds it."""
    root = journal_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f".lock-{key_id}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CaptureError(f"another process is recording key {key_id} (its journal is locked)") from None
        out = []
        for path in segments(data_dir, day, key_id=key_id):
            if segment_closed(path):
                continue
            out.append(recover(path, tail_bytes=restart_tail_bytes()))
        return out
    finally:
        os.close(fd)  # releases the lock; the Journal takes it again at once


def settle_restart_gaps(
    sessions: Mapping[str, KeySession],
    events: EventLog,
    *,
    data_dir: Path,
    day: date,
    started_at: datetime,
    run_id: str,
    prev_status: dict[str, Any] | None,
    recoveries: Mapping[str, list[Recovery]],
) -> None:
    """Record the hole a dead predecessor left (package doc, "restart"), and settle gaps it left open."""
    try:
        stale = [g for g in gaps(data_dir, day) if g.end is None]
    except ValueError as exc:
        log_event(logging.ERROR, "events_unreadable", error=str(exc)[:300])
        stale = []
    for key_id, s in sessions.items():
        recs = recoveries.get(key_id, [])
        mine = [g for g in stale if (g.metadata or {}).get("key_id") == key_id]
        if recs:
            start = max((r.last_rx for r in recs if r.last_rx is not None), default=None)
            basis = "last durable frame"
            if start is None and prev_status:
                st = (prev_status.get("keys") or {}).get(key_id) or {}
                cand = st.get("journal_durable_upto") or st.get("last_rx") or prev_status.get("updated_at")
                if cand:
                    start, basis = datetime.fromisoformat(cand), "previous status file"
            if start is None:
                start = datetime.fromtimestamp(max(r.path.stat().st_mtime for r in recs), KST)
                basis = "segment modification time"
            start = min(start, started_at)
            cut = sum(r.cut_bytes for r in recs)
            for g in mine:  # the dead process's open gap ends where the restart hole begins
                end = max(g.start, start)
                events.gap_close(
                    g.gap_id,
                    scope=g.scope,  # type: ignore[arg-type]
                    reason=g.reason,
                    severity=g.severity,  # type: ignore[arg-type]
                    start=g.start,
                    end=end,
                    session_id=str(g.metadata.get("run", "?")),
                    symbol=g.symbol,
                    **{**dict(g.metadata), "closed_by": "restart", "closed_by_run": run_id},
                )
            detail = [r.as_dict() for r in recs]
            s.open_gap(
                start,
                "system_error",
                "major",
                kind="restart",
                start_basis=basis,
                cut_bytes=cut,
                segments=[str(r.path) for r in recs],
                previous_pid=(prev_status or {}).get("pid"),
                previous_run=(prev_status or {}).get("run_id"),
            )
            events.emit(
                "capture_recovered",
                key_id=key_id,
                run_id=run_id,
                segments=detail,
                cut_bytes=cut,
                last_durable_rx=start,
                start_basis=basis,
                gap_id=s.gap.gap_id,
            )
            log_event(
                logging.WARNING,
                "capture_recovered",
                key_id=key_id,
                cut_bytes=cut,
                last_durable_rx=start,
                start_basis=basis,
                segments=len(recs),
                gap_id=s.gap.gap_id,
            )
        elif mine:  # a clean stop left its gap open (manual_stop): it ends when this session is registered
            g = mine[-1]
            s.adopt_gap(OpenGap(g.gap_id, g.start, g.reason, g.severity, run_id, dict(g.metadata)))
            for other in mine[:-1]:
                events.gap_close(
                    other.gap_id,
                    scope=other.scope,  # type: ignore[arg-type]
                    reason=other.reason,
                    severity=other.severity,
                    start=other.start,
                    end=max(other.start, g.start),
                    session_id=run_id,
                    symbol=other.symbol,
                    **{**dict(other.metadata), "closed_by": "restart"},
                )
            log_event(logging.INFO, "gap_adopted", key_id=key_id, gap_id=g.gap_id, reason=g.reason, start=g.start)
