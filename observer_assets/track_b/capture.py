"""Track B capture process: one WebSocket session per app key, every frame archived, every hole recorded.

Run as ``python -m observer_assets.track_b.capture [--until ISO] [--pins A,B] [--status-interval 2]``; Dagster
starts it as a supervised child (restarting it if it dies), but it needs nothing from Dagster. One process holds
every configured key, so one :class:`SlotManager` gives the sessions disjoint slot sets by construction.

Order of work for a received frame, on the socket reader (``KisWebSocketClient.on_frame``): its raw bytes and
receive time go to the key's :class:`Journal` first (with the connection id, the mitigation level in force and,
for an unusable frame, a ``bad`` flag); only then are its trades handed on (stream triggers). A malformed frame is
kept, flagged, counted and logged; nothing in this path stops the reader.

Gap markers (scope ``scalp``, symbol null, ``metadata.key_id`` names the session):

* **disconnect** (``ws_disconnect``, major): opens at the **last frame received before the drop** — with a busy
  stream that is within one emit interval (~50 ms) of the drop, and it never starts after data stopped, whereas
  the detection time can trail the drop by the watchdog's 60 s on a half-open socket. It closes when the session
  is back **and the whole slot set is registered again** (the client's ``ws_connected``, sent after the
  re-subscription acks): from then on every slot is recording; a code re-registered late in the paced
  re-subscription loses ticks up to that point, so an earlier end (the first frame after reconnecting, kept as
  ``metadata.first_frame_at``) would leave real losses outside every gap. Longer than the failure threshold
  (300 s) -> closed as ``critical``.
* **5-minute rule**: after ``failure_after`` s of continuous failure the open gap is re-marked ``critical`` (a
  ``gap_marker`` with the same ``gap_id``), a ``ws_failure_critical`` event and the anomaly marker
  ``system/anomaly/YYYYMMDD.json`` are written; reconnecting goes on (backoff 1, 2, 5, 10, 20, 30, 60 s).
* **never connected**: a session that fails from the start opens the same gap from the process start.
* **restart** (``system_error``): at start every unclosed journal segment of today is recovered (a torn tail cut);
  an unclean end of the previous process opens a gap from its last durable frame to the new session's first
  registration of the slot set. Gaps the dead process left open are closed where that gap begins; a gap a clean
  stop left open (``manual_stop``) is closed when this session is registered.
* **SIGTERM inside the window** opens a ``manual_stop`` gap (the next start closes it).

Files: journals ``raw/track_b/date=D/key=K/HH.jsonl``; events ``system/events/YYYYMMDD.<host>.jsonl``; overflow ledger
``system/overflow/YYYYMMDD.jsonl``; anomaly ``system/anomaly/YYYYMMDD.json``; status
``system/capture/status.json`` (atomic, every ``--status-interval`` s). Logs: one JSON object per line on stderr.
Exit 0 at ``--until`` / the window's end / SIGTERM / a closed day, 2 on bad configuration, 1 on a failure.

Tuning knobs (defaults per the spec; tests shorten them): ``OBSERVER_TRACK_B_WINDOW``, ``OBSERVER_TRACK_B_PINS``,
``OBSERVER_TRACK_B_EVAL_S`` (30), ``OBSERVER_TRACK_B_SAMPLE_S`` (10), ``OBSERVER_TRACK_B_FAILURE_S`` (300),
``OBSERVER_TRACK_B_BACKOFF`` ("1,2,5,10,20,30,60"), ``OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S`` (5: KIS holds a key a
few seconds after a session ends, and a 30 s floor would break the "back within 30 s" promise after a crash),
``OBSERVER_TRACK_B_MITIGATION`` (JSON: ``hold_enter_s``, ``hold_recover_s``, partial ``enter1``/``enter2``/
``recover1``).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from observer_resources.storage import lake
from observer_assets.track_b import sysstat
from observer_assets.track_b.journal import restart_tail_bytes, Journal, JournalError, LatencyHistogram, Recovery, recover, segment_closed, segments
from observer_resources.storage.layout import journal_root
from observer_assets.track_b.mitigation import METRICS, Mitigation, Sample, Thresholds
from observer_assets.track_b.slots import Decision, SlotManager
from observer_assets.track_b.triggers import (
    Snapshot,
    StreamTriggers,
    TriggerConfig,
    bootstrap_candidates,
    snapshot_candidates,
    snapshot_from_rows,
)
from observer_assets.track_b.window import ENV_WINDOW, Window, parse_window, track_b_window
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.dates import parse_iso_datetime
from observer_resources.events import EventLog, append_jsonl, gaps
from observer_resources.kis.config import KisConfig, configs_from_env
from observer_resources.kis.errors import KisConfigError
from observer_resources.kis.frames import Encrypted, Malformed, Message, TradeBatch
from observer_resources.kis.models import Trade
from observer_resources.kis.ws import DEFAULT_BACKOFF, KisWebSocketClient
from observer_resources.shared.stores import open_token_provider
from observer_resources.shared.tokens import SharedTokenProvider
from observer_resources import clock
from observer_resources.storage.layout import anomaly_path, overflow_path, status_path
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS

log = logging.getLogger("observer.track_b.capture")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
SOURCE = "track_b.capture"
SNAPSHOT_HISTORY = 12  # Track A snapshots kept for the triggers (2 h at 10 min)
_LOG_FIRST_BAD = 20


class ConfigError(ValueError):
    """Bad configuration: exit 2 with the message."""


class CaptureError(RuntimeError):
    """The capture cannot run (e.g. another process holds a key's journal): exit 1."""


def _now() -> datetime:
    return clock.now()


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(KST).isoformat(timespec="milliseconds") if dt is not None else None


# --- logging: one JSON object per line on stderr ---------------------------------------------------


class JsonLineFormatter(logging.Formatter):
    """``{"at", "level", "event", ...fields}``; records from other loggers carry ``event`` = logger name and
    ``message``. Values that are not JSON become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, KST).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            for k, v in fields.items():  # the record's own at/level/event win; a clashing field is renamed
                out[f"{k}_" if k in ("at", "level", "event") else k] = v
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(stream=None, level: int = logging.INFO) -> logging.Handler:  # noqa: ANN001 - a text stream
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return handler


def log_event(level: int, event: str, **fields: Any) -> None:
    log.log(level, event, extra={"event": event, "fields": {k: _iso(v) if isinstance(v, datetime) else v
                                                             for k, v in fields.items()}})


# --- settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    data_dir: Path  # local: the journal, events, status (appends and fsync)
    calendar: MarketCalendar
    window: str
    pins: tuple[str, ...] = ()
    until: datetime | None = None
    status_interval: float = 2.0
    eval_interval: float = 30.0
    sample_interval: float = 10.0
    failure_after: float = 300.0
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    key_in_use_backoff: float = 5.0
    stop_timeout: float = 10.0
    mitigation_hold_enter: float = 300.0
    mitigation_hold_recover: float = 600.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    lake_dir: Any = None  # the lake (Track A snapshots), a Path or a URL's UPath; default: data_dir


def _codes(text: str, what: str) -> tuple[str, ...]:
    out = [c.strip() for c in (text or "").split(",") if c.strip()]
    bad = [c for c in out if not (len(c) <= 12 and c.isascii() and c.isalnum())]
    if bad:
        raise ConfigError(f"{what}: not symbol codes: {bad[:5]}")
    return tuple(dict.fromkeys(out))


def _positive(v: str | float, what: str, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ConfigError(f"{what} must be a positive number, got {v!r}")
    return f


def parse_until(text: str) -> datetime:
    try:
        dt = parse_iso_datetime(text.strip(), "--until")
    except ValueError:
        raise ConfigError(f"--until must be an ISO 8601 instant (e.g. 2026-03-10T15:00:00+09:00), "
                          f"got {text!r}") from None
    return dt.replace(tzinfo=KST) if dt.tzinfo is None else dt.astimezone(KST)


def _thresholds(spec: Mapping[str, Any]) -> Thresholds:
    base = Thresholds()
    parts = {}
    for name in ("enter1", "enter2", "recover1"):
        m = dict(getattr(base, name))
        over = spec.get(name) or {}
        if not isinstance(over, Mapping) or set(over) - set(METRICS):
            raise ConfigError(f"OBSERVER_TRACK_B_MITIGATION.{name} takes {METRICS}, got {over!r}")
        m.update({k: float(v) for k, v in over.items()})
        parts[name] = m
    return Thresholds(**parts)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m observer_assets.track_b.capture",
                                 description="Track B capture: one KIS WebSocket session per app key.")
    ap.add_argument("--until", help="stop at this instant (ISO 8601; no offset = KST); default: the window's end")
    ap.add_argument("--pins", help="comma-separated codes that always hold a slot (default OBSERVER_TRACK_B_PINS)")
    ap.add_argument("--status-interval", type=float, default=2.0, help="seconds between status file writes")
    ap.add_argument("--eval-interval", type=float, help="seconds between slot evaluations (default 30)")
    ap.add_argument("--sample-interval", type=float, help="seconds between load samples (default 10)")
    ap.add_argument("--failure-after", type=float, help="continuous failure before the critical rule (default 300)")
    return ap


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[Settings, list[KisConfig]]:
    """Parse the command line and environment; raises ConfigError (exit 2) with a clear message."""
    args = build_parser().parse_args(argv)
    try:
        configs = configs_from_env(environ)
        cal = calendar_from_env(dict(environ))
    except (KisConfigError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    window = (environ.get(ENV_WINDOW) or "09:30-15:00").strip()
    try:
        parse_window(window)
    except ValueError as exc:
        raise ConfigError(f"{ENV_WINDOW}: {exc}") from None
    pins = _codes(args.pins if args.pins is not None else environ.get("OBSERVER_TRACK_B_PINS", ""), "pins")
    if len(pins) > WS_MAX_REGISTRATIONS * len(configs):
        raise ConfigError(f"{len(pins)} pins but {len(configs)} key(s) x {WS_MAX_REGISTRATIONS} slots hold "
                          f"{WS_MAX_REGISTRATIONS * len(configs)}")
    until = parse_until(args.until) if args.until else None

    def num(flag: float | None, env: str, default: float, allow_zero: bool = False, opt: str = "") -> float:
        if flag is not None:
            return _positive(flag, opt or env, allow_zero)
        v = environ.get(env)
        return _positive(v, env, allow_zero) if v not in (None, "") else default

    backoff_text = environ.get("OBSERVER_TRACK_B_BACKOFF", "")
    backoff = (tuple(_positive(b, "OBSERVER_TRACK_B_BACKOFF") for b in backoff_text.split(",") if b.strip())
               if backoff_text.strip() else DEFAULT_BACKOFF)
    mit_text = environ.get("OBSERVER_TRACK_B_MITIGATION", "").strip()
    hold_enter, hold_recover, thresholds = 300.0, 600.0, Thresholds()
    if mit_text:
        try:
            spec = json.loads(mit_text)
        except ValueError:
            raise ConfigError(f"OBSERVER_TRACK_B_MITIGATION must be JSON, got {mit_text[:80]!r}") from None
        if not isinstance(spec, dict):
            raise ConfigError("OBSERVER_TRACK_B_MITIGATION must be a JSON object")
        hold_enter = _positive(spec.get("hold_enter_s", 300.0), "hold_enter_s", allow_zero=True)
        hold_recover = _positive(spec.get("hold_recover_s", 600.0), "hold_recover_s", allow_zero=True)
        thresholds = _thresholds(spec)
    settings = Settings(
        data_dir=lake.local_dir(dict(environ)),  # journal, events, status: appends and fsync
        lake_dir=lake.data_dir(dict(environ)),
        calendar=cal,
        window=window,
        pins=pins,
        until=until,
        status_interval=_positive(args.status_interval, "--status-interval"),
        eval_interval=num(args.eval_interval, "OBSERVER_TRACK_B_EVAL_S", 30.0, opt="--eval-interval"),
        sample_interval=num(args.sample_interval, "OBSERVER_TRACK_B_SAMPLE_S", 10.0, opt="--sample-interval"),
        failure_after=num(args.failure_after, "OBSERVER_TRACK_B_FAILURE_S", 300.0, opt="--failure-after"),
        backoff=backoff,
        key_in_use_backoff=num(None, "OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S", 5.0, allow_zero=True),
        mitigation_hold_enter=hold_enter,
        mitigation_hold_recover=hold_recover,
        thresholds=thresholds,
    )
    return settings, configs


# --- small files -----------------------------------------------------------------------------------


def write_anomaly(data_dir: Path, day: date, rule: str, values: Mapping[str, Any], at: datetime) -> Path:
    """Add ``rule`` (with its measured values) to the day's anomaly marker (docs/collector-rules.md §9), atomically.
    The marker keeps every rule that fired; an unreadable existing marker is kept aside, never lost."""
    path = anomaly_path(data_dir, day)
    doc: dict[str, Any] = {"day": day.isoformat(), "anomaly": True, "retention_days": 7, "rules": []}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("rules"), list):
                doc.update(old)
        except (OSError, ValueError):
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            log_event(logging.ERROR, "anomaly_marker_unreadable", path=str(path), kept_as=str(aside))
    doc["anomaly"] = True
    doc["retention_days"] = max(int(doc.get("retention_days") or 7), 7)
    doc["rules"] = list(doc["rules"]) + [{"rule": rule, "at": _iso(at), "source": SOURCE, "values": dict(values)}]
    doc["updated_at"] = _iso(at)
    lake.write_bytes_atomic(path, (json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n").encode())
    return path


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(status_path(data_dir).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


# --- Track A snapshots -------------------------------------------------------------------------------


class TrackASnapshots:
    """Today's Track A snapshots (``track_a/date=D/slot=HHMM/snapshot.parquet``), read once each (again if
    rewritten). A file that cannot be read is logged and retried at the next poll."""

    COLUMNS = ["code", "price", "volume", "trade_value"]

    def __init__(self, data_dir: Path, day: date, keep: int = SNAPSHOT_HISTORY) -> None:
        self.dir = lake.partition_dir(data_dir, "track_a", day)
        self.day = day
        self.keep = keep
        self._seen: dict[Path, int] = {}
        self.history: dict[datetime, Snapshot] = {}
        self.errors = 0

    def poll(self) -> list[Snapshot]:
        """New or rewritten snapshots since the last poll, oldest first."""
        new: list[Snapshot] = []
        for path in sorted(self.dir.glob("slot=*/snapshot.parquet")):
            try:
                st = path.stat()
                mtime = getattr(st, "st_mtime_ns", None) or (st.st_mtime, st.st_size)
            except FileNotFoundError:
                continue
            if self._seen.get(path) == mtime:
                continue
            label = path.parent.name[5:]
            try:
                ts = datetime(self.day.year, self.day.month, self.day.day, int(label[:2]), int(label[2:4]),
                              tzinfo=KST)
                rows = lake.read_table(path, columns=self.COLUMNS).to_pylist()
                snap = snapshot_from_rows(ts, rows)
            except Exception as exc:  # a bad file must not stop the capture; it is reported and retried
                self.errors += 1
                log_event(logging.ERROR, "track_a_snapshot_unreadable", path=str(path), error=str(exc)[:300])
                continue
            self._seen[path] = mtime
            self.history[ts] = snap
            new.append(snap)
        for ts in sorted(self.history)[:-self.keep]:
            del self.history[ts]
        return sorted(new, key=lambda s: s.ts)

    def ordered(self) -> list[Snapshot]:
        return [self.history[t] for t in sorted(self.history)]


# --- restart recovery --------------------------------------------------------------------------------


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


# --- one key's session -------------------------------------------------------------------------------


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

    def __init__(self, cap: Capture, config: KisConfig, tokens: SharedTokenProvider, journal: Journal) -> None:
        s = cap.settings
        self.cap = cap
        self.config = config
        self.key_id = config.key_id
        self.tokens = tokens
        self.journal = journal
        self.client = KisWebSocketClient(
            config, tokens, on_trades=self._on_trades, on_event=self._on_event, on_frame=self._on_frame,
            backoff=s.backoff, key_in_use_backoff=s.key_in_use_backoff,
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

    @property
    def session_id(self) -> str:
        return f"{self.cap.run_id}/{self.client.connection_id}"

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
            self.journal.append(rx, raw, conn=conn, mitigation_level=self.cap.level, **meta)
        except Exception as exc:
            self.not_recorded += 1
            if self.not_recorded <= _LOG_FIRST_BAD or self.not_recorded % 1000 == 0:
                log_event(logging.CRITICAL, "frame_not_recorded", key_id=self.key_id, count=self.not_recorded,
                          error=f"{type(exc).__name__}: {exc}"[:300])
        self.frames += 1
        self.last_rx = rx
        if conn != self._conn:
            self._conn = conn
            self.conn_first_frame = rx
        if self.first_frame_at is None:
            self.first_frame_at = rx
            log_event(logging.INFO, "first_frame", key_id=self.key_id, rx=rx,
                      since_start_s=round(time.monotonic() - self.cap.t0, 3),
                      since_process_start_s=self.cap.process_age(time.monotonic()))
        if meta:
            if "bad" in meta:
                self.bad_frames += 1
                n = self.bad_frames
                if n <= _LOG_FIRST_BAD or n % 1000 == 0:
                    log_event(logging.WARNING, "malformed_frame", key_id=self.key_id, count=n, reason=meta["bad"],
                              excerpt=getattr(msg, "raw_excerpt", "")[:200], conn=conn)
            else:
                self.rejected_records += meta["rej"]

    async def _on_trades(self, records: list[Trade], recv_mono: float, recv_dt: datetime) -> None:
        lag = time.monotonic() - recv_mono
        if lag > self.lag_max:
            self.lag_max = lag
        self.ticks += len(records)
        trig = self.cap.triggers
        latest = self.cap.data_now
        for t in records:
            try:
                trig.observe(t.code, t.exchange_dt, t.price, t.qty, t.acml_vol)
            except ValueError as exc:
                self.bad_trades += 1
                if self.bad_trades <= _LOG_FIRST_BAD:
                    log_event(logging.WARNING, "trade_not_usable_for_triggers", key_id=self.key_id, code=t.code,
                              error=str(exc)[:200])
            if latest is None or t.exchange_dt > latest:
                latest = t.exchange_dt
        self.cap.data_now = latest

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
                self.cap.manager.on_ack(self.key_id, ev["code"], "max_over", _now())
                self.cap.events.emit("ws_max_over", key_id=self.key_id, code=ev["code"],
                                     registered=ev.get("registered"))
                self.cap.schedule_apply(self.key_id)
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
        cap = self.cap
        cap.manager.on_reconnect(self.key_id, at)
        cap.manager.sync(self.key_id, self.client.registered, at)
        fields = {"key_id": self.key_id, "session_id": self.session_id, "reconnect": ev.get("reconnect"),
                  "outage_seconds": ev.get("outage_seconds"), "registered": ev.get("registered"),
                  "desired": ev.get("desired"), "reconnects": self.client.stats.reconnects}
        cap.events.emit("ws_connected", **fields)
        log_event(logging.INFO, "ws_connected", **fields)
        if self.gap is not None:
            first = self.conn_first_frame if self._conn == self.client.connection_id else None
            self.close_gap(at, first_frame_at=first, resubscribed_at=at, registered=ev.get("registered"),
                           reconnect_attempts=self.connect_failures)
        self.connect_failures = 0
        cap.schedule_apply(self.key_id)

    def _disconnected(self, ev: dict[str, Any]) -> None:
        at = datetime.fromisoformat(ev["at"])
        last = datetime.fromisoformat(ev["last_rx_at"]) if ev.get("last_rx_at") else None
        self.last_error = ev.get("reason")
        fields = {"key_id": self.key_id, "reason": ev.get("reason"), "attempt": ev.get("attempt"),
                  "retry_in_seconds": ev.get("retry_in_seconds"), "last_rx_at": _iso(last),
                  "session_id": self.session_id}
        if self.gap is None:
            self.open_gap(last or at, "ws_disconnect", "major", kind="disconnect", detected_at=at, last_rx_at=last,
                          ws_reason=ev.get("reason"))
        fields["gap_id"] = self.gap.gap_id if self.gap else None
        self.cap.events.emit("ws_disconnect", **fields)
        log_event(logging.WARNING, "ws_disconnect", **fields)

    def _connect_failed(self, ev: dict[str, Any]) -> None:
        self.connect_failures += 1
        self.last_error = ev.get("reason")
        if self.gap is None:  # failing from the start: nothing has been recorded since the process began
            self.open_gap(self.cap.recording_from, "ws_disconnect", "major", kind="never_connected",
                          detected_at=datetime.fromisoformat(ev["at"]), ws_reason=ev.get("reason"))
        fields = {"key_id": self.key_id, "reason": ev.get("reason"), "attempt": ev.get("attempt"),
                  "retry_in_seconds": ev.get("retry_in_seconds"),
                  "gap_id": self.gap.gap_id if self.gap else None}
        self.cap.events.emit("ws_connect_failed", **fields)
        log_event(logging.WARNING, "ws_connect_failed", **fields)

    # --- gaps --------------------------------------------------------------------------------------

    def open_gap(self, start: datetime, reason: str, severity: str, **metadata: Any) -> OpenGap:
        meta = {"key_id": self.key_id, "provider": "kis", "market": "krx", "run": self.cap.run_id, **metadata}
        meta = {k: _iso(v) if isinstance(v, datetime) else v for k, v in meta.items()}
        gid = self.cap.events.gap_open(scope="scalp", reason=reason, severity=severity,  # type: ignore[arg-type]
                                       start=start, session_id=self.session_id, symbol=None, **meta)
        self.gap = OpenGap(gid, start, reason, severity, self.session_id, meta)
        log_event(logging.WARNING, "gap_open", key_id=self.key_id, gap_id=gid, reason=reason, severity=severity,
                  start=start, kind=meta.get("kind"))
        return self.gap

    def close_gap(self, end: datetime, **metadata: Any) -> None:
        g = self.gap
        if g is None:
            return
        self.gap = None
        end = max(end, g.start)
        secs = (end - g.start).total_seconds()
        severity = "critical" if (g.escalated or secs > self.cap.settings.failure_after) else g.severity
        meta = {**g.metadata, **{k: _iso(v) if isinstance(v, datetime) else v for k, v in metadata.items()}}
        self.cap.events.gap_close(g.gap_id, scope="scalp", reason=g.reason, severity=severity,  # type: ignore[arg-type]
                                  start=g.start, end=end, session_id=g.session_id, symbol=None, **meta)
        if g.reason == "ws_disconnect":
            self.gap_seconds += secs
        log_event(logging.WARNING if severity != "critical" else logging.ERROR, "gap_close", key_id=self.key_id,
                  gap_id=g.gap_id, reason=g.reason, severity=severity, start=g.start, end=end,
                  seconds=round(secs, 3))
        if severity == "critical":
            self.cap.anomaly("critical_gap", {"key_id": self.key_id, "gap_id": g.gap_id, "reason": g.reason,
                                              "gap_start": _iso(g.start), "gap_end": _iso(end),
                                              "gap_seconds": round(secs, 3),
                                              "threshold_seconds": self.cap.settings.failure_after})

    def adopt_gap(self, g: OpenGap) -> None:
        self.gap = g

    def check_failure_rule(self, now: datetime) -> None:
        """The 5-minute rule (docs/collector-rules.md §5): continuous failure -> critical, anomaly day."""
        g = self.gap
        if g is None or g.escalated or self.client.connected:
            return
        secs = (now - g.start).total_seconds()
        if secs < self.cap.settings.failure_after:
            return
        g.escalated = True
        cap = self.cap
        values = {"key_id": self.key_id, "failing_since": _iso(g.start), "failing_seconds": round(secs, 3),
                  "threshold_seconds": cap.settings.failure_after, "connect_failures": self.connect_failures,
                  "last_error": self.last_error, "gap_id": g.gap_id}
        cap.events.emit("gap_marker", gap_id=g.gap_id, state="open", symbol=None, gap_start_ts=g.start,
                        gap_end_ts=None, gap_seconds=None, scope="scalp", reason=g.reason, severity="critical",
                        session_id=g.session_id, metadata={**g.metadata, "escalated_at": _iso(now),
                                                           "escalation": "5-minute failure rule"})
        cap.anomaly("ws_failure_5min", values)  # on disk before the event that announces it
        cap.events.emit("ws_failure_critical", rule="ws_failure_5min", severity="critical", **values)
        log_event(logging.CRITICAL, "ws_failure_critical", **values)

    def outage_seconds(self, now: datetime) -> float:
        cur = (now - self.gap.start).total_seconds() if self.gap and self.gap.reason == "ws_disconnect" else 0.0
        return round(self.gap_seconds + max(cur, 0.0), 3)

    def status(self, now: datetime) -> dict[str, Any]:
        j = self.journal
        c = self.client
        return {
            "connected": c.connected, "connection_id": c.connection_id,
            "registered": sorted(c.registered), "desired": list(c.desired),
            "last_rx": _iso(self.last_rx), "first_frame_at": _iso(self.first_frame_at),
            "frames": self.frames, "ticks": self.ticks, "bad_frames": self.bad_frames,
            "rejected_records": self.rejected_records, "frames_not_recorded": self.not_recorded,
            "reconnects": c.stats.reconnects, "disconnects": c.stats.disconnects,
            "connect_failures": c.stats.connect_failures,
            "disconnected_seconds": self.outage_seconds(now),
            "mitigation_level": self.cap.level,
            "journal_durable_upto": _iso(j.durable_upto), "journal_durable_seq": j.durable_seq,
            "journal_error": j.error, "journal_queue": j.queue_depth,
            "open_gap": ({"gap_id": self.gap.gap_id, "reason": self.gap.reason, "start": _iso(self.gap.start),
                          "severity": "critical" if self.gap.escalated else self.gap.severity}
                         if self.gap else None),
        }


# --- the capture ---------------------------------------------------------------------------------------


class Capture:
    def __init__(self, settings: Settings, configs: list[KisConfig], *, now: datetime | None = None) -> None:
        self.settings = settings
        self.configs = configs
        self.t0 = time.monotonic()
        age = sysstat.process_age_s()
        self._proc_t0 = self.t0 - age if age is not None else None  # monotonic instant the process began
        self.started_at = now or _now()
        self.run_id = f"{self.started_at:%H%M%S}.{os.getpid()}"
        self.data_dir = settings.data_dir
        self.events = EventLog(self.data_dir, source=SOURCE)
        self.sessions: dict[str, KeySession] = {}
        self.level = 0
        self.mitigation = Mitigation(hold_enter=timedelta(seconds=settings.mitigation_hold_enter),
                                     hold_recover=timedelta(seconds=settings.mitigation_hold_recover),
                                     thresholds=settings.thresholds)
        self.triggers = StreamTriggers(TriggerConfig())
        self.manager: SlotManager = None  # type: ignore[assignment]  # built in run()
        self.data_now: datetime | None = None  # newest exchange time seen (stream triggers' clock)
        self.window: Window | None = None
        self.stop_at: datetime | None = None
        self.recording_from = self.started_at
        self.state = "starting"
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._eval_lock = asyncio.Lock()
        self._bg: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.snapshots: TrackASnapshots | None = None
        self.cpu = sysstat.CpuMeter()
        self.last_sample: dict[str, Any] | None = None
        self.evaluations = 0
        self.overflow_records = 0
        self.anomalies: list[str] = []

    def process_age(self, mono: float) -> float | None:
        return round(mono - self._proc_t0, 3) if self._proc_t0 is not None else None

    # --- control ---------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log_event(logging.INFO, "stop_requested", reason=reason)
        self._stop.set()

    def schedule_apply(self, key_id: str) -> None:
        if self.state != "running":
            return
        t = asyncio.get_running_loop().create_task(self._apply(key_id))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def anomaly(self, rule: str, values: Mapping[str, Any]) -> None:
        now = _now()
        try:
            path = write_anomaly(self.data_dir, (self.window.day if self.window else now.date()), rule, values, now)
            self.anomalies.append(rule)
            self.events.emit("anomaly_day", rule=rule, severity="critical", path=str(path), values=dict(values))
            log_event(logging.CRITICAL, "anomaly_day", rule=rule, path=str(path), **dict(values))
        except Exception:
            log.exception("capture: could not write the anomaly marker for %s", rule)

    def _journal_event(self, key_id: str, ev: dict[str, Any]) -> None:
        """From a journal's flusher thread; handed to the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._on_journal_event, key_id, ev)
        except RuntimeError:
            pass

    def _on_journal_event(self, key_id: str, ev: dict[str, Any]) -> None:
        name = str(ev.get("event"))
        fields = {k: v for k, v in ev.items() if k not in ("event", "at", "key_id")}
        level = logging.INFO
        if name in ("journal_write_error", "journal_corruption", "journal_verify_failed"):
            level = logging.CRITICAL if name != "journal_write_error" else logging.ERROR
        elif name == "journal_recovered":
            level = logging.WARNING
        log_event(level, name, key_id=key_id, **fields)
        try:
            self.events.emit(name, key_id=key_id, **fields)
        except Exception:
            log.exception("capture: could not record %s", name)

    # --- slots -----------------------------------------------------------------------------------

    def _system_state(self) -> dict[str, Any]:
        s = self.last_sample or {}
        return {"cpu_pct": s.get("cpu_pct"), "mem_pct": s.get("mem_pct"), "mitigation_level": self.level,
                "ws": {k: {"connected": x.client.connected, "registered": len(x.client.registered),
                           "reconnects": x.client.stats.reconnects} for k, x in self.sessions.items()}}

    def _record(self, d: Decision) -> None:
        rec = d.ledger
        if rec.rejected:
            try:
                append_jsonl(overflow_path(self.data_dir, rec.timestamp.astimezone(KST).date()), rec.to_json())
                self.overflow_records += 1
            except OSError as exc:
                log_event(logging.ERROR, "overflow_ledger_write_failed", error=str(exc),
                          rejected=len(rec.rejected))
        for a in rec.actions:
            fields = {("slot_" + k if k in ("at", "timestamp", "event_type", "source") else k): v for k, v in a.items()}
            self.events.emit("slot_change", **fields)
        if rec.actions or rec.rejected:
            log_event(logging.INFO, "slot_evaluation", actions=len(rec.actions), rejected=len(rec.rejected),
                      occupancy={k: v["held"] for k, v in rec.occupancy.items()})
        held = {s.code for s in self.manager.slots()}
        for code in self.triggers.codes():
            if code not in held:
                self.triggers.forget(code)

    async def _apply(self, key_id: str) -> None:
        """Bring the key's session to the manager's desired set; the registered set comes back from acks."""
        s = self.sessions[key_id]
        async with s.apply_lock:
            for _ in range(4):
                want = self.manager.desired(key_id)
                try:
                    await s.client.set_desired(want)
                except ValueError as exc:  # a bug upstream; never crash the capture over it
                    log_event(logging.ERROR, "set_desired_refused", key_id=key_id, error=str(exc))
                    return
                moved = self.manager.sync(key_id, s.client.registered, _now())
                if not moved:
                    return

    async def evaluate(self, *, start: bool = False) -> None:
        async with self._eval_lock:
            now = _now()
            state = self._system_state()
            decisions: list[Decision] = []
            new = self.snapshots.poll() if self.snapshots else []
            history = self.snapshots.ordered() if self.snapshots else []
            cands = []
            if new and len(history) >= 2:
                cands += snapshot_candidates(history)
            if self.data_now is not None:
                cands += self.triggers.candidates(self.data_now)
            decisions.append(self.manager.offer(cands, now, state))
            if start and history and self.manager.free_count():
                boot = bootstrap_candidates(history[-1], self.manager.free_count())
                if boot:
                    decisions.append(self.manager.offer(boot, now, state))
            for d in decisions:
                self._record(d)
            self.evaluations += 1
            await asyncio.gather(*(self._apply(k) for k in self.sessions))

    # --- loops -----------------------------------------------------------------------------------

    async def _every(self, interval: float, fn, name: str) -> None:  # noqa: ANN001 - a coroutine function
        while True:
            await asyncio.sleep(interval)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("capture: %s failed (continuing)", name)

    async def _sample(self) -> None:
        now = _now()
        cpu = self.cpu.percent()
        mem = sysstat.memory()
        p99s = []
        means = []
        for s in self.sessions.values():
            p99, s.lat_counts = _interval_p99(s.journal.commit_latency, s.lat_counts)
            if p99 is not None:
                p99s.append(p99)
            m = s.journal.write_latency_mean_60s
            if m is not None:
                means.append(m)
        lag = max((s.lag_max for s in self.sessions.values()), default=0.0)
        for s in self.sessions.values():
            s.lag_max = 0.0
        sample = Sample(at=now, cpu_pct=round(cpu, 2), mem_pct=round(mem.percent, 2),
                        write_latency_ms=round(max(p99s, default=0.0) * 1e3, 3), queue_lag_s=round(lag, 4))
        self.last_sample = {**sample.values(), "at": _iso(now), "mem_known": mem.available,
                            "write_latency_mean_60s_ms": round(max(means, default=0.0) * 1e3, 3),
                            "rss_bytes": sysstat.process_rss_bytes()}
        change = self.mitigation.update(sample)
        if change is not None:
            self.level = change.new
            ev = change.to_event()
            fields = {k: v for k, v in ev.items() if k not in ("event", "at")}
            self.events.emit("mitigation_level_change", at=change.at, **fields)
            log_event(logging.WARNING, "mitigation_level_change", **fields)

    async def _check_failures(self) -> None:
        now = _now()
        for s in self.sessions.values():
            s.check_failure_rule(now)

    def status(self) -> dict[str, Any]:
        now = _now()
        return {
            "pid": os.getpid(), "run_id": self.run_id, "state": self.state, "started_at": _iso(self.started_at),
            "updated_at": _iso(now), "updated_wall": time.time(), "window": self.window.as_dict() if self.window else None,
            "stop_at": _iso(self.stop_at), "stop_reason": self.stop_reason, "mitigation_level": self.level,
            "load": self.last_sample, "evaluations": self.evaluations, "overflow_records": self.overflow_records,
            "pins": list(self.settings.pins), "anomalies": self.anomalies,
            "keys": {k: s.status(now) for k, s in self.sessions.items()},
        }

    async def _write_status(self) -> None:
        data = (json.dumps(self.status(), ensure_ascii=False, indent=1, default=str) + "\n").encode()
        await asyncio.to_thread(lake.write_bytes_atomic, status_path(self.data_dir), data)

    # --- start / stop ------------------------------------------------------------------------------

    def _restart_gaps(self, prev_status: dict[str, Any] | None, recoveries: dict[str, list[Recovery]]) -> None:
        """Record the hole a dead predecessor left (module doc, "restart"), and settle gaps it left open."""
        day = self.window.day if self.window else self.started_at.date()
        try:
            stale = [g for g in gaps(self.data_dir, day) if g.end is None]
        except ValueError as exc:
            log_event(logging.ERROR, "events_unreadable", error=str(exc)[:300])
            stale = []
        for key_id, s in self.sessions.items():
            recs = recoveries.get(key_id, [])
            mine = [g for g in stale if (g.metadata or {}).get("key_id") == key_id]
            if recs:
                start = max((r.last_rx for r in recs if r.last_rx is not None), default=None)
                basis = "last durable frame"
                if start is None and prev_status:
                    st = ((prev_status.get("keys") or {}).get(key_id) or {})
                    cand = st.get("journal_durable_upto") or st.get("last_rx") or prev_status.get("updated_at")
                    if cand:
                        start, basis = datetime.fromisoformat(cand), "previous status file"
                if start is None:
                    start = datetime.fromtimestamp(max(r.path.stat().st_mtime for r in recs), KST)
                    basis = "segment modification time"
                start = min(start, self.started_at)
                cut = sum(r.cut_bytes for r in recs)
                for g in mine:  # the dead process's open gap ends where the restart hole begins
                    end = max(g.start, start)
                    self.events.gap_close(g.gap_id, scope=g.scope,  # type: ignore[arg-type]
                                          reason=g.reason, severity=g.severity,  # type: ignore[arg-type]
                                          start=g.start, end=end, session_id=str(g.metadata.get("run", "?")),
                                          symbol=g.symbol, **{**dict(g.metadata), "closed_by": "restart",
                                                              "closed_by_run": self.run_id})
                detail = [r.as_dict() for r in recs]
                s.open_gap(start, "system_error", "major", kind="restart", start_basis=basis, cut_bytes=cut,
                           segments=[str(r.path) for r in recs], previous_pid=(prev_status or {}).get("pid"),
                           previous_run=(prev_status or {}).get("run_id"))
                self.events.emit("capture_recovered", key_id=key_id, run_id=self.run_id, segments=detail,
                                 cut_bytes=cut, last_durable_rx=start, start_basis=basis, gap_id=s.gap.gap_id)
                log_event(logging.WARNING, "capture_recovered", key_id=key_id, cut_bytes=cut, last_durable_rx=start,
                          start_basis=basis, segments=len(recs), gap_id=s.gap.gap_id)
            elif mine:  # a clean stop left its gap open (manual_stop): it ends when this session is registered
                g = mine[-1]
                s.adopt_gap(OpenGap(g.gap_id, g.start, g.reason, g.severity, self.run_id, dict(g.metadata)))
                for other in mine[:-1]:
                    self.events.gap_close(other.gap_id, scope=other.scope,  # type: ignore[arg-type]
                                          reason=other.reason,
                                          severity=other.severity, start=other.start, end=max(other.start, g.start),
                                          session_id=self.run_id, symbol=other.symbol,
                                          **{**dict(other.metadata), "closed_by": "restart"})
                log_event(logging.INFO, "gap_adopted", key_id=key_id, gap_id=g.gap_id, reason=g.reason, start=g.start)

    async def _wait_stop(self, until: datetime) -> bool:
        """Sleep until ``until`` (wall clock, re-checked each second) or a stop request; True if stopped."""
        while not self._stop.is_set():
            left = (until - _now()).total_seconds()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=min(left, 1.0))
            except TimeoutError:
                pass
        return True

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
            except (NotImplementedError, RuntimeError):
                pass
        now = _now()
        self.window = track_b_window(now.date(), self.settings.calendar, self.settings.window)
        if self.window is None:
            log_event(logging.INFO, "capture_not_started", reason="no Track B window today (market closed)",
                      day=now.date().isoformat(), calendar=self.settings.calendar.mode)
            return EXIT_OK
        self.stop_at = self.window.end if self.settings.until is None else min(self.settings.until, self.window.end)
        if now >= self.stop_at:
            why = "--until is in the past" if self.settings.until is not None and self.settings.until <= now \
                else "today's window is over"
            log_event(logging.INFO, "capture_not_started", reason=why, stop_at=self.stop_at,
                      window=self.window.as_dict())
            return EXIT_OK
        prev_status = read_status(self.data_dir)
        if now < self.window.start:
            self.state = "waiting"
            log_event(logging.INFO, "capture_waiting", until=self.window.start, window=self.window.as_dict())
            await self._write_status()
            if await self._wait_stop(self.window.start):
                log_event(logging.INFO, "capture_not_started", reason=self.stop_reason)
                return EXIT_OK
        self.recording_from = max(_now(), self.window.start)
        return await self._record_window(prev_status)

    async def _record_window(self, prev_status: dict[str, Any] | None) -> int:
        assert self.window is not None and self.stop_at is not None
        day = self.window.day
        recoveries: dict[str, list[Recovery]] = {}
        store_dir = self.data_dir / "state"
        for config in self.configs:
            recoveries[config.key_id] = await asyncio.to_thread(recover_key, self.data_dir, config.key_id, day)
        for config in self.configs:
            key_id = config.key_id
            journal = Journal(self.data_dir, key_id, run_id=self.run_id,
                              on_event=lambda ev, k=key_id: self._journal_event(k, ev))
            tokens = open_token_provider(config, store_dir, events=self.events)  # PostgreSQL if OBSERVER_STATE_DB_URL
            self.sessions[key_id] = KeySession(self, config, tokens, journal)
        self.manager = SlotManager(list(self.sessions), pins=list(self.settings.pins), now=_now())
        self.snapshots = TrackASnapshots(self.settings.lake_dir or self.data_dir, day)
        self.events.emit("capture_started", run_id=self.run_id, pid=os.getpid(), keys=list(self.sessions),
                         window=self.window.as_dict(), stop_at=self.stop_at, pins=list(self.settings.pins),
                         calendar=self.settings.calendar.mode, failure_after_s=self.settings.failure_after)
        log_event(logging.INFO, "capture_started", run_id=self.run_id, keys=list(self.sessions),
                  window=self.window.as_dict(), stop_at=self.stop_at, pins=len(self.settings.pins),
                  setup_s=round(time.monotonic() - self.t0, 3))
        self._restart_gaps(prev_status, recoveries)
        self.state = "running"
        try:  # pins, then Track A triggers, then bootstrap; the clients are not running yet
            await self.evaluate(start=True)
        except Exception:  # record what can be recorded (pins, later evaluations) rather than nothing
            log.exception("capture: the start evaluation failed; continuing with what the manager holds")
            await asyncio.gather(*(self._apply(k) for k in self.sessions), return_exceptions=True)
        for s in self.sessions.values():
            s.task = asyncio.create_task(s.client.run(), name=f"ws-{s.key_id}")
        loops = [
            asyncio.create_task(self._every(self.settings.eval_interval, self.evaluate, "evaluation")),
            asyncio.create_task(self._every(self.settings.sample_interval, self._sample, "load sample")),
            asyncio.create_task(self._every(min(1.0, self.settings.failure_after / 4), self._check_failures,
                                            "failure rule")),
            asyncio.create_task(self._every(self.settings.status_interval, self._write_status, "status")),
        ]
        await self._write_status()
        code = EXIT_OK
        stopper = asyncio.create_task(self._wait_stop(self.stop_at))
        watched = {stopper, *(s.task for s in self.sessions.values() if s.task)}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:  # a session's run() ended by itself: a bug; the supervisor restarts us
            for t in done:
                exc = t.exception() if not t.cancelled() else None
                log_event(logging.CRITICAL, "session_ended_unexpectedly", task=t.get_name(),
                          error=f"{type(exc).__name__}: {exc}" if exc else "returned")
            self.request_stop("session ended unexpectedly")
            code = EXIT_FAILED
        else:
            stopper.result()
            if self.stop_reason is None:
                self.stop_reason = "until" if self.settings.until is not None and self.stop_at == self.settings.until \
                    else "window end"
        stopper.cancel()
        await self._shutdown(loops)
        return code

    async def _shutdown(self, loops: list[asyncio.Task]) -> None:
        self.state = "stopping"
        log_event(logging.INFO, "capture_stopping", reason=self.stop_reason)
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)
        timeout = self.settings.stop_timeout

        async def unsubscribe(s: KeySession) -> None:
            if s.client.connected:
                await asyncio.wait_for(s.client.set_desired([]), timeout)

        res = await asyncio.gather(*(unsubscribe(s) for s in self.sessions.values()), return_exceptions=True)
        for s, r in zip(self.sessions.values(), res):
            if isinstance(r, BaseException):
                log_event(logging.WARNING, "unsubscribe_incomplete", key_id=s.key_id, error=repr(r)[:200])
        for s in self.sessions.values():
            s.client.stop()
        tasks = [s.task for s in self.sessions.values() if s.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        now = _now()
        mid_window = (self.stop_reason or "").startswith("signal") and self.stop_at is not None \
            and now < self.stop_at - timedelta(seconds=1)
        for s in self.sessions.values():
            if s.gap is not None:
                s.close_gap(now, closed_by="capture_stopped")
            if mid_window:  # an operator stop inside the window: not recording from here on
                s.open_gap(now, "manual_stop", "major", kind="manual_stop", stop_reason=self.stop_reason)
        for s in self.sessions.values():
            try:
                await asyncio.to_thread(s.journal.close)
            except JournalError as exc:
                log_event(logging.CRITICAL, "journal_close_failed", key_id=s.key_id, error=str(exc))
            s.tokens.close()
        self.state = "stopped"
        summary = {k: {"frames": s.frames, "ticks": s.ticks, "bad_frames": s.bad_frames,
                       "frames_not_recorded": s.not_recorded, "reconnects": s.client.stats.reconnects,
                       "disconnected_seconds": s.outage_seconds(now), "journal_lines": s.journal.lines,
                       "journal_durable_seq": s.journal.durable_seq}
                   for k, s in self.sessions.items()}
        try:
            await self._write_status()
        except OSError as exc:
            log_event(logging.ERROR, "status_write_failed", error=str(exc))
        self.events.emit("capture_stopped", run_id=self.run_id, reason=self.stop_reason, keys=summary,
                         ran_s=round(time.monotonic() - self.t0, 3))
        log_event(logging.INFO, "capture_stopped", run_id=self.run_id, reason=self.stop_reason, keys=summary)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    setup_logging()
    env = os.environ if environ is None else environ
    try:
        settings, configs = load_settings(argv, env)
    except ConfigError as exc:
        log_event(logging.ERROR, "bad_config", error=str(exc))
        return EXIT_CONFIG
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2)
        return int(exc.code or 0)
    cap = Capture(settings, configs)
    try:
        return asyncio.run(cap.run())
    except CaptureError as exc:
        log_event(logging.CRITICAL, "capture_failed", error=str(exc))
        return EXIT_FAILED
    except JournalError as exc:
        log_event(logging.CRITICAL, "capture_failed", error=str(exc))
        return EXIT_FAILED
    except Exception:
        log.exception("capture: unexpected failure")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
