"""Universe and Track A end to end: a real Dagster instance, the local exchange over HTTP, real Parquet files."""

import math
import shutil
from datetime import datetime

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from support import kis_for

from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe import rules
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    TRACK_A_FAILURES,
    exclusions_path,
    slot_dir,
    slot_label,
    universe_dir,
    universe_path,
    universe_raw_dir,
)

SMALL = {"min_master_codes": 100, "nxt_status": False}  # NXT status: tests/universe/test_universe_nxt.py
# The slot stays "current" for the whole test even if it crosses a 10-minute boundary (else: restore mode).
LIVE = {"track_a_snapshot": {"config": {"live_window_min": 1440}}}


@pytest.fixture(scope="module")
def frozen_sim(sim_factory_module):
    # A frozen clock: every quote is the same whenever it is asked, so live answers can be compared exactly.
    return sim_factory_module("--mode", "real", "--clock", "open", "--seed", "11", "--listings", "600", "--speed", "0")


@pytest.fixture(scope="module")
def sim_factory_module():
    from local_exchange.server import run_sim_process

    started = []

    def start(*args):
        p = run_sim_process(*args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "100"}


def sim_now(sim) -> datetime:
    return datetime.fromisoformat(sim.admin("clock")["now"]).astimezone(KST)


def run(assets, key, kis, instance, selection=None, config=None):
    return dg.materialize(
        assets,
        partition_key=key,
        instance=instance,
        resources={"kis": kis},
        selection=selection,
        run_config={"ops": config} if config else None,
    )


def test_universe_then_track_a(env, frozen_sim):
    today = datetime.now(KST).date()
    kis = kis_for(frozen_sim, env, 1)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        res = run([universe], day_key(today), kis, inst, config={"universe": {"config": SMALL}})
        assert res.success
        md = res.asset_materializations_for_node("universe")[0].metadata
        path = universe_path(lake.data_dir(), today)
        table = pq.read_table(path)
        assert md["count"].value == table.num_rows > 100
        checks = res.get_asset_check_evaluations()  # judged by the asset itself, before publishing
        assert [(c.check_name, c.passed, c.partition) for c in checks] == [("universe_count", True, day_key(today))]

        # Membership against the exchange's own previous closes, and the type filter.
        df = table.to_pandas()
        assert (df["prev_close"] >= 4000).all() and not df["code"].str.startswith("Q").any()
        assert df["code"].is_unique and list(df["code"]) == sorted(df["code"])
        for code in df["code"].sample(10, random_state=1):
            truth = frozen_sim.admin("truth/quote", params={"code": code, "at": sim_now(frozen_sim).isoformat()})
            assert truth["prev_close"] == int(df.loc[df.code == code, "prev_close"].iloc[0])
        assert table.schema.equals(rules.UNIVERSE_SCHEMA)
        assert df["in_kospi200"].any() and df["in_kosdaq150"].any() and (df["lot_size"] == 1).all()
        excl = pq.read_table(exclusions_path(lake.data_dir(), today))
        assert excl.schema.equals(rules.EXCLUSION_SCHEMA)
        excl = excl.to_pandas()
        # every master row is either a member or excluded, in one category; the metadata counts them by category
        assert len(excl) + len(df) == md["master_rows"].value
        by_cat = excl["category"].value_counts().to_dict()
        assert {k: v for k, v in md["excluded_by_reason"].value.items() if v} == by_cat
        below = excl[excl.category == "below_min_prev_close"]
        assert len(below) and (below.prev_close < below.min_prev_close).all() and (below.min_prev_close == 4000).all()

        # Fixed for the day: a re-run rebuilds the identical table from the kept inputs, asking KIS nothing.
        before = frozen_sim.admin("stats")["requests_total"]
        res2 = run([universe], day_key(today), kis, inst, config={"universe": {"config": SMALL}})
        assert (
            res2.asset_materializations_for_node("universe")[0].metadata["source"].value == "rebuilt from kept inputs"
        )
        assert pq.read_table(path).equals(table)
        assert frozen_sim.admin("stats")["requests_total"] == before

        # Track A for the current slot of the (open) calendar.
        slot = calendar().slot_at(datetime.now(KST))
        key = slot_key(slot)
        inst.add_dynamic_partitions("track_a_slot", [key])
        # an earlier run's failures (as a run that lost symbols leaves them): a run without failures removes them
        stale = slot_dir(lake.data_dir(), slot, TRACK_A_FAILURES) / "failures.parquet"
        lake.write_table_atomic(stale, pa.table({"code": ["000020"], "error": ["deadline: next slot"]}))
        res = run([track_a_snapshot, universe], key, kis, inst, selection=[track_a_snapshot], config=LIVE)
        md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
        snap = pq.read_table(slot_dir(lake.data_dir(), slot) / "snapshot.parquet")
        assert md["coverage_pct"].value == 100.0 and md["failures"].value == 0
        assert not stale.parent.exists()  # no failures: no file, no empty slot directory
        assert md["requests_used"].value == math.ceil(table.num_rows / 30)
        assert snap.num_rows == table.num_rows
        assert str(snap.schema.field("slot_ts").type) == "timestamp[us, tz=Asia/Seoul]"
        assert str(snap.schema.field("price").type) == "int64"
        s = snap.to_pandas()
        assert (s["source"] == "live").all() and s["restored_from"].isna().all()
        assert (s["bid"].dropna() > 0).all()  # never 0 for "no bid"
        now = sim_now(frozen_sim).isoformat()
        for _, row in s.sample(15, random_state=2).iterrows():
            truth = frozen_sim.admin("truth/quote", params={"code": row.code, "at": now})
            assert (row.price, row.volume, row.trade_value, row.high, row.low) == (
                truth["price"],
                truth["acml_vol"],
                truth["acml_value"],
                truth["high"],
                truth["low"],
            )
            assert (row.total_ask_size, row.total_bid_size) == (truth["total_ask_size"], truth["total_bid_size"])
            up, down = row.price > row.prev_close, row.price < row.prev_close
            limit = row.price >= row.upper_limit and up or row.price <= row.lower_limit and down
            assert row.change_sign == (1 if up else 4 if down else 3) if limit else (2 if up else 5 if down else 3)
        # the multi-quote's session phase (the open clock: in session), no expected cross in the continuous session,
        # no halt/VI/status in this TR; the key that asked; lateness per row and for the slot
        assert (s["session_phase"] == "장중").all() and (s["hour_cls_code"] == "0").all()
        assert s[["expected_price", "expected_volume", "halted", "vi_code", "status_code"]].isna().all().all()
        assert (s["key_id"] == kis.kis_config().key_id).all()
        # to the microsecond (us / 1e6 and pandas' seconds + us / 1e6 can differ in the last bit)
        assert ((s["late_s"] - (s["fetched_at"] - s["slot_ts"]).dt.total_seconds()).abs() < 1e-9).all()
        assert (
            md["late_s_min"].value == round(s["late_s"].min(), 3) and md["late_s_max"].value >= md["late_s_min"].value
        )

        # Readable as a hive-partitioned dataset with no project code.
        dataset = ds.dataset(lake.data_dir() / "track_a", format="parquet", partitioning="hive")
        assert dataset.to_table(filter=ds.field("slot") == slot_label(slot)).num_rows == snap.num_rows
        assert len(pd.read_parquet(lake.data_dir() / "universe")) == table.num_rows


def test_track_a_rebuilds_identically_after_losing_its_table(env, frozen_sim):
    """A crash after the raw archive and before the table: the re-run derives the same table from the archive."""
    today = datetime.now(KST).date()
    kis = kis_for(frozen_sim, env, 2)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        assert run([universe], day_key(today), kis, inst, config={"universe": {"config": SMALL}}).success
        slot = calendar().slot_at(datetime.now(KST))
        key = slot_key(slot)
        inst.add_dynamic_partitions("track_a_slot", [key])
        run([track_a_snapshot, universe], key, kis, inst, selection=[track_a_snapshot], config=LIVE)
        path = slot_dir(lake.data_dir(), slot) / "snapshot.parquet"
        first = pq.read_table(path)
        path.unlink()
        before = frozen_sim.admin("stats")["requests_total"]
        res = run([track_a_snapshot, universe], key, kis, inst, selection=[track_a_snapshot], config=LIVE)
        assert (
            res.asset_materializations_for_node("track_a_snapshot")[0].metadata["mode"].value
            == "rebuilt from raw archive"
        )
        assert pq.read_table(path).equals(first)
        assert frozen_sim.admin("stats")["requests_total"] == before


def test_universe_falls_back_to_the_previous_day_when_masters_cannot_be_had(env, frozen_sim, tmp_path):
    today = datetime.now(KST).date()
    yesterday = calendar().previous_trading_day(today)
    with dg.instance_for_test() as inst:
        # Build a real universe first, then present it as yesterday's and lose the exchange.
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        run([universe], day_key(today), kis_for(frozen_sim, env, 3), inst, config={"universe": {"config": SMALL}})
        root = lake.data_dir()
        y = universe_path(root, yesterday)
        y.parent.mkdir(parents=True)
        shutil.copy(universe_path(root, today), y)
        shutil.rmtree(universe_dir(root, today))
        shutil.rmtree(universe_raw_dir(root, today))
        dead = KisResource(
            app_key=kis_for(frozen_sim, env, 3).app_key,
            app_secret=kis_for(frozen_sim, env, 3).app_secret,
            rest_url="http://127.0.0.1:9",
            ws_url="ws://127.0.0.1:9",
            state_dir=str(tmp_path / "s2"),
        )
        res = run([universe], day_key(today), dead, inst, config={"universe": {"config": SMALL}})
        md = res.asset_materializations_for_node("universe")[0].metadata
        assert md["source"].value == f"fallback: universe of {yesterday}"
        assert pq.read_table(universe_path(root, today)).equals(pq.read_table(y))
        assert (universe_raw_dir(root, today) / "fallback.json").exists()


def test_bad_partition_keys_are_refused_clearly(env, frozen_sim):
    kis = kis_for(frozen_sim, env, 4)
    with dg.instance_for_test() as inst:
        for key in ("2026-11-26T0905", "2026-11-26 09:00", "yesterday"):
            inst.add_dynamic_partitions("track_a_slot", [key])
            with pytest.raises(Exception, match="track_a_slot key"):
                run([track_a_snapshot, universe], key, kis, inst, selection=[track_a_snapshot])


@pytest.mark.slow  # long: it runs beside the day in the life, where the slow stage has room, not in the parallel part
def test_kill_9_mid_write_leaves_no_partial_partition(env, frozen_sim, tmp_path):
    """kill -9 while the raw archive or the table is being written: what is visible is always a whole file (or
    nothing), and the re-run produces the same data (the frozen exchange answers identically)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    today = datetime.now(KST).date()
    kis = kis_for(frozen_sim, env, 5)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        assert run([universe], day_key(today), kis, inst, config={"universe": {"config": SMALL}}).success
    slot = calendar().slot_at(datetime.now(KST))
    key = slot_key(slot)
    root = lake.data_dir()
    table_dir, raw_dir = slot_dir(root, slot), slot_dir(root, slot, "raw/track_a")
    args = [
        sys.executable,
        os.path.join(os.path.dirname(__file__), "_materialize_slot.py"),
        key,
        frozen_sim.rest_url,
        frozen_sim.ws_url,
        kis.app_key,
        kis.app_secret,
        str(env / "state"),
    ]

    def tmp_files():
        return [p for d in (table_dir, raw_dir) if d.exists() for p in d.iterdir() if p.name.endswith(".tmp")]

    killed_mid_write = 0
    for attempt in range(12):
        for d in (table_dir, raw_dir):
            shutil.rmtree(d, ignore_errors=True)
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            if tmp_files():
                child.send_signal(signal.SIGKILL)
                killed_mid_write += 1
                break
        child.wait()
        # Whatever survived is whole: the table reads, the archive's lines parse; temp files are hidden names.
        if (table_dir / "snapshot.parquet").exists():
            pq.read_table(table_dir / "snapshot.parquet")
        if (raw_dir / "raw.jsonl").exists():
            import json

            [json.loads(line) for line in (raw_dir / "raw.jsonl").read_text().splitlines()]
        assert all(p.name.startswith(".") for p in tmp_files())
        if killed_mid_write >= 3:
            break
    assert killed_mid_write >= 1, "never caught the writer mid-write"
    lake.sweep_temp_files(root)
    assert not tmp_files()

    # The re-run completes and gives the same data as an uninterrupted run.
    assert subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    timing = ["fetched_at", "late_s"]  # when it was fetched, and so how late: the only columns a re-run changes
    after_kill = pq.read_table(table_dir / "snapshot.parquet").drop(timing)
    assert subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    clean = pq.read_table(table_dir / "snapshot.parquet").drop(timing)
    assert after_kill.equals(clean) and after_kill.num_rows > 100


def test_inquire_price_rows_carry_halt_vi_and_issue_status(env, frozen_sim):
    """The per-symbol TR (paper keys' snapshot) has the halt, VI and issue status the multi-quote lacks, and none of
    the multi-quote's book totals, session phase or expected auction: those stay null, never guessed."""
    import asyncio

    from observer_assets.track_a.snapshot import row_from_inquire_price

    kis = kis_for(frozen_sim, env, 6)
    listings = frozen_sim.admin("listings")["listings"]
    halted = next(li for li in listings if li["halted"])
    normal = next(li for li in listings if not (li["halted"] or li["administrative"]) and li["alarm"] == "00")

    async def ask() -> list:
        async with kis.rest_client() as client:
            return [await client.inquire_price(li["code"]) for li in (halted, normal)]

    h, n = (row_from_inquire_price(q.raw) for q in asyncio.run(ask()))
    assert (h["halted"], h["status_code"], n["halted"], n["status_code"]) == (True, "58", False, "55")
    assert h["vi_code"] == n["vi_code"] == "N"
    up, down = n["price"] > n["prev_close"], n["price"] < n["prev_close"]
    assert n["change_sign"] in ((1, 2) if up else (4, 5) if down else (3,))
    for col in ("total_ask_size", "total_bid_size", "session_phase", "hour_cls_code", "expected_price"):
        assert h[col] is None and n[col] is None, col
