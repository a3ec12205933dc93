"""Track A every 10 minutes in the session, on trading days, from the calendar.

The cron fires every 10 minutes all day; the calendar decides whether the tick is a slot (09:00..15:30 on a
normal day, 10:00.. on late opens, ..16:30 on CSAT day). A slot's partition key is added at that instant, so no
future slot ever exists as a partition.
"""

from datetime import date

import dagster as dg

from observer_assets.orchestration.catch_up import IN_FLIGHT, latest_run_status
from observer_assets.orchestration.partitions import calendar, day_key, slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import KIS_REST_TAGS, max_runtime
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.daily import track_a_daily
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import universe_path

FRESHNESS_CHECK = "track_a_current_slot_fresh"  # (monitoring/freshness.py: its own sensor and job)

track_a_job = dg.define_asset_job(
    # the snapshot and its data checks; the freshness judge has its own sensor and job (it judges "now", not the
    # partition a run writes, so a backfill run must not raise its alert)
    "track_a_job",
    selection=dg.AssetSelection.assets(track_a_snapshot)
    - dg.AssetSelection.checks(dg.AssetCheckKey(track_a_snapshot.key, FRESHNESS_CHECK)),
    tags={**KIS_REST_TAGS, **max_runtime("track_a_job")},
)

DAILY_TAGS = {"observer/kind": "track_a_daily"}
track_a_daily_job = dg.define_asset_job(
    "track_a_daily_job",
    selection=dg.AssetSelection.assets(track_a_daily),
    tags={**DAILY_TAGS, **max_runtime("track_a_daily_job")},
    description="Compact a trading day's Track A slot files into track_a_daily (sorted by code, one file).",
)

UNIVERSE_JOB = "universe_job"


def universe_wait(instance: dg.DagsterInstance, day: date, *, unrequested: bool) -> str | None:
    """Why a Track A slot of `day` must wait for the day's universe, or None when it need not.

    A slot launched while the universe run is still going fails for want of it on a fresh deployment, or takes the
    day before's: it waits, and the catch-up sensor launches it as soon as that run ends. A finished run that left no
    universe (the gate refused it, or it failed) never holds Track A back: the snapshot falls back to the latest
    universe before and says so. `unrequested`: whether a universe nobody asked for yet also waits (the catch-up
    sensor waits, since the universe's own catch-up asks for it within a minute; the schedule does not)."""
    if universe_path(lake.data_dir(), day).exists():
        return None
    status = latest_run_status(instance, UNIVERSE_JOB, day_key(day))
    if status is None:
        return f"the universe of {day} is not requested yet" if unrequested else None
    return f"the universe of {day} is being built (run {status.value.lower()})" if status in IN_FLIGHT else None


@dg.schedule(
    cron_schedule="*/10 * * * *",
    execution_timezone="Asia/Seoul",
    job=track_a_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="A Track A snapshot at each 10-minute slot of the trading session (the KRX calendar decides).",
)
def track_a_every_10_minutes(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    t = context.scheduled_execution_time.astimezone(KST).replace(second=0, microsecond=0)
    slots = calendar().track_a_slots(t.date())
    if not slots:
        return dg.SkipReason(f"{t.date()} is not a trading day")
    if t not in slots:
        return dg.SkipReason(f"{t:%H:%M} is outside the session ({slots[0]:%H:%M}..{slots[-1]:%H:%M})")
    wait = universe_wait(context.instance, t.date(), unrequested=False)
    if wait is not None:
        return dg.SkipReason(f"{wait}; the catch-up sensor takes slot {t:%H:%M} once it is done")
    key = slot_key(t)
    context.instance.add_dynamic_partitions(track_a_slot_partitions.name, [key])
    return dg.RunRequest(partition_key=key, run_key=f"track_a:{key}", tags=KIS_REST_TAGS)
