"""Track B's sensors: keep one capture run alive through the window; compact each hour once it has closed.

**track_b_capture_sensor** (every 15 s). In today's window on a trading day (any time on the open calendar), if
no capture run is queued, starting or started, it launches one (a fresh ``run_key`` per launch: a time stamp and
a counter kept in the cursor), with ``until`` = the window end and ``dagster/max_runtime`` = the rest of the
window + margin. Outside the window it does nothing. A dead capture run is therefore replaced on the next tick:

* the child dies -> the supervisor inside the run restarts it within seconds (the run stays up);
* the run worker dies (``kill -9``, OOM) -> the kernel SIGTERMs the child (``PR_SET_PDEATHSIG``), the code
  server that launched the run sees its process gone within 0.5 s and marks the run failed (DefaultRunLauncher;
  Dagster's run monitoring cannot check run-worker health with that launcher), and this sensor launches a
  new run on its next tick. Measured under ``dagster dev`` on 2 cores (tests/track_b/test_supervisor.py, slow):
  child gone 0.5-0.7 s after the kill, run FAILURE 0.4-1.0 s, new run created 6-9 s (the sensor's next tick,
  <= 15 s), dequeued 5 s later (the run queue's dequeue interval), run worker up ~2 s, capture registered again
  14-19 s after the kill: worst case ~ 15 + 5 + 3 + 3 = 26 s, inside the 30 s promise;
* the code server went too (so nobody marks the run failed) -> the supervisor heartbeat
  (``system/capture/supervisor.json``) names the run and its pid: a STARTED run whose pid is gone, or whose
  heartbeat is older than ``STALE_FAIL_S``, is marked failed here (which also interrupts a hung worker through
  Dagster's cancellation thread), and replaced.

Skip messages report liveness from the capture's status file (``system/capture/status.json``) and the heartbeat.

**track_b_compaction_sensor** (every 30 s). An hour is ready when it has journal data, its end + ``GRACE_S``
has passed (> the journal's group-commit interval, 0.02 s, and its 5 s idle seal) and every key's segment is sealed — or,
if a writer died and left one open, ``UNSEALED_WAIT_S`` after the hour end. It adds the partition and requests
``track_b_ticks`` + ``track_b_sampled`` once per *journal state*: the cursor remembers the fingerprint it
requested and the hour's manifest says which fingerprint was compacted, so a journal that changes after its
compaction (a recovered torn tail cut, a crashed writer's segment sealed on restart, a late flush) is requested
again, and an unchanged one never. A failed compaction run is not retried blindly: the hour stays listed as
"requested, not compacted" in the skip message until someone re-executes it or its journal changes. Hours older
than ``LOOKBACK_DAYS`` are left to the gap report and backfill, so the scan stays cheap.
"""

import json
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import dagster as dg

from observer_assets.orchestration.partitions import hour_key, track_b_hour_partitions
from observer_assets.orchestration.runs import max_runtime
from observer_assets.track_b import journal as jr
from observer_assets.track_b.assets import (
    compacted_from,
    hour_segments,
    journal_fingerprint,
    journal_hours,
    track_b_sampled,
    track_b_ticks,
)
from observer_assets.track_b.capture_job import run_tags, track_b_capture_job
from observer_assets.track_b.supervisor import capture_window, pid_alive, read_json, wall_age_s
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.market import calendar_from_env
from observer_resources.storage import lake
from observer_resources.storage.layout import heartbeat_path, status_path

Clock = Callable[[], datetime]

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
MIN_REMAINING_S = 20  # do not start a capture for the last seconds of a window
STALE_FAIL_S = 300  # a STARTED run whose supervisor has been silent this long is dead (hung or orphaned)
NO_BEAT_FAIL_S = 300  # a STARTED run that never wrote a heartbeat in this long is dead
STATUS_STALE_S = 15  # status.json older than this (capture writes it every 2 s) is reported as stale

GRACE_S = 30
UNSEALED_WAIT_S = 300
LOOKBACK_DAYS = 14
COMPACTION_TAGS = {"observer/track": "b", "observer/kind": "compaction"}

track_b_compaction_job = dg.define_asset_job(
    "track_b_compaction_job",
    selection=dg.AssetSelection.assets(track_b_ticks, track_b_sampled),
    tags={**COMPACTION_TAGS, **max_runtime("track_b_compaction_job")},
    description="Compacts one closed Track B hour: the journal to ticks, then the sampled view.",
)


def _now() -> datetime:
    return clock.now()


# --- liveness -------------------------------------------------------------------------------------


def _key_states(status: dict) -> dict[str, dict]:
    keys = status.get("keys")
    if isinstance(keys, dict):
        return {str(k): v for k, v in keys.items() if isinstance(v, dict)}
    if isinstance(keys, list):
        return {str(v.get("key_id", i)): v for i, v in enumerate(keys) if isinstance(v, dict)}
    return {k: v for k, v in status.items() if isinstance(v, dict) and "connected" in v}


def _count(v: object) -> object:
    return len(v) if isinstance(v, (list, tuple, dict)) else v


def describe_liveness(status: dict | None, beat: dict | None, now: datetime) -> str:
    """One line for a skip message: what the capture's status file and the supervisor heartbeat say."""
    parts = []
    if status is None:
        parts.append("no capture status file yet")
    elif "_unreadable" in status:
        parts.append(f"capture status unreadable ({status['_unreadable']})")
    else:
        age = wall_age_s(status, now)
        pid = status.get("pid")
        alive = "alive" if pid_alive(pid) else "NOT RUNNING"
        stale = " STALE" if age is None or age > STATUS_STALE_S else ""
        state = f" {status['state']}" if status.get("state") else ""
        parts.append(
            f"capture pid {pid} ({alive}{state}), status{stale} {age:.1f} s old"
            if age is not None
            else f"capture pid {pid} ({alive}{state}), status has no updated_at"
        )
        for k, v in sorted(_key_states(status).items()):
            parts.append(
                f"{k}: {'connected' if v.get('connected') else 'DISCONNECTED'}, "
                f"{_count(v.get('registered'))} registered/{_count(v.get('desired'))} desired, "
                f"{v.get('ticks')} ticks, {v.get('reconnects')} reconnects, "
                f"disconnected {v.get('disconnected_seconds')} s, mitigation {v.get('mitigation_level')}"
            )
    if beat and "_unreadable" not in beat:
        parts.append(
            f"supervisor of run {str(beat.get('run_id'))[:8]}: {beat.get('state')}, "
            f"{beat.get('restarts')} restarts, heartbeat {(wall_age_s(beat, now) or 0):.0f} s old"
        )
    return "; ".join(parts)


def dead_run_reason(record: dg.RunRecord, beat: dict | None, now: datetime) -> str | None:
    """Why a STARTED capture run is known dead although Dagster still shows it running, or None."""
    run = record.dagster_run
    if run.status != dg.DagsterRunStatus.STARTED:
        return None
    started = record.start_time
    if beat and beat.get("run_id") == run.run_id:
        if beat.get("host") == socket.gethostname() and not pid_alive(beat.get("pid")):
            return f"its run worker (pid {beat.get('pid')}) is gone"
        age = wall_age_s(beat, now)
        if beat.get("state") != "ended" and age is not None and age > STALE_FAIL_S:
            return f"its supervisor heartbeat is {age:.0f} s old (hung)"
        return None
    if started is not None and time.time() - started > NO_BEAT_FAIL_S:  # Dagster's start_time is wall time
        return f"no supervisor heartbeat in the {NO_BEAT_FAIL_S} s since it started"
    return None


# --- the capture sensor -----------------------------------------------------------------------------


def evaluate_capture(context: dg.SensorEvaluationContext, now: datetime) -> dg.SensorResult | dg.SkipReason:
    now = now.astimezone(KST)
    cal = calendar_from_env()
    w = capture_window(cal, now.date())
    if w is None:
        return dg.SkipReason(f"{now.date()} is not a trading day: no Track B window")
    if not w.contains(now):
        return dg.SkipReason(f"outside the Track B window of {w.day} ({w.start:%H:%M}-{w.end:%H:%M} KST)")
    remaining = (w.end - now).total_seconds()
    root = lake.local_dir()  # the capture's status and heartbeat live beside its journal
    status, beat = read_json(status_path(root)), read_json(heartbeat_path(root))
    instance = context.instance
    live = []
    for rec in instance.get_run_records(dg.RunsFilter(job_name=track_b_capture_job.name, statuses=IN_PROGRESS)):
        why = dead_run_reason(rec, beat, now)
        if why is None:
            live.append(rec.dagster_run)
            continue
        msg = f"track_b_capture_sensor: capture run {rec.dagster_run.run_id} is dead: {why}; a new run replaces it"
        context.log.warning(msg)
        instance.report_run_failed(rec.dagster_run, msg)
    if live:
        run = live[0]
        return dg.SkipReason(
            f"capture run {run.run_id[:8]} is {run.status.value.lower()}; " + describe_liveness(status, beat, now)
        )
    if remaining < MIN_REMAINING_S:
        return dg.SkipReason(f"the window ends in {remaining:.0f} s: not starting a capture")
    try:
        cursor = json.loads(context.cursor) if context.cursor else {}
    except ValueError:
        cursor = {}
    n = int(cursor.get("launches", 0)) + 1
    last = instance.get_run_records(dg.RunsFilter(job_name=track_b_capture_job.name), limit=1)
    prev = (
        f"previous run {last[0].dagster_run.run_id[:8]} {last[0].dagster_run.status.value.lower()}"
        if last
        else "first run"
    )
    context.log.info(f"launching Track B capture #{n} until {w.end.isoformat()} ({prev})")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"track_b_capture:{now:%Y%m%dT%H%M%S}:{n}",
                run_config={"ops": {"track_b_capture": {"config": {"until": w.end.isoformat()}}}},
                tags=run_tags(w.end, now),
            )
        ],
        cursor=json.dumps({"launches": n, "last_launch": now.isoformat(), "previous": prev}),
    )


def build_capture_sensor(now: Clock = _now, name: str = "track_b_capture_sensor") -> dg.SensorDefinition:
    """The supervisor sensor; ``now`` is injectable so tests can place it anywhere in the calendar."""

    @dg.sensor(
        name=name,
        job=track_b_capture_job,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps one Track B capture run alive during the Track B window on trading days (any time on "
        "the open calendar): launches one when none is queued or running, and replaces a dead one.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return evaluate_capture(context, now())

    return _sensor


# --- the compaction sensor ---------------------------------------------------------------------------


def evaluate_compaction(context: dg.SensorEvaluationContext, now: datetime) -> dg.SensorResult | dg.SkipReason:
    now = now.astimezone(KST)
    root, local = lake.data_dir(), lake.local_dir()
    since = now - timedelta(days=LOOKBACK_DAYS)
    try:
        cursor = json.loads(context.cursor) if context.cursor else {}
    except ValueError:
        cursor = {}
    requested: dict[str, str] = dict(cursor.get("requested", {}))
    requests: list[dg.RunRequest] = []
    open_hours, unsealed, pending = [], [], []
    done = 0
    for h in journal_hours(local, since):
        key = hour_key(h)
        end = h + timedelta(hours=1)
        if now < end + timedelta(seconds=GRACE_S):
            open_hours.append(key)
            continue
        segs = hour_segments(local, h)
        if now < end + timedelta(seconds=UNSEALED_WAIT_S) and not all(jr.segment_closed(s) for s in segs):
            unsealed.append(key)
            continue
        fp = journal_fingerprint(segs)
        compacted = compacted_from(root, h)
        if compacted == fp:
            done += 1
            requested.pop(key, None)
            continue
        if requested.get(key) == fp:
            pending.append(key)
            continue
        why = "changed since its compaction" if compacted else "closed"
        context.log.info(f"requesting Track B compaction of {key} ({why}; journal {fp})")
        requests.append(
            dg.RunRequest(partition_key=key, run_key=f"track_b_compaction:{key}:{fp}", tags=COMPACTION_TAGS)
        )
        requested[key] = fp
    oldest = hour_key(since)
    requested = {k: v for k, v in sorted(requested.items()) if k >= oldest}
    new_cursor = json.dumps({"requested": requested}, separators=(",", ":"))
    if not requests:
        parts = [f"{done} hours compacted"]
        if open_hours:
            parts.append(f"open: {', '.join(open_hours)}")
        if unsealed:
            parts.append(f"waiting for the writer to seal: {', '.join(unsealed)}")
        if pending:
            parts.append(f"requested, not compacted yet: {', '.join(pending)}")
        return dg.SensorResult(skip_reason="nothing to compact (" + "; ".join(parts) + ")", cursor=new_cursor)
    keys = [r.partition_key for r in requests]
    new_keys = [k for k in keys if not context.instance.has_dynamic_partition(track_b_hour_partitions.name, k)]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[track_b_hour_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=new_cursor,
    )


def build_compaction_sensor(now: Clock = _now, name: str = "track_b_compaction_sensor") -> dg.SensorDefinition:
    """The compaction sensor; ``now`` is injectable for tests."""

    @dg.sensor(
        name=name,
        job=track_b_compaction_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Compacts each Track B hour once it has closed (hour end + 30 s, every key's journal segment "
        "sealed): adds the hour partition and requests track_b_ticks and track_b_sampled; again if the hour's "
        "journal changes after its compaction.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return evaluate_compaction(context, now())

    return _sensor


track_b_capture_sensor = build_capture_sensor()
track_b_compaction_sensor = build_compaction_sensor()
