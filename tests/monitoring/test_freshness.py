"""The calendar-aware Track A freshness judge, on a real Dagster instance with fixed clocks and the KRX calendar.

Materializations are recorded in the instance as events of the real asset key (what a Track A run leaves behind),
so the judge reads exactly what it reads in production; the check runs through its real job and the sensor's tick
is evaluated with an injected clock.
"""

from datetime import date, datetime

import dagster as dg
import pytest

from observer_assets.definitions import defs
from observer_assets.monitoring import freshness
from observer_assets.orchestration.partitions import calendar
from observer_resources.calendar import KST

NORMAL = (2026, 11, 26)  # a Thursday, 09:00..15:30
CSAT = (2026, 11, 19)  # the CSAT: 10:00..16:30
HOLIDAY = (2026, 10, 5)  # a Monday, KRX closed (substitute holiday for National Foundation Day)
CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("track_a_snapshot"), freshness.CHECK_NAME)


def at(day: tuple[int, int, int], h: int, m: int) -> datetime:
    return datetime(*day, h, m, tzinfo=KST)


@pytest.fixture
def krx(monkeypatch, tmp_path):
    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    return calendar()


def materialized(inst: dg.DagsterInstance, key: str) -> None:
    inst.add_dynamic_partitions("track_a_slot", [key])
    inst.report_runless_asset_event(dg.AssetMaterialization(asset_key="track_a_snapshot", partition=key))


def run_check(inst: dg.DagsterInstance, when: datetime) -> dg.AssetCheckEvaluation:
    """The check through its own job (the run the sensor requests), judging at ``when``."""
    job = defs.resolve_job_def("track_a_freshness_job")
    op = freshness.track_a_current_slot_fresh.node_def.name
    res = job.execute_in_process(instance=inst, run_config={"ops": {op: {"config": {"at": when.isoformat()}}}})
    (ev,) = res.get_asset_check_evaluations()
    return ev


def test_due_slot_follows_the_calendar(krx):
    assert freshness.due_slot(krx, at(NORMAL, 9, 4)) is None  # the first slot is inside its grace
    assert freshness.due_slot(krx, at(NORMAL, 9, 5)) == at(NORMAL, 9, 0)
    assert freshness.due_slot(krx, at(NORMAL, 10, 24)) == at(NORMAL, 10, 10)
    assert freshness.due_slot(krx, at(NORMAL, 10, 25)) == at(NORMAL, 10, 20)
    assert freshness.due_slot(krx, at(NORMAL, 15, 44)) == at(NORMAL, 15, 30)  # the last slot: until +10 min + grace
    assert freshness.due_slot(krx, at(NORMAL, 15, 45)) is None
    assert freshness.due_slot(krx, at(CSAT, 9, 30)) is None  # late open: a cron would call this stale
    assert freshness.due_slot(krx, at(CSAT, 16, 25)) == at(CSAT, 16, 20)
    assert freshness.due_slot(krx, at(HOLIDAY, 11, 0)) is None


def test_a_backfilled_old_slot_does_not_make_track_a_fresh(krx):
    now = at(NORMAL, 10, 27)
    with dg.instance_for_test() as inst:
        materialized(inst, "2026-11-26T0900")  # a backfill of the morning's first slot, just now
        j = freshness.judge(inst, krx, now)
        assert not j.passed and j.slot == at(NORMAL, 10, 20)
        assert "slot 2026-11-26T1020 is missing" in j.description and "2026-11-26T0900" in j.description
        assert j.metadata["latest_materialized_partition"] == "2026-11-26T0900"
        ev = run_check(inst, now)
        assert not ev.passed and "2026-11-26T1020" in ev.description

        materialized(inst, "2026-11-26T1020")  # the current slot arrives (late)
        j = freshness.judge(inst, krx, now)
        assert j.passed and j.description.startswith("slot 2026-11-26T1020 materialized at")
        assert run_check(inst, now).passed

        # the record of both judgments is in the instance, newest first
        hist = inst.event_log_storage.get_asset_check_execution_history(CHECK_KEY, limit=5)
        assert [h.status.value for h in hist] == ["SUCCEEDED", "FAILED"]


def test_a_slot_whose_run_is_still_collecting_is_not_called_stale(krx):
    """A deployment that starts at 10:25 requests 10:20 late; while that run is queued or running the judge says so
    instead of alerting (a failure or a hang is the run-failure alert's: the job has a max runtime)."""
    now = at(NORMAL, 10, 27)
    with dg.instance_for_test() as inst:
        job = defs.resolve_job_def("track_a_job")
        run = inst.create_run_for_job(job, tags={"dagster/partition": "2026-11-26T1020"})  # created, not started
        assert run.status == dg.DagsterRunStatus.NOT_STARTED
        j = freshness.judge(inst, krx, now)
        assert j.passed and "being collected" in j.description and j.metadata["in_progress_run"] == run.run_id
        inst.report_run_failed(inst.get_run_by_id(run.run_id))  # the run died: now the slot is stale
        assert not freshness.judge(inst, krx, now).passed


def test_on_the_default_two_venue_day_the_judge_follows_the_phases(krx, monkeypatch):
    monkeypatch.delenv("OBSERVER_TRACK_A_WINDOW")  # the default: 08:00-20:00, every slot where some venue trades
    two_venue = calendar()
    assert freshness.due_slot(two_venue, at(NORMAL, 8, 5)) == at(NORMAL, 8, 0)  # NXT's pre-market is collected
    assert freshness.due_slot(two_venue, at(NORMAL, 19, 55)) == at(NORMAL, 19, 50)  # both after-markets
    assert freshness.due_slot(two_venue, at(NORMAL, 20, 15)) is None
    first = min(p.start for p in two_venue.phases(date(*CSAT)))
    assert first.hour == 9 and first.minute == 30  # CSAT day: the phase table starts late
    assert freshness.due_slot(two_venue, at(CSAT, 8, 30)) is None  # an ordinary day's slot, not this day's
    assert freshness.due_slot(two_venue, at(HOLIDAY, 11, 0)) is None
    with dg.instance_for_test() as inst:
        for when in (at(CSAT, 8, 30), at(CSAT, 9, 20), at(HOLIDAY, 9, 0)):
            j = freshness.judge(inst, two_venue, when)
            assert j.passed and j.slot is None and "passes trivially" in j.description, j.description
        j = freshness.judge(inst, two_venue, at(NORMAL, 8, 5))
        assert not j.passed and j.slot == at(NORMAL, 8, 0)  # and a missed pre-market slot is stale


def test_holiday_and_outside_the_session_pass_trivially(krx):
    with dg.instance_for_test() as inst:
        for when, words in (
            (at(HOLIDAY, 11, 0), "2026-10-05 is not a trading day"),
            (at(NORMAL, 8, 30), "outside the session at 08:30"),
            (at(NORMAL, 16, 0), "outside the session at 16:00"),
            (at(CSAT, 9, 30), "outside the session at 09:30 (slots 10:00..16:30"),
        ):
            j = freshness.judge(inst, krx, when)
            assert j.passed and j.slot is None and words in j.description and "passes trivially" in j.description
        ev = run_check(inst, at(HOLIDAY, 11, 0))
        assert ev.passed and "not a trading day" in ev.description


def test_the_sensor_requests_one_run_per_slot_and_outcome(krx):
    with dg.instance_for_test() as inst:

        def tick(when: datetime):
            sensor = freshness.build_freshness_sensor(lambda: when)
            return sensor.evaluate_tick(dg.build_sensor_context(instance=inst))

        res = tick(at(HOLIDAY, 11, 0))
        assert not res.run_requests and "not a trading day" in res.skip_message
        res = tick(at(NORMAL, 16, 0))
        assert not res.run_requests and "outside the session" in res.skip_message

        (req,) = tick(at(NORMAL, 10, 27)).run_requests
        assert req.run_key == "track_a_fresh:2026-11-26T1020:fail"
        assert req.asset_check_keys == [CHECK_KEY]
        materialized(inst, "2026-11-26T1020")
        (req,) = tick(at(NORMAL, 10, 32)).run_requests
        assert req.run_key == "track_a_fresh:2026-11-26T1020:pass"


def test_no_cron_freshness_policy_is_left():
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == "track_a_snapshot")
    assert spec.freshness_policy is None
