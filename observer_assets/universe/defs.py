"""The day's universe: this domain's Dagster definitions."""

import dagster as dg

from observer_assets.universe.assets import universe
from observer_assets.universe.schedules import universe_before_open, universe_job
from observer_assets.universe.sensors import universe_catch_up

defs = dg.Definitions(
    assets=[universe], jobs=[universe_job], schedules=[universe_before_open], sensors=[universe_catch_up]
)
