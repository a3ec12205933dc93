"""The exporter's readers, one per source: what each (S) and (C) metric is read from at scrape time.

:class:`Sources` holds the readers and what they keep between scrapes — file tails, per-file figures cached by
mtime, the token store and the Dagster instance opened once, the last fold of the multiprocess files — so a scrape
reads today's files only, and only what changed. A reader may raise: the collector
(``observer_assets.monitoring.metrics``) counts it as that source's error and leaves its metrics out of the scrape.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from observer_assets.monitoring.metric_events import (
    EventFigures,
    Ledger,
    LineParser,
    Tail,
    epoch,
    feed_event,
    feed_ledger,
    json_object,
    num,
)
from observer_assets.monitoring.metric_specs import family, one
from observer_resources import metrics as m_metrics
from observer_resources import settings
from observer_resources.calendar import KST
from observer_resources.calendar.market import calendar_from_env
from observer_resources.events import events_files, parse_line
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS
from observer_resources.metrics import safe_label
from observer_resources.secrets import scrub as scrub_secrets
from observer_resources.secrets import secret_values
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    TRACK_A,
    anomaly_path,
    overflow_path,
    report_path,
    status_path,
    universe_path,
    verdict_path,
)

log = logging.getLogger("observer.metrics")

TRACK_A_GRACE = timedelta(minutes=10)
CAPTURE_FRESH_S = 30.0
SLOTS_PER_KEY = WS_MAX_REGISTRATIONS
RETENTION_EVENT_DAYS = 14
TOKEN_RESULTS = ("issued", "refreshed", "failed")
TRIGGERS = ("manual", "volume_surge", "velocity", "volatility", "bootstrap")
SEVERITIES = ("minor", "major", "critical")
GAP_STATUSES = ("open", "restored", "unrecoverable", "info")
_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SLOT_DIR = re.compile(r"^slot=T(\d{2})(\d{2})$")  # layout.slot_label


# --- secrets never leave: what the log may show (the one list: observer_resources/secrets.py) -----------------


def secrets_of(env: Mapping[str, str]) -> list[str]:
    return secret_values(env)


def scrub(text: str, secrets: Iterable[str]) -> str:
    return scrub_secrets(text, values=secrets)


# --- file facts -------------------------------------------------------------------------------------------------


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


class Sources:
    """The (S) and (C) readers of one exporter, each ``reader(now) -> families``. ``errors`` is the collector's
    per-source error count (the Dagster and multiprocess readers count their own partial failures in it)."""

    def __init__(
        self,
        env: Mapping[str, str],
        errors: Counter,
        *,
        compact_every_s: float = 60.0,
        compact_min_idle_s: float = 600.0,
    ):
        self.env = env
        self.errors = errors
        self.compact_every_s, self.compact_min_idle_s = compact_every_s, compact_min_idle_s
        self.secrets = secrets_of(env)
        self._tails: dict[Path, Tail] = {}
        self._rows: dict[tuple[str, float], Any] = {}
        self._token_store: Any = None
        self._instance: Any = None
        self._last_compact = -math.inf

    # -- environment ---------------------------------------------------------------------------------------
    def root(self) -> lake.LakePath:
        return lake.data_dir(self.env)

    def local(self) -> Path:
        return lake.local_dir(self.env)

    def calendar(self):  # noqa: ANN201 - MarketCalendar
        return calendar_from_env(self.env)

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
    def _tail(
        self,
        path: Path,
        new_state: Callable[[], Any],
        feed: Callable[[Any, dict], None],
        parse: LineParser = parse_line,
    ) -> Any:
        t = self._tails.get(path)
        if t is None:
            t = self._tails[path] = Tail(path, new_state, feed, parse)
        return t.read()

    def _events(self, day: date) -> EventFigures:
        """The day's events of every host: each file tailed on its own (through the event log's line policy), their
        figures added up."""
        out = EventFigures()
        for path in events_files(self.local(), day):
            out.add(self._tail(path, EventFigures, feed_event))
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
    def calendar_gates(self, now: datetime) -> list[Metric]:
        from observer_assets.track_b.window import track_b_window, window_text_from_env  # noqa: PLC0415

        cal, today = self.calendar(), now.date()
        s = cal.session(today)
        slots = cal.track_a_slots(today)
        w = track_b_window(today, cal, window_text_from_env(self.env))
        return (
            one("observer_trading_day", cal.is_trading_day(today))
            + one("observer_market_open", bool(s and s.open <= now <= s.close))
            + one("observer_track_a_window_open", bool(slots and slots[0] <= now <= slots[-1] + TRACK_A_GRACE))
            + one("observer_track_b_window_open", bool(w and w.contains(now)))
        )

    def universe(self, now: datetime) -> list[Metric]:
        root, today = self.root(), now.date()
        prev = self.calendar().previous_trading_day(today)
        size = self._num_rows(universe_path(root, today), "code", len)
        prev_size = self._num_rows(universe_path(root, prev), "code", len)
        built = _mtime(universe_path(root, today))
        return (
            one("observer_universe_size", size or 0)
            + one("observer_universe_previous_size", prev_size or 0)
            + one("observer_universe_built_timestamp_seconds", built or 0)
        )

    def track_a(self, now: datetime) -> list[Metric]:
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
            return (
                out
                + one("observer_track_a_last_slot_timestamp_seconds", 0)
                + one("observer_track_a_last_slot_coverage_ratio", None)
                + one("observer_track_a_slot_lateness_seconds", None)
            )
        slot_ts, f = max(slots, key=lambda x: x[0])
        priced = self._num_rows(f, "price", lambda t: int(pc.sum(pc.greater(t["price"], 0)).as_py() or 0))
        size = self._num_rows(universe_path(root, today), "code", len)
        if not size:  # the slot ran on the fallback universe (none built today): the previous day's is the base
            size = self._num_rows(universe_path(root, self.calendar().previous_trading_day(today)), "code", len)
        written = _mtime(f)
        return (
            out
            + one("observer_track_a_last_slot_timestamp_seconds", slot_ts.timestamp())
            + one("observer_track_a_last_slot_coverage_ratio", (priced or 0) / size if size else 0.0)
            + one(
                "observer_track_a_slot_lateness_seconds", written - slot_ts.timestamp() if written is not None else None
            )
        )

    def track_b(self, now: datetime) -> list[Metric]:
        from observer_assets.track_b.capture import read_status  # noqa: PLC0415
        from observer_assets.track_b.supervisor import wall_age_s  # noqa: PLC0415

        local, today = self.local(), now.date()
        ev = self._events(today)
        ledger = self._tail(overflow_path(local, today), Ledger, feed_ledger, json_object)
        trig = family("observer_track_b_triggers")
        counts = ev.triggers + ledger.triggers
        for t in sorted(set(TRIGGERS) | set(counts)):
            trig.add_metric([t], float(counts[t]))
        out = [trig] + one("observer_track_b_overflows", ledger.overflows)
        per_key = {
            n: family(n)
            for n in (
                "observer_track_b_slots_capacity",
                "observer_track_b_slots_allocated",
                "observer_ws_connected",
                "observer_ws_reconnects",
                "observer_ws_disconnected_seconds",
                "observer_track_b_ticks",
            )
        }
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
                per_key["observer_ws_reconnects"].add_metric(kid, num(k.get("reconnects")))
                per_key["observer_ws_disconnected_seconds"].add_metric(kid, num(k.get("disconnected_seconds")))
                per_key["observer_track_b_ticks"].add_metric(kid, num(k.get("ticks")))
        out += list(per_key.values())
        out += one("observer_track_b_mitigation_level", num(st.get("mitigation_level")) if st else None)
        out += one("observer_track_b_capture_up", age is not None and age <= CAPTURE_FRESH_S)
        out += one("observer_track_b_status_age_seconds", max(age, 0.0) if age is not None else None)
        return out

    def tokens(self, now: datetime) -> list[Metric]:
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

    def gaps(self, now: datetime) -> list[Metric]:
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
            (safe_label(sv), safe_label(stt)) for sv, stt in counts
        }
        for sv, stt in sorted(pairs):
            gaps.add_metric(
                [sv, stt], float(sum(n for (a, b), n in counts.items() if safe_label(a) == sv and safe_label(b) == stt))
            )
        anomaly = anomaly_path(self.local(), today).exists()
        vp = verdict_path(root, today)
        if not anomaly and vp.exists():
            anomaly = bool(json.loads(vp.read_text(encoding="utf-8")).get("anomaly_day"))
        return [gaps] + one("observer_gap_report_timestamp_seconds", mt or 0) + one("observer_anomaly_day", anomaly)

    def backup(self, now: datetime) -> list[Metric]:
        from observer_assets.backup import backup, package  # noqa: PLC0415
        from observer_assets.backup.daysets import by_package  # noqa: PLC0415
        from observer_assets.backup.settings import backup_dest  # noqa: PLC0415

        dest, cal, today = backup_dest(self.env), self.calendar(), now.date()
        days = sorted(
            (date.fromisoformat(p.name) for p in (dest.iterdir() if dest.exists() else []) if _DAY_DIR.match(p.name)),
            reverse=True,
        )
        last_success = 0.0
        for d in days[:10]:  # a marker is rewritten only for recent days; older ones cannot be the newest
            k = package.package_dir(dest, d) / package.MARKER
            if k.exists():
                try:
                    at = epoch(json.loads(k.read_bytes()).get("verified_at"))
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
        unmarked = {d for d in days if d < today and not (package.package_dir(dest, d) / package.MARKER).exists()}
        unverified = len({d for d in local_days if d < today and not is_committed(d)} | unmarked)
        return (
            one("observer_backup_last_success_timestamp_seconds", last_success)
            + one("observer_backup_last_verified_day_timestamp_seconds", _kst_midnight(last_day) if last_day else 0)
            + one("observer_backup_unverified_days", unverified)
        )

    def retention(self, now: datetime) -> list[Metric]:
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
        return (
            one("observer_retention_deleted_files", files)
            + one("observer_retention_deleted_bytes", bytes_)
            + one("observer_retention_blocked_days", blocked)
        )

    def dagster(self, now: datetime) -> list[Metric]:
        home = settings.get("DAGSTER_HOME", self.env) or ""
        if not home:  # no instance to ask: the family is documented, without series
            return [family("observer_dagster_runs_failed")] + one("observer_dagster_instance_up", 0)
        import dagster as dg  # noqa: PLC0415

        try:
            if self._instance is None:
                self._instance = dg.DagsterInstance.from_config(home)
            recs = self._instance.get_run_records(
                filters=dg.RunsFilter(updated_after=now - timedelta(hours=24)), limit=10_000
            )
        except Exception as exc:  # noqa: BLE001 - counted and logged; instance_up 0 says it
            self._instance = None
            self.errors["dagster"] += 1
            log.error("metrics source dagster failed: %s: %s", type(exc).__name__, scrub(str(exc), self.secrets)[:300])
            return [family("observer_dagster_runs_failed")] + one("observer_dagster_instance_up", 0)
        failed: Counter = Counter()
        for r in recs:
            job = safe_label(r.dagster_run.job_name)
            failed[job] += r.dagster_run.status == dg.DagsterRunStatus.FAILURE
        runs = family("observer_dagster_runs_failed")
        for job in sorted(failed):
            runs.add_metric([job], float(failed[job]))
        return [runs] + one("observer_dagster_instance_up", 1)

    def disk(self, now: datetime) -> list[Metric]:
        f = family("observer_disk_used_ratio")
        local = self.local()
        u = shutil.disk_usage(local if local.exists() else local.parent)
        f.add_metric([str(local)], (u.total - u.free) / u.total if u.total else 0.0)
        return [f]

    def multiprocess(self, now: datetime) -> list[Metric]:
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
                log.error(
                    "metrics: unreadable metrics file(s) left out of this scrape: %s", sorted(set(files) - set(good))
                )
                merged = list(MultiProcessCollector.merge(good, accumulate=True))
        names = {f.name for f in merged}
        for s in m_metrics.M_SPECS:  # documented from the start, before any process recorded a value
            if s.name not in names:
                merged.append(Metric(s.name, s.help, s.type))
        return merged
