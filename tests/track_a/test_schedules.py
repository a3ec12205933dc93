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
