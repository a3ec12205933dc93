"""The day's minute bars: the plan follows Track A's tapes, the paging stops where the day does, the whole universe's
bars equal the exchange's ground truth when the deployment's own schedule asks for them, and a killed fetch resumes
without asking again for what it kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date, datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import kis_for, run_status_context

from observer_assets.definitions import defs
from observer_assets.gaps.sensors import gap_report_after_repair
from observer_assets.minute_bars.assets import minute_bars
from observer_assets.minute_bars.fetch import Ask, next_hour, plan, tape_span
from observer_assets.minute_bars.work import parts_dir
from observer_assets.orchestration.partitions import day_key
from observer_assets.universe.assets import universe
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.kis.models import MinuteBar
from observer_resources.storage import lake
from observer_resources.storage.layout import minute_bars_path, universe_path

DAY = date(2026, 12, 22)  # an ordinary Tuesday: KRX 09:00-15:30, NXT 08:00-08:50 and 15:30-20:00
TWO_VENUES = {"OBSERVER_CALENDAR": "krx", "OBSERVER_TRACK_A_WINDOW": "08:00-20:00"}


def kst(h: int, m: int, s: int = 0, d: date = DAY) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, s, tzinfo=KST)


# --- the plan and the paging (pure) ------------------------------------------------------------------------------
@pytest.mark.env(**TWO_VENUES)
def test_each_member_is_asked_on_the_tape_track_a_quoted_and_captured_tapes_are_added(env):
    cal = calendar_from_env()
    uni = pa.table({"code": ["000001", "000002", "000003"], "nxt_tradable": [True, False, None]})
    asks = plan(uni, cal, DAY, captured={"000002": ["J"], "000001": ["NX", "UN"]})
    got = {(a.code, a.market): (a.first.strftime("%H:%M"), a.last.strftime("%H:%M"), a.bound) for a in asks}
    assert got == {
        ("000001", "UN"): ("08:00", "20:00", 7),  # the window's 721 minutes at most, 120 a call
        ("000002", "J"): ("08:30", "20:00", 6),  # KRX's phases in the window: the opening auction to the after-market
        ("000003", "J"): ("08:30", "20:00", 6),  # NXT status unknown: quoted on KRX, as Track A does
        ("000001", "NX"): ("08:00", "20:00", 7),  # streamed on NXT's own tape: asked there too
    }
    assert tape_span(cal, date(2026, 12, 25), "J") is None  # Christmas: no phase, nothing to ask
    krx_only = MarketCalendar("krx")  # the KRX-only day: the session, 09:00..15:30
    (only,) = plan(uni.slice(1, 1), krx_only, DAY)
    assert (only.market, only.first.strftime("%H:%M"), only.last.strftime("%H:%M"), only.bound) == (
        "J",
        "09:00",
        "15:30",
        4,
    )


def _bar(t: datetime) -> MinuteBar:
    return MinuteBar(at=t, close=1, open=1, high=1, low=1, volume=1, acml_value=1, raw={})


def test_paging_steps_back_a_minute_and_stops_at_the_first_minute_or_the_previous_day():
    ask = Ask("000001", "J", kst(9, 0), kst(15, 30), 4)
    page = [_bar(kst(13, 31 + i // 60, i % 60)) for i in range(120) if kst(13, 31 + i // 60, i % 60) <= kst(15, 30)]
    assert next_hour([_bar(kst(11, m)) for m in range(0, 60)] * 2, DAY, ask, 120) == "105900"
    assert next_hour(page[:50], DAY, ask, 120) is None  # a short page: the day is exhausted
    yesterday = [_bar(kst(15, m, d=date(2026, 12, 21))) for m in range(10)]
    assert next_hour(yesterday + [_bar(kst(9 + m // 60, m % 60)) for m in range(110)], DAY, ask, 120) is None
    assert next_hour([_bar(kst(9, 0))] * 120, DAY, ask, 120) is None  # reached the tape's first minute


# --- the whole universe, through the schedule ---------------------------------------------------------------------
def _truth_bars(sim, code: str, venue: str) -> dict[datetime, dict]:
    """The exchange's trades of the day, bucketed by minute of trade time: volume, open, high, low, close."""
    rows = sim.admin("truth/ticks", params={"code": code, "day": DAY.isoformat(), "venue": venue, "records": "0"})
    out: dict[datetime, dict] = {}
    for r in rows["ticks"] if isinstance(rows, dict) else rows:
        t = r["time"]
        m = kst(int(t[:2]), int(t[2:4]))
        b = out.setdefault(m, {"volume": 0, "open": r["price"], "high": r["price"], "low": r["price"]})
        b["volume"] += r["qty"]
        b["high"], b["low"], b["close"] = max(b["high"], r["price"]), min(b["low"], r["price"]), r["price"]
    return out


@pytest.mark.slow
@pytest.mark.env(**TWO_VENUES)
def test_the_schedule_fetches_every_members_day_equal_to_the_exchange_and_a_killed_fetch_resumes(
    env, monkeypatch, sim_factory
):
    clock_file = env / "clock.json"
    monkeypatch.setenv("OBSERVER_CLOCK_FILE", str(clock_file))
    start = kst(5, 0)
    sim = sim_factory(
        *("--mode", "real", "--clock", "krx", "--speed", "0", "--start", start.isoformat()),
        *("--seed", "5", "--listings", "120", "--activity", "0.2"),
    )
    kis = kis_for(sim, env, 92)
    root = lake.data_dir()
    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def("minute_bars_after_the_day")

    def at(t: datetime) -> None:
        clock.write_sim(clock_file, t)
        sim.admin("clock", {"at": t.isoformat(), "speed": 0})

    def requests(inst, t: datetime) -> list[dg.RunRequest]:
        at(t)
        ctx = dg.build_schedule_context(instance=inst, scheduled_execution_time=t, repository_def=repo)
        return list(schedule.evaluate_tick(ctx).run_requests or [])

    def calls() -> int:
        return sim.admin("stats")["requests_total"]

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(DAY)])
        at(start)
        assert dg.materialize(
            [universe],
            partition_key=day_key(DAY),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {"min_master_codes": 60, "accept_anyway": True}}}},
        ).success
        uni = pq.read_table(universe_path(root, DAY))
        on_nxt = {c for c, t in zip(uni["code"].to_pylist(), uni["nxt_tradable"].to_pylist(), strict=True) if t}
        assert 0 < len(on_nxt) < uni.num_rows

        assert requests(inst, kst(19, 50)) == []  # NXT still trades: not yet
        (req,) = requests(inst, kst(20, 10))  # the last slot (20:00) + 10 minutes
        assert req.partition_key == day_key(DAY)

        # a first fetch killed with -9 once it has kept a part
        script = (
            "import dagster as dg, sys\n"
            "from observer_assets.minute_bars.assets import minute_bars\n"
            "from observer_assets.universe.assets import universe\n"
            "sys.path.insert(0, 'tests')\n"
            "from support import kis_for\n"
            "class S: rest_url, ws_url = sys.argv[1], sys.argv[2]\n"
            "from pathlib import Path\n"
            "with dg.instance_for_test() as inst:\n"
            "    inst.add_dynamic_partitions('trading_day', [sys.argv[3]])\n"
            "    dg.materialize([minute_bars, universe.to_source_asset()], partition_key=sys.argv[3], instance=inst,\n"
            "                   resources={'kis': kis_for(S, Path(sys.argv[4]), 92)})\n"
        )
        before = calls()
        proc = subprocess.Popen(
            [sys.executable, "-c", script, sim.rest_url, sim.ws_url, day_key(DAY), str(env)],
            env={**os.environ},
            cwd=os.getcwd(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        parts = parts_dir(root, DAY)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (parts.exists() and any(parts.glob("part-*.parquet"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not minute_bars_path(root, DAY).exists()
        first_run = calls() - before

        before = calls()
        res = dg.materialize(
            [minute_bars, universe.to_source_asset()],
            partition_key=req.partition_key,
            instance=inst,
            resources={"kis": kis},
            tags=req.tags,
        )
        assert res.success
        md = res.asset_materializations_for_node("minute_bars")[0].metadata
        second_run = calls() - before
        resumed, asks = md["asks_resumed"].value, md["asks"].value
        assert 50 <= resumed < asks  # one part or more was kept
        assert second_run == md["calls"].value <= md["call_bound"].value  # only the rest was asked, within bound
        assert first_run > 0 and md["call_bound_day"].value > md["call_bound"].value
        assert not parts.exists() or not any(parts.iterdir())

        # the fetch's success asks for a fresh gap report of the day (the proof's witness arrived)
        ctx = run_status_context(inst, inst.get_run_by_id(res.run_id), "gap_report_after_repair")
        assert [r.partition_key for r in gap_report_after_repair(ctx)] == [day_key(DAY)]

        table = pq.read_table(minute_bars_path(root, DAY))
        by = defaultdict(dict)
        for r in table.to_pylist():
            by[(r["code"], r["market"])][r["minute"].astimezone(KST)] = r
        assert {c for c, _ in by} == set(uni["code"].to_pylist())
        assert {c for c, m in by if m == "UN"} == on_nxt
        for (code, market), bars in sorted(by.items()):  # every member, each on its tape
            truth = _truth_bars(sim, code, {"J": "KRX", "UN": "UN"}[market])
            traded = {m: b for m, b in bars.items() if b["volume"]}
            assert set(traded) == set(truth), code
            for m, b in traded.items():
                t = truth[m]
                assert (b["volume"], b["open"], b["high"], b["low"], b["close"]) == (
                    t["volume"],
                    t["open"],
                    t["high"],
                    t["low"],
                    t["close"],
                ), (code, m)
