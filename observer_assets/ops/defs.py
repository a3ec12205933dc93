"""Everything issue 6 contributes to Observer's Dagster definitions (merged into definitions.py)."""

import dagster as dg

from observer_assets.ops.assets import backup_job, daily_backup, restore_job, retention_job
from observer_assets.ops.schedules import backup_daily, retention_daily
from observer_assets.ops.sensors import backup_catch_up

ops_defs = dg.Definitions(
    assets=[daily_backup],
    jobs=[backup_job, restore_job, retention_job],
    schedules=[backup_daily, retention_daily],
    sensors=[backup_catch_up],
)
