"""The Prometheus exporter behind ``observer metrics``: every metric of docs/metrics.md on one /metrics.

Three kinds of values (docs/metrics.md names the kind of each metric):

* (S) read at scrape time from today's files in the lake and the local directory, the token store, the backup
  destination and the Dagster instance — today's files only, so a scrape stays cheap on a full day;
* (C) the Track B capture's live status file ``system/capture/status.json``;
* (M) what the Dagster step processes recorded through ``observer_resources.metrics`` (prometheus_client's
  multiprocess files), summed here; dead processes' files are folded into an archive now and then
  (``observer_resources.metrics.compact``) so their number, and the scrape's cost, stays small.

A source that fails (an unreadable file, a database down) never fails the scrape: its metrics are left out of that
scrape, ``observer_exporter_scrape_errors_total{source}`` goes up and the reason is logged (secrets scrubbed).
Values are cached per source for a few seconds (``cache_seconds``; 30 s for the backup destination, which changes
once a day and may be a remote bucket). ``now`` can be fixed, so the calendar gates are testable at any instant.
Nothing here writes to the lake: the exporter only reads (it creates the metrics directory if missing).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from observer_resources.storage import lake
from observer_resources import metrics as m_metrics
from observer_resources.calendar import KST
from observer_resources.calendar.market import calendar_from_env
from observer_resources.metrics import Spec, safe_label
from observer_resources.secrets import scrub as scrub_secrets, secret_values
from observer_resources import clock
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS
from observer_resources.storage.layout import TRACK_A, anomaly_path, overflow_path, report_path, status_path, universe_path, verdict_path

log = logging.getLogger("observer.metrics")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9108
TRACK_A_GRACE = timedelta(minutes=10)
CAPTURE_FRESH_S = 30.0
SLOTS_PER_KEY = WS_MAX_REGISTRATIONS
RETENTION_EVENT_DAYS = 14
TOKEN_RESULTS = ("issued", "refreshed", "failed")
TRIGGERS = ("manual", "volume_surge", "velocity", "volatility", "bootstrap")
SEVERITIES = ("minor", "major", "critical")
GAP_STATUSES = ("open", "restored", "unrecoverable", "info")
#: overflow-ledger reasons that mean "no slot for it" (the others are duplicates or superseded offers)
NO_SLOT_REASONS = frozenset({"dwell", "all_slots_occupied", "lower_priority"})
TAIL_CHUNK = 4 << 20  # bytes of an append-only file read per scrape at most: a huge file catches up over scrapes
SOURCES = ("calendar", "universe", "track_a", "track_b", "tokens", "gaps", "backup", "retention", "dagster", "disk",
           "multiprocess")
_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SLOT_DIR = re.compile(r"^slot=(\d{2})(\d{2})$")

S, C = "S", "C"
#: the scrape-time (S) and capture (C) families; the (M) ones are observer_resources.metrics.M_SPECS
SPECS: tuple[Spec, ...] = (
    # calendar gates
    Spec("observer_trading_day", "gauge", (), "S: KRX calendar (OBSERVER_CALENDAR)",
         "1 when today (KST) is a trading day."),
    Spec("observer_market_open", "gauge", (), "S: KRX calendar",
         "1 while now is inside today's regular session (open..close; late opens honoured)."),
    Spec("observer_track_a_window_open", "gauge", (), "S: KRX calendar",
         "1 from today's first Track A slot to 10 minutes after its last."),
    Spec("observer_track_b_window_open", "gauge", (), "S: KRX calendar + OBSERVER_TRACK_B_WINDOW",
         "1 inside today's Track B capture window."),
    # universe
    Spec("observer_universe_size", "gauge", (), "S: universe/date=today/universe.parquet",
         "Symbols in today's universe (0 when it is not built yet)."),
    Spec("observer_universe_previous_size", "gauge", (), "S: the previous trading day's universe file",
         "Symbols in the previous trading day's universe (0 when it has none)."),
    Spec("observer_universe_built_timestamp_seconds", "gauge", (), "S: mtime of today's universe file",
         "When today's universe file was written (Unix time; 0 when none)."),
    # Track A
    Spec("observer_track_a_last_slot_timestamp_seconds", "gauge", (), "S: track_a/date=today/slot=*/",
         "Slot time of today's newest Track A snapshot (Unix time; 0 when there is none today)."),
    Spec("observer_track_a_last_slot_coverage_ratio", "gauge", (), "S: newest snapshot today + today's universe",
         "Rows with a price in today's newest snapshot / universe size (absent when there is no snapshot today)."),
    Spec("observer_track_a_slots_expected", "gauge", (), "S: KRX calendar",
         "Track A slots due so far today (slot time <= now)."),
    Spec("observer_track_a_slots_written", "gauge", (), "S: track_a/date=today/",
         "Track A snapshot files written today."),
    Spec("observer_track_a_slot_lateness_seconds", "gauge", (), "S: newest snapshot today",
         "Write time of today's newest snapshot minus its slot time (absent when there is none today)."),
    # Track B
    Spec("observer_track_b_slots_capacity", "gauge", ("key_id",), "C: capture status",
         "WebSocket registrations one app key may hold (41)."),
    Spec("observer_track_b_slots_allocated", "gauge", ("key_id",), "C: capture status",
         "Symbols registered on the key's WebSocket session now."),
    Spec("observer_ws_connected", "gauge", ("key_id",), "C: capture status", "1 while the key's WebSocket is up."),
    Spec("observer_ws_reconnects", "counter", ("key_id",), "C: capture status",
         "WebSocket reconnections since the capture started."),
    Spec("observer_ws_disconnected_seconds", "counter", ("key_id",), "C: capture status",
         "Seconds the key's WebSocket was down since the capture started (a current outage included)."),
    Spec("observer_track_b_ticks", "counter", ("key_id",), "C: capture status",
         "Trades received on the key's session since the capture started."),
    Spec("observer_track_b_triggers", "counter", ("trigger",), "S: today's slot_change events + overflow ledger",
         "Trigger candidates today: those given a slot (allocate/replace) plus those the ledger turned away."),
    Spec("observer_track_b_overflows", "counter", (), "S: today's overflow ledger",
         "Candidates refused today for lack of a slot (dwell, all slots occupied, lower priority)."),
    Spec("observer_track_b_mitigation_level", "gauge", (), "C: capture status",
         "Recording-rate mitigation level (0 normal .. 2)."),
    Spec("observer_track_b_capture_up", "gauge", (), "C: capture status",
         "1 when the capture's status file was updated within the last 30 s."),
    Spec("observer_track_b_status_age_seconds", "gauge", (), "C: capture status",
         "Seconds since the capture's status file was last updated (absent when there is none)."),
    # tokens and rate limit
    Spec("observer_token_validity_seconds", "gauge", ("key_id",), "S: token store (SQLite or PostgreSQL)",
         "Seconds the stored access token is still valid (0 once expired, -1 when none is stored)."),
    Spec("observer_token_refreshes", "counter", ("key_id", "result"), "S: today's token events",
         "Access-token issuances asked of KIS today (issued | refreshed) and failures (failed); adoptions of a "
         "token another process issued are not counted."),
    Spec("observer_rate_limit_rejections", "counter", ("key_id",), "S: today's rate_limit_rejected events",
         "EGW00201 (rate limit) answers today."),
    # gaps
    Spec("observer_gaps", "gauge", ("severity", "status"), "S: gaps/date=today/gap_report.parquet",
         "Rows of today's gap report by severity and status (0 for combinations without rows)."),
    Spec("observer_gap_report_timestamp_seconds", "gauge", (), "S: mtime of today's gap report",
         "When today's gap report was written (Unix time; 0 when none)."),
    Spec("observer_anomaly_day", "gauge", (), "S: system/anomaly marker + gap verdict",
         "1 when today is an anomaly day (a marker, or the gap report's verdict)."),
    # backup and retention
    Spec("observer_backup_last_success_timestamp_seconds", "gauge", (), "S: backup destination, SUCCESS.marker",
         "verified_at of the newest SUCCESS.marker (Unix time; 0 when none)."),
    Spec("observer_backup_last_verified_day_timestamp_seconds", "gauge", (), "S: backup destination",
         "00:00 KST of the newest day with a committed package (Unix time; 0 when none)."),
    Spec("observer_backup_unverified_days", "gauge", (), "S: local files + backup destination",
         "Days older than today without a committed package: with local data, or with a package at the "
         "destination that failed verification (its marker withdrawn) or is unreadable."),
    Spec("observer_retention_deleted_files", "counter", (), "S: retention_deleted events, last 14 days",
         "Files retention deleted in the last 14 days' event logs (drops when a day leaves the window)."),
    Spec("observer_retention_deleted_bytes", "counter", (), "S: retention_deleted events, last 14 days",
         "Bytes retention deleted in the last 14 days' event logs."),
    Spec("observer_retention_blocked_days", "gauge", (), "S: the latest retention run's events (last 26 h)",
         "Days past the retention cap kept because they have no verified backup."),
    # runs and host
    Spec("observer_dagster_runs_failed", "gauge", ("job",), "S: Dagster instance (DAGSTER_HOME)",
         "Failed runs in the last 24 h per job (0 for jobs that only succeeded; absent without an instance)."),
    Spec("observer_dagster_instance_up", "gauge", (), "S: Dagster instance",
         "1 when the Dagster instance answered."),
    Spec("observer_disk_used_ratio", "gauge", ("path",), "S: the local directory's filesystem",
         "Used / total bytes of the filesystem holding the local directory (the lake when it is local)."),
    Spec("observer_exporter_scrape_errors", "counter", ("source",), "S: this exporter",
         "Sources that failed while building a scrape (the scrape itself still succeeded), since start."),
    Spec("observer_build_info", "gauge", ("version",), "S: this exporter", "Always 1; the Observer version."),
)
SPEC = {s.name: s for s in SPECS}
ALL_SPECS: tuple[Spec, ...] = SPECS + m_metrics.M_SPECS


def family(name: str) -> Metric:
    s = SPEC[name]
    cls = CounterMetricFamily if s.type == "counter" else GaugeMetricFamily
    return cls(s.name, s.help, labels=list(s.labels))


def one(name: str, value: float | None) -> list[Metric]:
    f = family(name)
    if value is not None:
        f.add_metric([], float(value))
    return [f]


# --- secrets never leave: what the log may show (the one list: observer_resources/secrets.py) -----------------


def _secrets(env: Mapping[str, str]) -> list[str]:
    return secret_values(env)


def scrub(text: str, secrets: Iterable[str]) -> str:
    return scrub_secrets(text, values=secrets)


# --- append-only JSON-lines files, read incrementally -------------------------------------------------------


class Tail:
    """An append-only JSONL file read from where the last scrape stopped: ``feed(state, record)`` folds each new
    complete line into ``state``. A replaced or truncated file starts over; a line that is not a JSON object is
    counted in ``bad`` (and logged once), never fatal."""

    def __init__(self, path: Path, new_state: Callable[[], Any], feed: Callable[[Any, dict], None]):
        self.path, self._new, self._feed = path, new_state, feed
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
                    if not raw.strip():
                        continue
                    try:
                        rec = json.loads(raw)
                    except ValueError:
                        self.bad += 1
                        continue
                    if isinstance(rec, dict):
                        self._feed(self.state, rec)
                    else:
                        self.bad += 1
                self.offset += end + 1
                if self.bad > bad_before:
                    log.warning("metrics: %d unreadable line(s) in %s skipped", self.bad - bad_before, self.path)
        return self.state


@dataclass
class DayEvents:
    """What the exporter needs from one day's system events."""

    tokens: Counter = field(default_factory=Counter)  # (key_id, result)
    rejections: Counter = field(default_factory=Counter)  # key_id
    triggers: Counter = field(default_factory=Counter)  # trigger
    deleted_files: int = 0
    deleted_bytes: int = 0
    retention: list[tuple[float, str, str]] = field(default_factory=list)  # (epoch, event_type, day)


def _epoch(ts: Any) -> float | None:
    try:
        t = datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    return t.timestamp() if t.tzinfo else None


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def feed_event(st: DayEvents, e: dict) -> None:
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
            st.deleted_files += int(_num(e.get("files")))
            st.deleted_bytes += int(_num(e.get("bytes")))
        at = _epoch(e.get("timestamp"))
        if at is not None:
            st.retention.append((at, t, str(e.get("day"))))


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


# --- the collector ----------------------------------------------------------------------------------------------


def _mtime(p: Any) -> float | None:
    try:
        st = p.stat()
    except (FileNotFoundError, OSError):
        return None
    t = getattr(st, "st_mtime", None)
    if isinstance(t, datetime):
        return t.timestamp()
    return float(t) if t is not None else None


def _kst_midnight(d: date) -> float:
    return datetime.combine(d, dtime(0, 0), KST).timestamp()


class ObserverCollector:
    """A prometheus_client collector for every (S), (C) and (M) metric. ``environ`` defaults to the process
    environment; ``now`` (a tz-aware datetime, or a callable returning one) fixes the clock for tests."""

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 now: datetime | Callable[[], datetime] | None = None, cache_seconds: float = 5.0,
                 slow_cache_seconds: float = 30.0, compact_every_s: float = 60.0, compact_min_idle_s: float = 600.0):
        self.env = dict(os.environ if environ is None else environ)
        self._now = now
        self.cache_seconds, self.slow_cache_seconds = cache_seconds, slow_cache_seconds
        self.compact_every_s, self.compact_min_idle_s = compact_every_s, compact_min_idle_s
        self.errors: Counter = Counter({s: 0 for s in SOURCES})
        self._secrets = _secrets(self.env)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[Metric]]] = {}
        self._tails: dict[Path, Tail] = {}
        self._rows: dict[tuple[str, float], Any] = {}
        self._token_store: Any = None
        self._instance: Any = None
        self._last_compact = -math.inf
        self.version = _version()

    # -- environment ---------------------------------------------------------------------------------------
    def now(self) -> datetime:
        n = self._now() if callable(self._now) else self._now
        return (n or clock.now()).astimezone(KST)

    def root(self) -> lake.LakePath:
        return lake.data_dir(self.env)

    def local(self) -> Path:
        return lake.local_dir(self.env)

    def calendar(self):  # noqa: ANN201 - MarketCalendar
        return calendar_from_env(self.env)

    # -- prometheus_client protocol ------------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return []  # registering must not run a scrape

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.now()
            out: list[Metric] = []
            for name, fn, ttl in self._sources():
                out += self._cached(name, fn, now, ttl)
            errs = family("observer_exporter_scrape_errors")
            for s in SOURCES:
                errs.add_metric([s], float(self.errors[s]))
            info = family("observer_build_info")
            info.add_metric([safe_label(self.version)], 1.0)
            out += [errs, info]
        yield from out

    def _sources(self) -> list[tuple[str, Callable[[datetime], list[Metric]], float]]:
        fast, slow = self.cache_seconds, self.slow_cache_seconds
        return [("calendar", self._calendar, 0.0), ("universe", self._universe, fast),
                ("track_a", self._track_a, fast), ("track_b", self._track_b, min(fast, 2.0)),
                ("tokens", self._tokens, fast), ("gaps", self._gaps, fast), ("backup", self._backup, slow),
                ("retention", self._retention, fast), ("dagster", self._dagster, fast), ("disk", self._disk, fast),
                ("multiprocess", self._multiprocess, min(fast, 2.0))]

    def _cached(self, name: str, fn: Callable[[datetime], list[Metric]], now: datetime, ttl: float) -> list[Metric]:
        hit = self._cache.get(name)
        t = time.monotonic()
        if hit is not None and t - hit[0] < ttl:
            return hit[1]
        try:
            fams = fn(now)
        except Exception as exc:  # noqa: BLE001 - one broken source never fails the scrape
            self.errors[name] += 1
            log.error("metrics source %s failed: %s: %s", name, type(exc).__name__,
                      scrub(str(exc), self._secrets)[:300])
            fams = []
        self._cache[name] = (t, fams)
        return fams

    def close(self) -> None:
        for obj in (self._token_store, self._instance):
            if obj is None or not hasattr(obj, "close"):
                continue
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - closing on the way out
                log.exception("metrics: closing %s failed", type(obj).__name__)
        self._token_store = self._instance = None

    # -- helpers ---------------------------------------------------------------------------------------------
    def _tail(self, path: Path, new_state: Callable[[], Any], feed: Callable[[Any, dict], None]) -> Any:
        t = self._tails.get(path)
        if t is None:
            t = self._tails[path] = Tail(path, new_state, feed)
        return t.read()

    def _events(self, day: date) -> DayEvents:
        """The day's events of every host: each file tailed on its own, their figures added up."""
        from observer_resources.events import events_files  # noqa: PLC0415

        out = DayEvents()
        for path in events_files(self.local(), day):
            st = self._tail(path, DayEvents, feed_event)
            out.tokens += st.tokens
            out.rejections += st.rejections
            out.triggers += st.triggers
            out.deleted_files += st.deleted_files
            out.deleted_bytes += st.deleted_bytes
            out.retention += st.retention
        return out

    def _prune_tails(self, keep_days: int = RETENTION_EVENT_DAYS + 2) -> None:
        cutoff = time.time() - keep_days * 86400
        for p in list(self._tails):
            try:
                if p.stat().st_mtime < cutoff:
                    del self._tails[p]
            except FileNotFoundError:
                del self._tails[p]

    def _num_rows(self, path: Any, column: str, count: Callable[[Any], Any]) -> Any:
        """A per-file figure cached by (path, mtime): a file is read again only when it changed."""
        mt = _mtime(path)
        if mt is None:
            return None
        k = (f"{path}|{column}", mt)
        if k not in self._rows:
            if len(self._rows) > 256:
                self._rows.clear()
            self._rows[k] = count(lake.read_table(path, columns=[column]))
        return self._rows[k]

    def _key_ids(self) -> list[str]:
        from observer_resources.kis.config import configs_from_env  # noqa: PLC0415

        return [c.key_id for c in configs_from_env(self.env)]

    # -- sources ---------------------------------------------------------------------------------------------
    def _calendar(self, now: datetime) -> list[Metric]:
        from observer_assets.track_b.window import track_b_window, window_text_from_env  # noqa: PLC0415

        cal, today = self.calendar(), now.date()
        s = cal.session(today)
        slots = cal.track_a_slots(today)
        w = track_b_window(today, cal, window_text_from_env(self.env))
        return (one("observer_trading_day", cal.is_trading_day(today))
                + one("observer_market_open", bool(s and s.open <= now <= s.close))
                + one("observer_track_a_window_open", bool(slots and slots[0] <= now <= slots[-1] + TRACK_A_GRACE))
                + one("observer_track_b_window_open", bool(w and w.contains(now))))

    def _universe(self, now: datetime) -> list[Metric]:

        root, today = self.root(), now.date()
        prev = self.calendar().previous_trading_day(today)
        size = self._num_rows(universe_path(root, today), "code", len)
        prev_size = self._num_rows(universe_path(root, prev), "code", len)
        built = _mtime(universe_path(root, today))
        return (one("observer_universe_size", size or 0) + one("observer_universe_previous_size", prev_size or 0)
                + one("observer_universe_built_timestamp_seconds", built or 0))

    def _track_a(self, now: datetime) -> list[Metric]:
        import pyarrow.compute as pc  # noqa: PLC0415


        root, today = self.root(), now.date()
        expected = sum(1 for t in self.calendar().track_a_slots(today) if t <= now)
        day_dir = lake.partition_dir(root, TRACK_A, today)
        slots: list[tuple[datetime, Any]] = []
        if day_dir.exists():
            for d in day_dir.iterdir():
                mm = _SLOT_DIR.match(d.name)
                f = d / "snapshot.parquet"
                if mm and f.exists():
                    slots.append((datetime.combine(today, dtime(int(mm[1]), int(mm[2])), KST), f))
        out = one("observer_track_a_slots_expected", expected) + one("observer_track_a_slots_written", len(slots))
        if not slots:
            return (out + one("observer_track_a_last_slot_timestamp_seconds", 0)
                    + one("observer_track_a_last_slot_coverage_ratio", None)
                    + one("observer_track_a_slot_lateness_seconds", None))
        slot_ts, f = max(slots, key=lambda x: x[0])
        priced = self._num_rows(f, "price", lambda t: int(pc.sum(pc.greater(t["price"], 0)).as_py() or 0))
        size = self._num_rows(universe_path(root, today), "code", len)
        if not size:  # the slot ran on the fallback universe (none built today): the previous day's is the base
            size = self._num_rows(universe_path(root, self.calendar().previous_trading_day(today)), "code", len)
        written = _mtime(f)
        return (out + one("observer_track_a_last_slot_timestamp_seconds", slot_ts.timestamp())
                + one("observer_track_a_last_slot_coverage_ratio", (priced or 0) / size if size else 0.0)
                + one("observer_track_a_slot_lateness_seconds",
                      written - slot_ts.timestamp() if written is not None else None))

    def _track_b(self, now: datetime) -> list[Metric]:
        from observer_assets.track_b.capture import read_status  # noqa: PLC0415
        from observer_assets.track_b.supervisor import wall_age_s  # noqa: PLC0415

        local, today = self.local(), now.date()
        ev = self._events(today)
        ledger = self._tail(overflow_path(local, today), Ledger, feed_ledger)
        trig = family("observer_track_b_triggers")
        counts = ev.triggers + ledger.triggers
        for t in sorted(set(TRIGGERS) | set(counts)):
            trig.add_metric([t], float(counts[t]))
        out = [trig] + one("observer_track_b_overflows", ledger.overflows)
        per_key = {n: family(n) for n in ("observer_track_b_slots_capacity", "observer_track_b_slots_allocated",
                                          "observer_ws_connected", "observer_ws_reconnects",
                                          "observer_ws_disconnected_seconds", "observer_track_b_ticks")}
        st = read_status(local) if status_path(local).exists() else None
        if status_path(local).exists() and st is None:
            raise ValueError(f"{status_path(local)} is not a JSON object")
        age = wall_age_s(st, now) if st else None
        if st:
            for key_id, k in sorted((st.get("keys") or {}).items()):
                if not isinstance(k, dict):
                    continue
                kid = [safe_label(key_id)]
                per_key["observer_track_b_slots_capacity"].add_metric(kid, SLOTS_PER_KEY)
                per_key["observer_track_b_slots_allocated"].add_metric(kid, float(len(k.get("registered") or [])))
                per_key["observer_ws_connected"].add_metric(kid, 1.0 if k.get("connected") else 0.0)
                per_key["observer_ws_reconnects"].add_metric(kid, _num(k.get("reconnects")))
                per_key["observer_ws_disconnected_seconds"].add_metric(kid, _num(k.get("disconnected_seconds")))
                per_key["observer_track_b_ticks"].add_metric(kid, _num(k.get("ticks")))
        out += list(per_key.values())
        out += one("observer_track_b_mitigation_level", _num(st.get("mitigation_level")) if st else None)
        out += one("observer_track_b_capture_up", age is not None and age <= CAPTURE_FRESH_S)
        out += one("observer_track_b_status_age_seconds", max(age, 0.0) if age is not None else None)
        return out

    def _tokens(self, now: datetime) -> list[Metric]:
        keys = self._key_ids()
        validity = family("observer_token_validity_seconds")
        store = self._store()
        for k in keys:
            rec = store.get(k, "access") if store is not None else None
            validity.add_metric([k], -1.0 if rec is None else max((rec.expires_at - now).total_seconds(), 0.0))
        ev = self._events(now.date())
        refreshes = family("observer_token_refreshes")
        for k in sorted(set(keys) | {k for k, _ in ev.tokens}):
            for r in TOKEN_RESULTS:
                refreshes.add_metric([k, r], float(ev.tokens[(k, r)]))
        rej = family("observer_rate_limit_rejections")
        for k in sorted(set(keys) | set(ev.rejections)):
            rej.add_metric([k], float(ev.rejections[k]))
        return [validity, refreshes, rej]

    def _store(self) -> Any:
        """The token store this deployment shares, opened once; None while a SQLite store does not exist yet (the
        exporter never creates one)."""
        if self._token_store is not None:
            return self._token_store
        from observer_resources.resources import default_state_dir  # noqa: PLC0415
        from observer_resources.shared.stores import open_token_store, state_db_url  # noqa: PLC0415
        from observer_resources.shared.token_store import TOKEN_STORE_FILE  # noqa: PLC0415

        state = default_state_dir(self.env)
        if state_db_url(self.env) is None and not (state / TOKEN_STORE_FILE).exists():
            return None
        self._token_store = open_token_store(state, self.env)
        return self._token_store

    def _gaps(self, now: datetime) -> list[Metric]:

        root, today = self.root(), now.date()
        path = report_path(root, today)
        counts: Counter = Counter()
        mt = _mtime(path)
        if mt is not None:
            k = (f"{path}|gaps", mt)
            if k not in self._rows:
                t = lake.read_table(path, columns=["severity", "status"])
                self._rows[k] = Counter(zip(t["severity"].to_pylist(), t["status"].to_pylist()))
            counts = self._rows[k]
        gaps = family("observer_gaps")
        pairs = {(sv, stt) for sv in SEVERITIES for stt in GAP_STATUSES} | {
            (safe_label(sv), safe_label(stt)) for sv, stt in counts}
        for sv, stt in sorted(pairs):
            gaps.add_metric([sv, stt], float(sum(n for (a, b), n in counts.items()
                                                 if safe_label(a) == sv and safe_label(b) == stt)))
        anomaly = anomaly_path(self.local(), today).exists()
        vp = verdict_path(root, today)
        if not anomaly and vp.exists():
            anomaly = bool(json.loads(vp.read_text(encoding="utf-8")).get("anomaly_day"))
        return [gaps] + one("observer_gap_report_timestamp_seconds", mt or 0) + one("observer_anomaly_day", anomaly)

    def _backup(self, now: datetime) -> list[Metric]:
        from observer_assets.backup import backup, package  # noqa: PLC0415
        from observer_assets.backup.daysets import by_package  # noqa: PLC0415
        from observer_assets.backup.settings import backup_dest  # noqa: PLC0415

        dest, cal, today = backup_dest(self.env), self.calendar(), now.date()
        days = sorted((date.fromisoformat(p.name) for p in (dest.iterdir() if dest.exists() else [])
                       if _DAY_DIR.match(p.name)), reverse=True)
        last_success = 0.0
        for d in days[:10]:  # a marker is rewritten only for recent days; older ones cannot be the newest
            k = package.package_dir(dest, d) / package.MARKER
            if k.exists():
                try:
                    at = _epoch(json.loads(k.read_bytes()).get("verified_at"))
                except ValueError:
                    at = None
                last_success = max(last_success, at or 0.0)
        committed: dict[date, bool] = {}

        def is_committed(d: date) -> bool:
            if d not in committed:
                committed[d] = package.read_state(dest, d).committed
            return committed[d]

        last_day = next((d for d in days if is_committed(d)), None)
        local_days = by_package(cal, backup.local_files(self.local(), dest))
        # a package at the destination without its marker (withdrawn by a failed verification, or never committed)
        # counts too: its local files may be long gone, and then it is the only copy, damaged. One stat per day, not
        # a manifest read: this runs on every scrape over every day the destination holds
        unverified = len({d for d in local_days if d < today and not is_committed(d)}
                         | {d for d in days if d < today and not (package.package_dir(dest, d) / package.MARKER).exists()})
        return (one("observer_backup_last_success_timestamp_seconds", last_success)
                + one("observer_backup_last_verified_day_timestamp_seconds",
                      _kst_midnight(last_day) if last_day else 0)
                + one("observer_backup_unverified_days", unverified))

    def _retention(self, now: datetime) -> list[Metric]:
        today = now.date()
        files = bytes_ = 0
        events: list[tuple[float, str, str]] = []
        for i in range(RETENTION_EVENT_DAYS):
            st = self._events(today - timedelta(days=i))
            files += st.deleted_files
            bytes_ += st.deleted_bytes
            events += st.retention
        self._prune_tails()
        recent = [e for e in events if e[0] >= now.timestamp() - 26 * 3600]
        blocked = 0
        if recent:
            last = max(e[0] for e in recent)
            blocked = len({d for at, t, d in recent if t == "retention_blocked" and at >= last - 600})
        return (one("observer_retention_deleted_files", files) + one("observer_retention_deleted_bytes", bytes_)
                + one("observer_retention_blocked_days", blocked))

    def _dagster(self, now: datetime) -> list[Metric]:
        home = (self.env.get("DAGSTER_HOME") or "").strip()
        if not home:  # no instance to ask: the family is documented, without series
            return [family("observer_dagster_runs_failed")] + one("observer_dagster_instance_up", 0)
        import dagster as dg  # noqa: PLC0415

        try:
            if self._instance is None:
                self._instance = dg.DagsterInstance.from_config(home)
            recs = self._instance.get_run_records(filters=dg.RunsFilter(updated_after=now - timedelta(hours=24)),
                                                  limit=10_000)
        except Exception as exc:  # noqa: BLE001 - counted and logged; instance_up 0 says it
            self._instance = None
            self.errors["dagster"] += 1
            log.error("metrics source dagster failed: %s: %s", type(exc).__name__,
                      scrub(str(exc), self._secrets)[:300])
            return [family("observer_dagster_runs_failed")] + one("observer_dagster_instance_up", 0)
        failed: Counter = Counter()
        for r in recs:
            job = safe_label(r.dagster_run.job_name)
            failed[job] += r.dagster_run.status == dg.DagsterRunStatus.FAILURE
        runs = family("observer_dagster_runs_failed")
        for job in sorted(failed):
            runs.add_metric([job], float(failed[job]))
        return [runs] + one("observer_dagster_instance_up", 1)

    def _disk(self, now: datetime) -> list[Metric]:
        f = family("observer_disk_used_ratio")
        local = self.local()
        u = shutil.disk_usage(local if local.exists() else local.parent)
        f.add_metric([str(local)], (u.total - u.free) / u.total if u.total else 0.0)
        return [f]

    def _multiprocess(self, now: datetime) -> list[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

        directory = m_metrics.multiproc_dir(self.env)
        directory.mkdir(parents=True, exist_ok=True)
        if time.monotonic() - self._last_compact >= self.compact_every_s:
            self._last_compact = time.monotonic()
            try:
                n = m_metrics.compact(directory, min_idle_s=self.compact_min_idle_s)
                if n:
                    log.info("metrics: folded %d file(s) of finished processes into the archive", n)
            except Exception as exc:  # noqa: BLE001 - the read below still works on the unfolded files
                self.errors["multiprocess"] += 1
                log.error("metrics: folding finished processes' files failed: %s: %s", type(exc).__name__, exc)
        with m_metrics.dir_lock(directory, shared=True):
            files = m_metrics.db_files(directory)
            try:
                merged = list(MultiProcessCollector.merge(files, accumulate=True))
            except Exception:  # noqa: BLE001 - find the bad file, leave it out, count it
                good = [f for f in files if m_metrics.readable(Path(f))]
                self.errors["multiprocess"] += 1
                log.error("metrics: unreadable metrics file(s) left out of this scrape: %s",
                          sorted(set(files) - set(good)))
                merged = list(MultiProcessCollector.merge(good, accumulate=True))
        names = {f.name for f in merged}
        for s in m_metrics.M_SPECS:  # documented from the start, before any process recorded a value
            if s.name not in names:
                merged.append(Metric(s.name, s.help, s.type))
        return merged


def _version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("observer")
    except Exception:  # noqa: BLE001
        return "unknown"


# --- exposition ------------------------------------------------------------------------------------------------


def registry(collector: ObserverCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def collect_text(environ: Mapping[str, str] | None = None, *, now: datetime | None = None,
                 collector: ObserverCollector | None = None) -> str:
    """The exposition text one scrape would return (Prometheus text format 0.0.4)."""
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    c = collector or ObserverCollector(environ, now=now, cache_seconds=0.0, slow_cache_seconds=0.0,
                                       compact_every_s=math.inf)
    try:
        return generate_latest(registry(c)).decode("utf-8")
    finally:
        if collector is None:
            c.close()


def make_app(collector: ObserverCollector) -> Callable:
    """WSGI: /metrics (also /), /health → 200 "ok", anything else 404."""
    from prometheus_client.exposition import make_wsgi_app  # noqa: PLC0415

    metrics_app = make_wsgi_app(registry(collector))

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/health":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok"]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /health\n"]

    return app


def make_server(host: str, port: int, collector: ObserverCollector):  # noqa: ANN201 - a WSGIServer
    import socket  # noqa: PLC0415
    from wsgiref.simple_server import WSGIRequestHandler, make_server as _make  # noqa: PLC0415

    from prometheus_client.exposition import ThreadingWSGIServer  # noqa: PLC0415

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    family_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family_

    return _make(host, port, make_app(collector), server_class=Server, handler_class=Quiet)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, environ: Mapping[str, str] | None = None,
          ready: Callable[[str], None] | None = None) -> int:
    """Serve /metrics until SIGTERM or SIGINT; ``ready`` gets the URL (the real port when ``port`` is 0)."""
    import signal  # noqa: PLC0415

    collector = ObserverCollector(environ)
    server = make_server(host, port, collector)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/metrics"

    def stop(signum: int, _frame: Any) -> None:
        log.info("metrics: signal %d, stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        list(collector.collect())  # imports and first reads before "ready": the first real scrape is quick
        if ready is not None:
            ready(url)
        server.serve_forever(poll_interval=0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.server_close()
        collector.close()
    return 0


def reference_markdown() -> str:
    """docs/metrics.md's table, from the specs above (the test keeps the file in step)."""
    rows = ["| metric (as scraped) | type | labels | source | meaning |", "|---|---|---|---|---|"]
    for s in sorted(ALL_SPECS, key=lambda s: s.name):
        name = f"`{s.sample_name}`" + (" (`_bucket`, `_sum`, `_count`)" if s.type == "histogram" else "")
        labels = ", ".join(s.labels) or "—"
        cells = [name, s.type, labels, s.source, s.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
