"""Everything issue 6 contributes to Observer's Dagster definitions (merged into definitions.py)."""

import dagster as dg

from observer_assets.ops.assets import backup_job, daily_backup, restore_job, retention_job
from observer_assets.ops.events import system_events
from observer_assets.ops.schedules import backup_daily, retention_daily, system_events_daily, system_events_job
from observer_assets.ops.sensors import backup_catch_up

ops_defs = dg.Definitions(
    assets=[system_events, daily_backup],
    jobs=[backup_job, restore_job, retention_job, system_events_job],
    schedules=[backup_daily, retention_daily, system_events_daily],
    sensors=[backup_catch_up],
)
