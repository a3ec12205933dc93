"""Catch-up for backups: a missed 21:00 tick (the host was down), a failed run, or a day changed after its backup
(a late restore, an event written after the package) gets a new package without waiting a day."""

from __future__ import annotations

import dagster as dg

from observer_assets.backup.assets import backup_job
from observer_assets.backup.schedules import backup_requests
from observer_assets.backup.settings import SettingsError
from observer_assets.orchestration.partitions import trading_day_partitions
from observer_resources import clock
from observer_resources.storage.lake import LakeConfigError


@dg.sensor(
    job=backup_job,
    minimum_interval_seconds=600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 10 minutes: requests a backup for each day (today only after 21:00 KST) whose package is "
    "missing, unverified or older than its local files.",
)
def backup_catch_up(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    now = clock.now()
    try:
        reqs, new, why = backup_requests(context.instance, now, "backup-catch-up", today_if_changed=False)
    except (SettingsError, LakeConfigError) as e:
        return dg.SkipReason(f"backup not configured: {e}")
    if not reqs:
        return dg.SkipReason("nothing to back up" if not why else "already requested: " + "; ".join(why[:5]))
    return dg.SensorResult(
        run_requests=reqs, dynamic_partitions_requests=[trading_day_partitions.build_add_request(new)] if new else []
    )
