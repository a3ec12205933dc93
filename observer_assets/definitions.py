"""Assembles Observer's Dagster definitions: each domain folder's ``defs.py``, and the KIS resource they share."""

import dagster as dg

from observer_assets.backup import defs as backup
from observer_assets.daily_bars import defs as daily_bars
from observer_assets.gaps import defs as gaps
from observer_assets.minute_bars import defs as minute_bars
from observer_assets.monitoring import defs as monitoring
from observer_assets.orchestration import defs as orchestration
from observer_assets.track_a import defs as track_a
from observer_assets.track_b import defs as track_b
from observer_assets.universe import defs as universe
from observer_resources.resources import kis_pool_from_env

defs = dg.Definitions.merge(
    universe.defs,
    track_a.defs,
    track_b.defs,
    gaps.defs,
    minute_bars.defs,
    daily_bars.defs,
    backup.defs,
    monitoring.defs,
    orchestration.defs,
    dg.Definitions(resources={"kis": kis_pool_from_env()}),  # every configured app key (docs/multi-key.md)
)
