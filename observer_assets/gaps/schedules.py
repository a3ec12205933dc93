"""The gap report runs itself: through the session, once more with the final verdict, and after every repair.

KIS serves trade-level conclusions for today only, so a Track B loss is best restored the same day: the report is
recomputed every 30 minutes from the day's first Track A slot until an hour after its last (each run sees what the
backfill and restore sensors did since), then once at 20:40 KST with the day's final verdict, before the 20:50 event
summary and the 21:00 backup carry it. A backfill or restore that succeeds asks for a fresh report at once
(``gap_report_after_repair`` in sensors.py), so the UI never shows a gap as open after it was closed.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import dagster as dg

from observer_assets.gaps.assets import gap_report
from observer_assets.orchestration.partitions import calendar, day_key, trading_day_partitions
from observer_assets.orchestration.runs import max_runtime
from observer_resources.calendar import KST

GAP_REPORT_TAGS = {"observer/kind": "gap_report"}
EVERY_MINUTES = 30
AFTER_CLOSE = timedelta(hours=1)  # late runs, the backfill and the restore settle in this hour
FINAL_AT = time(20, 40)

gap_report_job = dg.define_asset_job(
    "gap_report_job",
    selection=dg.AssetSelection.assets(gap_report),
    tags={**GAP_REPORT_TAGS, **max_runtime("gap_report_job")},
    description="Recompute a trading day's gap report (missing and late slots, missing symbols, Track B losses, "
    "disconnects) and its anomaly verdict.",
)


def due(now: datetime) -> str | None:
    """Why a report of `now`'s day is due at `now` ("session", "final"), or None (pure: the calendar decides).

    The day runs from its first Track A slot to an hour after its last, and no later than the final report: KRX's
    session on the KRX-only day, 08:00-20:40 on the two-venue day, so an after-market loss is backfilled within the
    hour like a morning one, not after the final report."""
    now = now.astimezone(KST)
    slots = calendar().track_a_slots(now.date())  # empty on a closed day; the session's instants at least else
    if not slots:
        return None
    if now.time().replace(second=0, microsecond=0) == FINAL_AT:
        return "final"
    final = datetime.combine(now.date(), FINAL_AT, KST)
    if slots[0] <= now <= slots[-1] + AFTER_CLOSE and now < final:
        return "session"
    return None


@dg.schedule(
    cron_schedule=[f"*/{EVERY_MINUTES} * * * *", f"{FINAL_AT.minute} {FINAL_AT.hour} * * *"],
    execution_timezone="Asia/Seoul",
    job=gap_report_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Today's gap report every 30 minutes from the day's first Track A slot until an hour after its last "
    "(before the final), and at 20:40 KST with the final verdict (trading days only; the calendar decides).",
)
def gap_report_through_the_day(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    at = context.scheduled_execution_time.astimezone(KST)
    why = due(at)
    if why is None:
        return dg.SkipReason(f"{at:%Y-%m-%d %H:%M} is outside the session of a trading day")
    key = day_key(at.date())
    context.instance.add_dynamic_partitions(trading_day_partitions.name, [key])
    return dg.RunRequest(
        partition_key=key, run_key=f"gap_report:{key}:{at:%H%M}", tags={**GAP_REPORT_TAGS, "observer/gap_report": why}
    )
