"""The WebSocket client against the local exchange over a real socket: 41 registrations (the 42nd
refused and handled), PINGPONG answered, reconnect with re-subscription, bad frames survived, and the
ground truth: every tick the exchange sent arrives exactly once, and only drop windows lose ticks."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import websockets
from support import open_clock_midday

from local_exchange.server import run_sim_process
from observer_resources.calendar import KST
from observer_resources.kis.config import KisConfig
from observer_resources.kis.models import Trade
from observer_resources.kis.ws import KisWebSocketClient
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

SPEED = 60  # sim seconds per real second: busy codes then give thousands of ticks in a few seconds
SIM_ARGS = (
    "--mode",
    "real",
    "--clock",
    "open",
    "--seed",
    "11",
    "--listings",
    "300",
    "--speed",
    str(SPEED),
    "--ping-interval",
    "1",
    "--ping-grace",
    "3",
    "--hold-after-disconnect",
    "0.2",
    *open_clock_midday(),
)

_creds_index = itertools.count(3000)


@pytest.fixture(scope="module")
def fast_sim():
    proc = run_sim_process(*SIM_ARGS)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def busy(fast_sim) -> list[str]:
    return [li["code"] for li in fast_sim.admin("listings", params={"order": "activity", "limit": "42"})["listings"]]


class Harness:
    """One app key's client on an exchange, collecting what it delivers and reports."""

    def __init__(self, sim, make_creds, tmp: Path, *, on_trades=None, **kw):
        self.sim = sim
        self.app_key, self.secret = make_creds(next(_creds_index))
        self.config = KisConfig(self.app_key, self.secret, "real", sim.rest_url, sim.ws_url)
        self.tokens = SharedTokenProvider(self.config, SqliteTokenStore(tmp / f"tok-{self.app_key[-6:]}.db"))
        self.trades: list[Trade] = []
        self.batches: list[tuple[int, float, datetime]] = []
        self.events: list[dict] = []
        opts = dict(
            backoff=(0.2, 0.4, 0.8),
            jitter=0.0,
            key_in_use_backoff=0.5,
            subscribe_spacing=0.005,
            watchdog_seconds=10.0,
            ack_timeout=3.0,
        )
        opts.update(kw)
        self.client = KisWebSocketClient(
            self.config, self.tokens, on_trades=on_trades or self.on_trades, on_event=self.events.append, **opts
        )
        self.task: asyncio.Task | None = None

    async def on_trades(self, records: list[Trade], recv_mono: float, recv_dt: datetime) -> None:
        self.trades.extend(records)
        self.batches.append((len(records), recv_mono, recv_dt))

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.client.run())
        await self.wait_for(lambda: self.client.connected, what="first connection")
        return self

    async def __aexit__(self, *exc) -> None:
        self.client.stop()
        await asyncio.wait_for(self.task, 15)

    async def wait_for(self, cond, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events: {self.events[-5:]}")
            if self.task is not None and self.task.done():
                self.task.result()
                raise AssertionError("run() ended")
            await asyncio.sleep(0.02)

    def events_of(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]

    def fault(self, kind: str, **params) -> dict:
        return self.sim.admin("faults", {"kind": kind, "appkey": self.app_key, **params})

    def sent(self, code: str) -> list[dict]:
        return self.sim.admin("truth/sent", params={"appkey": self.app_key, "code": code})["entries"]

    def received(self, code: str) -> list[tuple]:
        return [_key_of_trade(t) for t in self.trades if t.code == code]


def _key_of_trade(t: Trade) -> tuple:
    return (t.exchange_dt.strftime("%Y%m%d"), t.exchange_time, t.price, t.qty, t.acml_vol)


def _key_of_entry(e: dict) -> tuple:
    return (e["day"], e["time"], e["price"], e["qty"], e["acml_vol"])


def run(coro):
    return asyncio.run(coro)


# --- subscriptions -----------------------------------------------------------------------------------


def test_41_registrations_and_the_42nd_refused(fast_sim, busy, make_creds, tmp_path):
    async def go():
        h = Harness(fast_sim, make_creds, tmp_path, max_registrations=42)  # let it try one too many
        async with h:
            await h.client.set_desired(busy[:42])
            assert len(h.client.registered) == 41 and h.client.registered <= set(busy[:42])
            assert h.client.full and h.client.stats.max_over_refusals == 1
            (refused,) = set(busy[:42]) - h.client.registered
            assert h.events_of("ws_max_over")[0]["code"] == refused
            await h.wait_for(lambda: len({t.code for t in h.trades}) >= 10, what="ticks of several codes")
            # swap five codes: unsubscribe (tr_type "2") acked before the new ones are registered
            keep = [c for c in busy[:42] if c != refused][:36]
            await h.client.set_desired(keep + [refused])
            assert h.client.registered == set(keep + [refused])
            assert h.client.connected and h.client.stats.disconnects == 0
            dropped = set(busy[:42]) - set(keep) - {refused}
            await asyncio.sleep(0.5)
            n = len(h.trades)
            await asyncio.sleep(1.0)
            assert len(h.trades) > n, "still streaming"
            late = [t for t in h.trades[n:] if t.code in dropped]
            assert late == [], "unsubscribed codes stop"
            await h.client.set_desired([])  # after the unsubscribe acks, everything sent has arrived
            assert h.client.registered == frozenset()
            return h

    h = run(go())
    assert h.client.stats.parse.malformed_total == 0
    for code in busy[:42]:
        assert h.received(code) == [_key_of_entry(e) for e in h.sent(code) if e["status"] == "sent"], code


def test_set_desired_rejects_more_than_41_and_bad_codes(fast_sim, busy, make_creds, tmp_path):
    h = Harness(fast_sim, make_creds, tmp_path)

    async def go():
        with pytest.raises(ValueError, match="at most 41"):
            await h.client.set_desired(busy[:42])
        with pytest.raises(ValueError, match="not a symbol"):
            await h.client.set_desired(["005930", "00|59"])
        await h.client.set_desired(busy[:3])  # while disconnected: only recorded

    run(go())
    assert h.client.desired == frozenset(busy[:3]) and h.client.registered == frozenset()


def test_pingpong_keeps_the_session_alive_past_the_grace(sim_factory, busy, make_creds, tmp_path):
    sim = sim_factory(
        "--clock", "open", "--seed", "11", "--listings", "300", "--ping-interval", "1", "--ping-grace", "3"
    )

    async def silent_peer() -> float:
        """Control: a connection that subscribes but never answers PINGPONG is dropped after the grace."""
        k, s = make_creds(next(_creds_index))
        import httpx

        async with httpx.AsyncClient() as http:
            r = await http.post(
                sim.rest_url + "/oauth2/Approval",
                json={"grant_type": "client_credentials", "appkey": k, "secretkey": s},
            )
        key = r.json()["approval_key"]
        t0 = time.monotonic()
        async with websockets.connect(sim.ws_url + "/tryitout", ping_interval=None) as ws:
            await ws.send(
                json.dumps(
                    {
                        "header": {"approval_key": key, "custtype": "P", "tr_type": "1", "content-type": "utf-8"},
                        "body": {"input": {"tr_id": "H0STCNT0", "tr_key": busy[0]}},
                    }
                )
            )
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        return time.monotonic() - t0

    async def go():
        h = Harness(sim, make_creds, tmp_path)
        async with h:
            await h.client.set_desired(busy[:3])
            dropped_after = await silent_peer()  # runs ~4 s while the client stays connected
            await asyncio.sleep(max(0.0, 8.0 - dropped_after))
            return h, dropped_after

    h, dropped_after = run(go())
    assert 3.0 <= dropped_after < 7.0
    st = h.client.stats
    assert st.disconnects == 0 and st.connect_attempts == 1 and st.pingpong_replies >= 6
    assert st.parse.pingpong == st.pingpong_replies
    stats = sim.admin("stats", params={"appkey": h.app_key})["for_appkey"]
    assert stats["ws_dropped_total"] == 0 and stats["ws_pingpong_sent_total"] >= 6


# --- reconnect ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("close_frame", [True, False])
def test_drop_reconnects_and_resubscribes(fast_sim, busy, make_creds, tmp_path, close_frame):
    async def go():
        h = Harness(fast_sim, make_creds, tmp_path)
        async with h:
            codes = busy[:8]
            await h.client.set_desired(codes)
            await h.wait_for(lambda: len(h.trades) > 20, what="ticks")
            h.fault("ws_drop", close_frame=close_frame)
            await h.wait_for(lambda: h.events_of("ws_connected")[-1]["reconnect"], what="reconnect")
            assert h.client.registered == set(codes)
            n = len(h.trades)
            await h.wait_for(lambda: len(h.trades) > n + 20, what="ticks after reconnect")
            return h

    h = run(go())
    (disc,) = h.events_of("ws_disconnect")
    assert disc["reason"].startswith("server_close" if close_frame else "connection_lost")
    assert disc["last_rx_at"] is not None and disc["at"].endswith("+09:00")
    up = h.events_of("ws_connected")[-1]
    assert up["outage_from"] == disc["at"] and 0 < up["outage_seconds"] < 3 and up["registered"] == 8
    st = h.client.stats
    assert st.disconnects == 1 and st.reconnects == 1 and 0 < st.seconds_disconnected < 3
    assert h.events[-1]["event"] == "ws_stopped"


def test_key_in_use_backs_off_longer_and_recovers(sim_factory, busy, make_creds, tmp_path):
    args = ("--clock", "open", "--seed", "11", "--listings", "300", "--speed", "20", "--hold-after-disconnect", "2.5")
    sim = sim_factory(*args, *open_clock_midday())

    async def go():
        h = Harness(sim, make_creds, tmp_path, backoff=(0.1,), key_in_use_backoff=1.0)
        async with h:
            await h.client.set_desired(busy[:3])
            await h.wait_for(lambda: len(h.trades) > 0, what="ticks")
            # a second client on the same key is refused (OPSP8996) and does not spin
            twin = KisWebSocketClient(
                h.config, h.tokens, on_trades=None, backoff=(0.1,), jitter=0.0, key_in_use_backoff=1.0
            )
            await twin.set_desired(busy[:1])
            twin_task = asyncio.create_task(twin.run())
            await asyncio.sleep(2.5)
            twin.stop()
            await twin_task
            assert twin.stats.key_in_use >= 2 and twin.stats.connect_attempts <= 4 and twin.stats.connects == 0
            # the exchange holds the key 2.5 s after a drop: reconnects are refused, then succeed
            t0 = time.monotonic()
            h.fault("ws_drop")
            await h.wait_for(lambda: h.events_of("ws_connected")[-1]["reconnect"], what="reconnect", timeout=20)
            assert h.client.registered == set(busy[:3])
            return h, time.monotonic() - t0

    h, took = run(go())
    refusals = [e for e in h.events if e["event"] == "ws_connect_failed" and e["reason"] == "key_in_use"]
    assert refusals and all(e["retry_in_seconds"] >= 1.0 for e in refusals)
    assert h.client.stats.connect_attempts <= 1 + 1 + 4  # no spinning while the key is held
    assert 2.5 <= took < 6.0


def test_watchdog_treats_total_silence_as_a_dead_socket(fast_sim, busy, make_creds, tmp_path):
    async def go():
        h = Harness(fast_sim, make_creds, tmp_path, watchdog_seconds=1.0)
        async with h:
            await h.client.set_desired(busy[:2])
            await asyncio.sleep(1.5)  # PINGPONG every second keeps the watchdog quiet
            assert h.client.stats.disconnects == 0
            h.fault("ws_silent", seconds=3)
            await h.wait_for(lambda: h.events_of("ws_disconnect"), what="watchdog")
            await h.wait_for(lambda: h.events_of("ws_connected")[-1]["reconnect"], what="reconnect")
            return h

    h = run(go())
    assert h.events_of("ws_disconnect")[0]["reason"].startswith("watchdog")
    assert h.client.stats.disconnect_reasons["watchdog"] == 1


def test_stalled_subscription_is_visible_and_resubscribe_revives_it(fast_sim, busy, make_creds, tmp_path):
    """One code's data stops while PINGPONG continues: the socket looks alive, last_trade_at shows the
    stall, and resubscribe() (tr_type "2" then "1") brings the code back."""
    stalled, other = busy[0], busy[1]

    async def go():
        h = Harness(fast_sim, make_creds, tmp_path)
        async with h:
            await h.client.set_desired([stalled, other])
            await h.wait_for(lambda: {stalled, other} <= set(h.client.last_trade_at), what="ticks of both")
            h.fault("ws_stall", code=stalled)
            await asyncio.sleep(0.3)
            mark = h.client.last_trade_at[stalled]
            n_other = sum(t.code == other for t in h.trades)
            await asyncio.sleep(1.5)
            assert h.client.last_trade_at[stalled] == mark, "no data for the stalled code"
            assert sum(t.code == other for t in h.trades) > n_other and h.client.stats.disconnects == 0
            await h.client.resubscribe([stalled])
            assert h.client.registered == {stalled, other}
            await h.wait_for(lambda: h.client.last_trade_at[stalled] > mark, what="ticks after resubscribe")
            await h.client.set_desired([])
        return h

    h = run(go())
    lost = [e for e in h.sent(stalled) if e["status"] == "lost_stall"]
    assert lost, "the exchange withheld ticks during the stall"
    assert h.received(stalled) == [_key_of_entry(e) for e in h.sent(stalled) if e["status"] == "sent"]


def test_unanswered_subscriptions_are_retried_by_the_resync(fast_sim, busy, make_creds, tmp_path):
    async def go():
        h = Harness(fast_sim, make_creds, tmp_path, ack_timeout=0.3, resync_seconds=1.0)
        async with h:
            await h.client.set_desired(busy[:2])
            h.fault("ws_silent", seconds=0.6)  # the exchange ignores what it is sent meanwhile
            await h.client.set_desired(busy[:4])
            assert h.client.registered == set(busy[:2]) and h.client.stats.ack_timeouts == 2
            await h.wait_for(lambda: h.client.registered == set(busy[:4]), what="resync", timeout=5)
            assert h.client.stats.resyncs >= 1 and h.client.stats.disconnects == 0
        return h

    run(go())


# --- robustness --------------------------------------------------------------------------------------


def test_bad_duplicate_and_encrypted_frames_do_not_stop_the_reader(fast_sim, busy, make_creds, tmp_path):
    codes = busy[2:8]

    async def go():
        h = Harness(fast_sim, make_creds, tmp_path)
        async with h:
            await h.client.set_desired(codes)
            await h.wait_for(lambda: len(h.trades) > 10, what="ticks")
            h.fault("ws_malformed", n=4)  # one of each variant
            h.fault("ws_encrypted", n=2)
            h.fault("ws_duplicate", n=3)
            await h.wait_for(lambda: h.client.stats.parse.encrypted == 2, what="injected frames")
            n = len(h.trades)
            await h.wait_for(lambda: len(h.trades) > n + 50, what="ticks after the bad frames")
            await h.client.set_desired([])  # after the unsubscribe acks, everything sent has arrived
            return h

    h = run(go())
    st = h.client.stats
    assert dict(st.parse.malformed) == {"truncated_json": 1, "field_count": 1, "non_numeric": 1, "unknown_tr": 1}
    assert st.parse.unknown_tr == 1 and st.parse.encrypted == 2 and st.rejected_records == 1
    assert st.disconnects == 0 and st.connect_attempts == 1
    reasons = sorted(e["reason"] for e in h.events if e["event"] in ("ws_bad_frame", "ws_rejected_record"))
    assert reasons == ["encrypted", "encrypted", "field_count", "non_numeric", "truncated_json", "unknown_tr"]
    dups = 0
    for code in codes:
        entries = [e for e in h.sent(code) if e["status"] in ("sent", "duplicate")]
        dups += sum(e["status"] == "duplicate" for e in entries)
        assert h.received(code) == [_key_of_entry(e) for e in entries], code
    assert dups > 0, "the duplicated frames arrived twice, as sent (de-duplication is the capture's job)"


def test_slow_callback_fills_the_queue_without_losing_a_tick(fast_sim, busy, make_creds, tmp_path):
    codes = busy[:4]
    got: list[Trade] = []
    calls = 0

    async def slow(records, mono, dt):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a broken callback must not stop delivery")
        await asyncio.sleep(0.01)
        got.extend(records)

    async def go():
        h = Harness(fast_sim, make_creds, tmp_path, on_trades=slow, queue_size=1)
        async with h:
            await h.client.set_desired(codes)
            await asyncio.sleep(3)
            await h.client.set_desired([])
        return h

    h = run(go())
    st = h.client.stats
    first_batch = st.trades_delivered - len(got)
    assert st.queue_full > 0 and st.callback_errors == 1 and first_batch > 0
    assert st.trades_delivered == st.parse.records
    total_sent = sum(len([e for e in h.sent(c) if e["status"] == "sent"]) for c in codes)
    assert total_sent == st.parse.records, "the queue filled, the reader waited, nothing was dropped"


def test_receive_time_is_taken_at_arrival(fast_sim, busy, make_creds, tmp_path):
    async def go():
        h = Harness(fast_sim, make_creds, tmp_path)
        async with h:
            await h.client.set_desired(busy[:3])
            await h.wait_for(lambda: len(h.batches) > 5, what="batches")
        return h

    h = run(go())
    monos = [m for _, m, _ in h.batches]
    assert monos == sorted(monos)
    for n, mono, dt in h.batches:
        assert dt.utcoffset().total_seconds() == 9 * 3600 and n >= 1
        assert abs((datetime.now(dt.tzinfo) - dt).total_seconds() - (time.monotonic() - mono)) < 0.5


def test_wire_format_and_fresh_approval_key_per_connection():
    """What goes on the wire, seen by a recording peer: subscribe/unsubscribe JSON (tr_type "1"/"2"),
    the PINGPONG echoed byte for byte, a new approval key after a reconnect."""
    received: list[list[object]] = []
    pingpong = '{"header":{"tr_id":"PINGPONG","datetime":"20260310110000"}}'

    async def peer(ws):
        msgs: list[object] = [ws.request.path]
        received.append(msgs)
        await ws.send(pingpong)
        async for raw in ws:
            msgs.append(raw)
            if raw == pingpong:
                continue
            m = json.loads(raw)
            code, tr_type = m["body"]["input"]["tr_key"], m["header"]["tr_type"]
            msg_cd, msg1 = ("OPSP0000", "SUBSCRIBE SUCCESS") if tr_type == "1" else ("OPSP0001", "UNSUBSCRIBE SUCCESS")
            await ws.send(
                json.dumps(
                    {
                        "header": {"tr_id": "H0STCNT0", "tr_key": code, "encrypt": "N"},
                        "body": {"rt_cd": "0", "msg_cd": msg_cd, "msg1": msg1},
                    }
                )
            )
            if len(received) == 1 and sum(1 for x in msgs if isinstance(x, str) and '"2"' in x) == 1:
                await ws.close()  # first session: close cleanly after the unsubscribe

    class Keys:  # approval keys only; the access token is not used by the stream
        n = 0

        async def approval_key(self):
            Keys.n += 1
            return f"approval-{Keys.n}"

        async def access_token(self):
            raise AssertionError

        async def refresh(self, rejected):
            raise AssertionError

    async def go():
        async with websockets.serve(peer, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            cfg = KisConfig("P" * 36, "S" * 180, "real", "http://127.0.0.1:9", f"ws://127.0.0.1:{port}")
            c = KisWebSocketClient(cfg, Keys(), on_trades=None, backoff=(0.05,), jitter=0.0)
            task = asyncio.create_task(c.run())
            await c.set_desired(["005930", "000660"])
            deadline = time.monotonic() + 5
            while c.registered != {"005930", "000660"} and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await c.set_desired(["005930"])
            while c.stats.connects < 2 and time.monotonic() < deadline + 5:
                await asyncio.sleep(0.01)
            assert c.registered == {"005930"}
            c.stop()
            await task
            return c

    c = run(go())
    first, second = received[0], received[1]
    assert first[0] == "/tryitout" and second[0] == "/tryitout"
    assert pingpong in first and pingpong in second  # echoed exactly
    subs = [json.loads(x) for x in first[1:] if x != pingpong]
    assert subs[0] == {
        "header": {"approval_key": "approval-1", "custtype": "P", "tr_type": "1", "content-type": "utf-8"},
        "body": {"input": {"tr_id": "H0STCNT0", "tr_key": "005930"}},
    }
    assert [(m["header"]["tr_type"], m["body"]["input"]["tr_key"]) for m in subs] == [
        ("1", "005930"),
        ("1", "000660"),
        ("2", "000660"),
    ]
    resubs = [json.loads(x) for x in second[1:] if x != pingpong]
    assert [(m["header"]["approval_key"], m["header"]["tr_type"], m["body"]["input"]["tr_key"]) for m in resubs] == [
        ("approval-2", "1", "005930")
    ]
    assert c.stats.pingpong_replies == 2


# --- ground truth ----------------------------------------------------------------------------------


def test_ground_truth_41_codes_three_drops(fast_sim, busy, make_creds, tmp_path):
    codes = busy[:41]

    async def go():
        h = Harness(fast_sim, make_creds, tmp_path, backoff=(0.2,), key_in_use_backoff=0.3)
        async with h:
            await h.client.set_desired(codes)
            assert h.client.registered == set(codes)
            for i in range(3):
                await asyncio.sleep(2.5)
                h.fault("ws_drop", close_frame=i != 1)  # the second drop without a close frame
                await h.wait_for(
                    lambda: len([e for e in h.events_of("ws_connected") if e["reconnect"]]) == i + 1,
                    what=f"reconnect {i + 1}",
                )
                await h.wait_for(lambda: h.client.registered == set(codes), what="re-subscription")
            await asyncio.sleep(2.5)
            await h.client.set_desired([])  # every frame sent before the unsubscribe acks has arrived
            return h

    h = run(go())
    st = h.client.stats
    assert st.disconnects == 3 and st.reconnects == 3 and st.parse.malformed_total == 0
    assert len(h.trades) >= 2000, f"only {len(h.trades)} ticks: the check needs a busy stream"
    assert max(n for n, _, _ in h.batches) > 1, "multi-record frames were exercised"
    drops = [
        f
        for f in fast_sim.admin("faults")["log"]
        if f["kind"] == "ws_drop"
        and f["params"]["appkey"] == fast_sim.admin("stats", params={"appkey": h.app_key})["appkey"]
    ]
    assert len(drops) == 3
    drop_starts = [datetime.fromisoformat(f["start_sim"]) for f in drops]

    lost_in_windows = 0
    for code in codes:
        truth_sent = h.sim.admin("truth/sent", params={"appkey": h.app_key, "code": code})
        entries = truth_sent["entries"]
        assert {e["status"] for e in entries} <= {"sent"}, code
        # 1) exactly what the exchange sent, in order, once (nothing lost or doubled by the client)
        assert h.received(code) == [_key_of_entry(e) for e in entries], code
        # 2) within each session the exchange's tick indices are contiguous: no loss outside the drops
        by_session: dict[int, list[dict]] = defaultdict(list)
        for e in entries:
            by_session[e["session"]].append(e)
        sessions = [by_session[s] for s in sorted(by_session)]
        for s in sessions:
            idx = [(e["day"], e["index"]) for e in s]
            for (d0, i0), (d1, i1) in zip(idx, idx[1:]):
                assert (d1 == d0 and i1 == i0 + 1) or (d1 > d0 and i1 == 0), (code, i0, i1)
        # 3) the ticks between two sessions are exactly those that traded from a drop to the code's re-registration
        #    in the next session (KIS has no replay), and each new session starts where its registration did
        regs = {r["session"]: r for r in truth_sent["registrations"]}
        assert len(regs) == 4, (code, regs)  # the first session and one per reconnect
        reregistered = [datetime.fromisoformat(regs[s]["registered_at_sim"]) for s in sorted(regs)][1:]
        windows = list(zip(drop_starts, reregistered, strict=True))  # from each drop to this code's next registration
        for a, b in zip(sessions, sessions[1:]):
            last, first, reg = a[-1], b[0], regs[b[0]["session"]]
            if last["day"] != first["day"]:
                continue
            assert reg["day"] != first["day"] or first["index"] == reg["first_index"], (code, first, reg)
            gap = fast_sim.admin(
                "truth/ticks",
                params={"code": code, "day": last["day"], "from": last["time"], "to": first["time"], "records": "0"},
            )["ticks"]
            missing = [t for t in gap if last["index"] < t["index"] < first["index"]]
            lost_in_windows += len(missing)
            for t in missing:
                at = datetime.strptime(last["day"] + t["time"], "%Y%m%d%H%M%S").replace(tzinfo=KST)
                assert any(-5.0 <= (at - drop).total_seconds() and at <= until for drop, until in windows), (code, t)
    # 4) every record's fields equal the exchange's record for that tick
    sample = codes[0]
    sent = h.sent(sample)
    truth = {}
    for d in {e["day"] for e in sent}:
        times = [e["time"] for e in sent if e["day"] == d]
        for r in fast_sim.admin("truth/ticks", params={"code": sample, "day": d, "from": min(times), "to": max(times)})[
            "ticks"
        ]:
            truth[(d, r["index"])] = r["record"]
    sent_idx = [(e["day"], e["index"]) for e in sent]
    got = [t for t in h.trades if t.code == sample]
    assert [list(t.raw) for t in got] == [truth[k] for k in sent_idx]
    assert lost_in_windows > 0, "the drops did lose ticks (KIS has no replay); the gaps are where they belong"


def test_feeds_per_code_and_extra_registrations_count_against_the_41(fast_sim, busy, make_creds, tmp_path):
    """Two TRs per code (unified trades, KRX book) plus a market-status registration: 20 x 2 + 1 = 41 pairs,
    each acknowledged, each feed delivered to its callback, all re-registered after a drop."""
    codes, anchor = busy[:20], ("H0STMKO0", busy[0])
    books: list = []
    feeds: list = []

    async def go():
        h = Harness(
            fast_sim,
            make_creds,
            tmp_path,
            tr_ids=("H0UNCNT0", "H0STASP0"),
            on_orderbooks=lambda recs, mono, dt: books.extend(recs),
            on_feed=lambda frame, mono, dt: feeds.append(frame),
            backoff=(0.2,),
        )
        async with h:
            with pytest.raises(ValueError, match="43 registrations wanted"):
                await h.client.set_desired([*codes, busy[20]], extra=[anchor])
            await h.client.set_desired(codes, extra=[anchor])
            pairs = {(tr, c) for c in codes for tr in ("H0UNCNT0", "H0STASP0")} | {anchor}
            assert len(pairs) == 41 and h.client.registrations == pairs and h.client.registered == set(codes)
            await asyncio.sleep(2.0)
            h.fault("ws_drop")
            await h.wait_for(lambda: h.events_of("ws_connected")[-1]["reconnect"], what="reconnect")
            await h.wait_for(lambda: h.client.registrations == pairs, what="every pair re-registered")
            # the reconnect reports codes as the slot rules count them, and the pairs apart (the gap report
            # trusts its replay of the slot set only when a session wanted no more codes than it accounts for)
            up = h.events_of("ws_connected")[-1]
            assert (up["desired"], up["desired_registrations"]) == (20, 41)
            await asyncio.sleep(1.0)
            await h.client.set_desired([])
            assert h.client.registrations == frozenset() and h.client.registered == frozenset()
            return h

    h = run(go())
    assert h.client.stats.max_over_refusals == 0 and h.client.stats.parse.malformed_total == 0
    # unified trades: exactly what the exchange's H0UNCNT0 stream sent, per code, in order
    assert h.trades
    for code in codes:
        sent = fast_sim.admin("truth/sent", params={"appkey": h.app_key, "code": code, "tr_id": "H0UNCNT0"})
        assert sent["tr_id"] == "H0UNCNT0" and len(sent["registrations"]) == 2
        assert h.received(code) == [_key_of_entry(e) for e in sent["entries"]], code
        krx = fast_sim.admin("truth/sent", params={"appkey": h.app_key, "code": code})
        assert krx["entries"] == [] and krx["registrations"] == [], "no H0STCNT0 was registered"
    assert {b.code for b in books} <= set(codes) and len({b.code for b in books}) >= 10
    # the market-status registration: its records arrive whole, as the exchange sent them
    status = [r for f in feeds if f.tr_id == "H0STMKO0" for r in f.records]
    truth = fast_sim.admin("truth/feed", params={"appkey": h.app_key, "tr_id": "H0STMKO0", "code": busy[0]})
    assert status and [list(r) for r in status] == [e["record"] for e in truth["entries"]]
    assert all(len(r) == 11 and r[0] == busy[0] for r in status)
