"""Catch-up for the universe: a deployment started after 05:00 (or a missed tick) still gets today's universe."""

from datetime import time

import dagster as dg

from observer_assets.orchestration.catch_up import has_run
from observer_assets.orchestration.partitions import calendar, day_key, trading_day_partitions
from observer_assets.orchestration.runs import KIS_REST_TAGS
from observer_assets.universe.schedules import universe_job
from observer_resources import clock

BUILD_AT = time(5, 0)


@dg.sensor(
    job=universe_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests today's universe when the 05:00 schedule did not (late start, missed tick).",
)
def universe_catch_up(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cal = calendar()
    now = clock.now()
    d = now.date()
    if not cal.is_trading_day(d):
        return dg.SkipReason(f"{d} is not a trading day")
    if cal.mode == "krx" and now.time() < BUILD_AT:
        return dg.SkipReason("before the 05:00 build")
    key = day_key(d)
    if has_run(context.instance, universe_job.name, key):
        return dg.SkipReason(f"universe {key} already requested")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=f"universe-catch-up:{key}", tags=KIS_REST_TAGS)],
        dynamic_partitions_requests=[trading_day_partitions.build_add_request([key])],
    )
