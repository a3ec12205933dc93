"""Assembles Observer's Dagster definitions; every piece lives in its domain folder."""

import dagster as dg

from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.schedules import track_a_every_10_minutes, track_a_job
from observer_assets.track_a.sensors import track_a_catch_up
from observer_assets.gaps import defs as gaps
from observer_assets.gaps import freshness
from observer_assets.ops import defs as ops
from observer_assets.partition_registrar import partition_registrar
from observer_assets.runs import pool_limits
from observer_assets.track_b import defs as track_b
from observer_assets.universe.assets import universe
from observer_assets.universe.schedules import universe_before_open, universe_job
from observer_assets.universe.sensors import universe_catch_up
from observer_resources.resources import kis_pool_from_env

defs = dg.Definitions.merge(
    dg.Definitions(
        assets=[universe, track_a_snapshot],
        jobs=[universe_job, track_a_job],
        schedules=[universe_before_open, track_a_every_10_minutes],
        sensors=[universe_catch_up, track_a_catch_up, partition_registrar, pool_limits],
        resources={"kis": kis_pool_from_env()},  # every configured app key (docs/multi-key.md)
    ),
    track_b.track_b_defs,
    gaps.gaps_defs,
    ops.ops_defs,
    freshness.freshness_defs,
)
