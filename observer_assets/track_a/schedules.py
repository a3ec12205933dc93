"""Track A every 10 minutes in the session, on trading days, from the calendar.

The cron fires every 10 minutes all day; the calendar decides whether the tick is a slot (09:00..15:30 on a
normal day, 10:00.. on late opens, ..16:30 on CSAT day). A slot's partition key is added at that instant, so no
future slot ever exists as a partition.
"""

import dagster as dg

from observer_assets.orchestration.partitions import calendar, slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import KIS_REST_TAGS, max_runtime
from observer_assets.track_a.assets import track_a_snapshot
from observer_resources.calendar import KST

FRESHNESS_CHECK = "track_a_current_slot_fresh"  # (monitoring/freshness.py: its own sensor and job)

track_a_job = dg.define_asset_job(
    # the snapshot and its data checks; the freshness judge has its own sensor and job (it judges "now", not the
    # partition a run writes, so a backfill run must not raise its alert)
    "track_a_job",
    selection=dg.AssetSelection.assets(track_a_snapshot)
    - dg.AssetSelection.checks(dg.AssetCheckKey(track_a_snapshot.key, FRESHNESS_CHECK)),
    tags={**KIS_REST_TAGS, **max_runtime("track_a_job")},
)


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
    key = slot_key(t)
    context.instance.add_dynamic_partitions(track_a_slot_partitions.name, [key])
    return dg.RunRequest(partition_key=key, run_key=f"track_a:{key}", tags=KIS_REST_TAGS)
