"""Backups, restores, retention and the system-event summary: this domain's Dagster definitions."""

import dagster as dg

from observer_assets.ops.assets import backup_job, daily_backup, restore_job, retention_job, verify_backups_job
from observer_assets.ops.events import system_events
from observer_assets.ops.schedules import (
    backup_daily,
    retention_daily,
    system_events_daily,
    system_events_job,
    verify_backups_weekly,
)
from observer_assets.ops.sensors import backup_catch_up

ops_defs = dg.Definitions(
    assets=[system_events, daily_backup],
    jobs=[backup_job, restore_job, retention_job, system_events_job, verify_backups_job],
    schedules=[backup_daily, retention_daily, system_events_daily, verify_backups_weekly],
    sensors=[backup_catch_up],
)
