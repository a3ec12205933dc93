"""Backfills the way the UI launches them (the launchPartitionBackfill mutation) against `dagster dev` (webserver and
daemon), one server for both paths docs/backfill.md describes: two Track A gap slots restored from minute bars, and
two years of daily history materialized partition by partition. Then the files and the per-partition status."""

from __future__ import annotations

import os
import shutil
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pyarrow.parquet as pq
import pytest
from support import LAUNCH, STATUS, build_universe, kis_for, start_dagster_dev, stop_dagster_dev

from local_exchange.accounts import demo_credentials
from observer_assets.orchestration.partitions import calendar, slot_key
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_bars_path, slot_dir, universe_path

ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "5"}
YEARS = ["2021", "2022"]
MEMBERS = 8  # a trimmed universe: each slot restored whole, each year of each member fetched, in seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_gap_slots_and_history_years_backfilled_from_the_ui_path(env, small_sim, tmp_path, monkeypatch):
    now = datetime.now(KST)
    slots = [s for s in calendar().track_a_slots(now.date()) if s <= now - timedelta(minutes=15)]
    # the first slot of the day has no minute bar before it: nothing to restore it from
    targets = [slot_key(slots[-3]), slot_key(slots[-1])] if len(slots) >= 4 else []
    home = tmp_path / "home"
    home.mkdir()
    main = Path(__file__).resolve().parents[2]
    shutil.copyfile(main / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test() as tmp_inst:  # the trimmed universe, built with a throwaway instance and its own key
        build_universe(tmp_inst, kis_for(small_sim, env, 22), now.date(), n_codes=MEMBERS)
    with dg.DagsterInstance.get() as inst:  # the instance `dagster dev` will use: the partitions exist
        inst.add_dynamic_partitions("track_a_slot", targets)
        inst.add_dynamic_partitions("bar_year", YEARS)  # what the daily_bars_years sensor registers
    key, secret = demo_credentials(21)
    port = _free_port()
    penv = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "DAGSTER_"))}
    penv |= {
        "DAGSTER_HOME": str(home),
        "KIS_APP_KEY": key,
        "KIS_APP_SECRET": secret,
        "KIS_REST_URL": small_sim.rest_url,
        "KIS_WS_URL": small_sim.ws_url,
        "PYTHONPATH": str(main),
    }
    log = tmp_path / "dev.log"
    proc = start_dagster_dev(Path(__file__).with_name("_ui_defs.py"), port, penv, main, log)
    url = f"http://127.0.0.1:{port}/graphql"

    def gql(query: str, variables: dict) -> dict:
        return httpx.post(url, json={"query": query, "variables": variables}, timeout=20).json()

    def launch(params: dict) -> str:
        out = None
        for _ in range(20):  # the code location may still be loading
            out = gql(LAUNCH, {"params": params})["data"]["launchPartitionBackfill"]
            if out["__typename"] == "LaunchBackfillSuccess":
                return out["backfillId"]
            time.sleep(1)
        raise AssertionError(out)

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "webserver did not start"
            time.sleep(1)
        launched = {}
        if targets:  # "Materialize selected" on the gap slots, with the tags the gap backfill's runs carry
            launched["slots"] = launch(
                {
                    "assetSelection": [{"path": ["track_a_snapshot"]}],
                    "partitionNames": targets,
                    "tags": [{"key": "observer/kind", "value": "backfill"}, {"key": "observer/kis", "value": "rest"}],
                    "title": "gap backfill from the UI path",
                }
            )
        launched["years"] = launch(
            {"assetSelection": [{"path": ["daily_bars"]}], "partitionNames": YEARS, "title": "daily history"}
        )
        # Done when every run the backfill daemon launched succeeded (the daemon marks a backfill COMPLETED on its next
        # 30-second iteration; waiting for that would only add time).
        done: dict[str, dict] = {}
        deadline = time.monotonic() + 150
        while len(done) < len(launched) and time.monotonic() < deadline:
            for name, bid in launched.items():
                b = gql(STATUS, {"id": bid})["data"]["partitionBackfillOrError"]
                assert b["status"] not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), (name, b)
                want = len(targets) if name == "slots" else len(YEARS)
                if len(b["runs"]) == want and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in b["runs"]):
                    done[name] = b
            time.sleep(1)
        assert len(done) == len(launched), (done, log.read_text()[-3000:])
        for name, b in done.items():
            assert all(r["status"] == "SUCCESS" for r in b["runs"]), (name, b, log.read_text()[-3000:])
    finally:
        stop_dagster_dev(proc)
    # one run per partition, each named by its partition
    years = done["years"]
    assert sorted({t["key"]: t["value"] for t in r["tags"]}["dagster/partition"] for r in years["runs"]) == YEARS
    codes = pq.read_table(universe_path(lake.data_dir(), now.date()))["code"].to_pylist()
    for y in YEARS:
        t = lake.read_table(daily_bars_path(lake.data_dir(), int(y)))
        assert t.num_rows == MEMBERS * 365 and set(t["code"].to_pylist()) == set(codes)  # the open clock: 365 days
    with dg.DagsterInstance.get() as inst:  # the per-partition status the UI shows
        assert inst.get_materialized_partitions(dg.AssetKey("daily_bars")) == set(YEARS)
    if not targets:
        pytest.skip("too early in the day for past slots: the daily history part ran alone")
    slots_b = done["slots"]
    assert {t["key"]: t["value"] for t in slots_b["tags"]}["observer/kind"] == "backfill"
    assert all({t["key"]: t["value"] for t in r["tags"]}.get("observer/kind") == "backfill" for r in slots_b["runs"])
    for k in targets:
        s = datetime.strptime(k, "%Y-%m-%dT%H%M").replace(tzinfo=KST)
        t = pq.read_table(slot_dir(lake.data_dir(), s) / "snapshot.parquet").to_pylist()
        assert [r["code"] for r in t] == sorted(codes)
        assert {(r["source"], r["restored_from"]) for r in t} == {("restored", "inquire-time-itemchartprice")}
