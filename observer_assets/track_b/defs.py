"""Track B (the WebSocket capture, its journal, ticks and restores): this domain's Dagster definitions."""

import dagster as dg

from observer_assets.track_b.assets import track_b_journal, track_b_sampled, track_b_ticks
from observer_assets.track_b.capture_job import track_b_capture_job
from observer_assets.track_b.checks import track_b_losses_are_explained, track_b_phases_agree
from observer_assets.track_b.journal_sensor import track_b_journal_sensor
from observer_assets.track_b.restore import track_b_restored
from observer_assets.track_b.sensors import track_b_capture_sensor, track_b_compaction_job, track_b_compaction_sensor

defs = dg.Definitions(
    assets=[track_b_journal, track_b_ticks, track_b_sampled, track_b_restored],
    asset_checks=[track_b_losses_are_explained, track_b_phases_agree],
    jobs=[track_b_capture_job, track_b_compaction_job],
    sensors=[track_b_capture_sensor, track_b_compaction_sensor, track_b_journal_sensor],
)
