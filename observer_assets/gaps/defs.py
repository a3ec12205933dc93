"""Everything issue 5 contributes to Observer's Dagster definitions (merged into definitions.py).

Plain lists so the backfill / checks / alerts pieces can be appended here."""

import dagster as dg

from observer_assets.gaps.assets import gap_report
from observer_assets.gaps.checks import TRACK_A_CHECKS, TRACK_B_CHECKS
from observer_assets.gaps.sensors import (
    check_failure_alerts,
    gap_backfill_sensor,
    run_failure_alerts,
    track_b_restore_job,
    track_b_restore_sensor,
)
from observer_assets.track_b.restore import track_b_restored

ASSETS = [gap_report]
ASSET_CHECKS: list = []
JOBS: list = []
SENSORS: list = []
SCHEDULES: list = []

# backfill, restore, checks and alerts (issue 5, part 2)
ASSETS += [track_b_restored]
ASSET_CHECKS += [*TRACK_A_CHECKS, *TRACK_B_CHECKS]
JOBS += [track_b_restore_job]
SENSORS += [gap_backfill_sensor, track_b_restore_sensor, run_failure_alerts, check_failure_alerts]

gaps_defs = dg.Definitions(assets=ASSETS, asset_checks=ASSET_CHECKS, jobs=JOBS, sensors=SENSORS,
                           schedules=SCHEDULES)
