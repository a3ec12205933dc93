"""``daily_bars`` against the local exchange on loopback, in a real Dagster instance: the stored year equals the
exchange's truth (raw and adjusted, and the marker fields), a corporate action shows as raw != adjusted before it
and raw == adjusted from it on, a kill -9 mid-run resumes without refetching a checkpointed symbol, and the
current year's refresh asks only the new days unless the adjusted series moved.

The exchange runs its ``open`` clock (every day trades), so a year is 365 days: 4 calls a series, 8 a symbol."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import build_universe, kis_for

from local_exchange.accounts import demo_credentials
from observer_assets.daily_bars import bars, fetch
from observer_assets.daily_bars.assets import daily_bars
from observer_assets.daily_bars.checks import daily_bars_consistent
from observer_assets.orchestration.partitions import calendar
from observer_resources import clock
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_bars_parts_dir, daily_bars_path, universe_path

YEAR = 2023
CALLS_PER_SYMBOL = 8  # 365 days: 100 + 100 + 100 + 65 rows, raw and adjusted
HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _pick(sim, members: list[str]) -> tuple[list[str], list[str]]:
    """Members with a corporate action in YEAR and members without any (at least 3 of each)."""
    acts = sim.admin("truth/corporate_actions")["actions"]
    in_year = sorted({a["code"] for a in acts if a["ex_date"].startswith(str(YEAR))} & set(members))
    never = sorted(set(members) - {a["code"] for a in acts})
    assert len(in_year) >= 3 and len(never) >= 3, (len(in_year), len(never))
    return in_year, never


@pytest.fixture(scope="module")
def built_universe(small_sim, tmp_path_factory) -> tuple[Path, list[str]]:
    """The real universe asset, once for the module, in a lake of its own (each test copies it into its lake)."""
    root = tmp_path_factory.mktemp("universe")
    mp = pytest.MonkeyPatch()
    mp.setenv("OBSERVER_DATA_DIR", str(root / "data"))
    mp.setenv("OBSERVER_CALENDAR", "open")
    mp.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "50")  # the exchange has 300 listings
    try:
        with dg.instance_for_test() as inst:
            members = build_universe(inst, kis_for(small_sim, root, 609), clock.now().date(), n_codes=300)
    finally:
        mp.undo()
    return root / "data", members


def _universe_of(built, sim, n_events: int = 3, n_quiet: int = 3) -> tuple[list[str], list[str]]:
    """The module's universe in this test's lake, trimmed (atomically rewritten) to members with and without events."""
    src, members = built
    shutil.copytree(src / "universe", lake.data_dir() / "universe")
    with_events, quiet = _pick(sim, members)
    if not n_events:  # the current year's bars come from ticks: the least active members cost the exchange least
        activity = {x["code"]: x["activity"] for x in sim.admin("listings", params={"limit": "5000"})["listings"]}
        quiet = sorted(quiet, key=lambda c: activity[c])
    path = universe_path(lake.data_dir(), clock.now().date())
    t = pq.read_table(path)
    keep = set(with_events[:n_events]) | set(quiet[:n_quiet])
    lake.write_table_atomic(path, t.filter(pa.array([c in keep for c in t["code"].to_pylist()])))
    return with_events[:n_events], quiet[:n_quiet]


def _calls(sim, key: str) -> int:
    return sim.admin("stats", params={"appkey": key})["for_appkey"].get("requests_total", 0)


def _materialize(inst, kis, key: str, **config) -> dg.ExecuteInProcessResult:
    inst.add_dynamic_partitions("bar_year", [key])
    return dg.materialize(
        [daily_bars, daily_bars_consistent],
        partition_key=key,
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"daily_bars": {"config": config}}} if config else None,
        raise_on_error=False,
    )


def _truth(sim, code: str) -> list[dict]:
    return sim.admin("truth/daily_bars", params={"code": code, "from": f"{YEAR}0101", "to": f"{YEAR}1231"})["bars"]


def _without_fetched_at(t: pa.Table) -> pa.Table:
    return bars.sort_table(t.drop_columns(["fetched_at"]))


def test_the_year_equals_the_exchanges_truth_raw_and_adjusted(env, small_sim, built_universe, tmp_path):
    kis = kis_for(small_sim, tmp_path, 610)
    with dg.instance_for_test() as inst:
        with_events, quiet = _universe_of(built_universe, small_sim)
        before = _calls(small_sim, kis.app_key)
        res = _materialize(inst, kis, str(YEAR))
        assert res.success
        calls = _calls(small_sim, kis.app_key) - before
        assert calls == CALLS_PER_SYMBOL * 6  # exactly the year's pages: no re-asks
        md = res.asset_materializations_for_node("daily_bars")[0].metadata
        assert md["symbols_done"].value == md["symbols_total"].value == 6 and md["calls"].value == calls
        (check,) = res.get_asset_check_evaluations()
        assert check.passed, check.metadata
        assert check.metadata["corporate_actions"].value, "the year's events are listed by the check"

    path = daily_bars_path(lake.data_dir(), YEAR)
    t = lake.read_table(path)
    assert t.schema.remove_metadata() == bars.SCHEMA
    assert not daily_bars_parts_dir(lake.data_dir(), YEAR).exists()  # parts removed once assembled
    rows = {(r["code"], r["day"]): r for r in t.to_pylist()}
    for code in [*with_events, *quiet]:
        truth = _truth(small_sim, code)
        assert len(truth) == 365
        for b in truth:
            r = rows[(code, date.fromisoformat(b["day"]))]
            raw, adj = b["raw"], b["adjusted"]
            assert (r["open"], r["high"], r["low"], r["close"], r["volume"], r["value"]) == tuple(
                raw[f] for f in ("open", "high", "low", "close", "volume", "value")
            )
            assert (r["adj_open"], r["adj_high"], r["adj_low"], r["adj_close"], r["adj_volume"]) == tuple(
                adj[f] for f in ("open", "high", "low", "close", "volume")
            )
            assert (r["flng_cls_code"], r["mod_yn"], r["prtt_rate"]) == (
                b["flng_cls_code"],
                b["mod_yn"],
                b["prtt_rate"],
            )

    # an event: raw != adjusted before its ex-date, raw == adjusted from it on (no later event in the year)
    acts = small_sim.admin("truth/corporate_actions", params={"code": with_events[0]})["actions"]
    last = max(a for a in acts if a["ex_date"].startswith(str(YEAR)))
    ex = date.fromisoformat(last["ex_date"])
    mine = [r for r in t.to_pylist() if r["code"] == with_events[0]]
    after = [r for r in mine if r["day"] >= ex]
    before_ex = [r for r in mine if r["day"] < ex]
    assert after and all(r["close"] == r["adj_close"] for r in after)
    assert before_ex and all(r["close"] != r["adj_close"] for r in before_ex if r["adj_close"] >= 100)
    ex_row = next(r for r in mine if r["day"] == ex)
    assert (ex_row["flng_cls_code"], ex_row["mod_yn"]) == (last["flng_cls_code"], last["mod_yn"])
    found = {(e["code"], e["ex_date"]) for e in bars.events_in(t)}
    assert (with_events[0], ex) in found
    # docs/data.md's SQL recipe finds the same ex-dates
    import duckdb

    sql = re.search(r"```sql\n-- recipe: corporate_actions\n(.*?)```", (ROOT / "docs" / "data.md").read_text(), re.S)[1]
    got = duckdb.sql(sql.replace("data/daily_bars", str(lake.data_dir() / "daily_bars"))).fetchall()
    assert {(c, d) for c, d, *_ in got} == found


def test_a_killed_run_resumes_without_refetching_and_yields_the_same_table(env, small_sim, built_universe, tmp_path):
    kis = kis_for(small_sim, tmp_path, 611)
    with dg.instance_for_test() as inst:
        with_events, quiet = _universe_of(built_universe, small_sim)
        codes = sorted([*with_events, *quiet])
        parts = daily_bars_parts_dir(lake.data_dir(), YEAR)
        # the child materializes with one symbol a part and one in flight, and is killed after its second part
        child = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_materialize_year.py"),
                str(YEAR),
                kis.rest_url,
                kis.ws_url,
                kis.app_key,
                kis.app_secret,
                kis.state_dir,
            ],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
            assert child.poll() is None, child.stdout.read().decode()[-3000:]
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        done, _, stale = fetch.read_parts(parts, fetch.span_text(date(YEAR, 1, 1), date(YEAR, 12, 31)))
        assert 2 <= len(done) < len(codes) and not stale
        assert not daily_bars_path(lake.data_dir(), YEAR).exists()

        before = _calls(small_sim, kis.app_key)
        res = _materialize(inst, kis, str(YEAR))
        assert res.success
        assert _calls(small_sim, kis.app_key) - before == CALLS_PER_SYMBOL * (len(codes) - len(done))
        md = res.asset_materializations_for_node("daily_bars")[0].metadata
        assert md["symbols_resumed"].value == len(done)
        resumed = lake.read_table(daily_bars_path(lake.data_dir(), YEAR))

        # an uninterrupted run (the same partition again: idempotent) gives the same table
        res = _materialize(inst, kis, str(YEAR))
        assert res.success
        again = lake.read_table(daily_bars_path(lake.data_dir(), YEAR))
    assert _without_fetched_at(resumed).equals(_without_fetched_at(again))
    assert sorted(set(again["code"].to_pylist())) == codes


def test_bad_partition_keys_fail_with_a_clear_error(env, small_sim, tmp_path):
    kis = kis_for(small_sim, tmp_path, 612)
    with dg.instance_for_test() as inst:
        for key, says in (("23", "must be a year, YYYY"), ("2017", "before the first year"), ("2031", "in the future")):
            res = _materialize(inst, kis, key)
            assert not res.success
            (failure,) = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
            assert says in failure.step_failure_data.error.message, failure.step_failure_data.error.message


def test_refresh_asks_only_new_days_unless_the_adjusted_series_moved(env, small_sim, tmp_path):
    """The current year's policy, against the exchange: stored rows through some day, then the rest of the span.
    A quiet symbol costs one adjusted call; a symbol whose event fell after its stored rows is asked again whole."""
    from observer_resources.resources import kis_rest_clients

    kis = kis_for(small_sim, tmp_path, 613)
    acts = small_sim.admin("truth/corporate_actions")["actions"]
    evented = next(a for a in acts if a["ex_date"].startswith(str(YEAR)) and a["ex_date"] > f"{YEAR}-02-15")
    ex = date.fromisoformat(evented["ex_date"])
    quiet = next(
        x["code"] for x in small_sim.admin("listings")["listings"] if x["code"] not in {a["code"] for a in acts}
    )
    start, end = date(YEAR, 1, 1), date(YEAR, 12, 31)

    async def run() -> tuple[list, list, list, list[int]]:
        async with kis_rest_clients(kis, background=True) as (client,):
            full_quiet, _ = await fetch.fetch_symbol(client, quiet, start, end)
            full_ev, _ = await fetch.fetch_symbol(client, evented["code"], start, end)
            n0 = client.stats.requests
            stored_quiet = [r for r in full_quiet if r["day"] <= date(YEAR, 12, 20)]
            new_quiet, quiet_moved = await fetch.fetch_symbol(client, quiet, start, end, stored_quiet)
            assert not quiet_moved
            n1 = client.stats.requests
            # as stored the day before the ex-date: no later event yet, so adjusted was raw then
            stored_ev = [
                {**r, **{f"adj_{f}": r[f] for f in ("open", "high", "low", "close", "volume")}}
                for r in full_ev
                if r["day"] < ex
            ]
            new_ev, ev_moved = await fetch.fetch_symbol(client, evented["code"], start, end, stored_ev)
            assert ev_moved  # reported, so the asset can say which earlier years are on the old basis
            n2 = client.stats.requests
            return full_quiet, new_quiet, (full_ev, new_ev), [n1 - n0, n2 - n1]

    full_quiet, new_quiet, (full_ev, new_ev), calls = asyncio.run(run())
    drop = ["fetched_at"]
    assert bars.to_table(new_quiet).drop_columns(drop).equals(bars.to_table(full_quiet).drop_columns(drop))
    assert bars.to_table(new_ev).drop_columns(drop).equals(bars.to_table(full_ev).drop_columns(drop))
    assert calls[0] == 1  # the quiet symbol: 11 new days in one adjusted call
    assert calls[1] == 1 + CALLS_PER_SYMBOL  # the evented one: the check call, then the whole year again


def test_the_schedule_and_the_year_sensor_drive_the_current_year_through_a_real_instance(
    env, small_sim, built_universe, tmp_path, monkeypatch
):
    """The automation path: the sensor registers the years as partitions (what the UI's backfill dialog lists), the
    evening schedule asks for the current year, and its run request runs as daily_bars_job in the instance."""
    from datetime import datetime

    from observer_assets.daily_bars import defs as daily_defs
    from observer_assets.daily_bars import sensors
    from observer_assets.daily_bars.schedules import daily_bars_after_close
    from observer_resources.clock import KST

    monkeypatch.setenv("OBSERVER_DAILY_BARS_FROM_YEAR", "2024")
    now = clock.now()
    monkeypatch.setattr(sensors, "now", lambda: now)
    kis = kis_for(small_sim, tmp_path, 614)
    with dg.instance_for_test() as inst:
        _universe_of(built_universe, small_sim, n_events=0, n_quiet=1)  # the current year: bars from ticks, slower
        ctx = dg.build_sensor_context(instance=inst)
        sensors.daily_bars_years(ctx)
        years = [f"{y}" for y in range(2024, now.year + 1)]
        assert inst.get_dynamic_partitions("bar_year") == years
        sensors.daily_bars_years(ctx)  # idempotent
        assert inst.get_dynamic_partitions("bar_year") == years

        at = datetime.combine(now.date(), datetime.min.time(), KST).replace(hour=20, minute=30)
        rr = daily_bars_after_close(dg.build_schedule_context(instance=inst, scheduled_execution_time=at))
        assert isinstance(rr, dg.RunRequest) and rr.partition_key == str(now.year)
        with monkeypatch.context() as m:  # a history that starts next year keeps nothing yet
            m.setenv("OBSERVER_DAILY_BARS_FROM_YEAR", str(now.year + 1))
            skip = daily_bars_after_close(dg.build_schedule_context(instance=inst, scheduled_execution_time=at))
            assert isinstance(skip, dg.SkipReason) and "starts in" in skip.skip_message
            skip = sensors.daily_bars_years(dg.build_sensor_context(instance=inst))
            assert isinstance(skip, dg.SkipReason) and "no year yet" in skip.skip_message
        job = dg.Definitions.merge(daily_defs.defs, dg.Definitions(resources={"kis": kis})).resolve_job_def(
            "daily_bars_job"
        )
        res = job.execute_in_process(partition_key=rr.partition_key, instance=inst, tags=rr.tags)
        assert res.success
        t = lake.read_table(daily_bars_path(lake.data_dir(), now.year))
        last = fetch.last_complete_day(calendar(), clock.now())
        assert max(t["day"].to_pylist()) == last  # through the last day whose session is over, never a partial bar
        assert (
            inst.get_latest_materialization_event(dg.AssetKey("daily_bars")).dagster_event.partition == rr.partition_key
        )


def test_every_app_key_takes_a_share_of_the_year(env, small_sim, built_universe, tmp_path):
    """A pool of three keys: each takes symbols from the one queue, the calls add up to the year's bound, and the
    year is whole."""
    from observer_resources.resources import KisKey, KisPool, kis_members

    creds = [demo_credentials(640 + i) for i in range(3)]
    kis = KisPool(
        app_key=creds[0][0],
        app_secret=creds[0][1],
        rest_url=small_sim.rest_url,
        ws_url=small_sim.ws_url,
        state_dir=str(tmp_path / "state"),
        more_keys=[KisKey(app_key=k, app_secret=s) for k, s in creds[1:]],
    )
    with dg.instance_for_test() as inst:
        with_events, quiet = _universe_of(built_universe, small_sim)
        res = _materialize(inst, kis, str(YEAR), concurrency=1)
        assert res.success
        md = res.asset_materializations_for_node("daily_bars")[0].metadata
    by_key = md["calls_by_key"].value
    assert sorted(by_key) == sorted(m.kis_config().key_id for m in kis_members(kis))
    assert all(n > 0 for n in by_key.values()), by_key
    assert sum(by_key.values()) == CALLS_PER_SYMBOL * 6 == md["calls"].value
    for m in kis_members(kis):  # the exchange counted the same per key
        stats = small_sim.admin("stats", params={"appkey": m.app_key})["for_appkey"]
        assert stats["requests_total"] == by_key[m.kis_config().key_id]
    t = lake.read_table(daily_bars_path(lake.data_dir(), YEAR))
    assert sorted(set(t["code"].to_pylist())) == sorted([*with_events, *quiet])
