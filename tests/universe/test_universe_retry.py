"""A first universe (nothing earlier to fall back on) asked while the exchange is still starting: the run tries
again by itself instead of leaving the day without members (as a deployment's first start races its exchange)."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime

import dagster as dg

from local_exchange.accounts import demo_credentials
from local_exchange.server import run_sim_process
from observer_assets.orchestration.partitions import day_key
from observer_assets.universe import assets as universe_assets
from observer_resources.calendar import KST
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import universe_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_first_universe_waits_for_an_exchange_that_is_still_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "20")
    monkeypatch.setattr(universe_assets, "MASTER_RETRY_S", 3)  # 3, 6 and 12 s instead of 20, 40 and 80
    rest, ws = free_port(), free_port()
    key, secret = demo_credentials(41)
    kis = KisResource(
        app_key=key,
        app_secret=secret,
        rest_url=f"http://127.0.0.1:{rest}",
        ws_url=f"ws://127.0.0.1:{ws}",
        state_dir=str(tmp_path / "state"),
    )
    sims = []

    def start_late() -> None:
        time.sleep(1.0)  # the first attempt finds nothing listening
        sims.append(
            run_sim_process(
                "--rest-port", str(rest), "--ws-port", str(ws), "--mode", "real", "--clock", "open", "--listings", "150"
            )
        )

    starter = threading.Thread(target=start_late)
    day = datetime.now(KST).date()
    starter.start()
    try:
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions("trading_day", [day_key(day)])
            res = dg.materialize(
                [universe_assets.universe],
                partition_key=day_key(day),
                instance=inst,
                resources={"kis": kis},
                run_config={"ops": {"universe": {"config": {"min_master_codes": 50, "nxt_status": False}}}},
            )
    finally:
        starter.join()
        for sim in sims:
            sim.stop()
    assert res.success
    retried = [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert 1 <= len(retried) <= universe_assets.MASTER_RETRIES
    assert lake.read_table(universe_path(lake.data_dir(), day)).num_rows > 20
