"""The local exchange's market: what the REST and WebSocket servers ask of the price model.

Both servers ask this one object, so a price seen over REST agrees with the trade stream at the same
simulated instant (§10.2). The prices themselves come from price_model.py; this module adds the
queries over time (minute and daily bars, day summaries), the wire records and the volume ranking.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Literal

import numpy as np

from local_exchange import history, nxt
from local_exchange.listings import Listing
from local_exchange.price_model import PriceModel, Quote, sec_of, to_kst
from local_exchange.records import orderbook_fields, trade_fields
from local_exchange.ticks import DayTicks, day_from_trades, price_limits
from observer_resources.calendar import CalendarRangeError
from observer_resources.kis.protocol import H0STASP0_FIELDS, H0STCNT0_FIELDS

__all__ = ["Bar", "DailyBar", "DayTicks", "Listing", "Market", "Quote"]

_SUMMARY_CACHE_MAX = 500_000
_VENUE_CACHE_MAX = 256  # NXT days and unified merges kept; only NX/UN requests and feeds make them
VENUES = ("KRX", "NXT", "UN")


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


def daily_bar_of(ticks: DayTicks, i: int, prev_close: int) -> DailyBar:
    """The day's bar as of tick i of a tape: open, running extremes, last price and cumulative volume and value."""
    return DailyBar(
        ticks.day,
        int(ticks.price[0]),
        int(ticks.high[i]),
        int(ticks.low[i]),
        int(ticks.price[i]),
        int(ticks.acml_vol[i]),
        int(ticks.acml_value[i]),
        prev_close,
    )


def minute_bars_of(ticks: DayTicks, minutes: np.ndarray, n: int) -> list[Bar]:
    """One bar per minute start in ``minutes`` (seconds of the day, ascending) over the first n ticks; an empty
    minute carries the last close, or the previous close before the first trade. Shared by every venue's charts."""
    sec = ticks.sec[:n]
    price = ticks.price[:n]
    prev = ticks.prev_close
    lo = np.searchsorted(sec, minutes, side="left")
    hi = np.searchsorted(sec, minutes + 60, side="left")
    acml_end = np.where(hi > 0, ticks.acml_vol[np.maximum(hi - 1, 0)] if n else 0, 0)
    acml_start = np.where(lo > 0, ticks.acml_vol[np.maximum(lo - 1, 0)] if n else 0, 0)
    value_end = np.where(hi > 0, ticks.acml_value[np.maximum(hi - 1, 0)] if n else 0, 0)
    close = np.where(hi > 0, price[np.maximum(hi - 1, 0)] if n else prev, prev)
    nonempty = hi > lo
    opn, high, low = close.copy(), close.copy(), close.copy()
    if nonempty.any():
        starts = lo[nonempty]
        if len(minutes) < 2 or bool((np.diff(minutes) == 60).all()):
            # contiguous minutes: each nonempty minute's trades run to the next one's first trade
            opn[nonempty] = price[starts]
            high[nonempty] = np.maximum.reduceat(price, starts)
            low[nonempty] = np.minimum.reduceat(price, starts)
        else:  # the minutes skip a break: bound each minute by its own end
            for j in np.flatnonzero(nonempty).tolist():
                seg = price[int(lo[j]) : int(hi[j])]
                opn[j], high[j], low[j] = seg[0], seg.max(), seg.min()
    d = ticks.day
    return [
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
        for j, m in enumerate(minutes.tolist())
    ]


def _merge(a: DayTicks, b: DayTicks) -> DayTicks:
    """Two venues' tapes of one day as one, by time, ``a``'s trade first within a second."""
    order = np.argsort(np.concatenate([a.sec, b.sec]), kind="stable")

    def cat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.concatenate([x, y])[order]

    return day_from_trades(
        a.code, a.day, a.prev_close, cat(a.sec, b.sec), cat(a.price, b.price), cat(a.qty, b.qty), cat(a.side, b.side)
    )


class Market(PriceModel):
    """Deterministic synthetic KRX market: the price model plus bars, day summaries, wire records and rankings."""

    def __init__(
        self,
        *,
        seed: int = 0,
        listings: int = 2600,
        clock_mode: Literal["krx", "open"] = "krx",
        fields47: bool = False,
        cache_mb: int = 400,
        activity: float = 1.0,
    ) -> None:
        super().__init__(seed=seed, listings=listings, clock_mode=clock_mode, cache_mb=cache_mb, activity=activity)
        self.fields47 = bool(fields47)
        self._summaries: OrderedDict[tuple[int, int], _Summary] = OrderedDict()
        self._venues: OrderedDict[tuple[str, int, int], DayTicks] = OrderedDict()  # (venue, listing, day)

    def clear_cache(self) -> None:
        with self._lock:
            self._summaries.clear()
            self._venues.clear()
        super().clear_cache()

    # --- day summaries ----------------------------------------------------------------------------
    def _summary(self, idx: int, d: date) -> _Summary:
        """Full-day OHLCV of a trading day, without keeping its ticks in the cache."""
        key = (idx, d.toordinal())
        with self._lock:
            s = self._summaries.get(key)
        if s is not None:
            return s
        if d < history.TICKS_FROM and self.is_trading_day(d) and not self.listings[idx].halted:
            s = self._history_summary(idx, d)  # the deep past: never from ticks (local_exchange/history.py)
        else:
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

    def _history_summary(self, idx: int, d: date) -> _Summary:
        """A day of the deep past without its ticks (local_exchange/history.py)."""
        ref = self._summary(idx, history.REFERENCE_DAY)
        pos = self._pos_before(d)
        chain = self._chain(idx)
        o, h, lo, c, v, val, n = history.history_bar(
            self._seed32,
            idx,
            d,
            prev=int(chain[pos]),
            close=int(chain[pos + 1]),
            volatility=self.listings[idx].volatility,
            ref_volume=ref.volume,
            ref_trades=ref.trades,
        )
        return _Summary(o, h, lo, c, v, val, n)

    def _prev_day(self, d: date) -> date | None:
        try:
            p = self.previous_trading_day(d)
        except CalendarRangeError:
            return None
        return p if p >= self._first else None

    # --- bars -------------------------------------------------------------------------------------
    def minute_bars(self, code: str, d: date, until: datetime) -> list[Bar]:
        """Oldest first, one bar per minute from the session's first minute through the minute
        containing `until` (clamped to the session end); empty minutes carry the last close."""
        sess = self.session(d)
        if sess is None:
            return []
        u = to_kst(until)
        start_s, close_s = sec_of(sess[0]), sec_of(sess[1])
        if u.date() < d:
            return []
        u_s = close_s if u.date() > d else min(sec_of(u), close_s)
        if u_s < start_s:
            return []
        t = self.day_ticks(code, d)
        minutes = np.arange(start_s // 60 * 60, u_s // 60 * 60 + 1, 60, dtype=np.int64)
        return minute_bars_of(t, minutes, t.index_at(u_s))

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
        at_k = to_kst(as_of)
        today = at_k.date()
        out: list[DailyBar] = []
        for d in self._trading_days_upto(min(end, today), n + 1):
            prev = self.prev_close(code, d)
            if d == today:
                sess = self.session(d)
                if sess is None or at_k < sess[0]:
                    continue
                t = self.day_ticks(code, d)
                k = t.index_at(sec_of(at_k))
                if k == 0:
                    out.append(DailyBar(d, prev, prev, prev, prev, 0, 0, prev))
                else:
                    out.append(daily_bar_of(t, k - 1, prev))
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
        lower, upper = price_limits(ticks.prev_close)
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
        rec = trade_fields(
            ticks, i, book=book, listed_shares=self.listings[idx].listed_shares, prdy_vol=prdy_vol, prdy_same=prdy_same
        )
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
        rec = orderbook_fields(code, sec_of(at_k), book, before, vol)
        assert len(rec) == len(H0STASP0_FIELDS)
        return rec

    # --- NXT and the unified view ------------------------------------------------------------------
    def _venue_cached(self, venue: str, code: str, d: date, make: Callable[[], DayTicks]) -> DayTicks:
        key = (venue, self._idx(code), d.toordinal())
        with self._lock:
            t = self._venues.get(key)
            if t is not None:
                self._venues.move_to_end(key)
                return t
        t = make()
        with self._lock:
            self._venues[key] = t
            while len(self._venues) > _VENUE_CACHE_MAX:
                self._venues.popitem(last=False)
        return t

    def nxt_ticks(self, code: str, d: date) -> DayTicks:
        """The member's NXT trades of day d (empty for a non-member); generated on first ask, LRU-kept."""
        return self._venue_cached("NXT", code, d, lambda: nxt.generate_nxt_day(self, code, d))

    def venue_ticks(self, code: str, d: date, venue: str) -> DayTicks:
        """One venue's trades of day d: KRX (the market's own ticks), NXT, or UN (both merged by time,
        KRX first within a second, with cumulative volume and value over both; merged once, LRU-kept)."""
        if venue == "KRX":
            return self.day_ticks(code, d)
        if venue == "NXT":
            return self.nxt_ticks(code, d)
        if venue != "UN":
            raise ValueError(f"venue must be one of {VENUES}, got {venue!r}")
        b = self.nxt_ticks(code, d)
        a = self.day_ticks(code, d)
        if not len(b):
            return a
        return self._venue_cached("UN", code, d, lambda: _merge(a, b))

    def venue_quote(self, code: str, at: datetime, venue: str) -> Quote:
        """The quote on one venue at `at`; KRX is `quote` itself. The book fields stay KRX's (the exchange
        models one book per listing)."""
        q = self.quote(code, at)
        if venue == "KRX":
            return q
        t = self.venue_ticks(code, q.day, venue)
        at_k = to_kst(at)
        n = t.index_at(sec_of(at_k)) if at_k.date() == q.day else len(t)
        if n == 0:
            return replace(
                q, price=q.prev_close, open=0, high=0, low=0, acml_vol=0, acml_value=0, trades=0, last_trade_at=None
            )
        i = n - 1
        return replace(
            q,
            price=int(t.price[i]),
            open=int(t.price[0]),
            high=int(t.high[i]),
            low=int(t.low[i]),
            acml_vol=int(t.acml_vol[i]),
            acml_value=int(t.acml_value[i]),
            trades=n,
            last_trade_at=datetime.combine(t.day, time(0), at_k.tzinfo) + timedelta(seconds=int(t.sec[i])),
        )

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
