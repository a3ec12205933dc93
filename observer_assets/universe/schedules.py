"""The universe is built at 05:00 KST on trading days, before the open."""


import dagster as dg

from observer_assets.partitions import calendar, day_key, trading_day_partitions
from observer_assets.runs import KIS_REST_TAGS
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST

universe_job = dg.define_asset_job(
    "universe_job", selection=dg.AssetSelection.assets(universe), tags=KIS_REST_TAGS
)


@dg.schedule(
    cron_schedule="0 5 * * *",
    execution_timezone="Asia/Seoul",
    job=universe_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Builds the day's universe at 05:00 KST on trading days (the KRX calendar decides; holidays skip).",
)
def universe_before_open(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    d = context.scheduled_execution_time.astimezone(KST).date()
    if not calendar().is_trading_day(d):
        return dg.SkipReason(f"{d} is not a trading day")
    key = day_key(d)
    context.instance.add_dynamic_partitions(trading_day_partitions.name, [key])
    return dg.RunRequest(partition_key=key, run_key=f"universe:{key}", tags=KIS_REST_TAGS)
