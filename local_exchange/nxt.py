"""NXT's own trades: one lazily generated stream per (member, day), following KRX's price path.

NXT is a second book on the same listings, so its prices track KRX's: a trade at an instant when KRX
has already traded is priced at KRX's last price, nudged by at most one tick; before KRX's first trade
(NXT's pre-market) the price walks from the previous close towards KRX's open, after KRX's last trade
(NXT's after-market) it wanders a few ticks around KRX's close. Quantities are drawn from KRX's own
trade sizes, and the trade count is NXT_SHARE of KRX's, so NXT carries about that share of the volume.
KRX's ticks are only read, never changed, and nothing here runs unless NX or UN is asked for.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np

from local_exchange.ticks import DayTicks, day_from_trades, empty_day, price_limits, round_to_grid_array, tick_sizes
from local_exchange.venues import venues_for
from observer_resources.calendar.market import MarketCalendar

NXT_SHARE = 0.12  # NXT's trades (and so volume) as a share of the member's KRX day
_TAG_NXT = 3  # RNG stream tag, distinct from the price model's chain (1) and day (2) tags


def _continuous_windows(mode: str, d: date) -> list[tuple[int, int]]:
    """NXT's continuous phases of day d as [start, end) seconds of the day."""
    out = []
    for ph in MarketCalendar(mode).phases(d):
        if ph.venue == "NXT" and ph.kind == "continuous":
            s, e = ph.start, ph.end
            out.append((s.hour * 3600 + s.minute * 60 + s.second, e.hour * 3600 + e.minute * 60 + e.second))
    return out


def is_trading(market: Any, code: str, d: date) -> bool:
    """Whether `code` trades on NXT on day d (a member, not halted there, not halted at all)."""
    member, halted = venues_for(market).status(code, d)
    return member and not halted and not market.listings[market._idx(code)].halted


def generate_nxt_day(market: Any, code: str, d: date) -> DayTicks:
    """The member's NXT trades of day d (empty for a non-member, an NXT halt or a closed day)."""
    idx = market._idx(code)
    krx = market.day_ticks(code, d)
    prev = krx.prev_close
    if not market.is_trading_day(d) or not is_trading(market, code, d) or len(krx) == 0:
        return empty_day(code, d, prev)
    windows = _continuous_windows(market.clock_mode, d)
    total = sum(e - s for s, e in windows)
    if total <= 0:
        return empty_day(code, d, prev)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([market._seed32, idx, d.toordinal(), _TAG_NXT])))
    expected = NXT_SHARE * len(krx)
    secs = []
    for s, e in windows:
        k = int(rng.poisson(expected * (e - s) / total))
        secs.append(rng.integers(s, e, size=k))
    sec = np.sort(np.concatenate(secs)).astype(np.int32)
    n = len(sec)
    if n == 0:
        return empty_day(code, d, prev)
    lower, upper = price_limits(prev)
    j = np.searchsorted(krx.sec, sec, side="right")  # KRX trades at or before each NXT trade
    first_s, last_s = int(krx.sec[0]), int(krx.sec[-1])
    kopen, kclose = float(krx.price[0]), float(krx.price[-1])
    base = np.where(j > 0, krx.price[np.maximum(j - 1, 0)], prev).astype(np.float64)
    pre = j == 0  # before KRX's first trade: walk from the previous close towards KRX's open
    if pre.any():
        w = np.clip((sec[pre] - (first_s - 3 * 3600)) / (3 * 3600), 0.0, 1.0)
        base[pre] = prev + (kopen - prev) * w
    post = sec > last_s  # after KRX's last trade: a few ticks around KRX's close
    if post.any():
        base[post] = kclose
    ticks = tick_sizes(base)
    noise = rng.integers(-1, 2, size=n)
    noise[post] = np.clip(np.cumsum(rng.integers(-1, 2, size=int(post.sum()))), -3, 3)
    price = round_to_grid_array(np.maximum(base, 1.0)) + noise * ticks
    price = np.clip(price, lower, upper).astype(np.int64)
    qty = rng.choice(krx.qty, size=n).astype(np.int64)
    side = np.where(rng.random(n) < 0.5, 1, 5).astype(np.int8)
    return day_from_trades(code, d, prev, sec, price, qty, side)
