"""The daily history backfilled the way docs/backfill.md says: years selected and launched as one partition backfill
(the UI's launchPartitionBackfill mutation) against `dagster dev` (webserver + daemon), which materializes them
partition by partition; then the files and the per-partition status Dagster keeps."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
from gaps.test_backfill import LAUNCH, STATUS
from support import build_universe, kis_for, start_dagster_dev

from local_exchange.accounts import demo_credentials
from observer_resources import clock
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_bars_path

ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "50"}
YEARS = ["2021", "2022"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_years_backfilled_from_the_ui_path_materialize_partition_by_partition(env, small_sim, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    main = Path(__file__).resolve().parents[2]
    shutil.copyfile(main / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test() as tmp_inst:  # the universe, trimmed to two members, in a throwaway instance
        build_universe(tmp_inst, kis_for(small_sim, env, 631), clock.now().date(), n_codes=2)
    with dg.DagsterInstance.get() as inst:  # what the daily_bars_years sensor registers: the years exist as partitions
        inst.add_dynamic_partitions("bar_year", YEARS)
    key, secret = demo_credentials(632)
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
    proc = start_dagster_dev(Path(__file__).with_name("_ui_defs.py"), port, penv, main, tmp_path / "dev.log")
    url = f"http://127.0.0.1:{port}/graphql"

    def gql(query: str, variables: dict) -> dict:
        return httpx.post(url, json={"query": query, "variables": variables}, timeout=20).json()

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "webserver did not start"
            time.sleep(1)
        params = {"assetSelection": [{"path": ["daily_bars"]}], "partitionNames": YEARS, "title": "daily history"}
        out = None
        for _ in range(20):  # the code location may still be loading
            out = gql(LAUNCH, {"params": params})["data"]["launchPartitionBackfill"]
            if out["__typename"] == "LaunchBackfillSuccess":
                break
            time.sleep(1)
        assert out["__typename"] == "LaunchBackfillSuccess", out
        b, runs = None, []
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline:
            b = gql(STATUS, {"id": out["backfillId"]})["data"]["partitionBackfillOrError"]
            runs = b["runs"]
            if len(runs) == len(YEARS) and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                break
            assert b["status"] not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), b
            time.sleep(1)
        assert len(runs) == len(YEARS) and all(r["status"] == "SUCCESS" for r in runs), (
            b,
            (tmp_path / "dev.log").read_text()[-3000:],
        )
        # one run per year: the backfill materializes partition by partition
        assert sorted({t["key"]: t["value"] for t in r["tags"]}["dagster/partition"] for r in runs) == YEARS
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for y in YEARS:
        t = lake.read_table(daily_bars_path(lake.data_dir(), int(y)))
        assert t.num_rows == 2 * 365 and len(set(t["code"].to_pylist())) == 2  # the exchange's open clock: 365 days
    with dg.DagsterInstance.get() as inst:  # the per-partition status the UI shows
        assert inst.get_materialized_partitions(dg.AssetKey("daily_bars")) == set(YEARS)
