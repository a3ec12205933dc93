"""The universe is built at 05:00 KST on trading days, before the open."""

import dagster as dg

from observer_assets.orchestration.partitions import trading_day_request
from observer_assets.orchestration.runs import KIS_REST_TAGS, max_runtime
from observer_assets.universe.assets import universe

universe_job = dg.define_asset_job(
    "universe_job", selection=dg.AssetSelection.assets(universe), tags={**KIS_REST_TAGS, **max_runtime("universe_job")}
)


@dg.schedule(
    cron_schedule="0 5 * * *",
    execution_timezone="Asia/Seoul",
    job=universe_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Builds the day's universe at 05:00 KST on trading days (the KRX calendar decides; holidays skip).",
)
def universe_before_open(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return trading_day_request(context, "universe", KIS_REST_TAGS)
