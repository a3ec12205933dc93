"""Definitions `dagster dev` loads in the UI-path backfill test: Track A and the daily history with their checks and
the universe, the KIS resource from the environment (the test's local exchange). Nothing scheduled: only the
operator's backfills run."""

import dagster as dg

from observer_assets.daily_bars.assets import daily_bars
from observer_assets.daily_bars.checks import daily_bars_consistent
from observer_assets.gaps.checks import TRACK_A_CHECKS
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe.assets import universe
from observer_resources.resources import kis_resource_from_env

defs = dg.Definitions(
    assets=[track_a_snapshot, daily_bars, universe],
    asset_checks=[*TRACK_A_CHECKS, daily_bars_consistent],
    resources={"kis": kis_resource_from_env()},
    executor=dg.in_process_executor,
)  # no step subprocess: the test waits for the runs
