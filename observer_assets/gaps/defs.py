"""Gap reports, the backfill and restore that close gaps, the checks and the alerts: this domain's definitions."""

import dagster as dg

from observer_assets.gaps.assets import gap_report
from observer_assets.gaps.checks import TRACK_A_CHECKS, TRACK_B_CHECKS
from observer_assets.gaps.schedules import gap_report_job, gap_report_through_the_day
from observer_assets.gaps.sensors import (
    check_failure_alerts,
    gap_backfill_sensor,
    gap_report_after_repair,
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

# backfill, restore, checks and alerts
ASSETS += [track_b_restored]
ASSET_CHECKS += [*TRACK_A_CHECKS, *TRACK_B_CHECKS]
JOBS += [track_b_restore_job]
SENSORS += [gap_backfill_sensor, track_b_restore_sensor, run_failure_alerts, check_failure_alerts]
# the report runs itself: through the day, finally, and after every repair
JOBS += [gap_report_job]
SCHEDULES += [gap_report_through_the_day]
SENSORS += [gap_report_after_repair]

gaps_defs = dg.Definitions(assets=ASSETS, asset_checks=ASSET_CHECKS, jobs=JOBS, sensors=SENSORS,
                           schedules=SCHEDULES)
