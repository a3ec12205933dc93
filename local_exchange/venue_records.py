"""H0NXCNT0 / H0UNCNT0 records: the H0STCNT0 layout over NXT's tape or the unified (KRX + NXT) tape.

Every day-level field (open, high, low, cumulative volume and value, trade counts, the previous day's volume at
the same time) is the venue's own, so the §8.4 identities hold within each feed; the book fields come from the
venue's book (venue_book.py). Always 46 fields: the 47th ``MARKET_CLS_CODE`` mode applies to H0STCNT0 only.
"""

from __future__ import annotations

from typing import Any

from local_exchange.records import trade_fields
from local_exchange.ticks import DayTicks
from local_exchange.venue_book import nxt_trades, venue_book


def _prev_day_tapes(market: Any, code: str, ticks: DayTicks, venue: str) -> list[DayTicks]:
    """The previous trading day's tapes whose sum is the venue's volume that day (none before the first day)."""
    pday = market._prev_day(ticks.day)
    if pday is None:
        return []
    if venue == "NXT":
        return [market.nxt_ticks(code, pday)]
    return [market.day_ticks(code, pday), market.nxt_ticks(code, pday)]


def venue_trade_records(market: Any, ticks: DayTicks, lo: int, hi: int, venue: str) -> list[list[str]]:
    """The records of ticks [lo, hi) of ``venue``'s tape (``venue_ticks(code, day, venue)``, venue NXT or UN)."""
    if not 0 <= lo <= hi <= len(ticks):
        raise IndexError(f"ticks [{lo}, {hi}) out of range for {ticks.code} on {ticks.day} ({len(ticks)} ticks)")
    if venue not in ("NXT", "UN"):
        raise ValueError(f"venue must be NXT or UN, got {venue!r}")
    code = ticks.code
    shares = market.by_code[code].listed_shares
    nxt_trading = venue == "NXT" or nxt_trades(market, code, ticks.day)
    prev = _prev_day_tapes(market, code, ticks, venue)
    prdy_vol = sum(int(t.acml_vol[-1]) for t in prev if len(t))
    out = []
    for i in range(lo, hi):
        sec = int(ticks.sec[i])
        prdy_same = 0
        for t in prev:
            k = t.index_at(sec)
            prdy_same += int(t.acml_vol[k - 1]) if k else 0
        book = venue_book(market, ticks, i + 1, venue, nxt_trading=nxt_trading)
        out.append(trade_fields(ticks, i, book=book, listed_shares=shares, prdy_vol=prdy_vol, prdy_same=prdy_same))
    return out


def venue_trade_record(market: Any, ticks: DayTicks, i: int, venue: str) -> list[str]:
    """One record (tick i) of ``venue``'s tape."""
    return venue_trade_records(market, ticks, i, i + 1, venue)[0]


__all__ = ["venue_trade_record", "venue_trade_records"]
