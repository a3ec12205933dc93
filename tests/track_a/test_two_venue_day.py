"""Track A across the two-venue day (``OBSERVER_TRACK_A_WINDOW=08:00-20:00``): the slots follow the venues' phases,
and each slot quotes what trades then — NXT's stocks on the unified quote all day, the others on KRX's while KRX is
in a phase — against the local exchange on a KRX calendar day, through the schedule that launches the slots."""

from __future__ import annotations

from datetime import date, datetime, time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import kis_for

from observer_assets.definitions import defs
from observer_assets.orchestration.partitions import day_key
from observer_assets.orchestration.runs import BACKFILL_TAGS
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.venues import slot_markets
from observer_assets.universe.assets import universe
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.storage import lake
from observer_resources.storage.layout import slot_dir, universe_path

# a day of slots through the schedule: with the end-to-end runs, off the bulk's clock
pytestmark = pytest.mark.slow

WHOLE_DAY = MarketCalendar(track_a_window=(time(8, 0), time(20, 0)))
DAY = date(2026, 6, 11)  # a Thursday under KRX's schedule before its own pre- and after-market (2026-06-29)


def kst(d: date, h: int, m: int, s: int = 0) -> datetime:
    return datetime.combine(d, time(h, m, s), KST)


# --- the calendar: which instants are slots, and which venues each quotes -------------------------------------------
def test_the_window_adds_every_slot_where_a_venue_is_in_a_phase_and_keeps_the_sessions():
    normal = WHOLE_DAY.track_a_slots(DAY)
    assert (len(normal), normal[0], normal[-1]) == (73, kst(DAY, 8, 0), kst(DAY, 20, 0))
    assert set(MarketCalendar().track_a_slots(DAY)) <= set(normal)  # every key a day had stays valid
    venues = {t.strftime("%H%M"): WHOLE_DAY.venues_at_slot(t) for t in normal}
    assert venues["0800"] == venues["0820"] == ("NXT",)  # NXT's pre-market only
    assert venues["0830"] == ("KRX", "NXT")  # KRX's opening auction begins
    assert venues["0900"] == ("KRX",)  # NXT's main market opens at 09:00:30
    assert venues["1530"] == ("KRX", "NXT")  # KRX's closing cross, NXT's after-market order period
    assert venues["1800"] == ("KRX", "NXT") and venues["1810"] == venues["2000"] == ("NXT",)
    # a late open: KRX 10:00 (its auction from 09:30), NXT without its pre-market
    first = WHOLE_DAY.track_a_slots(date(2026, 1, 2))
    assert first[0] == kst(date(2026, 1, 2), 9, 30) and first[-1] == kst(date(2026, 1, 2), 20, 0)
    assert not WHOLE_DAY.track_a_slots(date(2026, 6, 13))  # a Saturday
    assert MarketCalendar().venues_at_slot(kst(DAY, 8, 10)) == ()  # the KRX-only day has no 08:10 slot


def test_the_window_is_a_validated_setting():
    assert calendar_from_env({}).track_a_window == (time(8, 0), time(20, 0))  # the default: the two-venue day
    assert str(calendar_from_env({}).track_a_window) == "08:00-20:00"
    assert calendar_from_env({"OBSERVER_TRACK_A_WINDOW": "session"}).track_a_window is None  # the KRX-only day
    cal = calendar_from_env({"OBSERVER_TRACK_A_WINDOW": "08:00-20:00"})
    assert cal.track_a_window == (time(8, 0), time(20, 0))
    with pytest.raises(ValueError, match="OBSERVER_TRACK_A_WINDOW must be 'session' or a window HH:MM-HH:MM"):
        calendar_from_env({"OBSERVER_TRACK_A_WINDOW": "20:00-08:00"})


def test_each_member_is_quoted_where_it_trades():
    uni = pa.table(
        {
            "code": ["000010", "000020", "000030"],
            "nxt_tradable": pa.array([True, False, None], pa.bool_()),
        }
    )
    assert slot_markets(uni, WHOLE_DAY, kst(DAY, 8, 10)) == {"000010": "UN"}
    assert slot_markets(uni, WHOLE_DAY, kst(DAY, 10, 0)) == {"000010": "UN", "000020": "J", "000030": "J"}
    assert slot_markets(uni, WHOLE_DAY, kst(DAY, 19, 0)) == {"000010": "UN"}
    assert slot_markets(uni, MarketCalendar(), kst(DAY, 10, 0)) == dict.fromkeys(uni["code"].to_pylist(), "J")


# --- against the exchange, launched by the schedule -----------------------------------------------------------------
@pytest.mark.env(OBSERVER_CALENDAR="krx", OBSERVER_TRACK_A_WINDOW="08:00-20:00", OBSERVER_UNIVERSE_MIN_COUNT="50")
def test_slots_across_the_day_quote_each_venue_as_the_exchange_has_it(env, monkeypatch, sim_factory):
    clock_file = env / "clock.json"
    monkeypatch.setenv("OBSERVER_CLOCK_FILE", str(clock_file))
    start = kst(DAY, 5, 0)
    sim = sim_factory(
        *("--mode", "real", "--clock", "krx", "--speed", "0", "--start", start.isoformat()),
        *("--seed", "5", "--listings", "300"),
    )
    kis = kis_for(sim, env, 91)
    root = lake.data_dir()
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def("track_a_every_10_minutes")

    def at(t: datetime) -> None:
        clock.write_sim(clock_file, t)
        sim.admin("clock", {"at": t.isoformat(), "speed": 0})

    def slot_run(inst, slot: datetime, *, now: datetime, **tags: str) -> pa.Table:
        at(now)
        req = schedule.evaluate_tick(
            dg.build_schedule_context(instance=inst, scheduled_execution_time=slot, repository_def=repo)
        ).run_requests
        assert [r.partition_key for r in req] == [slot.strftime("%Y-%m-%dT%H%M")]
        res = dg.materialize(
            [track_a_snapshot, universe.to_source_asset()],
            partition_key=req[0].partition_key,
            instance=inst,
            resources={"kis": kis},
            tags={**req[0].tags, **tags},
        )
        assert res.success
        return pq.read_table(slot_dir(root, slot) / "snapshot.parquet", partitioning=None)

    def truth(code: str, t: datetime, venue: str) -> dict:
        return sim.admin("truth/quote", params={"code": code, "at": t.isoformat(), "venue": venue})

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(DAY)])
        at(start)
        assert dg.materialize(
            [universe],
            partition_key=day_key(DAY),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {"min_master_codes": 100}}}},
        ).success
        uni = pq.read_table(universe_path(root, DAY))
        members = set(uni["code"].to_pylist())
        on_nxt = {c for c, t in zip(uni["code"].to_pylist(), uni["nxt_tradable"].to_pylist()) if t}
        assert 0 < len(on_nxt) < len(members)

        # 08:10, NXT's pre-market: its stocks only, on the unified quote, equal to the exchange's
        pre = slot_run(inst, kst(DAY, 8, 10), now=kst(DAY, 8, 10, 5))
        assert set(pre["code"].to_pylist()) == on_nxt and set(pre["venue"].to_pylist()) == {"unified"}
        traded = [r for r in pre.to_pylist() if r["volume"]]
        assert traded  # NXT trades before KRX opens
        for r in traded[:10]:
            un, nx = truth(r["code"], kst(DAY, 8, 10, 5), "UN"), truth(r["code"], kst(DAY, 8, 10, 5), "NXT")
            assert r["volume"] == un["acml_vol"] == nx["acml_vol"] and r["price"] == un["price"]

        # 10:00, both venues: every member; NXT's stocks unified (volume KRX + NXT), the rest on KRX
        mid = slot_run(inst, kst(DAY, 10, 0), now=kst(DAY, 10, 0, 5))
        assert set(mid["code"].to_pylist()) == members
        venue_of = dict(zip(mid["code"].to_pylist(), mid["venue"].to_pylist()))
        assert {c for c, v in venue_of.items() if v == "unified"} == on_nxt
        assert {c for c, v in venue_of.items() if v == "KRX"} == members - on_nxt
        both = next(r for r in mid.to_pylist() if r["code"] in on_nxt and r["volume"])
        t = kst(DAY, 10, 0, 5)
        krx_vol, nxt_vol = truth(both["code"], t, "KRX")["acml_vol"], truth(both["code"], t, "NXT")["acml_vol"]
        assert both["volume"] == krx_vol + nxt_vol and nxt_vol > 0

        # 19:00, NXT's after-market: its stocks only again
        late = slot_run(inst, kst(DAY, 19, 0), now=kst(DAY, 19, 0, 5))
        assert set(late["code"].to_pylist()) == on_nxt

        # 08:20 was missed; its backfill restores it from the unified minute bars, NXT's stocks only
        restored = slot_run(inst, kst(DAY, 8, 20), now=kst(DAY, 19, 5), **BACKFILL_TAGS)
        assert set(restored["source"].to_pylist()) == {"restored"} and set(restored["venue"].to_pylist()) == {"unified"}
        for r in restored.to_pylist():
            lo, hi = truth(r["code"], kst(DAY, 8, 19, 59), "UN"), truth(r["code"], kst(DAY, 8, 20), "UN")
            assert lo["acml_vol"] <= r["volume"] <= hi["acml_vol"] and r["price"] == lo["price"]
        # what it could not restore is exactly what had not traded yet: no minute bar before the slot to read
        for code in on_nxt - set(restored["code"].to_pylist()):
            assert truth(code, kst(DAY, 8, 19, 59), "UN")["acml_vol"] == 0, code
