"""The per-venue feeds over real loopback: every real-time TR counts against the 41 registrations, market
status at registration and at a phase change, expected prices during the opening auction only
(docs/local-exchange.md "WebSocket")."""

from __future__ import annotations

from observer_resources.kis import protocol as p

from ._wire import Kis, WsClient, parse_data_frame, run

NEW_TRS = (
    "H0STCNT0",
    "H0NXCNT0",
    "H0UNCNT0",
    "H0STANC0",
    "H0NXANC0",
    "H0UNANC0",
    "H0STMKO0",
    "H0NXMKO0",
    "H0UNMKO0",
    "H0NXASP0",
    "H0UNASP0",
)


def test_every_feed_counts_against_the_41_registrations(sim_factory, creds):
    sim = sim_factory("--clock", "open", "--listings", "50", "--speed", "0", "--start", "2026-03-04T03:00:00+09:00")
    kis = Kis(sim, creds)
    codes = [r["code"] for r in sim.admin("listings", params={"limit": "5"})["listings"]]
    pairs = [(tr, code) for code in codes for tr in NEW_TRS]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            for tr, code in pairs[:41]:
                await c.send(tr, code)
                ack = await c.control()
                assert ack["header"] == {"tr_id": tr, "tr_key": code, "encrypt": "N"}
                assert ack["body"]["msg_cd"] == "OPSP0000" and len(ack["body"]["output"]["key"]) == 32
            for tr, code in (pairs[41], ("H0STASP0", codes[-1])):
                await c.send(tr, code)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0008"
            await c.send("H0UNMKO0", codes[0], tr_type="2")
            assert (await c.control())["body"]["msg_cd"] == "OPSP0001"
            await c.send(*pairs[41])
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"

    run(scenario())


def test_status_at_registration_and_phase_change_and_auction_expected_prices(sim_factory, creds):
    # KRX calendar, 5 simulated seconds before the opening auction ends; 2 sim seconds per real one
    sim = sim_factory("--clock", "krx", "--listings", "50", "--speed", "2", "--start", "2026-03-04T08:59:55+09:00")
    kis = Kis(sim, creds)
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            for tr in ("H0STMKO0", "H0UNMKO0", "H0STANC0"):
                await c.send(tr, code)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            assert await c.until(lambda g: len(g.records("H0STMKO0")) >= 2, timeout=8)
            krx = c.got.records("H0STMKO0")
            assert [len(r) for r in krx] == [11, 11]
            # (code, halt, phase, next phase, matching) at registration, then at 09:00
            assert [(r[0], r[1], r[3], r[4], r[5], r[8], r[10]) for r in krx] == [
                (code, "N", "12", "20", "2", "N", "1"),
                (code, "N", "20", "22", "1", "N", "1"),
            ]
            unified = c.got.records("H0UNMKO0")
            assert len(unified[0]) == 10 and unified[0][2] == "12"
            expected = c.got.records("H0STANC0")
            assert 2 <= len(expected) <= 8 and all(len(r) == 45 for r in expected)
            assert all(r[0] == code and "085955" <= r[1] < "090000" for r in expected)
            assert all(int(r[2]) > 0 and r[34] == "12" for r in expected)
            n = len(expected)
            sim.admin("clock", {"at": "2026-03-04T10:00:00+09:00"})
            await c.collect(1.5)
            assert len(c.got.records("H0STANC0")) == n  # no auction at 10:00
            for text in c.got.data:
                _, tr, records = parse_data_frame(text)
                assert all(len(r) == p.WS_FEED_WIDTHS[tr] for r in records)

    run(scenario())


def test_nxt_status_for_members_only(sim_factory, creds):
    # NXT's pre-market ends at 08:50, then NXT pauses until its main session at 09:00:30
    sim = sim_factory("--clock", "krx", "--listings", "50", "--speed", "2", "--start", "2026-03-04T08:49:57+09:00")
    kis = Kis(sim, creds)
    truth = sim.admin("truth/nxt")
    member = truth["members"][0]
    outsider = next(r["code"] for r in sim.admin("listings")["listings"] if r["code"] not in truth["members"])

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            for code in (member, outsider):
                await c.send("H0NXMKO0", code)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            assert await c.until(lambda g: len(g.records("H0NXMKO0")) >= 2, timeout=8)
            await c.collect(0.5)
            recs = c.got.records("H0NXMKO0")
            assert [(r[0], r[3], r[4], r[5], r[10]) for r in recs] == [
                (member, "11", "20", "1", "2"),  # pre-market, main next
                (member, "00", "20", "0", "2"),  # the 08:50-09:00:30 pause
            ]
            assert c.got.records("H0NXMKO0", outsider) == []

    run(scenario())
