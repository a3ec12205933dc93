"""Schedules decided by the KRX calendar, evaluated with evaluate_tick on a real (temporary) instance."""

from datetime import datetime

import dagster as dg
import pytest

from observer_assets.definitions import defs
from observer_resources.calendar import KST


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance, name: str, at: datetime):
    sched = defs.get_repository_def().get_schedule_def(name)
    ctx = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
    )
    return sched.evaluate_tick(ctx)


def kst(*a) -> datetime:
    return datetime(*a, tzinfo=KST)


@pytest.mark.parametrize(
    "at, key",
    [
        (kst(2026, 11, 26, 9, 0), "2026-11-26T0900"),  # normal day, first slot
        (kst(2026, 11, 26, 15, 30), "2026-11-26T1530"),  # normal day, last slot
        (kst(2026, 11, 26, 12, 10), "2026-11-26T1210"),
        (kst(2026, 1, 2, 10, 0), "2026-01-02T1000"),  # first trading day: opens 10:00
        (kst(2026, 11, 19, 16, 30), "2026-11-19T1630"),  # CSAT day: +1 h
    ],
)
def test_track_a_requests_the_slot(instance, at, key):
    result = tick(instance, "track_a_every_10_minutes", at)
    assert [r.partition_key for r in result.run_requests] == [key]
    assert result.run_requests[0].tags["observer/kis"] == "rest"
    assert instance.has_dynamic_partition("track_a_slot", key)


@pytest.mark.parametrize(
    "at, why",
    [
        (kst(2026, 11, 28, 10, 0), "not a trading day"),  # Saturday
        (kst(2026, 10, 5, 10, 0), "not a trading day"),  # Chuseok substitute holiday
        (kst(2026, 6, 3, 10, 0), "not a trading day"),  # local election (calendar override)
        (kst(2026, 12, 31, 10, 0), "not a trading day"),  # year-end closure
        (kst(2026, 11, 26, 8, 50), "outside the session"),
        (kst(2026, 11, 26, 15, 40), "outside the session"),  # the last slot of a normal day is 15:30
        (kst(2026, 1, 2, 9, 50), "outside the session"),  # late open: nothing before 10:00
        (kst(2026, 11, 19, 9, 0), "outside the session"),  # CSAT day: nothing before 10:00
    ],
)
def test_track_a_skips(instance, at, why):
    result = tick(instance, "track_a_every_10_minutes", at)
    assert not result.run_requests
    assert why in result.skip_message
    assert not instance.has_dynamic_partition("track_a_slot", at.strftime("%Y-%m-%dT%H%M"))


def test_a_whole_normal_day_requests_exactly_40_slots(instance):
    keys = []
    for h in range(0, 24):
        for m in range(0, 60, 10):
            keys += [
                r.partition_key
                for r in tick(instance, "track_a_every_10_minutes", kst(2026, 11, 24, h, m)).run_requests
            ]
    assert len(keys) == 40 and keys[0] == "2026-11-24T0900" and keys[-1] == "2026-11-24T1530"


def test_universe_schedule(instance):
    ok = tick(instance, "universe_before_open", kst(2026, 11, 26, 5, 0))
    assert [r.partition_key for r in ok.run_requests] == ["2026-11-26"]
    assert instance.has_dynamic_partition("trading_day", "2026-11-26")
    for holiday in (kst(2026, 11, 29, 5, 0), kst(2026, 2, 17, 5, 0)):
        res = tick(instance, "universe_before_open", holiday)
        assert not res.run_requests and "not a trading day" in res.skip_message


# --- a slot never races the day's universe --------------------------------------------------------------------------


@pytest.mark.env(OBSERVER_CALENDAR="krx")
def test_a_slot_waits_while_the_universe_is_built_and_the_catch_up_takes_it_when_the_run_ends(env, monkeypatch):
    """The schedule's 10:40 tick while today's universe run is still going skips (the snapshot would fail for want of
    a universe, or take yesterday's); the catch-up sensor waits too, then requests the slot as soon as the universe
    run has ended, also when it ended without a universe (the gate refused it or it failed: the snapshot falls back
    to the latest universe before and says so)."""
    from observer_resources import clock

    clock_file = env / "clock.json"
    monkeypatch.setenv("OBSERVER_CLOCK_FILE", str(clock_file))
    repo = defs.get_repository_def()
    catch_up = repo.get_sensor_def("track_a_catch_up")
    with dg.instance_for_test() as inst:

        def sensor_at(at: datetime):
            clock.write_sim(clock_file, at)
            # instance_ref, as the daemon gives it: the request adds its partition key in the same tick
            return catch_up.evaluate_tick(dg.build_sensor_context(instance_ref=inst.get_ref(), repository_def=repo))

        first = sensor_at(kst(2026, 11, 26, 10, 41, 30))
        assert not first.run_requests and "not requested yet" in first.skip_message

        run = inst.create_run_for_job(
            defs.resolve_job_def("universe_job"),
            tags={"dagster/partition": "2026-11-26"},
            status=dg.DagsterRunStatus.STARTED,
        )
        slot = tick(inst, "track_a_every_10_minutes", kst(2026, 11, 26, 10, 40))
        assert not slot.run_requests and "being built" in slot.skip_message
        assert "being built" in sensor_at(kst(2026, 11, 26, 10, 41, 30)).skip_message

        inst.report_run_failed(run)  # ended without a universe file
        done = sensor_at(kst(2026, 11, 26, 10, 42))
        assert [r.partition_key for r in done.run_requests] == ["2026-11-26T1040"]
        assert done.run_requests[0].tags["observer/late"] == "true"
        # and the next tick of the schedule no longer waits
        assert [
            r.partition_key for r in tick(inst, "track_a_every_10_minutes", kst(2026, 11, 26, 10, 50)).run_requests
        ] == ["2026-11-26T1050"]
