"""Definitions `dagster dev` loads in the UI-path backfill test: Track A with its checks, the KIS resource from the
environment (the test's local exchange). Nothing scheduled, so nothing but the operator's backfill runs."""

import dagster as dg

from observer_assets.gaps.checks import TRACK_A_CHECKS
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe.assets import universe
from observer_resources.resources import kis_resource_from_env

defs = dg.Definitions(
    assets=[track_a_snapshot, universe],
    asset_checks=TRACK_A_CHECKS,
    resources={"kis": kis_resource_from_env()},
    executor=dg.in_process_executor,
)  # no step subprocess: the test waits for two runs
