"""A whole simulated day on both venues, 07:30 to 20:30 at 900x, as a KIS client sees it over loopback: every
phase announced by the market-status feeds at its change, expected prices through both KRX auctions and only
then, the opening and closing crosses on the KRX tape, the unified tape from 08:00 to 20:00, and NXT's trades only inside NXT's phases
(docs/sessions.md, docs/local-exchange.md "WebSocket")."""

from __future__ import annotations

import pytest

from observer_resources.kis import protocol as p

from ._wire import Kis, WsClient, parse_data_frame, run

DAY = "2026-12-01"  # a Tuesday under the extended KRX schedule (pre-market 07:00, after-market to 20:00)
CODE = "005930"

# (running phase, next phase) codes as a trader reads them through the day (docs/local-exchange.md);
# "00" is no phase: a break, or nothing before 08:00 / after 20:00 on that venue
KRX_DAY = [
    ("11", "12"),  # 07:30 KRX pre-market, the opening auction next
    ("00", "12"),  # 08:00 break
    ("12", "20"),  # 08:30 opening auction
    ("20", "22"),  # 09:00 regular session
    ("22", "31"),  # 15:20 closing auction
    ("00", "31"),  # 15:30 break
    ("31", "33"),  # 15:40 closing-price trading
    ("33", "00"),  # 16:00 after-market
    ("00", "00"),  # 20:00 closed
]
NXT_DAY = [
    ("00", "11"),  # 07:30 before NXT opens
    ("11", "20"),  # 08:00 pre-market
    ("00", "20"),  # 08:50 pause
    ("20", "32"),  # 09:00:30 main session
    ("00", "32"),  # 15:20 pause
    ("32", "33"),  # 15:30 after-market order period
    ("33", "00"),  # 15:40 after-market
    ("00", "00"),  # 20:00 closed
]


def _hms(rec: list[str]) -> str:
    return rec[1]


@pytest.mark.slow
def test_a_whole_day_every_phase_with_its_auctions_and_status_frames(sim_factory, creds):
    sim = sim_factory("--clock", "krx", "--listings", "300", "--speed", "0", "--start", f"{DAY}T07:30:00+09:00")
    kis = Kis(sim, creds)
    members = sim.admin("truth/nxt")["members"]
    assert CODE in members
    # the tapes of an ordinary member (005930 prints ~10 trades/s: at 900x more than a test client parses)
    busy = {r["code"] for r in sim.admin("listings", params={"order": "activity", "limit": "60"})["listings"]}
    tape = next(c for c in reversed(members) if c not in busy)
    subscriptions = [(tr, CODE) for tr in ("H0STMKO0", "H0NXMKO0", "H0UNMKO0", "H0STANC0", "H0UNANC0")]
    subscriptions += [("H0STCNT0", tape), ("H0UNCNT0", tape)]

    def nxt_total_volume() -> int:
        nxt = sim.admin("truth/ticks", params={"code": tape, "day": DAY.replace("-", ""), "venue": "NXT"})
        return nxt["ticks"][-1]["acml_vol"]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            for tr, code in subscriptions:
                await c.send(tr, code)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            sim.admin("clock", {"speed": 900})
            done = await c.until(lambda g: len(g.records("H0STMKO0")) >= len(KRX_DAY), timeout=120)
            assert done, c.got.records("H0STMKO0")
            await c.collect(1.0)

            krx = c.got.records("H0STMKO0")
            assert [(r[3], r[4]) for r in krx] == KRX_DAY
            assert all(r[10] == "1" for r in krx)  # EXCH_CLS_CODE: KRX reports
            nxt = c.got.records("H0NXMKO0")
            assert [(r[3], r[4]) for r in nxt] == NXT_DAY
            # the unified feed reports KRX's phase while KRX runs one, NXT's while only NXT does
            unified = [r[2] for r in c.got.records("H0UNMKO0")]
            assert unified[0] == "11" and "12" in unified and "22" in unified and unified[-1] == "00"
            assert "32" in unified  # 15:30-15:40: KRX in a break, NXT collecting after-market orders

            # expected prices only inside KRX's two auctions, and through both of them
            expected = c.got.records("H0STANC0")
            assert all(len(r) == p.WS_FEED_WIDTHS["H0STANC0"] for r in expected)
            times = [_hms(r) for r in expected]
            opening = [t for t in times if "083000" <= t < "090000"]
            closing = [t for t in times if "152000" <= t < "153000"]
            assert len(opening) + len(closing) == len(times), sorted(set(times) - set(opening) - set(closing))
            # at 900x one emit step covers tens of simulated seconds, so "through" means within two minutes
            assert opening and closing and min(opening) < "083200" and max(opening) >= "085800"
            assert min(closing) < "152200" and max(closing) >= "152800"
            assert {r[34] for r in expected if _hms(r) < "090000"} == {"12"}
            assert {r[34] for r in expected if _hms(r) >= "152000"} == {"22"}
            assert len(c.got.records("H0UNANC0")) >= len(expected) // 2

            # the KRX tape: the opening cross at 09:00, the closing cross at 15:30, in time order, complete
            trades = c.got.records("H0STCNT0")
            assert trades and _hms(trades[0]) == "090000" and _hms(trades[-1]) == "153000"
            vols = [int(r[13]) for r in trades]
            assert vols == sorted(vols) and len(set(vols)) == len(vols)
            truth = sim.admin("truth/ticks", params={"code": tape, "day": DAY.replace("-", ""), "records": "0"})
            assert len(trades) == truth["total_ticks_in_day"]
            # the unified tape: NXT's pre-market before the cross, NXT's after-market after it, KRX + NXT volume
            unified_trades = c.got.records("H0UNCNT0")
            assert _hms(unified_trades[0]) < "085000" and _hms(unified_trades[-1]) >= "154000"
            uvols = [int(r[13]) for r in unified_trades]
            assert uvols == sorted(uvols) and uvols[-1] == vols[-1] + nxt_total_volume()
            un_truth = sim.admin("truth/ticks", params={"code": tape, "day": DAY.replace("-", ""), "venue": "UN"})
            assert len(unified_trades) == un_truth["total_ticks_in_day"]
            for text in c.got.data:
                _, tr, records = parse_data_frame(text)
                assert all(len(r) == p.WS_FEED_WIDTHS[tr] for r in records)

    run(scenario())

    # NXT's own trades fall only inside NXT's continuous phases
    nxt_ticks = sim.admin("truth/ticks", params={"code": CODE, "day": DAY.replace("-", ""), "venue": "NXT"})
    hms = [t["time"] for t in nxt_ticks["ticks"]]
    assert hms and any(t < "085000" for t in hms) and any(t >= "154000" for t in hms)
    assert all("080000" <= t < "085000" or "090030" <= t < "152000" or "154000" <= t < "200000" for t in hms)
