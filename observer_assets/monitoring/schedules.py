"""The day's system-event summary at 20:50 KST, before the 21:00 backup that carries it."""

from __future__ import annotations

import dagster as dg

from observer_assets.monitoring.events import system_events
from observer_assets.orchestration.partitions import trading_day_request
from observer_assets.orchestration.runs import max_runtime

system_events_job = dg.define_asset_job(
    "system_events_job", selection=dg.AssetSelection.assets(system_events), tags=max_runtime("system_events_job")
)


@dg.schedule(
    cron_schedule="50 20 * * *",
    execution_timezone="Asia/Seoul",
    job=system_events_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="20:50 KST on trading days: the day's system-event summary, so the 21:00 backup carries it.",
)
def system_events_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return trading_day_request(context, "system_events")
