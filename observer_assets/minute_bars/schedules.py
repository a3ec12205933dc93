"""The day's minute bars are fetched once its last phase is over: 10 minutes after the last Track A slot.

KIS serves a day's minute bars for about a year, so nothing is lost by waiting; asking after the last phase gets
every bar in one pass (asking earlier would have to ask again for the rest). The schedule ticks every 10 minutes
and asks from then until 23:50 with one run key per day, so a daemon that was down at the due time still asks.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import dagster as dg

from observer_assets.minute_bars.assets import minute_bars
from observer_assets.orchestration.partitions import calendar, day_key, trading_day_partitions
from observer_assets.orchestration.runs import max_runtime
from observer_resources.calendar import KST

AFTER_LAST_SLOT = timedelta(minutes=10)
LAST_ASK = time(23, 50)
MINUTE_BARS_TAGS = {"observer/kind": "history"}

minute_bars_job = dg.define_asset_job(
    "minute_bars_job",
    selection=dg.AssetSelection.assets(minute_bars),
    tags={**MINUTE_BARS_TAGS, **max_runtime("minute_bars_job")},
    description="Fetch a trading day's 1-minute bars of every universe member (after the day's last phase).",
)


def due(now: datetime) -> bool:
    """Whether the minute bars of ``now``'s day are due (pure: the calendar decides)."""
    now = now.astimezone(KST)
    slots = calendar().track_a_slots(now.date())
    return bool(slots) and slots[-1] + AFTER_LAST_SLOT <= now and now.time() <= LAST_ASK


@dg.schedule(
    cron_schedule="*/10 * * * *",
    execution_timezone="Asia/Seoul",
    job=minute_bars_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The day's minute bars, 10 minutes after its last Track A slot (20:10 KST on the two-venue day, "
    "15:40 on the KRX-only one); trading days only.",
)
def minute_bars_after_the_day(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    at = context.scheduled_execution_time.astimezone(KST)
    if not due(at):
        return dg.SkipReason(f"{at:%Y-%m-%d %H:%M}: not after the last phase of a trading day")
    key = day_key(at.date())
    context.instance.add_dynamic_partitions(trading_day_partitions.name, [key])
    return dg.RunRequest(partition_key=key, run_key=f"minute_bars:{key}", tags=MINUTE_BARS_TAGS)
