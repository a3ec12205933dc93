"""Definitions `dagster dev` loads in the end-to-end limits test: the real Track A asset (with its pool), the job the
schedule launches, and the sensor that writes the pool limits into the instance. Nothing scheduled, so only the
test's launches run; the KIS resource comes from the environment (the test's local exchange)."""

import dagster as dg

from observer_assets.gaps.checks import TRACK_A_CHECKS
from observer_assets.monitoring.freshness import track_a_current_slot_fresh
from observer_assets.orchestration.runs import pool_limits
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.schedules import track_a_job
from observer_assets.universe.assets import universe
from observer_resources.resources import kis_resource_from_env

defs = dg.Definitions(
    assets=[track_a_snapshot, universe],
    jobs=[track_a_job],
    sensors=[pool_limits],
    asset_checks=[*TRACK_A_CHECKS, track_a_current_slot_fresh],
    resources={"kis": kis_resource_from_env()},
    executor=dg.in_process_executor,
)  # no step subprocess: each run is one process
