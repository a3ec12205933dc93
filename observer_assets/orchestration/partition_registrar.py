"""Every elapsed trading day and Track A slot exists as a partition, in time order, never a future one.

A slot registered only when its run fired made a slot the deployment never ran invisible: after a restart the
partition bar read "3 of 3" while the morning was missing, and keys added later sorted out of order. This sensor
registers, every minute, every trading day up to today and every valid slot up to now from the start of the
deployment's history (the oldest key it holds, ``OBSERVER_HISTORY_START``, or on a fresh instance the current slot),
reordering when an older key was missing. So the UI shows what is missing, the missing-only backfill picks it, and the gap report and its backfill see
it. Why dynamic partitions and not time windows: docs/architecture.md ("Partitions that tell the truth").
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from observer_assets.orchestration.partitions import calendar, history_start, register_elapsed
from observer_resources import clock, settings
from observer_resources.calendar import CalendarRangeError

HISTORY_START_ENV = "OBSERVER_HISTORY_START"


def now() -> datetime:
    """The registrar's clock (a module function, so a test can drive a simulated day through the real sensor)."""
    return clock.now()


@dg.sensor(
    name="partition_registrar",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every elapsed trading day and Track A slot as a partition, in time order (a slot from its "
    "instant on): what never ran shows as missing, and backfills can pick it.",
)
def partition_registrar(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    try:
        configured = settings.get(HISTORY_START_ENV)
        at, cal = now(), calendar()
        start, first_slot = history_start(context.instance, cal, at, configured)
        done = register_elapsed(context.instance, cal, start, at, first_slot)
    except (settings.SettingsError, CalendarRangeError) as e:
        return dg.SkipReason(f"partitions not registered: {e}")
    changed = {k: v for k, v in done.items() if v["added"] or v["reordered"]}
    if changed:
        context.log.info(f"registered {changed}")
    return dg.SkipReason(f"registered {changed}" if changed else "every elapsed day and slot is a partition")
