"""The client's search_stock_info against the local exchange over loopback: the NXT flags equal the exchange's
ground truth (`/__sim__/truth/nxt`) for a member, a non-member, the NXT-halted stock and the stock cut mid-quarter,
before and after its day (docs/kis-protocol.md §6.10)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from observer_resources.calendar import KST
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import NoDataError
from observer_resources.kis.models import StockInfo
from observer_resources.kis.rest import KisRestClient
from observer_resources.shared.rate_limit import SharedRateLimiter
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

BEFORE_CUT = datetime(2026, 2, 11, 12, 0, tzinfo=KST)  # the Q1 2026 list is cut on 2026-02-12


def set_clock(sim, at: datetime) -> None:
    sim.admin("clock", {"at": at.isoformat(), "speed": 0})


def lookup(sim, creds, tmp_path, at: datetime, codes: list[str]) -> dict[str, StockInfo | Exception]:
    """Each code through one client with the real shared token provider and rate limiter, at sim time ``at``."""
    set_clock(sim, at)
    key, secret = creds
    config = KisConfig(key, secret, "real", sim.rest_url, sim.ws_url)
    tokens = SharedTokenProvider(
        config, SqliteTokenStore(tmp_path / f"tokens-{at:%d%H}.db"), clock=lambda: at, too_soon_wait=timedelta(0)
    )
    limiter = SharedRateLimiter(config.key_id, 18.0, tmp_path / "rl.db")

    async def go() -> dict[str, StockInfo | Exception]:
        out: dict[str, StockInfo | Exception] = {}
        async with KisRestClient(config, tokens, limiter) as client:
            for code in codes:
                try:
                    out[code] = await client.search_stock_info(code)
                except NoDataError as exc:
                    out[code] = exc
        return out

    return asyncio.run(go())


def test_nxt_flags_follow_the_exchange(sim, creds, tmp_path):
    set_clock(sim, BEFORE_CUT)
    truth = sim.admin("truth/nxt")
    halted, dropped = truth["halted"][0], truth["dropped"][0]["code"]
    member = next(c for c in truth["members"] if c not in truth["halted"] and c != dropped)
    listings = {x["code"]: x for x in sim.admin("listings")["listings"]}
    outsider = next(c for c, x in listings.items() if x["group"] == "ST" and c not in truth["members"])

    got = lookup(sim, creds, tmp_path, BEFORE_CUT, [member, outsider, halted, dropped, "999990"])
    info = got[member]
    assert isinstance(info, StockInfo)
    assert (info.code, info.name, info.isin[:2]) == (member, listings[member]["name"], "KR")
    assert info.raw["pdno"] == "00000A" + member and info.listed_shares > 0 and info.listed is not None
    flags = {c: (i.nxt_tradable, i.nxt_halted) for c, i in got.items() if isinstance(i, StockInfo)}
    assert flags == {member: (True, False), outsider: (False, False), halted: (True, True), dropped: (True, False)}
    assert isinstance(got["999990"], NoDataError)

    after = lookup(sim, creds, tmp_path, BEFORE_CUT + timedelta(hours=22), [dropped])[dropped]
    assert isinstance(after, StockInfo) and not after.nxt_tradable
    assert dropped not in sim.admin("truth/nxt")["members"]


@pytest.mark.parametrize("code", ["005930", "000660"])
def test_real_large_caps_trade_on_nxt(sim, creds, tmp_path, code):
    info = lookup(sim, creds, tmp_path, BEFORE_CUT, [code])[code]
    assert isinstance(info, StockInfo) and info.nxt_tradable and info.kospi200 and info.market_id == "STK"
