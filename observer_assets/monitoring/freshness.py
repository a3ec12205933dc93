"""Track A freshness, judged by the KRX calendar on the partition that should be fresh now.

``track_a_current_slot_fresh`` (an asset check on track_a_snapshot) passes when the latest slot whose grace has
elapsed (slot instant + ``GRACE``) has a materialization of *its own* partition: a backfilled old slot does not
make Track A look fresh, and a missing current slot is named. Outside the session (before the first slot's grace,
after the last slot's interval + grace) and on non-trading days it passes trivially and says so. Nothing else is
judged: older slots are the gap report's business.

``track_a_freshness_sensor`` evaluates it without a person: every 5 minutes during the session it judges the due
slot the same way and requests a run of just the check (``track_a_freshness_job``) once per slot and outcome (run
key ``track_a_fresh:<slot>:<pass|fail>``), so a slot that arrives late is re-judged and passes on the next tick,
and an unchanged judgment launches nothing. Each due slot is due for 10 minutes, so a 5-minute tick judges it at
least once.

A cron ``FreshnessPolicy`` was used before: it counted any partition's materialization and called Track A stale
on every weekday holiday, because a cron cannot read the KRX calendar.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from observer_assets.orchestration.partitions import calendar, slot_key
from observer_assets.orchestration.runs import max_runtime
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.dates import DateFormatError, parse_aware_datetime

CHECK_NAME = "track_a_current_slot_fresh"
TRACK_A_SNAPSHOT = dg.AssetKey("track_a_snapshot")  # named by key: monitoring does not import Track A's assets
GRACE = timedelta(minutes=5)  # a slot's run fetches for up to a few minutes; judge it after that
INTERVAL = timedelta(minutes=10)
SENSOR_INTERVAL_S = 300

Clock = Callable[[], datetime]


def now() -> datetime:
    """The clock the check and the sensor judge by (one place, so a judgment at a given instant is reproducible)."""
    return clock.now()


def due_slot(cal: MarketCalendar, at: datetime) -> datetime | None:
    """The slot whose snapshot must exist at ``at``: the latest slot at least ``GRACE`` old, until the next slot's
    grace ends (the last slot: its interval + grace). None outside the session and on non-trading days."""
    at = at.astimezone(KST)
    slots = cal.track_a_slots(at.date())
    elapsed = [s for s in slots if s + GRACE <= at]
    if not elapsed:
        return None
    s = elapsed[-1]
    if s == slots[-1] and at >= s + INTERVAL + GRACE:
        return None
    return s


@dataclass(frozen=True)
class Judgment:
    passed: bool
    description: str
    slot: datetime | None  # the slot judged; None when nothing was due
    metadata: dict[str, Any] = field(default_factory=dict)

    def result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.description,
            metadata=self.metadata,
        )


def _latest(instance: dg.DagsterInstance, partition: str | None) -> dg.EventLogRecord | None:
    flt = dg.AssetRecordsFilter(
        asset_key=TRACK_A_SNAPSHOT, asset_partitions=[partition] if partition is not None else None
    )
    recs = instance.fetch_materializations(flt, limit=1).records
    return recs[0] if recs else None


def judge(instance: dg.DagsterInstance, cal: MarketCalendar, at: datetime) -> Judgment:
    """Is the slot due at ``at`` materialized? Reads the instance's materializations of that slot's partition."""
    at = at.astimezone(KST)
    md: dict[str, Any] = {"judged_at": at.isoformat(timespec="seconds"), "grace_minutes": GRACE.total_seconds() / 60}
    if not cal.is_trading_day(at.date()):
        return Judgment(True, f"{at.date()} is not a trading day: no slot is due (passes trivially)", None, md)
    slot = due_slot(cal, at)
    if slot is None:
        slots = cal.track_a_slots(at.date())
        return Judgment(
            True,
            f"outside the session at {at:%H:%M} (slots {slots[0]:%H:%M}..{slots[-1]:%H:%M}, "
            f"each due {GRACE.total_seconds() / 60:g} min after its instant): no slot is due "
            "(passes trivially)",
            None,
            md,
        )
    key = slot_key(slot)
    md.update(slot=key, due_since=(slot + GRACE).isoformat(timespec="seconds"))
    rec = _latest(instance, key)
    if rec is not None:
        done = datetime.fromtimestamp(rec.timestamp, KST)
        md.update(materialized_at=done.isoformat(timespec="seconds"), run_id=rec.run_id or "")
        return Judgment(True, f"slot {key} materialized at {done:%H:%M:%S}", slot, md)
    running = instance.get_run_records(
        dg.RunsFilter(
            tags={"dagster/partition": key},
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if running:  # late but being collected: a failure or a hang (max runtime) is the run-failure alert's to say
        md.update(in_progress_run=running[0].dagster_run.run_id)
        return Judgment(
            True,
            f"slot {key} is being collected (run {running[0].dagster_run.run_id[:8]} "
            f"{running[0].dagster_run.status.value.lower()}), "
            f"{int((at - slot).total_seconds() // 60)} min after its instant",
            slot,
            md,
        )
    newest = _latest(instance, None)
    if newest is not None:
        md.update(
            latest_materialized_partition=newest.partition_key or "",
            latest_materialized_at=datetime.fromtimestamp(newest.timestamp, KST).isoformat(timespec="seconds"),
        )
    other = (
        f"; the newest materialization is of {newest.partition_key}"
        if newest is not None
        else "; track_a_snapshot was never materialized"
    )
    return Judgment(
        False,
        f"slot {key} is missing: not materialized {int((at - slot).total_seconds() // 60)} min "
        f"after its instant{other}",
        slot,
        md,
    )


class FreshnessConfig(dg.Config):
    at: str | None = None  # ISO time with offset to judge at (e.g. to re-judge a past instant); default: now


@dg.asset_check(
    asset=TRACK_A_SNAPSHOT,
    name=CHECK_NAME,
    description="The latest Track A slot that should exist by now (slot + 5 min, per the KRX calendar) has a "
    "materialization of its own partition. Passes trivially outside the session and on non-trading days; a "
    "backfill of an older slot does not count. Evaluated every 5 minutes by track_a_freshness_sensor.",
)
def track_a_current_slot_fresh(context: dg.AssetCheckExecutionContext, config: FreshnessConfig) -> dg.AssetCheckResult:
    if config.at:
        try:
            at = parse_aware_datetime(config.at, "at")
        except DateFormatError as e:
            raise dg.Failure(str(e)) from None
    else:
        at = now()
    return judge(context.instance, calendar(), at).result()


track_a_freshness_job = dg.define_asset_job(
    "track_a_freshness_job",
    selection=dg.AssetSelection.checks(track_a_current_slot_fresh),
    tags=max_runtime("track_a_freshness_job"),
    description="Judges whether the Track A slot due now is materialized (track_a_current_slot_fresh only).",
)


def freshness_request(instance: dg.DagsterInstance, at: datetime) -> dg.RunRequest | dg.SkipReason:
    """One sensor tick at ``at``: a run of the check when a slot is due and its judgment is new, else a skip."""
    j = judge(instance, calendar(), at)
    if j.slot is None:
        return dg.SkipReason(j.description)
    outcome = "pass" if j.passed else "fail"
    return dg.RunRequest(
        run_key=f"track_a_fresh:{slot_key(j.slot)}:{outcome}",
        asset_check_keys=[track_a_current_slot_fresh.check_key],
        tags={"observer/kind": "freshness"},
    )


def build_freshness_sensor(clock: Clock | None = None, name: str = "track_a_freshness_sensor") -> dg.SensorDefinition:
    """The freshness sensor; ``clock`` is injectable for tests (default: this module's ``now``)."""

    @dg.sensor(
        name=name,
        job=track_a_freshness_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every 5 minutes in the session: runs track_a_current_slot_fresh once per due slot and outcome "
        "(run key track_a_fresh:<slot>:<pass|fail>), so a missing slot fails and a late one passes on the next "
        "tick. Skips outside the session and on non-trading days.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return freshness_request(context.instance, (clock or now)())

    return _sensor


track_a_freshness_sensor = build_freshness_sensor()
