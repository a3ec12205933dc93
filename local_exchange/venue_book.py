"""NXT's and the unified order books (H0NXASP0 / H0UNASP0), derived from the one KRX book generator.

The exchange models a single book generator (``records.make_book``): best prices follow the last trade, sizes
are a hash of (seed, symbol, day, trade count, level). A venue's book is that generator run around the venue's
own last trade, with the hash salted per venue so NXT's sizes are not KRX's, and a size unit scaled to the
venue's share (NXT about NXT_SHARE of KRX, the unified book both). When NXT does not trade the code that day the
unified tape is KRX's, so the unified book *is* KRX's book. KRX's own book (``Market._book``) is only read here,
never cached under a venue's trade count, so H0STCNT0 / H0STASP0 are unaffected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from local_exchange.nxt import NXT_SHARE
from local_exchange.price_model import _TYPICAL_TRADE_KRW, sec_of, to_kst
from local_exchange.records import EMPTY_BOOK, Book, make_book, midpoint_fields, orderbook_fields
from local_exchange.ticks import DayTicks, price_limits

#: salts of the size hash per venue (KRX's book is unsalted)
_VENUE_SALT = {"NXT": 0x4E58_5442_4F4F_4B31, "UN": 0x554E_4942_4F4F_4B32}
_UNIT_SCALE = {"NXT": NXT_SHARE, "UN": 1.0 + NXT_SHARE}


def krx_book(market: Any, ticks: DayTicks, n: int) -> Book:
    """KRX's book after its n-th trade of the day: the market's own, exactly what H0STASP0 sends."""
    lower, upper = price_limits(ticks.prev_close)
    return market._book(market._idx(ticks.code), ticks, n, lower, upper)


def nxt_trades(market: Any, code: str, day: Any) -> bool:
    """Whether NXT has trades of ``code`` that day (the unified tape then differs from KRX's)."""
    return len(market.nxt_ticks(code, day)) > 0


def venue_book(market: Any, ticks: DayTicks, n: int, venue: str, *, nxt_trading: bool) -> Book:
    """The book of ``venue`` ("KRX", "NXT" or "UN") after the n-th trade of that venue's tape ``ticks``.

    ``nxt_trading``: whether NXT trades the code that day; without it the unified book is KRX's."""
    if venue == "KRX" or (venue == "UN" and not nxt_trading):
        return krx_book(market, ticks, n)
    idx = market._idx(ticks.code)
    if market.listings[idx].halted:
        return EMPTY_BOOK
    prev = ticks.prev_close
    lower, upper = price_limits(prev)
    unit = max(1, int(max(1, _TYPICAL_TRADE_KRW // max(prev, 1)) * 8 * _UNIT_SCALE[venue] + 0.5))
    return make_book(
        seed=market.seed ^ _VENUE_SALT[venue], index=idx, ticks=ticks, n=n, lower=lower, upper=upper, unit=unit
    )


def venue_orderbook_record(
    market: Any, ticks: DayTicks, at: datetime, venue: str, *, krx_live: bool, nxt_live: bool
) -> list[str]:
    """The 65 fields of H0NXASP0 / H0UNASP0 for the venue's tape ``ticks`` at ``at`` (same day).

    The 59 H0STASP0 fields of the venue's book, then the midpoints of KRX's and NXT's books; ``krx_live`` /
    ``nxt_live`` say whether that venue is trading the code at ``at`` (a venue that is not has midpoint 0)."""
    code, day = ticks.code, ticks.day
    at_k = to_kst(at)
    sec = sec_of(at_k)
    nxt_trading = venue == "NXT" or nxt_trades(market, code, day)
    n = ticks.index_at(sec)
    book = venue_book(market, ticks, n, venue, nxt_trading=nxt_trading)
    before = venue_book(market, ticks, n - 1, venue, nxt_trading=nxt_trading) if n > 0 else book
    vol = int(ticks.acml_vol[n - 1]) if n else 0
    kbook = nbook = None
    if krx_live:
        kt = market.day_ticks(code, day)
        kbook = krx_book(market, kt, kt.index_at(sec))
    if nxt_live:
        nt = market.nxt_ticks(code, day)
        nbook = venue_book(market, nt, nt.index_at(sec), "NXT", nxt_trading=True)
    return orderbook_fields(code, sec, book, before, vol) + midpoint_fields(kbook, nbook)


__all__ = ["krx_book", "nxt_trades", "venue_book", "venue_orderbook_record"]
