"""Track A (the 10-minute REST snapshots and their daily table): this domain's Dagster definitions."""

import dagster as dg

from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.daily import track_a_daily
from observer_assets.track_a.schedules import track_a_daily_job, track_a_every_10_minutes, track_a_job
from observer_assets.track_a.sensors import track_a_catch_up, track_a_daily_sensor

defs = dg.Definitions(
    assets=[track_a_snapshot, track_a_daily],
    jobs=[track_a_job, track_a_daily_job],
    schedules=[track_a_every_10_minutes],
    sensors=[track_a_catch_up, track_a_daily_sensor],
)
