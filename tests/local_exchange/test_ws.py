"""The exchange's WebSocket side over real loopback: acks, the session rule, PINGPONG, data frames
that match the ground truth, order books, and REST/stream agreement (docs/kis-protocol.md §8, §10.4)."""

from __future__ import annotations

import asyncio
import json

from ._wire import Kis, WsClient, busy_codes, parse_data_frame, run

FAST_PING = ("--ping-interval", "0.3", "--ping-grace", "1.0")


def test_acks_duplicate_unsubscribe_and_the_42nd_registration(sim, creds):
    kis = Kis(sim, creds)
    codes = [r["code"] for r in sim.admin("listings", params={"limit": "45"})["listings"]]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            await c.send("H0STCNT0", codes[0])
            ack = await c.control()
            assert ack["header"] == {"tr_id": "H0STCNT0", "tr_key": codes[0], "encrypt": "N"}
            assert ack["body"]["rt_cd"] == "0" and ack["body"]["msg_cd"] == "OPSP0000"
            assert ack["body"]["msg1"] == "SUBSCRIBE SUCCESS"
            assert len(ack["body"]["output"]["iv"]) == 16 and len(ack["body"]["output"]["key"]) == 32
            await c.send("H0STCNT0", codes[0])
            assert (await c.control())["body"]["msg_cd"] == "OPSP0002"
            await c.send("H0STCNT0", codes[0], tr_type="2")
            unsub = await c.control()
            assert unsub["body"]["msg_cd"] == "OPSP0001" and unsub["body"]["msg1"].startswith("UNSUB")
            await c.send("H0STCNT0", codes[0], tr_type="2")
            assert (await c.control())["body"]["msg_cd"] == "OPSP0003"
            # 41 registrations across TRs are accepted, the 42nd is refused
            await c.send("H0STASP0", codes[0])
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            for code in codes[1:41]:
                await c.send("H0STCNT0", code)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            await c.send("H0STCNT0", codes[41])
            refused = await c.control()
            assert refused["body"]["msg_cd"] == "OPSP0008" and refused["body"]["msg1"] == "MAX SUBSCRIBE OVER"
            await c.send("H0STCNT0", codes[40], tr_type="0")  # "0" is accepted as unregister
            assert (await c.control())["body"]["msg_cd"] == "OPSP0001"
            await c.send("H0STCNT0", codes[41])
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"

    run(scenario())


def test_one_session_per_app_key_and_the_hold_after_disconnect(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "50", "--hold-after-disconnect", "0.6")
    kis = Kis(sim, make_creds(20))
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval(), path="/") as first:
            await first.send("H0STCNT0", code)
            assert (await first.control())["body"]["msg_cd"] == "OPSP0000"
            async with WsClient(sim.ws_url, kis.approval(), path="/tryitout/H0STCNT0") as second:
                await second.send("H0STCNT0", code)
                refusal = await second.control()
                assert refusal["header"]["tr_id"] == "(null)"
                assert refusal["body"] == {"rt_cd": "9", "msg_cd": "OPSP8996", "msg1": "ALREADY IN USE appkey"}
                await second.collect(1.0)
                assert second.closed_clean is not None  # the server closed it
            stats = sim.admin("stats", params={"appkey": kis.key})["for_appkey"]
            assert stats["ws_sessions_active"] == 1 and stats["ws_sessions_refused_total"] == 1
        async with WsClient(sim.ws_url, kis.approval()) as quick:  # within the hold: still in use
            await quick.send("H0STCNT0", code)
            assert (await quick.control())["body"]["msg_cd"] == "OPSP8996"
        await asyncio.sleep(0.8)
        async with WsClient(sim.ws_url, kis.approval()) as later:
            await later.send("H0STCNT0", code)
            assert (await later.control())["body"]["msg_cd"] == "OPSP0000"
        other = Kis(sim, make_creds(21))  # another app key has its own slot
        async with WsClient(sim.ws_url, other.approval()) as c:
            await c.send("H0STCNT0", code)
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"

    run(scenario())


def test_unknown_approval_key_is_refused(sim):
    async def scenario() -> None:
        async with WsClient(sim.ws_url, "00000000-0000-0000-0000-000000000000") as c:
            await c.send("H0STCNT0", "005930")
            ack = await c.control()
            assert ack["body"]["rt_cd"] != "0" and ack["body"]["msg_cd"] == "OPSP0011"

    run(scenario())


def test_pingpong_is_sent_and_a_silent_client_is_dropped(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "50", *FAST_PING)
    kis = Kis(sim, make_creds(22))

    async def scenario() -> None:
        async with (
            WsClient(sim.ws_url, kis.approval(), echo=True) as polite,
            WsClient(sim.ws_url, kis.approval(), echo=False) as mute,
        ):
            await asyncio.gather(polite.collect(2.2), mute.collect(2.2))
            assert len(polite.got.pings) >= 5 and polite.closed_clean is None
            ping = json.loads(polite.got.pings[0])
            assert ping["header"]["tr_id"] == "PINGPONG" and len(ping["header"]["datetime"]) == 14
            assert mute.closed_clean is not None  # neither echoed nor ponged within the grace
            # answering with a pong frame carrying the text (the official sample's way) also counts
            async with WsClient(sim.ws_url, kis.approval(), echo=False) as ponger:
                deadline = asyncio.get_running_loop().time() + 1.8
                while asyncio.get_running_loop().time() < deadline:
                    text = await ponger.recv(0.2)
                    if text and "PINGPONG" in text:
                        await ponger.ws.pong(text.encode())
                assert ponger.closed_clean is None and len(ponger.got.pings) >= 4

    run(scenario())


def test_data_frames_carry_every_tick_and_match_the_truth(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "120", "--speed", "30", "--start", "2026-03-04T10:00:00+09:00")
    kis = Kis(sim, make_creds(23))
    code = busy_codes(sim, 1)[0]

    async def scenario() -> WsClient:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            await c.send("H0STCNT0", code)
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            await c.collect(1.5)
            # unsubscribe and read on to its ack: nothing is sent after it, so what was read is all that was sent
            # (a frame in flight when reading stopped would be counted by the truth, not here: a flake under load)
            await c.send("H0STCNT0", code, tr_type="2")
            await c.control()
            return c

    c = run(scenario())
    frames = [f for f in c.got.data if f.startswith("0|H0STCNT0|")]
    assert frames
    counts = []
    for f in frames:
        flag, tr, recs = parse_data_frame(f)
        assert f.split("|")[2] == f"{len(recs):03d}" and all(len(r) == 46 for r in recs)
        counts.append(len(recs))
    assert max(counts) > 1 and max(counts) <= 99  # multi-record frames, chunked at 99
    recs = c.got.records("H0STCNT0", code)
    day = recs[0][33]
    truth = sim.admin("truth/ticks", params={"code": code, "day": day, "from": recs[0][1], "to": recs[-1][1]})["ticks"]
    by_vol = {t["acml_vol"]: t for t in truth}
    for rec in recs:  # every record is exactly the market's tick
        assert rec == by_vol[int(rec[13])]["record"]
    start = next(i for i, t in enumerate(truth) if t["record"] == recs[0])
    assert [t["record"] for t in truth[start : start + len(recs)]] == recs  # in order, none missing
    for a, b in zip(recs, recs[1:]):
        assert int(b[13]) == int(a[13]) + int(b[12])  # ACML_VOL(n) = ACML_VOL(n-1) + CNTG_VOL(n)
    sent = sim.admin("truth/sent", params={"appkey": kis.key, "code": code})
    assert sent["by_status"] == {"sent": len(recs)}
    assert [e["acml_vol"] for e in sent["entries"]] == [int(r[13]) for r in recs]
    stats = sim.admin("stats", params={"appkey": kis.key})["for_appkey"]
    assert stats["ws_ticks_sent_total"] == len(recs) and stats["ws_frames_sent_total"] == len(frames)


def test_orderbook_frames_and_the_47_field_mode(sim_factory, make_creds):
    sim = sim_factory(
        "--clock", "open", "--listings", "50", "--fields", "47", "--speed", "5", "--start", "2026-03-04T10:00:00+09:00"
    )
    kis = Kis(sim, make_creds(24))
    code = busy_codes(sim, 1)[0]

    async def scenario() -> WsClient:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            await c.send("H0STASP0", code)
            await c.send("H0STCNT0", code)
            await c.until(lambda g: len(g.records("H0STASP0")) >= 2 and g.records("H0STCNT0"), 5.0)
            return c

    c = run(scenario())
    books = c.got.records("H0STASP0", code)
    assert len(books) >= 2 and all(len(b) == 59 for b in books)
    assert all(f.split("|")[2] == "001" for f in c.got.data if f.startswith("0|H0STASP0|"))
    trades = c.got.records("H0STCNT0", code)
    assert trades and all(len(r) == 47 for r in trades)


def test_rest_and_stream_agree_at_one_instant(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "80", "--speed", "10", "--start", "2026-03-04T10:00:00+09:00")
    kis = Kis(sim, make_creds(25))
    kis.token()
    code = busy_codes(sim, 1)[0]

    async def scenario() -> WsClient:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            await c.send("H0STCNT0", code)
            await c.until(lambda g: len(g.records()) > 20, 5.0)
            sim.admin("clock", {"speed": 0})  # freeze: no more ticks are revealed
            await c.collect(0.5)  # the emit loop flushes what the frozen clock has revealed
            return c

    c = run(scenario())
    last = c.got.records("H0STCNT0", code)[-1]
    rest = kis.ok("inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code})["output"]
    assert (rest["stck_prpr"], rest["acml_vol"], rest["stck_oprc"], rest["stck_hgpr"], rest["stck_lwpr"]) == (
        last[2],
        last[13],
        last[7],
        last[8],
        last[9],
    )
    assert rest["acml_tr_pbmn"] == last[14] and rest["prdy_vrss"] == last[4] and rest["prdy_ctrt"] == last[5]
    quote = sim.admin("truth/quote", params={"code": code})
    assert (quote["price"], quote["acml_vol"]) == (int(last[2]), int(last[13]))


def test_accepts_all_three_paths(sim, make_creds):
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]

    async def scenario() -> list[str]:
        acks = []
        for i, path in enumerate(("/", "/tryitout", "/tryitout/H0STCNT0")):
            async with WsClient(sim.ws_url, Kis(sim, make_creds(26 + i)).approval(), path=path) as c:
                await c.send("H0STCNT0", code)
                acks.append((await c.control())["body"]["msg_cd"])
        return acks

    assert run(scenario()) == ["OPSP0000"] * 3
