"""The market's price model: calendar, daily close chains, each day's trades, books and quotes at an instant.

Everything derives from (seed, symbol index, date) through numpy's SeedSequence/PCG64 or a splitmix
hash: the same seed gives byte-identical answers whatever the query order or cache state. Queries
over time (bars, day summaries) and the wire records live in market.py, on top of this.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

import numpy as np

from local_exchange.daily import CloseChain, close_chain
from local_exchange.listings import Listing, generate_listings
from local_exchange.records import EMPTY_BOOK, Book, make_book
from local_exchange.ticks import CLOSING_AUCTION_S, DayTicks, Shape, empty_day, generate_day, price_limits
from observer_resources import calendar as krx
from observer_resources.calendar import KST, CalendarRangeError

_TAG_CHAIN = 1
_TAG_DAY = 2
_TYPICAL_TRADE_KRW = 1_200_000


@dataclass(frozen=True)
class Quote:
    """One symbol at one instant: the state after the last trade at or before `at`."""

    code: str
    at: datetime
    day: date
    price: int
    prev_close: int
    open: int  # open/high/low are 0 before the first trade; price = prev_close then
    high: int
    low: int
    acml_vol: int
    acml_value: int
    trades: int
    ask1: int
    bid1: int
    ask_size1: int
    bid_size1: int
    total_ask_size: int
    total_bid_size: int
    upper_limit: int  # KRX limits around prev_close (see ticks.price_limits)
    lower_limit: int
    last_trade_at: datetime | None


def sec_of(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def to_kst(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the market needs a timezone-aware datetime, got naive {at!r}")
    return at.astimezone(KST)


class PriceModel:
    """Deterministic synthetic KRX prices: listings, daily closes, trades, books and quotes."""

    def __init__(
        self,
        *,
        seed: int = 0,
        listings: int = 2600,
        clock_mode: Literal["krx", "open"] = "krx",
        cache_mb: int = 400,
        activity: float = 1.0,
    ) -> None:
        if clock_mode not in ("krx", "open"):
            raise ValueError(f"clock_mode must be 'krx' or 'open', got {clock_mode!r}")
        if not activity > 0:
            raise ValueError(f"activity must be > 0, got {activity!r}")
        self.activity = float(activity)  # every listing's trade rate times this (1: the KRX-like market)
        self.seed = int(seed)
        self.clock_mode = clock_mode
        self.listings: list[Listing] = generate_listings(self.seed, listings)
        self.by_code: dict[str, Listing] = {x.code: x for x in self.listings}
        self._index: dict[str, int] = {x.code: i for i, x in enumerate(self.listings)}
        self._first, self._last = krx.calendar_range()
        self._days: list[date] = krx.trading_days(self._first, self._last) if clock_mode == "krx" else []
        self._n_days = len(self._days) if clock_mode == "krx" else (self._last - self._first).days + 1
        self._chains: dict[int, CloseChain] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], DayTicks] = OrderedDict()
        self._cache_bytes = 0
        self._cache_max = int(cache_mb) * 1024 * 1024
        self._seed32 = self.seed & 0xFFFFFFFF
        self._books: dict[int, tuple[tuple[int, int], Book]] = {}
        self._shapes: dict[int, Shape | None] = {}

    # --- calendar ---------------------------------------------------------------------------------
    def _check_range(self, d: date) -> None:
        if not (self._first <= d <= self._last):
            raise CalendarRangeError(f"{d.isoformat()} is outside the sim's range {self._first}..{self._last}")

    def is_trading_day(self, d: date) -> bool:
        if self.clock_mode == "open":
            return True
        return krx.is_trading_day(d)

    def session(self, d: date) -> tuple[datetime, datetime] | None:
        """(first trade instant, closing print instant) in KST, or None when closed."""
        if self.clock_mode == "open":
            start = datetime.combine(d, time(0, 0), KST)
            return start, start + timedelta(seconds=86_399)
        s = krx.session(d)
        return None if s is None else (s.open, s.close)

    def previous_trading_day(self, d: date) -> date:
        if self.clock_mode == "open":
            return d - timedelta(days=1)
        return krx.previous_trading_day(d)

    def _shape(self, d: date) -> Shape | None:
        key = d.toordinal()
        if key in self._shapes:
            return self._shapes[key]
        s = self.session(d)
        if s is None:
            shape = None
        elif self.clock_mode == "open":
            shape = Shape(0, 86_399, 86_399, True)
        else:
            o, c = sec_of(s[0]), sec_of(s[1])
            shape = Shape(o, c - CLOSING_AUCTION_S, c, False)
        self._shapes[key] = shape
        return shape

    # --- daily closes -----------------------------------------------------------------------------
    def _idx(self, code: str) -> int:
        try:
            return self._index[code]
        except KeyError:
            raise KeyError(f"unknown symbol {code!r}") from None

    def _chain(self, idx: int) -> CloseChain:
        chain = self._chains.get(idx)
        if chain is None:
            lst = self.listings[idx]
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self._seed32, idx, _TAG_CHAIN])))
            chain = close_chain(
                rng, n_days=self._n_days, base_level=lst.base_level, volatility=lst.volatility, flat=lst.halted
            )
            self._chains[idx] = chain
        return chain

    def _pos_before(self, d: date) -> int:
        """Number of trading days in the sim's range strictly before d (= chain index of prev close)."""
        self._check_range(d)
        if self.clock_mode == "open":
            return (d - self._first).days
        return bisect.bisect_left(self._days, d)

    def close(self, code: str, d: date) -> int:
        """Official close of trading day d."""
        if not self.is_trading_day(d):
            raise ValueError(f"{d.isoformat()} is not a trading day ({self.clock_mode} mode)")
        return int(self._chain(self._idx(code))[self._pos_before(d) + 1])

    def prev_close(self, code: str, d: date) -> int:
        """Close of the trading day before d (= base price stck_sdpr on d)."""
        return int(self._chain(self._idx(code))[self._pos_before(d)])

    # --- ticks ------------------------------------------------------------------------------------
    def _generate(self, idx: int, d: date) -> DayTicks:
        lst = self.listings[idx]
        pos = self._pos_before(d)
        chain = self._chain(idx)
        prev = int(chain[pos])
        shape = self._shape(d)
        if shape is None or lst.halted:
            return empty_day(lst.code, d, prev)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self._seed32, idx, d.toordinal(), _TAG_DAY])))
        return generate_day(
            rng,
            code=lst.code,
            day=d,
            shape=shape,
            prev_close=prev,
            close=int(chain[pos + 1]),
            activity=lst.activity * self.activity,
            volatility=lst.volatility,
        )

    def _cached(self, idx: int, d: date) -> DayTicks | None:
        key = (idx, d.toordinal())
        with self._lock:
            t = self._cache.get(key)
            if t is not None:
                self._cache.move_to_end(key)
            return t

    def day_ticks(self, code: str, d: date) -> DayTicks:
        """The whole day's trades (empty on a non-trading day or for a halted listing); LRU-cached."""
        idx = self._idx(code)
        t = self._cached(idx, d)
        if t is not None:
            return t
        t = self._generate(idx, d)
        key, size = (idx, d.toordinal()), t.nbytes
        with self._lock:
            if key not in self._cache:
                self._cache[key] = t
                self._cache_bytes += size
                while self._cache_bytes > self._cache_max and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= old.nbytes
            else:
                t = self._cache[key]
        return t

    @property
    def cache_bytes(self) -> int:
        """Bytes of tick arrays held by the LRU cache."""
        return self._cache_bytes

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0
        self._chains.clear()

    # --- books and quotes -------------------------------------------------------------------------
    def _book(self, idx: int, t: DayTicks, n: int, lower: int, upper: int) -> Book:
        if self.listings[idx].halted:
            return EMPTY_BOOK
        key = (t.day.toordinal(), n)
        hit = self._books.get(idx)
        if hit is not None and hit[0] == key:
            return hit[1]
        unit = max(1, _TYPICAL_TRADE_KRW // max(t.prev_close, 1)) * 8
        book = make_book(seed=self.seed, index=idx, ticks=t, n=n, lower=lower, upper=upper, unit=unit)
        self._books[idx] = (key, book)  # the latest book per symbol: repeated polls of one instant
        return book

    def _state(self, code: str, at: datetime) -> tuple[int, DayTicks, int, datetime]:
        """(symbol index, the day's ticks, trades so far, at in KST) for the instant `at`.

        On a non-trading day the state is the last trading day's final state.
        """
        idx = self._idx(code)
        at_k = to_kst(at)
        d = at_k.date()
        if self.is_trading_day(d):
            t = self.day_ticks(code, d)
            n = t.index_at(sec_of(at_k))
        else:
            t = self.day_ticks(code, self.previous_trading_day(d))
            n = len(t)
        return idx, t, n, at_k

    def quote(self, code: str, at: datetime) -> Quote:
        idx, t, n, at_k = self._state(code, at)
        prev = t.prev_close
        lower, upper = price_limits(prev)
        book = self._book(idx, t, n, lower, upper)
        if n == 0:
            price, o, h, lo, vol, val, last_at = prev, 0, 0, 0, 0, 0, None
        else:
            i = n - 1
            price, o, h, lo = int(t.price[i]), int(t.price[0]), int(t.high[i]), int(t.low[i])
            vol, val = int(t.acml_vol[i]), int(t.acml_value[i])
            last_at = datetime.combine(t.day, time(0), KST) + timedelta(seconds=int(t.sec[i]))
        return Quote(
            code=code,
            at=at_k,
            day=t.day,
            price=price,
            prev_close=prev,
            open=o,
            high=h,
            low=lo,
            acml_vol=vol,
            acml_value=val,
            trades=n,
            ask1=book.ask_prices[0],
            bid1=book.bid_prices[0],
            ask_size1=book.ask_sizes[0],
            bid_size1=book.bid_sizes[0],
            total_ask_size=book.total_ask,
            total_bid_size=book.total_bid,
            upper_limit=upper,
            lower_limit=lower,
            last_trade_at=last_at,
        )
