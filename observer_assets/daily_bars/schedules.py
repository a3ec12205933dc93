"""The current year is refreshed after each trading day's evening: its partition re-materializes, asking only the
new days of each symbol (and the whole year again for a symbol whose adjusted series moved: a corporate action)."""

import dagster as dg

from observer_assets.daily_bars.assets import FROM_YEAR_ENV, bar_year_partitions, daily_bars, first_year
from observer_assets.orchestration.partitions import calendar
from observer_assets.orchestration.runs import KIS_REST_TAGS, max_runtime
from observer_resources import clock

daily_bars_job = dg.define_asset_job(
    "daily_bars_job",
    selection=dg.AssetSelection.assets(daily_bars),
    tags={**KIS_REST_TAGS, **max_runtime("daily_bars_job")},
)


@dg.schedule(
    cron_schedule="30 20 * * *",
    execution_timezone="Asia/Seoul",
    job=daily_bars_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="After each trading day's evening (20:30 KST, after NXT's close) refreshes the current year of "
    "daily_bars: the new day of every symbol, and the whole year of a symbol with a corporate action.",
)
def daily_bars_after_close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    at = context.scheduled_execution_time or clock.now()
    day = at.astimezone(clock.KST).date()
    if not calendar().is_trading_day(day):
        return dg.SkipReason(f"{day} is not a trading day: nothing new to fetch")
    first = first_year()
    if day.year < first:
        return dg.SkipReason(f"the daily history starts in {first} ({FROM_YEAR_ENV}): nothing to keep yet")
    key = f"{day.year:04d}"
    if key not in context.instance.get_dynamic_partitions(bar_year_partitions.name):
        context.instance.add_dynamic_partitions(bar_year_partitions.name, [key])
    return dg.RunRequest(run_key=f"daily_bars:{day.isoformat()}", partition_key=key)
