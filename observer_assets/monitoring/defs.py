"""The system-event summary, Track A's freshness check and the alerts: this domain's Dagster definitions.

The Prometheus exporter (metrics.py) runs as its own process (``observer metrics``), outside Dagster.
"""

import dagster as dg

from observer_assets.monitoring.events import system_events
from observer_assets.monitoring.freshness import (
    track_a_current_slot_fresh,
    track_a_freshness_job,
    track_a_freshness_sensor,
)
from observer_assets.monitoring.schedules import system_events_daily, system_events_job
from observer_assets.monitoring.sensors import check_failure_alerts, run_failure_alerts

defs = dg.Definitions(
    assets=[system_events],
    asset_checks=[track_a_current_slot_fresh],
    jobs=[system_events_job, track_a_freshness_job],
    schedules=[system_events_daily],
    sensors=[track_a_freshness_sensor, run_failure_alerts, check_failure_alerts],
)
