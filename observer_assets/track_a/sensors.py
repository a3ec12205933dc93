"""Catch-up for Track A: the current slot, when its scheduled tick was missed (a deployment started mid-slot).

A slot collected late is still a snapshot of the universe, taken at `fetched_at`; its lateness is in the
metadata and the gap report flags it. Slots older than the current one are not fetched live (a current-price
snapshot cannot be taken after the fact): they are gaps for the backfill.
"""

import dagster as dg

from observer_assets.orchestration.catch_up import has_run
from observer_assets.orchestration.partitions import calendar, slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import KIS_REST_TAGS, LATE_TAG
from observer_assets.track_a.schedules import track_a_job, universe_wait
from observer_resources import clock

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
