"""Backups, restores, retention and verification: this domain's Dagster definitions."""

import dagster as dg

from observer_assets.backup.assets import backup_job, daily_backup, restore_job, retention_job, verify_backups_job
from observer_assets.backup.schedules import backup_daily, retention_daily, verify_backups_weekly
from observer_assets.backup.sensors import backup_catch_up

defs = dg.Definitions(
    assets=[daily_backup],
    jobs=[backup_job, restore_job, retention_job, verify_backups_job],
    schedules=[backup_daily, retention_daily, verify_backups_weekly],
    sensors=[backup_catch_up],
)
