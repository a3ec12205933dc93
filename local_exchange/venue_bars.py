"""Minute and daily bars of one venue's tape (NXT, or the unified KRX + NXT tape) for the chart TRs.

KRX's bars stay the market's own (``Market.minute_bars`` / ``daily_bars``), so a ``J`` answer is unchanged; this
module repeats their arithmetic over ``Market.venue_ticks`` for ``NX`` and ``UN``. A venue's minutes are those of
its trading windows: NXT's continuous phases, and for the unified tape those plus KRX's session, so the breaks when
neither venue trades (08:50-09:00, 15:30-15:40 on an ordinary day) have no bars.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import numpy as np

from local_exchange.market import Bar, DailyBar, daily_bar_of, minute_bars_of
from local_exchange.nxt import is_trading
from local_exchange.price_model import sec_of, to_kst
from local_exchange.venues import NXT_LAUNCH
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar

__all__ = [
    "day_venue",
    "venue_daily_bars",
    "venue_minute_bars",
    "venue_prev_volume",
    "venue_session",
    "venue_windows",
]


@lru_cache(maxsize=1024)
def _nxt_windows(mode: str, d: date) -> tuple[tuple[int, int], ...]:
    """NXT's continuous phases of day d as [start, end) seconds of the day (the windows NXT's trades fall in)."""
    out = []
    for ph in MarketCalendar(mode).phases(d):
        if ph.venue == "NXT" and ph.kind == "continuous":
            out.append((sec_of(ph.start), sec_of(ph.end)))
    return tuple(out)


def venue_windows(market: Any, d: date, venue: str) -> list[tuple[int, int]]:
    """[start, end) seconds of day d when ``venue`` ("NXT" or "UN") can trade, sorted; empty on a closed day."""
    sess = market.session(d)
    if sess is None:
        return []
    windows = list(_nxt_windows(market.clock_mode, d))
    if venue == "UN":
        windows.append((sec_of(sess[0]), sec_of(sess[1]) + 1))  # KRX's closing print is a trade of its last second
    return sorted(windows)


def venue_session(market: Any, d: date, venue: str) -> tuple[datetime, datetime] | None:
    """(first, last) instant of ``venue``'s trading day d: KRX's session, or NXT's / the unified windows' span."""
    if venue == "KRX":
        return market.session(d)
    windows = venue_windows(market, d, venue)
    if not windows:
        return None
    start = datetime.combine(d, time(0), KST)
    return start + timedelta(seconds=windows[0][0]), start + timedelta(seconds=max(e for _, e in windows) - 1)


def _venue_day(market: Any, code: str, d: date) -> bool:
    """Whether NXT trades ``code`` on day d (so NX has data and the unified tape differs from KRX's)."""
    return d >= NXT_LAUNCH and is_trading(market, code, d)


def day_venue(market: Any, code: str, d: date, venue: str) -> str | None:
    """The tape that answers ``venue`` for ``code`` on day d: None when NXT does not trade the code that day (NX
    has no data), KRX for UN then (the unified tape is KRX's, so it takes KRX's own path), else ``venue``."""
    if venue == "KRX":
        return venue
    if not _venue_day(market, code, d):
        return None if venue == "NXT" else "KRX"
    return venue


def venue_minute_bars(market: Any, code: str, d: date, until: datetime, venue: str) -> list[Bar]:
    """Oldest first, one bar per minute of ``venue``'s windows on day d through the minute containing ``until``.

    KRX is ``Market.minute_bars`` itself; NXT and UN come from ``Market.venue_ticks``."""
    if venue == "KRX":
        return market.minute_bars(code, d, until)
    windows = venue_windows(market, d, venue)
    u = to_kst(until)
    if not windows or u.date() < d:
        return []
    last = max(e for _, e in windows) - 1
    u_s = last if u.date() > d else min(sec_of(u), last)
    first = windows[0][0]
    if u_s < first:
        return []
    minutes = np.arange(first // 60 * 60, u_s // 60 * 60 + 1, 60, dtype=np.int64)
    inside = np.zeros(len(minutes), dtype=bool)
    for s, e in windows:
        inside |= (minutes < e) & (minutes + 60 > s)
    t = market.venue_ticks(code, d, venue)
    return minute_bars_of(t, minutes[inside], t.index_at(u_s))


def venue_daily_bars(market: Any, code: str, end: date, n: int, *, as_of: datetime, venue: str) -> list[DailyBar]:
    """Newest first, ``venue``'s daily bars of the last n trading days <= end (``Market.daily_bars`` for KRX).

    NXT has a bar only on a day it trades the code (and today once it has traded); a unified bar is KRX's bar on a
    day without NXT trades, else the merged tape's: volume and value KRX's plus NXT's, close the later last trade."""
    if venue == "KRX":
        return market.daily_bars(code, end, n, as_of=as_of)
    at_k = to_kst(as_of)
    today = at_k.date()
    krx = market.daily_bars(code, end, n, as_of=as_of)
    synthetic = None
    if end >= today and market.is_trading_day(today) and not any(b.day == today for b in krx):
        prev = market.prev_close(code, today)  # KRX has not opened yet; NXT's pre-market may have traded
        synthetic = DailyBar(today, prev, prev, prev, prev, 0, 0, prev)
        krx = [synthetic, *krx][:n]
    out: list[DailyBar] = []
    for b in krx:
        k = 0
        if _venue_day(market, code, b.day):
            t = market.venue_ticks(code, b.day, venue)
            k = t.index_at(sec_of(at_k)) if b.day == today else len(t)
        if k == 0:
            if venue == "UN" and b is not synthetic:
                out.append(b)  # no NXT trades (yet): the unified bar is KRX's
            continue
        out.append(daily_bar_of(t, k - 1, b.prev_close))
    return out


def venue_prev_volume(market: Any, code: str, d: date, venue: str) -> int:
    """``venue``'s full-day volume on the trading day before d (0 before the first day or NXT's first day)."""
    pday = market._prev_day(d)
    if pday is None:
        return 0
    krx = market.day_volume(code, pday) if venue != "NXT" else 0
    if not _venue_day(market, code, pday):
        return krx
    t = market.nxt_ticks(code, pday)
    return krx + (int(t.acml_vol[-1]) if len(t) else 0)
