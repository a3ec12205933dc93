"""Every elapsed day and slot is a partition, in time order, never a future one — on a real Dagster instance,
through the real sensor and the real gap-report schedule, on KRX days (a normal day, a holiday, a late open)."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg
import pytest

from observer_assets.definitions import defs
from observer_assets.gaps.schedules import gap_report_through_the_day
from observer_assets.orchestration import partition_registrar as registrar_module
from observer_assets.orchestration.partition_registrar import partition_registrar
from observer_assets.orchestration.partitions import reorder_plan
from observer_resources.calendar import KST

DAY = date(2026, 12, 2)  # a Wednesday, a KRX trading day
SLOTS = "track_a_slot"
DAYS = "trading_day"


@pytest.fixture
def krx(monkeypatch):
    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    monkeypatch.delenv("OBSERVER_HISTORY_START", raising=False)


def tick(inst: dg.DagsterInstance, at: datetime, monkeypatch) -> str:
    monkeypatch.setattr(registrar_module, "now", lambda: at)
    res = partition_registrar.evaluate_tick(dg.build_sensor_context(instance=inst))
    return res.skip_message or ""


def at(h: int, m: int, d: date = DAY) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, 30, tzinfo=KST)


def test_a_stopped_daemon_leaves_missing_partitions_not_invisible_ones(krx, monkeypatch):
    with dg.instance_for_test() as inst:
        monkeypatch.setenv("OBSERVER_HISTORY_START", DAY.isoformat())
        tick(inst, at(9, 25), monkeypatch)
        assert inst.get_dynamic_partitions(SLOTS) == ["2026-12-02T0900", "2026-12-02T0910", "2026-12-02T0920"]
        assert inst.get_dynamic_partitions(DAYS) == ["2026-12-02"]
        # the daemon is down 09:25..09:46; the first tick after it shows the slots it never ran, in order
        tick(inst, at(9, 46), monkeypatch)
        assert inst.get_dynamic_partitions(SLOTS)[-2:] == ["2026-12-02T0930", "2026-12-02T0940"]
        # never a future one: 09:50 exists only from 09:50 on
        assert "2026-12-02T0950" not in inst.get_dynamic_partitions(SLOTS)
        # and nothing asked twice
        assert tick(inst, at(9, 47), monkeypatch) == "every elapsed day and slot is a partition"


def test_a_fresh_deployment_starts_its_history_at_the_current_slot(krx, monkeypatch):
    with dg.instance_for_test() as inst:
        tick(inst, at(13, 4), monkeypatch)
        assert inst.get_dynamic_partitions(SLOTS) == ["2026-12-02T1300"]
        tick(inst, at(13, 31), monkeypatch)  # then every slot from there on
        assert inst.get_dynamic_partitions(SLOTS) == [
            "2026-12-02T1300",
            "2026-12-02T1310",
            "2026-12-02T1320",
            "2026-12-02T1330",
        ]


def test_keys_added_out_of_order_are_put_back_in_time_order_and_history_stays(krx, monkeypatch):
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(SLOTS, ["2026-12-02T0900", "2026-12-02T1000"])  # as a sensor might have
        inst.report_runless_asset_event(dg.AssetMaterialization("track_a_snapshot", partition="2026-12-02T1000"))
        tick(inst, at(10, 5), monkeypatch)
        keys = inst.get_dynamic_partitions(SLOTS)
        assert keys == sorted(keys) and len(keys) == 7  # 09:00 .. 10:00
        mats = inst.get_materialized_partitions(dg.AssetKey("track_a_snapshot"))
        assert "2026-12-02T1000" in mats  # re-registering a key keeps its history


def test_holidays_weekends_and_late_opens_have_no_partitions(krx, monkeypatch):
    with dg.instance_for_test() as inst:
        monkeypatch.setenv("OBSERVER_HISTORY_START", "2026-12-31")
        tick(inst, at(10, 21, date(2027, 1, 4)), monkeypatch)  # 12-31 closed, 01-01 holiday, weekend, 01-04 opens 10:00
        assert inst.get_dynamic_partitions(DAYS) == ["2027-01-04"]
        assert inst.get_dynamic_partitions(SLOTS) == ["2027-01-04T1000", "2027-01-04T1010", "2027-01-04T1020"]


def test_reorder_plan_is_minimal():
    assert reorder_plan(["a", "b", "c"], ["a", "b", "c"]) == ([], [])
    assert reorder_plan(["a", "b"], ["a", "b", "c"]) == ([], ["c"])
    assert reorder_plan(["a", "c", "d"], ["a", "b", "c", "d"]) == (["c", "d"], ["b", "c", "d"])


@pytest.mark.parametrize(
    "when,asked",
    [
        (at(9, 0), "session"),
        (at(12, 30), "session"),
        (at(16, 30), "session"),
        (at(17, 0), None),
        (at(20, 40), "final"),
        (at(4, 30), None),
        (at(12, 30, date(2026, 12, 25)), None),  # Christmas: closed
        (at(12, 30, date(2026, 12, 5)), None),  # a Saturday
    ],
)
def test_the_gap_report_schedule_runs_through_the_session_and_once_more_at_the_end(krx, when, asked):
    with dg.instance_for_test() as inst:
        ctx = dg.build_schedule_context(
            instance=inst, scheduled_execution_time=when.replace(second=0), repository_def=defs.get_repository_def()
        )
        res = gap_report_through_the_day.evaluate_tick(ctx)
        if asked is None:
            assert not res.run_requests and res.skip_message
            return
        (req,) = res.run_requests
        assert req.partition_key == when.date().isoformat() and req.tags["observer/gap_report"] == asked
        assert req.run_key == f"gap_report:{when.date()}:{when:%H%M}"
        assert when.date().isoformat() in inst.get_dynamic_partitions(DAYS)


def test_a_hole_too_far_back_to_reorder_in_one_tick_is_still_filled():
    registered = [f"k{i:05d}" for i in range(1, 1000)]
    delete, add = reorder_plan(registered, ["k00000", *registered], max_reorder=300)
    assert delete == [] and add == ["k00000"]
