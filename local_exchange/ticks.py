"""One symbol's trading day as arrays: the KRX price grid, price limits and the intraday model.

Everything here is a pure function of its arguments (the RNG comes in from the caller), so a day
is the same whatever else was generated before it — the property that makes the sim replayable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from observer_resources.kis.protocol import krx_tick_size

# KRX tick table (protocol.krx_tick_size), as band lower bounds and increments. Every band bound is
# a multiple of the next band's increment, so flooring/rounding inside a band never leaves the grid.
_BOUNDS = np.array([0, 2_000, 5_000, 20_000, 50_000, 200_000, 500_000], dtype=np.int64)
_TICKS = np.array([1, 5, 10, 50, 100, 500, 1_000], dtype=np.int64)
_BOUNDS_F = _BOUNDS.astype(np.float64)

CLOSING_AUCTION_S = 10 * 60  # continuous trading stops 10 minutes before the closing print (15:20)
OPEN_MODE_RATE_SCALE = 22_800 / 86_399  # open mode: same trades per day as a KRX day, spread over 24 h

# Intraday model constants.
_BURSTS_PER_KRX_DAY = 4.0
_BURST_LEN = (60, 300)  # seconds, uniform
_BURST_EXTRA = 9.0  # a burst runs at 10x the base intensity
# The auction rushes on top of the U-shaped day, in units of the quiet midday intensity, decaying over _RUSH_S
# seconds: the first minute after 09:00 runs at ~5x the day's mean rate, the last minute before 15:20 at ~3.5x.
_OPEN_RUSH = 5.0
_CLOSE_RUSH = 3.0
_RUSH_S = 180.0
_TYPICAL_TRADE_KRW = 1_200_000.0
_DENSE_MIN_TRADES = 2_000  # above this many expected trades, draw per-second Poisson counts


def tick_sizes(prices: np.ndarray) -> np.ndarray:
    """Vectorised krx_tick_size."""
    idx = np.searchsorted(_BOUNDS_F, prices, side="right")
    idx -= 1
    return _TICKS[idx]


def floor_to_grid(price: float) -> int:
    p = int(math.floor(price))
    return p - p % krx_tick_size(p)


def ceil_to_grid(price: float) -> int:
    p = int(math.ceil(price))
    t = krx_tick_size(p)
    r = p % t
    return p if r == 0 else p + (t - r)


def round_to_grid(price: float) -> int:
    t = krx_tick_size(int(price))
    return max(1, int(round(price / t)) * t)


def round_to_grid_array(prices: np.ndarray) -> np.ndarray:
    """Nearest grid price for each of `prices` (float, >= 1)."""
    t = tick_sizes(prices)
    out = np.rint(prices / t).astype(np.int64)
    out *= t
    np.maximum(out, 1, out=out)
    return out


def grid_above(price: int) -> int:
    """The next price on the grid above `price` (itself on the grid)."""
    return price + krx_tick_size(price)


def grid_below(price: int) -> int:
    """The next price on the grid below `price` (itself on the grid); 0 below 1 KRW."""
    return price - krx_tick_size(price - 1) if price > 1 else 0


def price_limits(base: int) -> tuple[int, int]:
    """(lower, upper) daily limits around base price `base`, the KRX way.

    KRX computes the width as 30 % of the base floored to the base's tick, then floors
    base + width to the tick of the result (KRX 가격제한폭 rule); base - width is then always on the
    grid because the increments divide one another. This is "prev close +-30 %, floored/ceiled to
    the grid", up to the base-tick flooring of the width.
    """
    t = krx_tick_size(base)
    width = int(base * 3 // 10) // t * t  # integer arithmetic: no 0.3-float surprises
    upper = floor_to_grid(base + width)
    lower = max(base - width, 1)
    return lower, upper


@dataclass(frozen=True, eq=False)
class DayTicks:
    """One symbol's whole trading day, arrays in time order, equal length.

    dtypes: sec int32; price, qty, acml_vol, acml_value, buy_qty, sell_qty int64; side int8
    (1 buy-initiated, 5 sell-initiated); buy_cnt, sell_cnt, high, low int32 (they fit; it keeps
    a full day of the whole market under the memory budget).
    """

    code: str
    day: date
    prev_close: int
    sec: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray
    acml_vol: np.ndarray
    acml_value: np.ndarray
    buy_cnt: np.ndarray
    sell_cnt: np.ndarray
    buy_qty: np.ndarray
    sell_qty: np.ndarray
    high: np.ndarray
    low: np.ndarray

    def index_at(self, sec: int) -> int:
        """Number of ticks with self.sec <= sec."""
        return int(np.searchsorted(self.sec, sec, side="right"))

    def __len__(self) -> int:
        return int(self.sec.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes
            for a in (
                self.sec,
                self.price,
                self.qty,
                self.side,
                self.acml_vol,
                self.acml_value,
                self.buy_cnt,
                self.sell_cnt,
                self.buy_qty,
                self.sell_qty,
                self.high,
                self.low,
            )
        )

    def high_index(self, i: int) -> int:
        """Index of the trade that first set the running high in force after tick i."""
        return int(np.searchsorted(self.high, self.high[i], side="left"))

    def low_index(self, i: int) -> int:
        """Index of the trade that first set the running low in force after tick i."""
        n = len(self)
        return n - int(np.searchsorted(self.low[::-1], self.low[i], side="right"))


def day_from_trades(
    code: str, day: date, prev_close: int, sec: np.ndarray, price: np.ndarray, qty: np.ndarray, side: np.ndarray
) -> DayTicks:
    """A DayTicks from its trades in time order (price and qty int64, side 1 buy- / 5 sell-initiated): the running
    totals, counts and extremes derived, as every tape (NXT's, the unified merge) needs them."""
    is_buy = side == 1
    acml_vol = qty.cumsum()
    acml_value = (price * qty).cumsum()
    buy_cnt = is_buy.cumsum(dtype=np.int32)
    sell_cnt = np.arange(1, len(sec) + 1, dtype=np.int32)
    sell_cnt -= buy_cnt
    buy_qty = (qty * is_buy).cumsum()
    sell_qty = acml_vol - buy_qty
    high = np.maximum.accumulate(price).astype(np.int32)
    low = np.minimum.accumulate(price).astype(np.int32)
    for a in (sec, price, qty, side, acml_vol, acml_value, buy_cnt, sell_cnt, buy_qty, sell_qty, high, low):
        a.setflags(write=False)  # a day is cached and shared: nothing may change it in place
    return DayTicks(
        code,
        day,
        prev_close,
        sec,
        price,
        qty,
        side,
        acml_vol,
        acml_value,
        buy_cnt,
        sell_cnt,
        buy_qty,
        sell_qty,
        high,
        low,
    )


def empty_day(code: str, day: date, prev_close: int) -> DayTicks:
    i32, i64 = np.zeros(0, np.int32), np.zeros(0, np.int64)
    return DayTicks(code, day, prev_close, i32, i64, i64, np.zeros(0, np.int8), i64, i64, i32, i32, i64, i64, i32, i32)


@dataclass(frozen=True)
class Shape:
    """A session's shape in seconds since midnight: opening print, continuous window, closing print."""

    open_s: int
    cont_end: int  # continuous trades at seconds in [open_s, cont_end)
    close_s: int
    flat: bool  # open mode: no U-shaped intraday profile, rates scaled to a KRX day's count

    @property
    def cont_len(self) -> int:
        return self.cont_end - self.open_s


@lru_cache(maxsize=32)
def _profile(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Per-second intensity weights (mean 1) over the continuous window, and their CDF."""
    n = shape.cont_len
    if shape.flat:
        w = np.ones(n)
    else:
        t = np.arange(n) + 0.5
        x = t / n
        w = 1.0 + 2.0 * np.exp(-x / 0.06) + 1.2 * np.exp(-(1.0 - x) / 0.08)  # U-shaped day
        # the rush right after the opening cross and before the closing auction: minutes, not the hour-long U
        w += _OPEN_RUSH * np.exp(-t / _RUSH_S) + _CLOSE_RUSH * np.exp(-(n - t) / _RUSH_S)
    w = w * (n / w.sum())
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    w.setflags(write=False)
    cdf.setflags(write=False)
    return w, cdf


def generate_day(
    rng: np.random.Generator,
    *,
    code: str,
    day: date,
    shape: Shape,
    prev_close: int,
    close: int,
    activity: float,
    volatility: float,
) -> DayTicks:
    """Trades of one day: opening print, Poisson continuous trading, closing print at `close`.

    Trade times: per-second Poisson with a U-shaped profile, a rush of a few minutes after the opening cross and
    before the closing auction, plus a few 1-5 minute bursts at 10x.
    Prices: a Brownian bridge (in log price, over trade index) from the open (previous close times
    a small gap) to the chain's close; each trade prints at the ask (buy-initiated) or the bid
    (sell-initiated) around that path, on the KRX grid, inside the day's limits.
    """
    lower, upper = price_limits(prev_close)
    n_len = shape.cont_len
    rate = activity * (OPEN_MODE_RATE_SCALE if shape.flat else 1.0)
    weights, cdf = _profile(shape)

    # --- when -----------------------------------------------------------------------------------
    k_mean = _BURSTS_PER_KRX_DAY * n_len / 22_800
    lo_len, hi_len = _BURST_LEN
    base = rate / (1.0 + _BURST_EXTRA * k_mean * (lo_len + hi_len) / 2 / n_len)  # E[trades] = rate*len
    n_bursts = int(rng.poisson(k_mean))
    u = rng.random(2 * n_bursts + 4)
    b_len = [lo_len + int(x * (hi_len - lo_len + 1)) for x in u[:n_bursts].tolist()]
    b_start = [int(x * max(n_len - ln, 1)) for x, ln in zip(u[n_bursts : 2 * n_bursts].tolist(), b_len)]
    gap_u, buy_p, auc_a, auc_b = u[2 * n_bursts :].tolist()
    if base * n_len >= _DENSE_MIN_TRADES:
        lam = weights * base
        for st, ln in zip(b_start, b_len):
            lam[st : st + ln] += _BURST_EXTRA * base
        offs = np.repeat(np.arange(n_len, dtype=np.int32), rng.poisson(lam))
    else:
        n_base = int(rng.poisson(base * n_len))
        k_b = rng.poisson([_BURST_EXTRA * base * ln for ln in b_len]).tolist() if n_bursts else []
        draws = rng.random(n_base + sum(k_b))
        offs = np.searchsorted(cdf, draws[:n_base], side="right").astype(np.int32)
        if k_b:
            pos, extra = n_base, [offs]
            for st, ln, k in zip(b_start, b_len, k_b):
                extra.append((draws[pos : pos + k] * ln).astype(np.int32) + st)
                pos += k
            offs = np.concatenate(extra)
        offs.sort()
        if offs.shape[0] and offs[-1] >= n_len:
            np.minimum(offs, n_len - 1, out=offs)
    n_cont = int(offs.shape[0])
    n = n_cont + 2
    sec = np.empty(n, np.int32)
    sec[0] = shape.open_s
    np.add(offs, shape.open_s, out=sec[1:-1])
    sec[-1] = shape.close_s

    # --- what price -----------------------------------------------------------------------------
    gap = 0.3 * volatility * _NORMAL_FROM_U(gap_u)
    open_px = min(max(round_to_grid(prev_close * math.exp(gap)), lower), upper)
    buy_share = 0.45 + 0.1 * buy_p  # a day leans a little to one side
    is_buy = rng.random(n) < buy_share
    side = np.where(is_buy, np.int8(1), np.int8(5))
    price = np.empty(n, np.int64)
    price[0] = open_px
    price[-1] = close
    if n_cont:
        walk = rng.normal(0.0, 0.8 * volatility / math.sqrt(n_cont + 1), size=n_cont + 1).cumsum()
        frac = np.arange(1, n_cont + 1, dtype=np.float64)
        frac /= n_cont + 1
        lo_, lc = math.log(open_px), math.log(close)
        logmid = frac * (lc - lo_ - walk[-1])
        logmid += walk[:-1]
        logmid += lo_
        mid = np.exp(logmid, out=logmid)
        np.maximum(mid, lower, out=mid)
        np.minimum(mid, upper, out=mid)
        t_lo = krx_tick_size(lower)
        t = t_lo if t_lo == krx_tick_size(upper) else tick_sizes(mid)  # usually one band all day
        q = np.divide(mid, t)
        np.floor(q, out=q)
        bid = q.astype(np.int64)
        bid *= t  # floor to the grid: band bounds are multiples of the next band's tick
        cont = price[1:-1]
        np.multiply(is_buy[1:-1], t, out=cont)
        cont += bid  # buy-initiated trades print at the ask (bid + one tick), the others at the bid
        np.minimum(cont, upper, out=cont)
        side[-1] = 1 if close >= int(cont[-1]) else 5
    else:
        side[-1] = 1 if close >= open_px else 5
    side[0] = 1 if open_px >= prev_close else 5
    is_buy[0], is_buy[-1] = side[0] == 1, side[-1] == 1

    # --- how much -------------------------------------------------------------------------------
    # Weibull(1/2)-shaped sizes (square of an exponential): mean `typical`, a long tail of blocks
    typical = max(1.0, _TYPICAL_TRADE_KRW / open_px)
    qty = rng.standard_exponential(n)
    np.square(qty, out=qty)
    qty *= typical / 2.0
    np.rint(qty, out=qty)
    np.maximum(qty, 1.0, out=qty)
    qty = qty.astype(np.int64)
    qty[0] *= 20 + int(auc_a * 100)  # the auctions print larger
    qty[-1] *= 20 + int(auc_b * 100)

    return day_from_trades(code, day, prev_close, sec, price, qty, side)


def _NORMAL_FROM_U(u: float) -> float:
    """A standard normal from one uniform (inverse CDF), so all small draws share one rng call."""
    u = min(max(u, 1e-12), 1 - 1e-12)
    return math.sqrt(2.0) * _erfinv(2.0 * u - 1.0)


def _erfinv(y: float) -> float:
    """Inverse error function: Giles' single-precision approximation refined by two Newton steps."""
    w = -math.log((1.0 - y) * (1.0 + y))
    if w < 5.0:
        w -= 2.5
        p = 2.81022636e-08
        for c in (
            3.43273939e-07,
            -3.5233877e-06,
            -4.39150654e-06,
            0.00021858087,
            -0.00125372503,
            -0.00417768164,
            0.246640727,
            1.50140941,
        ):
            p = c + p * w
    else:
        w = math.sqrt(w) - 3.0
        p = -0.000200214257
        for c in (
            0.000100950558,
            0.00134934322,
            -0.00367342844,
            0.00573950773,
            -0.0076224613,
            0.00943887047,
            1.00167406,
            2.83297682,
        ):
            p = c + p * w
    x = p * y
    for _ in range(2):
        x -= (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x
