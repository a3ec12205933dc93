"""Definitions `dagster dev` loads in the daily-history backfill test: daily_bars with its check and the universe, the
KIS resource from the environment (the test's local exchange). Nothing scheduled: only the operator's backfill runs."""

import dagster as dg

from observer_assets.daily_bars.assets import daily_bars
from observer_assets.daily_bars.checks import daily_bars_consistent
from observer_assets.universe.assets import universe
from observer_resources.resources import kis_resource_from_env

defs = dg.Definitions(
    assets=[daily_bars, universe],
    asset_checks=[daily_bars_consistent],
    resources={"kis": kis_resource_from_env()},
    executor=dg.in_process_executor,
)
