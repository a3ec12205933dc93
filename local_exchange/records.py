"""Wire formatting for the sim: exact 2-dp ratios, sign codes and the deterministic order book.

The H0STCNT0 identities (VWAP = value / volume, CTTR = buy / sell x 100, ...) must hold exactly
as the golden record's arithmetic does, so ratios are computed in integers and rounded half away
from zero — never through binary floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from local_exchange.ticks import grid_above, grid_below

_M64 = (1 << 64) - 1
BOOK_LEVELS = 10
_INV53 = 1.0 / (1 << 53)


def ratio_2dp(num: int, den: int, scale: int = 1) -> str:
    """num * scale / den to 2 decimals, half away from zero; '0.00' when den is 0."""
    if den == 0:
        return "0.00"
    v = num * scale * 100
    neg = (v < 0) != (den < 0)
    v, d = abs(v), abs(den)
    q = (2 * v + d) // (2 * d)
    s = f"{q // 100}.{q % 100:02d}"
    return f"-{s}" if neg and q else s


def change_sign(price: int, base: int, lower: int = 0, upper: int = 0) -> str:
    """PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down."""
    if upper and price >= upper and price > base:
        return "1"
    if lower and price <= lower and price < base:
        return "4"
    if price > base:
        return "2"
    if price < base:
        return "5"
    return "3"


def hhmmss(sec: int) -> str:
    h, rem = divmod(int(sec), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}{m:02d}{s:02d}"


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Book:
    """Ten-level order book; a level with price 0 does not exist (beyond the price limit)."""

    ask_prices: tuple[int, ...]
    bid_prices: tuple[int, ...]
    ask_sizes: tuple[int, ...]
    bid_sizes: tuple[int, ...]

    @property
    def total_ask(self) -> int:
        return sum(self.ask_sizes)

    @property
    def total_bid(self) -> int:
        return sum(self.bid_sizes)


EMPTY_BOOK = Book((0,) * BOOK_LEVELS, (0,) * BOOK_LEVELS, (0,) * BOOK_LEVELS, (0,) * BOOK_LEVELS)


def make_book(
    *, seed: int, index: int, ordinal: int, n: int, last_price: int, last_side: int, lower: int, upper: int, unit: int
) -> Book:
    """The book after the n-th trade of a day (n = 0: before any trade, around `last_price`).

    Best prices follow the last trade: a buy-initiated trade lifted the ask (ask1 = price), a
    sell-initiated one hit the bid (bid1 = price). Sizes are a hash of (seed, symbol, day, n,
    level), so every reader of the same instant sees the same book.
    """
    if last_side == 1:
        ask1, bid1 = last_price, grid_below(last_price)
    else:
        bid1, ask1 = last_price, grid_above(last_price)
    asks, bids = [], []
    p = ask1
    for _ in range(BOOK_LEVELS):
        asks.append(p if lower <= p <= upper else 0)
        p = grid_above(p)
    p = bid1
    for _ in range(BOOK_LEVELS):
        bids.append(p if lower <= p <= upper and p > 0 else 0)
        p = grid_below(p) if p > 1 else 0
    key = _mix(_mix(_mix(seed & _M64) ^ index) ^ ordinal) ^ (n & _M64)
    sizes = []
    for lvl in range(2 * BOOK_LEVELS):  # splitmix64 of key + level, inlined: this runs per quote
        x = (key + lvl + 0x9E3779B97F4A7C15) & _M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
        u = ((x ^ (x >> 31)) >> 11) * _INV53
        sizes.append(max(1, int(unit * (0.2 + 6.0 * u * u * u) + 0.5)))
    ask_sizes = tuple(s if px else 0 for s, px in zip(sizes[:BOOK_LEVELS], asks))
    bid_sizes = tuple(s if px else 0 for s, px in zip(sizes[BOOK_LEVELS:], bids))
    return Book(tuple(asks), tuple(bids), ask_sizes, bid_sizes)
