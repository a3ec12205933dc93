"""A Dagster daemon on a simulated clock: the real schedules and sensors, ticked against simulated time.

The Dagster daemon ticks on the wall clock, so it cannot follow a trading day played in a minute. This does what it
does, in simulated time: each step moves the shared clock (``observer_resources.clock``'s file, and the local
exchange's clock through its admin API) and then, like the daemon,

- evaluates every schedule at each of its cron instants crossed by the step (``scheduled_execution_time`` set, as
  the daemon sets it), and every running sensor once its minimum interval has passed in simulated time, with its
  cursor kept between ticks;
- applies what a tick returns: dynamic partition requests, asset observations, cursors;
- launches each requested run on the real instance with the tags the daemon adds (``dagster/schedule_name``,
  ``dagster/sensor_name``, ``dagster/run_key``) and skips a run key its sensor already used.

Runs execute in this process (``execute_in_process`` on the repository's job, so their resources, tags, checks and
event logs are the deployment's); the Track B capture job, which lasts the whole window, runs on a thread. What is
not exercised here is the run queue and launcher, which the make-run smoke tests cover with the real daemon.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._utils.schedules import cron_string_iterator

from observer_resources import clock
from observer_resources.clock import KST

LONG_JOBS = {"track_b_capture_job"}  # run on a thread: they last until the window ends
# After an outage Dagster's scheduler launches only the newest missed tick of a schedule without a partition set
# (every schedule here: plain cron schedules that pick their partition themselves); it logs "not trying to catch up".
MAX_CATCHUP_RUNS = 1


@dataclass
class Launched:
    origin: str
    job: str
    partition: str | None
    run_id: str | None
    success: bool | None
    at: str
    error: str | None = None
    wall_s: float | None = None


@dataclass
class SimDaemon:
    instance: dg.DagsterInstance
    repo: dg.RepositoryDefinition
    clock_file: Path
    set_exchange_clock: Callable[[datetime], None]
    log_path: Path
    now: datetime = field(default_factory=lambda: datetime.now(KST))
    cursors: dict[str, str | None] = field(default_factory=dict)
    last_eval: dict[str, datetime] = field(default_factory=dict)
    run_keys: set[tuple[str, str]] = field(default_factory=set)
    launched: list[Launched] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    ticked_until: datetime | None = None  # the last instant the scheduler looked at
    sensor_s: dict[str, float] = field(default_factory=dict)  # wall seconds spent evaluating each sensor

    # --- the clock ---------------------------------------------------------------------------------------------

    def set_time(self, at: datetime) -> None:
        at = at.astimezone(KST)
        clock.write_sim(self.clock_file, at, 0.0)
        self.set_exchange_clock(at)
        self.now = at

    def _log(self, **doc: Any) -> None:
        doc = {"sim": self.now.isoformat(timespec="seconds"), **doc}
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")

    # --- one step ----------------------------------------------------------------------------------------------

    def advance(self, to: datetime, step: timedelta, *, daemon_up: bool = True, settle_s: float = 0.0) -> None:
        """Move the clock to ``to`` in ``step``s; at each, tick what is due (unless the daemon is 'down')."""
        to = to.astimezone(KST)
        while self.now < to:
            self.set_time(min(to, self.now + step))
            if settle_s:
                time.sleep(settle_s)  # let the capture take in the ticks the exchange just revealed
            if daemon_up:
                self.tick()

    def tick(self) -> None:
        """One daemon iteration at the current instant. Schedules catch up the ticks they missed since the last
        iteration (an outage included) as Dagster's scheduler does: only the newest (``MAX_CATCHUP_RUNS``)."""
        since = self.ticked_until if self.ticked_until is not None else self.now - timedelta(seconds=1)
        for sched in self.repo.schedule_defs:
            for at in self._cron_instants(sched, since, self.now)[-MAX_CATCHUP_RUNS:]:
                self._tick_schedule(sched, at)
        self.ticked_until = self.now
        for sensor in self.repo.sensor_defs:
            last = self.last_eval.get(sensor.name)
            if last is not None and (self.now - last).total_seconds() < (sensor.minimum_interval_seconds or 30):
                continue
            self.last_eval[sensor.name] = self.now
            self._tick_sensor(sensor)

    @staticmethod
    def _cron_instants(sched: dg.ScheduleDefinition, since: datetime, until: datetime) -> list[datetime]:
        crons = sched.cron_schedule if isinstance(sched.cron_schedule, list | tuple) else [sched.cron_schedule]
        out: set[datetime] = set()
        for cron in crons:
            for t in cron_string_iterator(since.timestamp(), cron, sched.execution_timezone or "Asia/Seoul"):
                t = t.astimezone(KST)
                if t > until:
                    break
                if t > since:
                    out.add(t)
        return sorted(out)

    def _tick_schedule(self, sched: dg.ScheduleDefinition, at: datetime) -> None:
        ctx = dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at, repository_def=self.repo)
        data = sched.evaluate_tick(ctx)
        self._log(
            kind="schedule",
            name=sched.name,
            at=at.isoformat(),
            runs=len(data.run_requests or []),
            skip=data.skip_message,
        )
        for req in data.run_requests or []:
            self._launch(f"schedule:{sched.name}", sched.job_name, req, {"dagster/schedule_name": sched.name})

    def _tick_sensor(self, sensor: dg.SensorDefinition) -> None:
        # as the code server evaluates a sensor for the daemon: from an instance ref, no ambient partition context
        ctx = dg.build_sensor_context(
            instance=self.instance,
            instance_ref=self.instance.get_ref(),
            cursor=self.cursors.get(sensor.name),
            repository_def=self.repo,
            sensor_name=sensor.name,
        )
        t0 = time.monotonic()
        try:
            data = sensor.evaluate_tick(ctx)
        except Exception as e:  # noqa: BLE001 - the daemon records a failed tick and carries on; so do we
            self._log(kind="sensor", name=sensor.name, error=f"{type(e).__name__}: {e}")
            return
        self.sensor_s[sensor.name] = self.sensor_s.get(sensor.name, 0.0) + time.monotonic() - t0
        self.cursors[sensor.name] = data.cursor
        for req in data.dynamic_partitions_requests or []:
            if isinstance(req, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            else:
                for k in req.partition_keys:
                    self.instance.delete_dynamic_partition(req.partitions_def_name, k)
        for ev in data.asset_events or []:
            self.instance.report_runless_asset_event(ev)
        reqs = data.run_requests or []
        if reqs or data.skip_message is None:
            self._log(kind="sensor", name=sensor.name, runs=len(reqs), skip=data.skip_message)
        for req in reqs:
            job = req.job_name or (sensor.job_name if sensor.has_jobs else None)
            self._launch(f"sensor:{sensor.name}", job, req, {"dagster/sensor_name": sensor.name})

    # --- runs --------------------------------------------------------------------------------------------------

    def _launch(self, origin: str, job_name: str | None, req: dg.RunRequest, origin_tags: dict[str, str]) -> None:
        if job_name is None:
            self._log(kind="run", origin=origin, error="run request without a job")
            return
        if req.run_key is not None:
            if (origin, req.run_key) in self.run_keys:
                self._log(kind="run", origin=origin, skipped_run_key=req.run_key)
                return
            self.run_keys.add((origin, req.run_key))
        tags = {**(req.tags or {}), **origin_tags}
        if req.run_key is not None:
            tags["dagster/run_key"] = req.run_key
        if job_name in LONG_JOBS:
            t = threading.Thread(target=self._execute, args=(origin, job_name, req, tags), name=job_name, daemon=True)
            t.start()
            self.threads.append(t)
        else:
            self._execute(origin, job_name, req, tags)

    def _execute(self, origin: str, job_name: str, req: dg.RunRequest, tags: dict[str, str]) -> None:
        job = self.repo.get_job(job_name)
        rec = Launched(origin, job_name, req.partition_key, None, None, self.now.isoformat(timespec="seconds"))
        self.launched.append(rec)
        t0 = time.monotonic()
        try:
            res = job.execute_in_process(
                run_config=req.run_config or None,
                instance=self.instance,
                partition_key=req.partition_key,
                asset_selection=list(req.asset_selection) if req.asset_selection else None,
                tags=tags,
                raise_on_error=False,
            )
            rec.run_id, rec.success = res.run_id, res.success
            rec.wall_s = round(time.monotonic() - t0, 3)
        except Exception as e:  # noqa: BLE001 - a run that cannot even start is a failed launch, logged
            rec.success, rec.error = False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
        self._log(
            kind="run",
            origin=origin,
            job=job_name,
            partition=req.partition_key,
            run_id=rec.run_id,
            success=rec.success,
            error=rec.error,
        )

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
