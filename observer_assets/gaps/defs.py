"""Gap reports and the backfill and restore that close gaps, with the data checks: this domain's definitions."""

import dagster as dg

from observer_assets.gaps.assets import gap_report
from observer_assets.gaps.checks import PROOF_CHECKS, TRACK_A_CHECKS, TRACK_B_CHECKS
from observer_assets.gaps.schedules import gap_report_job, gap_report_through_the_day
from observer_assets.gaps.sensors import (
    gap_backfill_sensor,
    gap_report_after_repair,
    track_b_restore_job,
    track_b_restore_sensor,
)

defs = dg.Definitions(
    assets=[gap_report],
    asset_checks=[*TRACK_A_CHECKS, *TRACK_B_CHECKS, *PROOF_CHECKS],
    jobs=[gap_report_job, track_b_restore_job],
    # the report runs itself through the day, finally, and after every repair
    schedules=[gap_report_through_the_day],
    sensors=[gap_backfill_sensor, track_b_restore_sensor, gap_report_after_repair],
)
