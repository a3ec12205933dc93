"""`observer relay`: three python-kis clients share the capture's one KIS session through its journal.

The capture holds the only session of its app key on the exchange and journals three codes' KRX tape; the relay
tails that journal. Three python-kis 2.1.6 clients (their own demo keys, on the relay) subscribe at once; each
receives every trade record the capture journals for its code from its subscription on, in order, none missing;
a code the capture does not hold is refused in KIS's answer shape.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import websockets.sync.client as wsc
from compat.test_python_kis import point_pykis_at
from support import open_clock_midday
from track_b.test_capture import capture_env, key_id_of, read_status, start, wait_for

from local_exchange.accounts import demo_credentials
from local_exchange.server import run_sim_process
from observer_assets.replay.process import run_observer
from observer_assets.replay.relay import NOT_HELD_MSG_CD
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from replay.test_replay import _token, journal_frames, recorded_trades, track_a_slot

pytest.importorskip("pykis")
pytestmark = pytest.mark.slow  # an exchange, a capture, the relay and three clients as processes and threads

_creds = itertools.count(7700)


def test_three_clients_through_the_relay_get_every_journaled_tick(tmp_path, monkeypatch) -> None:
    sim = run_sim_process(
        *("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "300", "--speed", "10"),
        *open_clock_midday(),
    )
    captures: list = []
    relay = None
    try:
        rows = sim.admin("listings", params={"order": "activity", "limit": "10"})["listings"]
        codes = [r["code"] for r in rows if not r["halted"]][:3]
        data = tmp_path / "data"
        env = capture_env(sim, data, demo_credentials(next(_creds)), OBSERVER_TRACK_B_EVAL_S="2")
        (key,) = key_id_of(env)
        until = (datetime.now(KST) + timedelta(seconds=90)).isoformat()
        cap = start(captures, env, ["--pins", ",".join(codes), "--status-interval", "0.3", "--until", until], tmp_path)
        wait_for(lambda: (s := read_status(data)) and set(codes) <= set(s["keys"][key]["registered"]), 30, "held", cap)
        track_a_slot(sim, data, codes, demo_credentials(next(_creds)))
        relay = run_observer("relay", "--data-dir", str(data), "--ping-interval", "1")
        held = relay.get("/admin/relay/status")["held"]
        assert set(codes) <= set(held[p.TR_WS_TRADE])

        # a code the capture does not hold: refused, in KIS's control-answer shape
        creds = demo_credentials(next(_creds))
        approval = _approval(relay.rest_url, creds)
        with wsc.connect(relay.ws_url) as ws:
            ws.send(json.dumps({"header": {"approval_key": approval, "custtype": "P", "tr_type": "1",
                                           "content-type": "utf-8"},
                                "body": {"input": {"tr_id": p.TR_WS_TRADE, "tr_key": "999999"}}}))  # fmt: skip
            answer = json.loads(ws.recv(timeout=5))
        assert answer["body"]["rt_cd"] == "1" and answer["body"]["msg_cd"] == NOT_HELD_MSG_CD
        assert answer["header"]["tr_key"] == "999999"

        got: dict[str, list] = {c: [] for c in codes}
        lock = threading.Lock()
        with contextlib.ExitStack() as stack:
            monkeypatch.setenv("HOME", str(tmp_path))  # pykis's workspace is ~/.pykis: never the real home
            point_pykis_at(monkeypatch, relay.rest_url, relay.ws_url)
            tickets = []
            for code in codes:
                kis = stack.enter_context(pykis_on(relay, demo_credentials(next(_creds))))

                def on_price(sender, e, code=code) -> None:
                    with lock:
                        got[code].append(e.response)

                tickets.append(kis.stock(code).on("price", on_price))
            wait_for(lambda: all(len(v) >= 10 for v in got.values()), 30, "ticks on every client")
            time.sleep(2.0)
            cap.proc.send_signal(signal.SIGTERM)  # the capture stops; the relay serves what it journaled
            assert cap.wait(30) == 0
            time.sleep(1.0)
            assert relay.get("/admin/relay/status")["sessions"] == 3
            for t in tickets:
                t.unsubscribe()
        lines = journal_frames(data, datetime.now(KST).date(), key)
        for code in codes:
            with lock:
                actual = [(r.volume, r.price, r.time.strftime("%H%M%S")) for r in got[code]]
            expected = recorded_trades(lines, code)
            first = expected.index(actual[0])
            assert actual == expected[first:], code  # from its subscription to the capture's end, nothing missing
            assert all(isinstance(v[1], Decimal) for v in actual)
    finally:
        for c in captures:
            c.kill()
        if relay is not None:
            relay.stop()
        sim.stop()


@contextlib.contextmanager
def pykis_on(relay, creds):
    """A PyKis client on the relay; stopped as tests/compat does: the server ends the session, then pykis's loop."""
    from pykis import PyKis

    kis = PyKis(id="observer-relay", account="50000000-01", appkey=creds[0], secretkey=creds[1], keep_token=False)
    try:
        yield kis
    finally:
        ws = kis.websocket
        ws.reconnect = False
        if ws.thread is not None and ws.thread.is_alive() and ws.websocket is not None:
            relay.admin("faults", json={"kind": "ws_drop", "appkey": creds[0]})
            wait_for(lambda: ws.websocket is None, timeout=5, what="pykis closed")
        ws.disconnect()
        if ws.thread is not None:
            ws.thread.join(timeout=5)
        kis.close()


def _approval(url: str, creds) -> str:
    import httpx

    _token(url, creds)  # binds the key's secret, as a client's first call does
    r = httpx.post(url + p.PATH_APPROVAL, json={"grant_type": "client_credentials", "appkey": creds[0],
                                               "secretkey": creds[1]})  # fmt: skip
    r.raise_for_status()
    return r.json()["approval_key"]
