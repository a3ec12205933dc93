"""What every TR handler shares: the sim state, cached market look-ups and tr_cont paging state.

A class of its own so the handler modules depend on it and the dispatcher in rest.py depends on them,
never the other way round.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from local_exchange.accounts import Token
from local_exchange.rest_wire import NoData, check_market_div, need
from local_exchange.venue_bars import day_venue
from observer_resources.calendar import KST, CalendarRangeError

if TYPE_CHECKING:
    from local_exchange.state import SimState

RECENT_DAYS = 5
EXTREMES_DAYS = 250
CONTINUATIONS_MAX = 10_000
HISTORY_CACHE_MAX = 8192


class Continuations:
    """Server-side paging state per (token, tr_id, params), as KIS keeps it for tr_cont: N."""

    def __init__(self, cap: int = CONTINUATIONS_MAX):
        self._d: OrderedDict[tuple, Any] = OrderedDict()
        self._cap = cap
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            v = self._d.get(key)
            return dict(v) if v is not None else None

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._cap:
                self._d.popitem(last=False)

    def drop(self, key: tuple) -> None:
        with self._lock:
            self._d.pop(key, None)


class TrContext:
    """Market access for the TR handlers, bound to one SimState."""

    def __init__(self, state: SimState):
        self.s = state
        self.conts = Continuations()
        self._history_cache: OrderedDict[tuple, list[Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def listing(self, code: str) -> Any:
        code = code.strip()
        li = self.s.market.by_code.get(code)
        if li is None and len(code) == 7 and code[0] in "AJ":
            li = self.s.market.by_code.get(code[1:])
        if li is None:
            raise NoData()
        return li

    def _cached(self, key: tuple, compute: Callable[[], list[Any]]) -> list[Any]:
        with self._cache_lock:
            hit = self._history_cache.get(key)
        if hit is not None:
            return hit
        value = compute()
        with self._cache_lock:
            self._history_cache[key] = value
            while len(self._history_cache) > HISTORY_CACHE_MAX:
                self._history_cache.popitem(last=False)
        return value

    def recent(self, code: str, day: date) -> list[Any]:
        """The last RECENT_DAYS finished daily bars before ``day``, newest first (cached).

        Kept short on purpose: a finished day's bar costs the market a full day of ticks the first
        time, and a busy symbol's year would take seconds."""

        def compute() -> list[Any]:
            m = self.s.market
            try:
                prev = m.previous_trading_day(day)
                return list(m.daily_bars(code, prev, RECENT_DAYS, as_of=datetime.combine(day, time(0), KST)))
            except CalendarRangeError:
                return []

        return self._cached(("recent", code, day), compute)

    def past_extremes(self, code: str, day: date) -> list[tuple[date, int, int]]:
        """(day, high, low) for about a year of finished days before ``day``: real extremes for the
        recent days, the official close for older ones (cheap: no ticks needed)."""

        def compute() -> list[Any]:
            m = self.s.market
            recent = self.recent(code, day)
            rows = [(b.day, b.high, b.low) for b in recent]
            d = recent[-1].day if recent else day
            try:
                while len(rows) < EXTREMES_DAYS:
                    d = m.previous_trading_day(d)
                    c = m.close(code, d)
                    rows.append((d, c, c))
            except (CalendarRangeError, ValueError):
                pass
            return rows

        return self._cached(("extremes", code, day), compute)

    def venue_quote(self, params: dict[str, str]) -> tuple[Any, str, Any]:
        """(listing, venue, quote) of a TR's FID_COND_MRKT_DIV_CODE / FID_INPUT_ISCD at the clock's instant.

        NX for a code NXT does not trade that day has no data (rt_cd 7), as in ``inquire-price``; UN for such a
        code answers as KRX, since the unified tape is then KRX's alone."""
        venue = check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        m = self.s.market
        q = m.venue_quote(li.code, self.s.clock.now(), venue)
        v = day_venue(m, li.code, q.day, venue)
        if v is None:
            raise NoData()
        return li, v, q

    def session_of(self, d: date) -> tuple[datetime, datetime] | None:
        try:
            return self.s.market.session(d)
        except CalendarRangeError:
            return None


# A TR handler: (context, upper-cased query parameters, the caller's token, request tr_cont) -> answer.
Handler = Callable[[TrContext, dict[str, str], Token, str], web.Response]
