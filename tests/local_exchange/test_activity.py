"""The shipped market is as busy as KRX's, as a KIS user finds it: an ordinary common share picked at random trades
within a minute of subscribing, even at midday, and ordinary shares trade every few seconds to a minute
(docs/local-exchange.md "Listings", docs/benchmarks.md for the whole distribution)."""

from __future__ import annotations

import random
import statistics

from ._wire import Kis, WsClient, run

DAY = "20260304"  # an ordinary Wednesday
START = "2026-03-04T11:00:00+09:00"  # the midday lull, the quietest hour of the continuous session


def _ordinary(listings: list[dict]) -> list[str]:
    """Common shares outside the busiest 60, not halted, not in liquidation or administrative."""
    busiest = {r["code"] for r in sorted(listings, key=lambda r: -r["activity"])[:60]}
    return sorted(
        r["code"]
        for r in listings
        if not (r["etp"] or r["preferred"] or r["spac"] or r["halted"] or r["liquidation"] or r["administrative"])
        and r["code"] not in busiest
    )


def test_an_ordinary_stock_picked_at_random_trades_within_a_minute(sim_factory, creds):
    sim = sim_factory("--clock", "krx", "--speed", "0", "--start", START)  # the default 2,600 listings
    kis = Kis(sim, creds)
    ordinary = _ordinary(sim.admin("listings")["listings"])
    assert len(ordinary) > 1_000
    picked = random.Random(20261204).sample(ordinary, 40)

    # the market: most of the picked trade in the minute after 11:00, and their typical gap is seconds to a minute
    traded, gaps = 0, []
    for code in picked:
        ticks = sim.admin("truth/ticks", params={"code": code, "day": DAY, "records": "0"})["ticks"]
        secs = [int(t["time"][:2]) * 3600 + int(t["time"][2:4]) * 60 + int(t["time"][4:]) for t in ticks]
        traded += any(39_600 <= s < 39_660 for s in secs)
        cont = [s for s in secs if 32_400 < s < 55_200]  # 09:00-15:20, the crosses left out
        gaps.append((cont[-1] - cont[0]) / max(len(cont) - 1, 1) if len(cont) > 1 else 22_800.0)
    assert traded / len(picked) >= 0.8, traded
    assert 3.0 <= statistics.median(gaps) <= 60.0, sorted(gaps)

    # a KIS client subscribing the first of them at 11:00 gets a trade before 11:01 (10 simulated seconds a second)
    code = picked[0]

    async def scenario() -> None:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            await c.send("H0STCNT0", code)
            assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            sim.admin("clock", {"speed": 10})
            assert await c.until(lambda g: g.records("H0STCNT0", code), timeout=8), code
            first = c.got.records("H0STCNT0", code)[0]
            assert "110000" <= first[1] < "110100", first[1]

    run(scenario())
