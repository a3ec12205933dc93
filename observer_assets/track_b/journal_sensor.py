"""Observes the Track B journal on disk, so ``track_b_journal`` has current events without a person.

The journal is written by the capture process, not by Dagster, so it is an external asset: this sensor reports an
``AssetObservation`` (data version = the day's segment fingerprint, with segments, bytes, keys and hours) whenever
today's journal changed since its last tick. No run is launched: reading file metadata is all it takes. The
capture job reports a materialization of the journal when its supervision ends (which run wrote it).
"""

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from observer_assets.track_b.assets import journal_event_metadata, journal_summary, track_b_journal
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.storage import lake

DATA_VERSION_TAG = "dagster/data_version"
INTERVAL_S = 60

Clock = Callable[[], datetime]


def _now() -> datetime:
    return clock.now()


def observe_journal(context: dg.SensorEvaluationContext, now: datetime) -> dg.SensorResult | dg.SkipReason:
    """One tick: an observation of today's journal when it changed, else a skip saying why."""
    try:
        local = lake.local_dir()
    except lake.LakeConfigError as e:
        return dg.SkipReason(f"no local directory for the journal: {e}")
    day = now.astimezone(KST).date()
    summary = journal_summary(local, day)
    if not summary["segments"]:
        return dg.SkipReason(f"no Track B journal for {day} yet")
    cursor = f"{day.isoformat()}:{summary['fingerprint']}"
    if context.cursor == cursor:
        return dg.SkipReason(f"journal of {day} unchanged ({summary['segments']} segments, {summary['bytes']} bytes)")
    obs = dg.AssetObservation(
        asset_key=track_b_journal.key,
        metadata=journal_event_metadata(summary),
        tags={DATA_VERSION_TAG: summary["fingerprint"]},
    )
    return dg.SensorResult(asset_events=[obs], cursor=cursor)


def build_journal_sensor(now: Clock = _now, name: str = "track_b_journal_sensor") -> dg.SensorDefinition:
    """The journal observation sensor; ``now`` is injectable for tests."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every minute: reports an observation of track_b_journal (segments, bytes, keys, hours; data "
        "version = the day's segment fingerprint) when today's journal changed. Launches no run.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return observe_journal(context, now())

    return _sensor


track_b_journal_sensor = build_journal_sensor()
