"""Helpers several test modules share: a KIS resource on the local exchange, a trimmed real universe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import dagster as dg
import httpx
import pyarrow.parquet as pq

from local_exchange.accounts import demo_credentials
from observer_assets.orchestration.partitions import day_key
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import universe_path


def open_clock_midday() -> tuple[str, str]:
    """``--start`` for an open-clock exchange at 12:00 KST today, where both venues trade continuously.

    The open clock stretches the two-venue day over 24 hours, so at some hours of the day a venue is in an auction or
    between phases and trades nothing (NXT from 15:23 to 15:41 KST, KRX from 01:50 to 03:41, ...). A test that needs
    trades on every tape starts its exchange here instead of at the wall clock, or it passes only at some hours."""
    now = datetime.now(KST)
    return "--start", now.replace(hour=12, minute=0, second=0, microsecond=0).isoformat()


def kis_for(sim, tmp_path, i: int, **kw) -> KisResource:
    """Demo account ``i`` on ``sim``, its tokens under ``tmp_path``."""
    key, secret = demo_credentials(i)
    return KisResource(
        app_key=key,
        app_secret=secret,
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        state_dir=str(tmp_path / "state"),
        **kw,
    )


def build_universe(inst, kis, day, n_codes: int = 40) -> list[str]:
    """The real universe asset, then trimmed to ``n_codes`` rows (rewritten atomically: a real, smaller file) so
    whole-slot fetches and restores take seconds."""
    inst.add_dynamic_partitions("trading_day", [day_key(day)])
    res = dg.materialize(
        [universe],
        partition_key=day_key(day),
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"universe": {"config": {"min_master_codes": 100, "nxt_status": False}}}},
    )
    assert res.success
    path = universe_path(lake.data_dir(), day)
    t = pq.read_table(path).slice(0, n_codes)
    lake.write_table_atomic(path, t)
    return t["code"].to_pylist()


#: the UI's own GraphQL: "Materialize selected" over partitions (launchPartitionBackfill), and a backfill's runs
LAUNCH = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""
STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status tags { key value } runs(limit: 10) { runId status tags { key value } } }
  }
}
"""


def start_dagster_dev(defs_file: Path, port: int, env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """``dagster dev`` (webserver and daemon) on 127.0.0.1 serving ``defs_file``, its output in ``log``, in its own
    session so the test can stop the whole process group."""
    with log.open("w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-f", str(defs_file)],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_dagster_dev(proc: subprocess.Popen) -> None:
    """Ctrl-C for ``dagster dev`` (it stops its webserver and daemon), then SIGKILL to whatever of its group is left."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def warm_quote(sim, code: str, key_no: int = 399) -> None:
    """One inquire-price on ``code`` from a key of its own, before a rate test starts.

    The first quote of a busy code generates its recent days (about 0.2 s of CPU for the busiest); requests that
    queue behind that stall are answered together and land in one of the exchange's one-second windows. KIS does not
    stall like that, so a test of the client's pacing starts with the code warm and its own key's counters clean."""
    key, secret = demo_credentials(key_no)
    with httpx.Client(base_url=sim.rest_url, timeout=30) as http:
        body = {"grant_type": "client_credentials", "appkey": key, "appsecret": secret}
        token = http.post("/oauth2/tokenP", json=body).json()["access_token"]
        headers = {"authorization": f"Bearer {token}", "appkey": key, "appsecret": secret, "tr_id": "FHKST01010100"}
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code}
        r = http.get("/uapi/domestic-stock/v1/quotations/inquire-price", params=params, headers=headers)
        assert r.json()["rt_cd"] == "0", r.text


def run_status_context(inst, run, sensor_name: str):  # noqa: ANN201 - a RunStatusSensorContext
    """The context a run-status sensor gets for ``run``'s success, as the daemon builds it."""
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_instance=inst,
        dagster_run=run,
        dagster_event=next(
            e for e in inst.all_logs(run.run_id) if e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS
        ).dagster_event,
    )
