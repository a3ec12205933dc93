"""Track A (the 10-minute REST snapshots): this domain's Dagster definitions."""

import dagster as dg

from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.schedules import track_a_every_10_minutes, track_a_job
from observer_assets.track_a.sensors import track_a_catch_up

defs = dg.Definitions(
    assets=[track_a_snapshot], jobs=[track_a_job], schedules=[track_a_every_10_minutes], sensors=[track_a_catch_up]
)
