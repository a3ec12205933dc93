"""The capture: every key's session, the one slot manager they share, the load mitigation and the loops that drive
them. One process holds every key, so the sessions' slot sets are disjoint by construction."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from observer_assets.track_b import sysstat
from observer_assets.track_b.capture.logs import SOURCE, iso, log, log_event
from observer_assets.track_b.capture.restart import recover_key, settle_restart_gaps
from observer_assets.track_b.capture.session import KeySession, SessionContext
from observer_assets.track_b.capture.settings import Settings
from observer_assets.track_b.capture.snapshots import TrackASnapshots
from observer_assets.track_b.capture.status import encode_status, read_status, write_anomaly, write_status
from observer_assets.track_b.journal import Journal, JournalError, Recovery
from observer_assets.track_b.mitigation import Mitigation, Sample
from observer_assets.track_b.slots import Decision, SlotManager
from observer_assets.track_b.triggers import StreamTriggers, TriggerConfig, bootstrap_candidates, snapshot_candidates
from observer_assets.track_b.window import Window, track_b_window
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.events import EventLog, append_jsonl
from observer_resources.kis.config import KisConfig
from observer_resources.shared.stores import open_token_provider
from observer_resources.storage.layout import overflow_path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class Capture:
    """Every configured key's session, the one slot manager they share, the load mitigation and the files."""

    def __init__(self, settings: Settings, configs: list[KisConfig], *, now: datetime | None = None) -> None:
        self.settings = settings
        self.configs = configs
        self.t0 = time.monotonic()
        age = sysstat.process_age_s()
        self._proc_t0 = self.t0 - age if age is not None else None  # monotonic instant the process began
        self.started_at = now or clock.now()
        self.run_id = f"{self.started_at:%H%M%S}.{os.getpid()}"
        self.data_dir = settings.data_dir
        self.events = EventLog(self.data_dir, source=SOURCE)
        self.sessions: dict[str, KeySession] = {}
        self.level = 0
        self.mitigation = Mitigation(
            hold_enter=timedelta(seconds=settings.mitigation_hold_enter),
            hold_recover=timedelta(seconds=settings.mitigation_hold_recover),
            thresholds=settings.thresholds,
        )
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

    # --- control ---------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            log_event(logging.INFO, "stop_requested", reason=reason)
        self._stop.set()

    # --- what the sessions ask of the capture (SessionHost) ----------------------------------------

    def saw_exchange_time(self, at: datetime) -> None:
        if self.data_now is None or at > self.data_now:
            self.data_now = at

    def slots_reconnected(self, key_id: str, registered: Collection[str], at: datetime) -> None:
        self.manager.on_reconnect(key_id, at)
        self.manager.sync(key_id, registered, at)

    def slot_refused(self, key_id: str, code: str, at: datetime) -> None:
        self.manager.on_ack(key_id, code, "max_over", at)

    def schedule_apply(self, key_id: str) -> None:
        if self.state != "running":
            return
        t = asyncio.get_running_loop().create_task(self._apply(key_id))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def anomaly(self, rule: str, values: Mapping[str, Any]) -> None:
        now = clock.now()
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
        return {
            "cpu_pct": s.get("cpu_pct"),
            "mem_pct": s.get("mem_pct"),
            "mitigation_level": self.level,
            "ws": {
                k: {
                    "connected": x.client.connected,
                    "registered": len(x.client.registered),
                    "reconnects": x.client.stats.reconnects,
                }
                for k, x in self.sessions.items()
            },
        }

    def _record(self, d: Decision) -> None:
        rec = d.ledger
        if rec.rejected:
            try:
                append_jsonl(overflow_path(self.data_dir, rec.timestamp.astimezone(KST).date()), rec.to_json())
                self.overflow_records += 1
            except OSError as exc:
                log_event(logging.ERROR, "overflow_ledger_write_failed", error=str(exc), rejected=len(rec.rejected))
        for a in rec.actions:
            fields = {("slot_" + k if k in ("at", "timestamp", "event_type", "source") else k): v for k, v in a.items()}
            self.events.emit("slot_change", **fields)
        if rec.actions or rec.rejected:
            log_event(
                logging.INFO,
                "slot_evaluation",
                actions=len(rec.actions),
                rejected=len(rec.rejected),
                occupancy={k: v["held"] for k, v in rec.occupancy.items()},
            )
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
                    await s.client.set_desired(want, extra=self.settings.anchors)
                except ValueError as exc:  # a bug upstream; never crash the capture over it
                    log_event(logging.ERROR, "set_desired_refused", key_id=key_id, error=str(exc))
                    return
                moved = self.manager.sync(key_id, s.client.registered, clock.now())
                if not moved:
                    return

    async def evaluate(self, *, start: bool = False) -> None:
        async with self._eval_lock:
            now = clock.now()
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
        now = clock.now()
        cpu = self.cpu.percent()
        mem = sysstat.memory()
        p99s = []
        means = []
        lags = []
        for s in self.sessions.values():
            p99, m, lag_max = s.take_load()
            if p99 is not None:
                p99s.append(p99)
            if m is not None:
                means.append(m)
            lags.append(lag_max)
        lag = max(lags, default=0.0)
        sample = Sample(
            at=now,
            cpu_pct=round(cpu, 2),
            mem_pct=round(mem.percent, 2),
            write_latency_ms=round(max(p99s, default=0.0) * 1e3, 3),
            queue_lag_s=round(lag, 4),
        )
        self.last_sample = {
            **sample.values(),
            "at": iso(now),
            "mem_known": mem.available,
            "write_latency_mean_60s_ms": round(max(means, default=0.0) * 1e3, 3),
            "rss_bytes": sysstat.process_rss_bytes(),
        }
        change = self.mitigation.update(sample)
        if change is not None:
            self.level = change.new
            ev = change.to_event()
            fields = {k: v for k, v in ev.items() if k not in ("event", "at")}
            self.events.emit("mitigation_level_change", at=change.at, **fields)
            log_event(logging.WARNING, "mitigation_level_change", **fields)

    async def _check_failures(self) -> None:
        now = clock.now()
        for s in self.sessions.values():
            s.check_failure_rule(now)

    def status(self) -> dict[str, Any]:
        now = clock.now()
        return {
            "pid": os.getpid(),
            "run_id": self.run_id,
            "state": self.state,
            "started_at": iso(self.started_at),
            "updated_at": iso(now),
            "updated_wall": time.time(),
            "window": self.window.as_dict() if self.window else None,
            "stop_at": iso(self.stop_at),
            "stop_reason": self.stop_reason,
            "mitigation_level": self.level,
            "load": self.last_sample,
            "evaluations": self.evaluations,
            "overflow_records": self.overflow_records,
            "pins": list(self.settings.pins),
            "feeds": self.settings.feeds.text,
            "anomalies": self.anomalies,
            "keys": {k: s.status(now) for k, s in self.sessions.items()},
        }

    async def _write_status(self) -> None:
        data = encode_status(self.status())
        await asyncio.to_thread(write_status, self.data_dir, data)

    # --- start / stop ------------------------------------------------------------------------------

    async def _wait_stop(self, until: datetime) -> bool:
        """Sleep until ``until`` (wall clock, re-checked each second) or a stop request; True if stopped."""
        while not self._stop.is_set():
            left = (until - clock.now()).total_seconds()
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
        now = clock.now()
        self.window = track_b_window(now.date(), self.settings.calendar, self.settings.window)
        if self.window is None:
            log_event(
                logging.INFO,
                "capture_not_started",
                reason="no Track B window today (market closed)",
                day=now.date().isoformat(),
                calendar=self.settings.calendar.mode,
            )
            return EXIT_OK
        self.stop_at = self.window.end if self.settings.until is None else min(self.settings.until, self.window.end)
        if now >= self.stop_at:
            why = (
                "--until is in the past"
                if self.settings.until is not None and self.settings.until <= now
                else "today's window is over"
            )
            log_event(
                logging.INFO, "capture_not_started", reason=why, stop_at=self.stop_at, window=self.window.as_dict()
            )
            return EXIT_OK
        prev_status = read_status(self.data_dir)
        if now < self.window.start:
            self.state = "waiting"
            log_event(logging.INFO, "capture_waiting", until=self.window.start, window=self.window.as_dict())
            await self._write_status()
            if await self._wait_stop(self.window.start):
                log_event(logging.INFO, "capture_not_started", reason=self.stop_reason)
                return EXIT_OK
        self.recording_from = max(clock.now(), self.window.start)
        return await self._record_window(prev_status)

    async def _record_window(self, prev_status: dict[str, Any] | None) -> int:
        assert self.window is not None and self.stop_at is not None
        day = self.window.day
        recoveries: dict[str, list[Recovery]] = {}
        store_dir = self.data_dir / "state"
        ctx = SessionContext(
            run_id=self.run_id,
            settings=self.settings,
            events=self.events,
            triggers=self.triggers,
            recording_from=self.recording_from,
            t0=self.t0,
            process_t0=self._proc_t0,
            host=self,
        )
        for config in self.configs:
            recoveries[config.key_id] = await asyncio.to_thread(recover_key, self.data_dir, config.key_id, day)
        for config in self.configs:
            key_id = config.key_id
            journal = Journal(
                self.data_dir, key_id, run_id=self.run_id, on_event=lambda ev, k=key_id: self._journal_event(k, ev)
            )
            tokens = open_token_provider(config, store_dir, events=self.events)  # PostgreSQL if OBSERVER_STATE_DB_URL
            self.sessions[key_id] = KeySession(ctx, config, tokens, journal)
        self.manager = SlotManager(
            list(self.sessions), pins=list(self.settings.pins), now=clock.now(), capacity=self.settings.capacity
        )
        self.snapshots = TrackASnapshots(self.settings.lake_dir or self.data_dir, day)
        self.events.emit(
            "capture_started",
            run_id=self.run_id,
            pid=os.getpid(),
            keys=list(self.sessions),
            window=self.window.as_dict(),
            stop_at=self.stop_at,
            pins=list(self.settings.pins),
            calendar=self.settings.calendar.mode,
            failure_after_s=self.settings.failure_after,
        )
        log_event(
            logging.INFO,
            "capture_started",
            run_id=self.run_id,
            keys=list(self.sessions),
            window=self.window.as_dict(),
            stop_at=self.stop_at,
            pins=len(self.settings.pins),
            setup_s=round(time.monotonic() - self.t0, 3),
        )
        settle_restart_gaps(
            self.sessions,
            self.events,
            data_dir=self.data_dir,
            day=day,
            started_at=self.started_at,
            run_id=self.run_id,
            prev_status=prev_status,
            recoveries=recoveries,
        )
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
            asyncio.create_task(
                self._every(min(1.0, self.settings.failure_after / 4), self._check_failures, "failure rule")
            ),
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
                log_event(
                    logging.CRITICAL,
                    "session_ended_unexpectedly",
                    task=t.get_name(),
                    error=f"{type(exc).__name__}: {exc}" if exc else "returned",
                )
            self.request_stop("session ended unexpectedly")
            code = EXIT_FAILED
        else:
            stopper.result()
            if self.stop_reason is None:
                self.stop_reason = (
                    "until" if self.settings.until is not None and self.stop_at == self.settings.until else "window end"
                )
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
        now = clock.now()
        mid_window = (
            (self.stop_reason or "").startswith("signal")
            and self.stop_at is not None
            and now < self.stop_at - timedelta(seconds=1)
        )
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
        summary = {k: s.summary(now) for k, s in self.sessions.items()}
        try:
            await self._write_status()
        except OSError as exc:
            log_event(logging.ERROR, "status_write_failed", error=str(exc))
        self.events.emit(
            "capture_stopped",
            run_id=self.run_id,
            reason=self.stop_reason,
            keys=summary,
            ran_s=round(time.monotonic() - self.t0, 3),
        )
        log_event(logging.INFO, "capture_stopped", run_id=self.run_id, reason=self.stop_reason, keys=summary)
