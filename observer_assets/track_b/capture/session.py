"""One app key's WebSocket session: its client, its journal, its open gap and counters.

A session sees its capture only through :class:`SessionContext` (fixed at start) and :class:`SessionHost` (the
few live calls back), so what it may read or change in the capture is written down in one place.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from observer_assets.track_b import phase_check
from observer_assets.track_b.capture.logs import iso, log, log_event
from observer_assets.track_b.capture.settings import Settings
from observer_assets.track_b.journal import Journal, LatencyHistogram
from observer_assets.track_b.triggers import StreamTriggers
from observer_resources import clock
from observer_resources.events import EventLog
from observer_resources.kis.config import KisConfig
from observer_resources.kis.frames import STATUS_TRS, Encrypted, FeedFrame, Malformed, Message, TradeBatch
from observer_resources.kis.models import Trade
from observer_resources.kis.ws import KisWebSocketClient
from observer_resources.shared.tokens import SharedTokenProvider

_LOG_FIRST_BAD = 20


class SessionHost(Protocol):
    """What a session asks of its capture while it runs; the capture implements it."""

    @property
    def level(self) -> int:
        """The mitigation level in force, journaled with every frame."""

    def saw_exchange_time(self, at: datetime) -> None:
        """A trade's exchange time: the stream triggers' clock only moves forward."""

    def slots_reconnected(self, key_id: str, registered: Collection[str], at: datetime) -> None:
        """The key's new connection holds ``registered``: the slot manager starts its slots over."""

    def slot_refused(self, key_id: str, code: str, at: datetime) -> None:
        """KIS refused ``code`` on this key (no registration left)."""

    def schedule_apply(self, key_id: str) -> None:
        """Bring the key's registrations to the slot manager's desired set, in the background."""

    def anomaly(self, rule: str, values: Mapping[str, Any]) -> None:
        """Mark the day anomalous (a critical gap, the 5-minute rule)."""


@dataclass(frozen=True)
class SessionContext:
    """What every session of one capture shares, fixed for the capture's life."""

    run_id: str  # names the sessions and every gap they record
    settings: Settings  # reconnect backoff, the failure threshold
    events: EventLog  # events and gap markers
    triggers: StreamTriggers  # fed with every trade
    recording_from: datetime  # where a session failing from the start opens its gap
    t0: float  # monotonic start of the capture
    process_t0: float | None  # monotonic start of the process, when known
    host: SessionHost


def _interval_p99(hist: LatencyHistogram, prev: np.ndarray | None) -> tuple[float | None, np.ndarray]:
    """p99 (seconds) of the latencies added since ``prev`` (a copy of the bucket counts)."""
    counts = hist.counts.copy()
    d = counts - prev if prev is not None else counts
    n = int(d.sum())
    if n <= 0:
        return None, counts
    rank = max(1, math.ceil(0.99 * n))
    i = int(np.searchsorted(np.cumsum(d), rank))
    edge = float(hist.EDGES[i]) if i < len(hist.EDGES) else hist.max
    return min(edge, hist.max), counts


@dataclass
class OpenGap:
    gap_id: str
    start: datetime
    reason: str
    severity: str
    session_id: str
    metadata: dict[str, Any]
    escalated: bool = False


class KeySession:
    """One app key: its WebSocket client, its journal, its open gap and counters."""

    def __init__(self, ctx: SessionContext, config: KisConfig, tokens: SharedTokenProvider, journal: Journal) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.host = ctx.host
        self.events = ctx.events
        self.config = config
        self.key_id = config.key_id
        self.tokens = tokens
        self.journal = journal
        self.client = KisWebSocketClient(
            config,
            tokens,
            on_trades=self._on_trades,
            on_event=self._on_event,
            on_frame=self._on_frame,
            on_feed=self._on_feed,
            tr_ids=s.feeds.per_code,
            backoff=s.backoff,
            key_in_use_backoff=s.key_in_use_backoff,
        )
        self.task: asyncio.Task | None = None
        self.apply_lock = asyncio.Lock()
        self.frames = 0
        self.ticks = 0
        self.bad_frames = 0
        self.rejected_records = 0
        self.not_recorded = 0  # frames the journal refused (only after close): counted, logged
        self.bad_trades = 0
        self.last_rx: datetime | None = None
        self.first_frame_at: datetime | None = None
        self._conn = 0
        self.conn_first_frame: datetime | None = None
        self.gap: OpenGap | None = None
        self.gap_seconds = 0.0  # closed ws outages of this process (disconnect / never connected)
        self.ever_connected = False
        self.connect_failures = 0
        self.last_error: str | None = None
        self.lag_max = 0.0
        self.lat_counts: np.ndarray | None = None
        self.feed_records: dict[str, int] = {}  # per TR: records of the feeds besides the tape
        self.phases: dict[str, str] = {}  # venue -> the phase code its status feed last said
        self.disagreements = 0

    @property
    def session_id(self) -> str:
        return f"{self.ctx.run_id}/{self.client.connection_id}"

    # --- frames (socket reader: keep it quick) ----------------------------------------------------

    def _on_frame(self, raw: bytes, rx: datetime, msg: Message) -> None:
        conn = self.client.connection_id
        meta: dict[str, Any] = {}
        kind = type(msg)
        if kind is Malformed:
            meta["bad"] = msg.reason  # type: ignore[union-attr]
        elif kind is Encrypted:
            meta["bad"] = "encrypted"
        elif kind is TradeBatch and msg.rejected:  # type: ignore[union-attr]
            meta["rej"] = len(msg.rejected)  # type: ignore[union-attr]
        try:
            self.journal.append(rx, raw, conn=conn, mitigation_level=self.host.level, **meta)
        except Exception as exc:
            self.not_recorded += 1
            if self.not_recorded <= _LOG_FIRST_BAD or self.not_recorded % 1000 == 0:
                log_event(
                    logging.CRITICAL,
                    "frame_not_recorded",
                    key_id=self.key_id,
                    count=self.not_recorded,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
        self.frames += 1
        self.last_rx = rx
        if conn != self._conn:
            self._conn = conn
            self.conn_first_frame = rx
        if self.first_frame_at is None:
            self.first_frame_at = rx
            mono, p0 = time.monotonic(), self.ctx.process_t0
            log_event(
                logging.INFO,
                "first_frame",
                key_id=self.key_id,
                rx=rx,
                since_start_s=round(mono - self.ctx.t0, 3),
                since_process_start_s=round(mono - p0, 3) if p0 is not None else None,
            )
        if meta:
            if "bad" in meta:
                self.bad_frames += 1
                n = self.bad_frames
                if n <= _LOG_FIRST_BAD or n % 1000 == 0:
                    log_event(
                        logging.WARNING,
                        "malformed_frame",
                        key_id=self.key_id,
                        count=n,
                        reason=meta["bad"],
                        excerpt=getattr(msg, "raw_excerpt", "")[:200],
                        conn=conn,
                    )
            else:
                self.rejected_records += meta["rej"]

    async def _on_trades(self, records: list[Trade], recv_mono: float, recv_dt: datetime) -> None:
        lag = time.monotonic() - recv_mono
        if lag > self.lag_max:
            self.lag_max = lag
        self.ticks += len(records)
        trig = self.ctx.triggers
        latest: datetime | None = None
        for t in records:
            try:
                trig.observe(t.code, t.exchange_dt, t.price, t.qty, t.acml_vol)
            except ValueError as exc:
                self.bad_trades += 1
                if self.bad_trades <= _LOG_FIRST_BAD:
                    log_event(
                        logging.WARNING,
                        "trade_not_usable_for_triggers",
                        key_id=self.key_id,
                        code=t.code,
                        error=str(exc)[:200],
                    )
            if latest is None or t.exchange_dt > latest:
                latest = t.exchange_dt
        if latest is not None:
            self.host.saw_exchange_time(latest)

    async def _on_feed(self, msg: FeedFrame | TradeBatch, recv_mono: float, recv_dt: datetime) -> None:
        """The feeds besides the tape (journaled already): counted; market status checked against the phase table."""
        self.feed_records[msg.tr_id] = self.feed_records.get(msg.tr_id, 0) + len(msg.records)
        if msg.tr_id not in STATUS_TRS:
            return
        for rec in msg.records:
            self._status(phase_check.reading(msg.tr_id, rec), recv_dt)  # type: ignore[arg-type]

    def _status(self, r: phase_check.StatusReading, at: datetime) -> None:
        verdict = phase_check.check(self.ctx.settings.calendar, r, at)
        fields = {
            "key_id": self.key_id,
            "venue": r.venue,
            "tr_id": r.tr_id,
            "phase_code": r.phase_code,
            "halted": r.halted,
            "table_phases": list(verdict.expected_phases),
        }
        if self.phases.get(r.venue) != r.phase_code:
            self.phases[r.venue] = r.phase_code
            self.events.emit("phase_change", at=at, agrees=verdict.agrees, **fields)
        if not verdict.agrees:
            self.disagreements += 1
            note = verdict.note or "the exchange's phase is not the table's"
            self.events.emit("calendar_disagreement", at=at, note=note, table_codes=list(verdict.expected), **fields)
            if self.disagreements <= _LOG_FIRST_BAD or self.disagreements % 1000 == 0:
                log_event(logging.WARNING, "calendar_disagreement", count=self.disagreements, note=note, **fields)

    # --- client events (event loop) ---------------------------------------------------------------

    def _on_event(self, ev: dict[str, Any]) -> None:
        name = ev.get("event")
        try:
            if name == "ws_connected":
                self._connected(ev)
            elif name == "ws_disconnect":
                self._disconnected(ev)
            elif name == "ws_connect_failed":
                self._connect_failed(ev)
            elif name == "ws_max_over":
                self.host.slot_refused(self.key_id, ev["code"], clock.now())
                self.events.emit("ws_max_over", key_id=self.key_id, code=ev["code"], registered=ev.get("registered"))
                self.host.schedule_apply(self.key_id)
            elif name == "ws_registered":  # when a code's frames start: a held minute is judged from then
                self.events.emit("ws_registered", key_id=self.key_id, code=ev["code"], tr_id=ev["tr_id"])
            elif name == "ws_stopped":
                log_event(logging.INFO, "ws_stopped", key_id=self.key_id)
            elif name in ("ws_bad_frame", "ws_rejected_record"):
                pass  # counted and logged from on_frame
            else:
                log_event(logging.INFO, str(name), key_id=self.key_id, **{k: v for k, v in ev.items() if k != "event"})
        except Exception:  # a bookkeeping bug must not break the client's loop; it is logged loudly
            log.exception("capture: handling %s of %s failed", name, self.key_id)

    def _connected(self, ev: dict[str, Any]) -> None:
        at = datetime.fromisoformat(ev["at"])
        self.ever_connected = True
        self.host.slots_reconnected(self.key_id, self.client.registered, at)
        fields = {
            "key_id": self.key_id,
            "session_id": self.session_id,
            "reconnect": ev.get("reconnect"),
            "outage_seconds": ev.get("outage_seconds"),
            "registered": ev.get("registered"),  # codes (the gap report's held replay compares these)
            "desired": ev.get("desired"),
            "registrations": ev.get("registrations"),  # (TR, code) pairs, status anchors included
            "reconnects": self.client.stats.reconnects,
        }
        self.events.emit("ws_connected", **fields)
        log_event(logging.INFO, "ws_connected", **fields)
        if self.gap is not None:
            first = self.conn_first_frame if self._conn == self.client.connection_id else None
            self.close_gap(
                at,
                first_frame_at=first,
                resubscribed_at=at,
                registered=ev.get("registered"),
                reconnect_attempts=self.connect_failures,
            )
        self.connect_failures = 0
        self.host.schedule_apply(self.key_id)

    def _disconnected(self, ev: dict[str, Any]) -> None:
        at = datetime.fromisoformat(ev["at"])
        last = datetime.fromisoformat(ev["last_rx_at"]) if ev.get("last_rx_at") else None
        self.last_error = ev.get("reason")
        fields = {
            "key_id": self.key_id,
            "reason": ev.get("reason"),
            "attempt": ev.get("attempt"),
            "retry_in_seconds": ev.get("retry_in_seconds"),
            "last_rx_at": iso(last),
            "session_id": self.session_id,
        }
        if self.gap is None:
            self.open_gap(
                last or at,
                "ws_disconnect",
                "major",
                kind="disconnect",
                detected_at=at,
                last_rx_at=last,
                ws_reason=ev.get("reason"),
            )
        fields["gap_id"] = self.gap.gap_id if self.gap else None
        self.events.emit("ws_disconnect", **fields)
        log_event(logging.WARNING, "ws_disconnect", **fields)

    def _connect_failed(self, ev: dict[str, Any]) -> None:
        self.connect_failures += 1
        self.last_error = ev.get("reason")
        if self.gap is None:  # failing from the start: nothing has been recorded since the process began
            self.open_gap(
                self.ctx.recording_from,
                "ws_disconnect",
                "major",
                kind="never_connected",
                detected_at=datetime.fromisoformat(ev["at"]),
                ws_reason=ev.get("reason"),
            )
        fields = {
            "key_id": self.key_id,
            "reason": ev.get("reason"),
            "attempt": ev.get("attempt"),
            "retry_in_seconds": ev.get("retry_in_seconds"),
            "gap_id": self.gap.gap_id if self.gap else None,
        }
        self.events.emit("ws_connect_failed", **fields)
        log_event(logging.WARNING, "ws_connect_failed", **fields)

    # --- gaps --------------------------------------------------------------------------------------

    def open_gap(self, start: datetime, reason: str, severity: str, **metadata: Any) -> OpenGap:
        meta = {"key_id": self.key_id, "provider": "kis", "market": "krx", "run": self.ctx.run_id, **metadata}
        meta = {k: iso(v) if isinstance(v, datetime) else v for k, v in meta.items()}
        gid = self.events.gap_open(
            scope="scalp",
            reason=reason,
            severity=severity,  # type: ignore[arg-type]
            start=start,
            session_id=self.session_id,
            symbol=None,
            **meta,
        )
        self.gap = OpenGap(gid, start, reason, severity, self.session_id, meta)
        log_event(
            logging.WARNING,
            "gap_open",
            key_id=self.key_id,
            gap_id=gid,
            reason=reason,
            severity=severity,
            start=start,
            kind=meta.get("kind"),
        )
        return self.gap

    def close_gap(self, end: datetime, **metadata: Any) -> None:
        g = self.gap
        if g is None:
            return
        self.gap = None
        end = max(end, g.start)
        secs = (end - g.start).total_seconds()
        severity = "critical" if (g.escalated or secs > self.ctx.settings.failure_after) else g.severity
        meta = {**g.metadata, **{k: iso(v) if isinstance(v, datetime) else v for k, v in metadata.items()}}
        self.events.gap_close(
            g.gap_id,
            scope="scalp",
            reason=g.reason,
            severity=severity,  # type: ignore[arg-type]
            start=g.start,
            end=end,
            session_id=g.session_id,
            symbol=None,
            **meta,
        )
        if g.reason == "ws_disconnect":
            self.gap_seconds += secs
        log_event(
            logging.WARNING if severity != "critical" else logging.ERROR,
            "gap_close",
            key_id=self.key_id,
            gap_id=g.gap_id,
            reason=g.reason,
            severity=severity,
            start=g.start,
            end=end,
            seconds=round(secs, 3),
        )
        if severity == "critical":
            self.host.anomaly(
                "critical_gap",
                {
                    "key_id": self.key_id,
                    "gap_id": g.gap_id,
                    "reason": g.reason,
                    "gap_start": iso(g.start),
                    "gap_end": iso(end),
                    "gap_seconds": round(secs, 3),
                    "threshold_seconds": self.ctx.settings.failure_after,
                },
            )

    def adopt_gap(self, g: OpenGap) -> None:
        self.gap = g

    def check_failure_rule(self, now: datetime) -> None:
        """The 5-minute rule (docs/collector-rules.md §5): continuous failure -> critical, anomaly day."""
        g = self.gap
        if g is None or g.escalated or self.client.connected:
            return
        secs = (now - g.start).total_seconds()
        if secs < self.ctx.settings.failure_after:
            return
        g.escalated = True
        failure_after = self.ctx.settings.failure_after
        values = {
            "key_id": self.key_id,
            "failing_since": iso(g.start),
            "failing_seconds": round(secs, 3),
            "threshold_seconds": failure_after,
            "connect_failures": self.connect_failures,
            "last_error": self.last_error,
            "gap_id": g.gap_id,
        }
        self.events.emit(
            "gap_marker",
            gap_id=g.gap_id,
            state="open",
            symbol=None,
            gap_start_ts=g.start,
            gap_end_ts=None,
            gap_seconds=None,
            scope="scalp",
            reason=g.reason,
            severity="critical",
            session_id=g.session_id,
            metadata={**g.metadata, "escalated_at": iso(now), "escalation": "5-minute failure rule"},
        )
        self.host.anomaly("ws_failure_5min", values)  # on disk before the event that announces it
        self.events.emit("ws_failure_critical", rule="ws_failure_5min", severity="critical", **values)
        log_event(logging.CRITICAL, "ws_failure_critical", **values)

    def take_load(self) -> tuple[float | None, float | None, float]:
        """Since the last call: the journal's p99 commit latency, its 60 s mean write latency, the worst queue lag
        (seconds; None when nothing was written)."""
        p99, self.lat_counts = _interval_p99(self.journal.commit_latency, self.lat_counts)
        lag, self.lag_max = self.lag_max, 0.0
        return p99, self.journal.write_latency_mean_60s, lag

    def summary(self, now: datetime) -> dict[str, Any]:
        """The session's totals for the ``capture_stopped`` event."""
        return {
            "frames": self.frames,
            "ticks": self.ticks,
            "feed_records": dict(self.feed_records),
            "calendar_disagreements": self.disagreements,
            "bad_frames": self.bad_frames,
            "frames_not_recorded": self.not_recorded,
            "reconnects": self.client.stats.reconnects,
            "disconnected_seconds": self.outage_seconds(now),
            "journal_lines": self.journal.lines,
            "journal_durable_seq": self.journal.durable_seq,
        }

    def outage_seconds(self, now: datetime) -> float:
        cur = (now - self.gap.start).total_seconds() if self.gap and self.gap.reason == "ws_disconnect" else 0.0
        return round(self.gap_seconds + max(cur, 0.0), 3)

    def status(self, now: datetime) -> dict[str, Any]:
        j = self.journal
        c = self.client
        return {
            "connected": c.connected,
            "connection_id": c.connection_id,
            "registered": sorted(c.registered),
            "desired": list(c.desired),
            "registrations": len(c.registrations),
            "feed_records": dict(self.feed_records),
            "phases": dict(self.phases),
            "calendar_disagreements": self.disagreements,
            "last_rx": iso(self.last_rx),
            "first_frame_at": iso(self.first_frame_at),
            "frames": self.frames,
            "ticks": self.ticks,
            "bad_frames": self.bad_frames,
            "rejected_records": self.rejected_records,
            "frames_not_recorded": self.not_recorded,
            "reconnects": c.stats.reconnects,
            "disconnects": c.stats.disconnects,
            "connect_failures": c.stats.connect_failures,
            "disconnected_seconds": self.outage_seconds(now),
            "mitigation_level": self.host.level,
            "journal_durable_upto": iso(j.durable_upto),
            "journal_durable_seq": j.durable_seq,
            "journal_error": j.error,
            "journal_queue": j.queue_depth,
            "open_gap": (
                {
                    "gap_id": self.gap.gap_id,
                    "reason": self.gap.reason,
                    "start": iso(self.gap.start),
                    "severity": "critical" if self.gap.escalated else self.gap.severity,
                }
                if self.gap
                else None
            ),
        }
