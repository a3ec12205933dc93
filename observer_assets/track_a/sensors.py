"""Track A's sensors: the catch-up of the current slot, and the daily table after the session.

Catch-up: the current slot, when its scheduled tick was missed (a deployment started mid-slot). A slot collected
late is still a snapshot of the universe, taken at `fetched_at`; its lateness is in the metadata and the gap report
flags it. Slots older than the current one are not fetched live (a current-price snapshot cannot be taken after the
fact): they are gaps for the backfill.

Daily table: the sensor follows track_a_snapshot's materializations in the event log (its cursor is the last storage
id read, plus the days seen but not yet requested). A day is requested once its session is over (the last slot and
its live window) with the run key ``track_a_daily:{day}:{newest storage id of the day's slots}``: the first time after
the close, and again whenever a slot of the day materializes after that — a backfill, a restore, a late run, a UI
re-materialization — since its storage id is newer. A day whose daily run is still in flight waits for it to end, so
two builds of one day never race and the last one reads every slot file.
"""

import json
from datetime import date, datetime, timedelta

import dagster as dg

from observer_assets.orchestration.catch_up import IN_FLIGHT, has_run, latest_run_status
from observer_assets.orchestration.partitions import (
    calendar,
    slot_key,
    track_a_slot_partitions,
    trading_day_partitions,
)
from observer_assets.orchestration.runs import KIS_REST_TAGS, LATE_TAG
from observer_assets.track_a.schedules import DAILY_TAGS, track_a_daily_job, track_a_job, universe_wait
from observer_resources import clock
from observer_resources.storage import lake
from observer_resources.storage.layout import TRACK_A

SCHEDULE_GRACE_S = 60  # leave the slot's first minute to the schedule


@dg.sensor(
    job=track_a_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the current Track A slot when no run exists for it (late start, missed tick, or a tick "
    "that waited for the universe), once the day's universe run has ended (without a universe: the latest before).",
)
def track_a_catch_up(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    now = clock.now()
    slot = calendar().slot_at(now)
    if slot is None:
        return dg.SkipReason("outside the session")
    if (now - slot).total_seconds() < SCHEDULE_GRACE_S:
        return dg.SkipReason(f"slot {slot:%H:%M} belongs to the schedule for its first minute")
    wait = universe_wait(context.instance, slot.date(), unrequested=True)
    if wait is not None:
        return dg.SkipReason(wait)
    key = slot_key(slot)
    if has_run(context.instance, track_a_job.name, key):
        return dg.SkipReason(f"slot {key} already requested")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=key, run_key=f"track_a-catch-up:{key}", tags={**KIS_REST_TAGS, LATE_TAG: "true"}
            )
        ],
        dynamic_partitions_requests=[track_a_slot_partitions.build_add_request([key])],
    )


SNAPSHOT_KEY = dg.AssetKey("track_a_snapshot")
DAILY_SETTLE = timedelta(minutes=10)  # the last slot's live run collects until the next slot would begin
RECORDS_PER_TICK = 5_000  # materializations read per tick (a day is 40); the rest on the next tick
REQUESTS_PER_TICK = 20  # days requested per tick: a first start over months of history spreads its runs out


def daily_due(pending: dict[str, int], now: datetime, instance: dg.DagsterInstance) -> list[str]:
    """The days of ``pending`` to request now: a day waits until its session is over (its last slot and that slot's
    live window) and while a daily run of it is in flight; at most ``REQUESTS_PER_TICK`` a tick."""
    cal = calendar()
    due = []
    for day in sorted(pending):
        slots = cal.track_a_slots(date.fromisoformat(day))
        if not slots or now < slots[-1] + DAILY_SETTLE:
            continue
        if latest_run_status(instance, track_a_daily_job.name, day) in IN_FLIGHT:
            continue
        due.append(day)
        if len(due) == REQUESTS_PER_TICK:
            break
    return due


def _day_of(slot_partition: str | None) -> str | None:
    """The trading day of a slot key (``2026-12-04T0150`` -> ``2026-12-04``); None for anything else."""
    try:
        return date.fromisoformat(slot_partition[:10]).isoformat() if slot_partition else None
    except ValueError:
        return None


@dg.sensor(
    job=track_a_daily_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds track_a_daily for a trading day once its session is over, and rebuilds it whenever a slot "
    "of that day is materialized again (backfill, restore, late run). Run key track_a_daily:{day}:{storage id}.",
)
def track_a_daily_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    after: int | None = state.get("after")
    pending: dict[str, int] = dict(state.get("pending", {}))
    got = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SNAPSHOT_KEY, after_storage_id=after), limit=RECORDS_PER_TICK, ascending=True
    )
    cal = calendar()
    for rec in got.records:
        after = rec.storage_id
        day = _day_of(rec.partition_key)
        if day is None or not cal.track_a_slots(date.fromisoformat(day)):
            context.log.warning(f"track_a_snapshot partition {rec.partition_key!r} names no trading day: ignored")
            continue
        pending[day] = max(pending.get(day, 0), rec.storage_id)
    due = daily_due(pending, clock.now(), context.instance)
    root = lake.data_dir()
    for d in [d for d in due if not lake.partition_dir(root, TRACK_A, date.fromisoformat(d)).exists()]:
        # materialized once, its files gone since (retention after the backup): nothing to compact, no failing run
        context.log.info(f"track_a_daily: no Track A files of {d} in the lake any more; not built")
        due.remove(d)
        pending.pop(d)
    requests = [
        dg.RunRequest(partition_key=d, run_key=f"track_a_daily:{d}:{pending.pop(d)}", tags=DAILY_TAGS) for d in due
    ]
    new_days = []
    if requests:
        known = set(context.instance.get_dynamic_partitions(trading_day_partitions.name))
        new_days = [r.partition_key for r in requests if r.partition_key not in known]
    waiting = ", ".join(sorted(pending)) or "none"
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps({"after": after, "pending": dict(sorted(pending.items()))}),
        dynamic_partitions_requests=[trading_day_partitions.build_add_request(new_days)] if new_days else None,
        skip_reason=None if requests else dg.SkipReason(f"no day to compact now (waiting: {waiting})"),
    )
