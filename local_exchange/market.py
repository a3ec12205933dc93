"""The local exchange's market: deterministic prices, trades and books for every listing and day.

REST and WebSocket servers ask this one object, so a price seen over REST agrees with the trade
stream at the same simulated instant (§10.2). Everything derives from (seed, symbol index, date)
through numpy's SeedSequence/PCG64 or a splitmix hash: the same seed gives byte-identical answers
whatever the query order or cache state.
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
from local_exchange.records import (
    EMPTY_BOOK,
    Book,
    change_sign,
    hhmmss,
    make_book,
    ratio_2dp,
)
from local_exchange.ticks import (
    CLOSING_AUCTION_S,
    DayTicks,
    Shape,
    empty_day,
    generate_day,
    price_limits,
)
from observer_resources import calendar as krx
from observer_resources.calendar import KST, CalendarRangeError
from observer_resources.kis.protocol import H0STASP0_FIELDS, H0STCNT0_FIELDS

__all__ = ["Bar", "DailyBar", "DayTicks", "Listing", "Market", "Quote"]

_TAG_CHAIN = 1
_TAG_DAY = 2
_TYPICAL_TRADE_KRW = 1_200_000
_SUMMARY_CACHE_MAX = 500_000


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


@dataclass(frozen=True)
class Bar:
    """One-minute bar; `start` is the minute's start, covering [start, start+60s)."""

    day: date
    start: time
    open: int
    high: int
    low: int
    close: int
    volume: int
    acml_vol: int
    acml_value: int


@dataclass(frozen=True)
class DailyBar:
    day: date
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int
    prev_close: int


@dataclass(frozen=True)
class _Summary:
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int
    trades: int


def _sec_of(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _kst(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the market needs a timezone-aware datetime, got naive {at!r}")
    return at.astimezone(KST)


class Market:
    """Deterministic synthetic KRX market: listings, daily closes, trades, quotes and books."""

    def __init__(
        self,
        *,
        seed: int = 0,
        listings: int = 2600,
        clock_mode: Literal["krx", "open"] = "krx",
        fields47: bool = False,
        cache_mb: int = 400,
    ) -> None:
        if clock_mode not in ("krx", "open"):
            raise ValueError(f"clock_mode must be 'krx' or 'open', got {clock_mode!r}")
        self.seed = int(seed)
        self.clock_mode = clock_mode
        self.fields47 = bool(fields47)
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
        self._summaries: OrderedDict[tuple[int, int], _Summary] = OrderedDict()
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
            o, c = _sec_of(s[0]), _sec_of(s[1])
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
            activity=lst.activity,
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
            self._summaries.clear()
        self._chains.clear()

    def _summary(self, idx: int, d: date) -> _Summary:
        """Full-day OHLCV of a trading day, without keeping its ticks in the cache."""
        key = (idx, d.toordinal())
        with self._lock:
            s = self._summaries.get(key)
        if s is not None:
            return s
        t = self._cached(idx, d)
        if t is None:
            t = self._generate(idx, d)
        if len(t):
            s = _Summary(
                int(t.price[0]),
                int(t.high[-1]),
                int(t.low[-1]),
                int(t.price[-1]),
                int(t.acml_vol[-1]),
                int(t.acml_value[-1]),
                len(t),
            )
        else:
            c = int(self._chain(idx)[self._pos_before(d) + 1]) if self.is_trading_day(d) else t.prev_close
            s = _Summary(c, c, c, c, 0, 0, 0)
        with self._lock:
            self._summaries[key] = s
            if len(self._summaries) > _SUMMARY_CACHE_MAX:
                self._summaries.popitem(last=False)
        return s

    def _prev_day(self, d: date) -> date | None:
        try:
            p = self.previous_trading_day(d)
        except CalendarRangeError:
            return None
        return p if p >= self._first else None

    # --- books and quotes -------------------------------------------------------------------------
    def _book(self, idx: int, t: DayTicks, n: int, lower: int, upper: int) -> Book:
        if self.listings[idx].halted:
            return EMPTY_BOOK
        key = (t.day.toordinal(), n)
        hit = self._books.get(idx)
        if hit is not None and hit[0] == key:
            return hit[1]
        if n == 0:
            last, side = t.prev_close, 5
        else:
            last, side = int(t.price[n - 1]), int(t.side[n - 1])
        unit = max(1, _TYPICAL_TRADE_KRW // max(t.prev_close, 1)) * 8
        book = make_book(
            seed=self.seed,
            index=idx,
            ordinal=key[0],
            n=n,
            last_price=last,
            last_side=side,
            lower=lower,
            upper=upper,
            unit=unit,
        )
        self._books[idx] = (key, book)  # the latest book per symbol: repeated polls of one instant
        return book

    def _state(self, code: str, at: datetime) -> tuple[int, DayTicks, int, datetime]:
        """(symbol index, the day's ticks, trades so far, at in KST) for the instant `at`.

        On a non-trading day the state is the last trading day's final state.
        """
        idx = self._idx(code)
        at_k = _kst(at)
        d = at_k.date()
        if self.is_trading_day(d):
            t = self.day_ticks(code, d)
            n = t.index_at(_sec_of(at_k))
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

    # --- bars -------------------------------------------------------------------------------------
    def minute_bars(self, code: str, d: date, until: datetime) -> list[Bar]:
        """Oldest first, one bar per minute from the session's first minute through the minute
        containing `until` (clamped to the session end); empty minutes carry the last close."""
        sess = self.session(d)
        if sess is None:
            return []
        u = _kst(until)
        start_s, close_s = _sec_of(sess[0]), _sec_of(sess[1])
        if u.date() < d:
            return []
        u_s = close_s if u.date() > d else min(_sec_of(u), close_s)
        if u_s < start_s:
            return []
        t = self.day_ticks(code, d)
        n = t.index_at(u_s)
        minutes = np.arange(start_s // 60 * 60, u_s // 60 * 60 + 1, 60, dtype=np.int64)
        sec = t.sec[:n]
        lo = np.searchsorted(sec, minutes, side="left")
        hi = np.searchsorted(sec, minutes + 60, side="left")
        price = t.price[:n]
        prev = t.prev_close
        acml_end = np.where(hi > 0, t.acml_vol[np.maximum(hi - 1, 0)] if n else 0, 0)
        acml_start = np.where(lo > 0, t.acml_vol[np.maximum(lo - 1, 0)] if n else 0, 0)
        value_end = np.where(hi > 0, t.acml_value[np.maximum(hi - 1, 0)] if n else 0, 0)
        close = np.where(hi > 0, price[np.maximum(hi - 1, 0)] if n else prev, prev)
        nonempty = hi > lo
        opn, high, low = close.copy(), close.copy(), close.copy()
        if nonempty.any():
            starts = lo[nonempty]
            opn[nonempty] = price[starts]
            high[nonempty] = np.maximum.reduceat(price, starts)
            low[nonempty] = np.minimum.reduceat(price, starts)
        out = []
        for j, m in enumerate(minutes.tolist()):
            out.append(
                Bar(
                    d,
                    time(m // 3600, m % 3600 // 60),
                    int(opn[j]),
                    int(high[j]),
                    int(low[j]),
                    int(close[j]),
                    int(acml_end[j] - acml_start[j]),
                    int(acml_end[j]),
                    int(value_end[j]),
                )
            )
        return out

    def _trading_days_upto(self, end: date, n: int) -> list[date]:
        """The last n trading days <= end, newest first."""
        if n <= 0 or end < self._first:
            return []
        end = min(end, self._last)
        if self.clock_mode == "open":
            k = min(n, (end - self._first).days + 1)
            return [end - timedelta(days=i) for i in range(k)]
        hi = bisect.bisect_right(self._days, end)
        return self._days[max(0, hi - n) : hi][::-1]

    def daily_bars(self, code: str, end: date, n: int, *, as_of: datetime) -> list[DailyBar]:
        """Newest first, the last n trading days <= end; today's partial bar only once today's
        session has started, computed from the ticks up to `as_of`."""
        idx = self._idx(code)
        at_k = _kst(as_of)
        today = at_k.date()
        out: list[DailyBar] = []
        for d in self._trading_days_upto(min(end, today), n + 1):
            prev = self.prev_close(code, d)
            if d == today:
                sess = self.session(d)
                if sess is None or at_k < sess[0]:
                    continue
                t = self.day_ticks(code, d)
                k = t.index_at(_sec_of(at_k))
                if k == 0:
                    out.append(DailyBar(d, prev, prev, prev, prev, 0, 0, prev))
                else:
                    i = k - 1
                    out.append(
                        DailyBar(
                            d,
                            int(t.price[0]),
                            int(t.high[i]),
                            int(t.low[i]),
                            int(t.price[i]),
                            int(t.acml_vol[i]),
                            int(t.acml_value[i]),
                            prev,
                        )
                    )
            else:
                s = self._summary(idx, d)
                out.append(DailyBar(d, s.open, s.high, s.low, s.close, s.volume, s.value, prev))
            if len(out) == n:
                break
        return out

    def day_volume(self, code: str, d: date) -> int:
        """Full-day volume of trading day d (0 on a closed day)."""
        if not self.is_trading_day(d):
            return 0
        return self._summary(self._idx(code), d).volume

    # --- wire records -----------------------------------------------------------------------------
    def trade_record(self, ticks: DayTicks, i: int) -> list[str]:
        """The 46 H0STCNT0 fields for tick i (47 with MARKET_CLS_CODE '2' when fields47)."""
        n = len(ticks)
        if not 0 <= i < n:
            raise IndexError(f"tick {i} out of range for {ticks.code} on {ticks.day} ({n} ticks)")
        code, d = ticks.code, ticks.day
        idx = self._idx(code)
        lst = self.listings[idx]
        prev = ticks.prev_close
        lower, upper = price_limits(prev)
        price = int(ticks.price[i])
        opn, high, low = int(ticks.price[0]), int(ticks.high[i]), int(ticks.low[i])
        vol, value = int(ticks.acml_vol[i]), int(ticks.acml_value[i])
        buy_cnt, sell_cnt = int(ticks.buy_cnt[i]), int(ticks.sell_cnt[i])
        buy_qty, sell_qty = int(ticks.buy_qty[i]), int(ticks.sell_qty[i])
        sec = int(ticks.sec[i])
        book = self._book(idx, ticks, i + 1, lower, upper)
        pday = self._prev_day(d)
        if pday is not None:
            prdy_vol = self.day_volume(code, pday)
            pt = self.day_ticks(code, pday)
            k = pt.index_at(sec)
            prdy_same = int(pt.acml_vol[k - 1]) if k else 0
        else:
            prdy_vol = prdy_same = 0
        rec = [
            code,
            hhmmss(sec),
            str(price),
            change_sign(price, prev, lower, upper),
            str(price - prev),
            ratio_2dp(price - prev, prev, 100),
            ratio_2dp(value, vol),
            str(opn),
            str(high),
            str(low),
            str(book.ask_prices[0]),
            str(book.bid_prices[0]),
            str(int(ticks.qty[i])),
            str(vol),
            str(value),
            str(sell_cnt),
            str(buy_cnt),
            str(buy_cnt - sell_cnt),
            ratio_2dp(buy_qty, sell_qty, 100),
            str(sell_qty),
            str(buy_qty),
            str(int(ticks.side[i])),
            ratio_2dp(buy_qty, buy_qty + sell_qty, 100),
            ratio_2dp(vol, prdy_vol, 100),
            hhmmss(int(ticks.sec[0])),
            change_sign(price, opn),
            str(price - opn),
            hhmmss(int(ticks.sec[ticks.high_index(i)])),
            change_sign(price, high),
            str(price - high),
            hhmmss(int(ticks.sec[ticks.low_index(i)])),
            change_sign(price, low),
            str(price - low),
            d.strftime("%Y%m%d"),
            "20",
            "N",
            str(book.ask_sizes[0]),
            str(book.bid_sizes[0]),
            str(book.total_ask),
            str(book.total_bid),
            ratio_2dp(vol, lst.listed_shares, 100),
            str(prdy_same),
            ratio_2dp(vol, prdy_same, 100),
            "0",
            "",
            str(opn),
        ]
        assert len(rec) == len(H0STCNT0_FIELDS)
        if self.fields47:
            rec.append("2")
        return rec

    def orderbook_record(self, code: str, at: datetime) -> list[str]:
        """The 59 H0STASP0 fields for `code` at `at` (the book after the last trade at or before)."""
        idx, t, n, at_k = self._state(code, at)
        lower, upper = price_limits(t.prev_close)
        book = self._book(idx, t, n, lower, upper)
        before = self._book(idx, t, n - 1, lower, upper) if n > 0 else book
        vol = int(t.acml_vol[n - 1]) if n else 0
        rec = (
            [code, hhmmss(_sec_of(at_k)), "0"]
            + [str(p) for p in book.ask_prices]
            + [str(p) for p in book.bid_prices]
            + [str(s) for s in book.ask_sizes]
            + [str(s) for s in book.bid_sizes]
            + [str(book.total_ask), str(book.total_bid), "0", "0"]
            + ["0", "0", "0", "0", "3", "0.00"]
            + [str(vol)]
            + [str(book.total_ask - before.total_ask), str(book.total_bid - before.total_bid), "0", "0"]
            + ["0"]
        )
        assert len(rec) == len(H0STASP0_FIELDS)
        return rec

    # --- rankings ---------------------------------------------------------------------------------
    def volume_rank(self, at: datetime, *, market: str | None = None, n: int = 30) -> list[Quote]:
        """Common and preferred stocks by cumulative volume at `at`, largest first (ties by code)."""
        wanted = {None: None, "0000": None, "0001": "kospi", "1001": "kosdaq"}
        if market not in wanted:
            raise ValueError(f"market must be None, '0000', '0001' or '1001', got {market!r}")
        mkt = wanted[market]
        quotes = [self.quote(x.code, at) for x in self.listings if x.is_stock and (mkt is None or x.market == mkt)]
        quotes.sort(key=lambda q: (-q.acml_vol, q.code))
        return quotes[: max(n, 0)]
