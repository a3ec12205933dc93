"""Wire formatting for the sim: exact 2-dp ratios, sign codes and the deterministic order book.

The H0STCNT0 identities (VWAP = value / volume, CTTR = buy / sell x 100, ...) must hold exactly
as the golden record's arithmetic does, so ratios are computed in integers and rounded half away
from zero — never through binary floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from local_exchange.ticks import DayTicks, grid_above, grid_below, price_limits
from observer_resources.kis.protocol import STATUS_EXCH_CODES, STATUS_KIND_CODES, STATUS_PHASE_CODES

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


def make_book(*, seed: int, index: int, ticks: DayTicks, n: int, lower: int, upper: int, unit: int) -> Book:
    """The book after the n-th trade of a tape's day (n = 0: before any trade, around the previous close).

    Best prices follow the last trade: a buy-initiated trade lifted the ask (ask1 = price), a
    sell-initiated one hit the bid (bid1 = price). Sizes are a hash of (seed, symbol, day, n,
    level), so every reader of the same instant sees the same book.
    """
    if n == 0:
        last_price, last_side = ticks.prev_close, 5
    else:
        last_price, last_side = int(ticks.price[n - 1]), int(ticks.side[n - 1])
    ordinal = ticks.day.toordinal()
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


# --- market status and expected price (docs/local-exchange.md "WebSocket") -----------------------------------------
# the status feeds' code values live in the protocol module, shared with the collector that reads them
PHASE_CODES = STATUS_PHASE_CODES
KIND_CODES = STATUS_KIND_CODES
EXCH_CODES = STATUS_EXCH_CODES


def status_record(
    code: str, *, venue: str, phase: str | None, kind: str | None, next_phase: str | None, halted: bool, width: int
) -> list[str]:
    """One market-status record (11 fields; 10 for the unified feed, which drops the code)."""
    rec = [
        code,
        "Y" if halted else "N",
        "",
        PHASE_CODES.get(phase, "99"),
        PHASE_CODES.get(next_phase, "99"),
        KIND_CODES.get(kind, "9"),
        "0",
        "00",
        "N",
        "N",
        EXCH_CODES.get(venue, "0"),
    ]
    return rec[len(rec) - width :]


def expected_record(
    code: str,
    *,
    day_yyyymmdd: str,
    sec: int,
    price: int,
    prev_close: int,
    volume: int,
    phase: str,
    halted: bool,
    width: int,
) -> list[str]:
    """One expected-price record in the trade layout (45 fields on KRX, 46 with VI_STND_PRC elsewhere).

    The sim's auction has no order book of its own: the expected price is the last trade price (the previous
    close before the day's first trade) and the expected volume is the day's volume so far; fields an auction
    has no value for are zero."""
    diff = price - prev_close
    rec = ["0"] * 46
    rec[0] = code
    rec[1] = hhmmss(sec)
    rec[2] = str(price)
    rec[3] = change_sign(price, prev_close)
    rec[4] = str(diff)
    rec[5] = ratio_2dp(diff, prev_close, 100)
    rec[6] = str(price)
    rec[12] = str(volume)
    rec[13] = str(volume)
    for i in (18, 22, 23, 40, 42):
        rec[i] = "0.00"
    rec[33] = day_yyyymmdd
    rec[34] = PHASE_CODES.get(phase, "99")
    rec[35] = "Y" if halted else "N"
    rec[44] = KIND_CODES["auction"]
    rec[45] = str(prev_close)
    return rec[:width]


# --- trade and book layouts shared by every venue (docs/local-exchange.md "WebSocket") ----------------------------
def trade_fields(
    ticks: DayTicks, i: int, *, book: Book, listed_shares: int, prdy_vol: int, prdy_same: int
) -> list[str]:
    """The 46 fields of the H0STCNT0 layout for tick i of one venue's tape, from that tape and that venue's book.

    ``Market.trade_record`` builds KRX's records with it too, so the NXT and unified feeds keep every §8.4 identity
    over their own cumulative volume, value, counts and OHLC exactly as H0STCNT0 does."""
    prev = ticks.prev_close
    lower, upper = price_limits(prev)
    price = int(ticks.price[i])
    opn, high, low = int(ticks.price[0]), int(ticks.high[i]), int(ticks.low[i])
    vol, value = int(ticks.acml_vol[i]), int(ticks.acml_value[i])
    buy_cnt, sell_cnt = int(ticks.buy_cnt[i]), int(ticks.sell_cnt[i])
    buy_qty, sell_qty = int(ticks.buy_qty[i]), int(ticks.sell_qty[i])
    return [
        ticks.code,
        hhmmss(int(ticks.sec[i])),
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
        ticks.day.strftime("%Y%m%d"),
        "20",
        "N",
        str(book.ask_sizes[0]),
        str(book.bid_sizes[0]),
        str(book.total_ask),
        str(book.total_bid),
        ratio_2dp(vol, listed_shares, 100),
        str(prdy_same),
        ratio_2dp(vol, prdy_same, 100),
        "0",
        "",
        str(opn),
    ]


def orderbook_fields(code: str, sec: int, book: Book, before: Book, acml_vol: int) -> list[str]:
    """The 59 fields of the H0STASP0 layout (``Market.orderbook_record`` builds KRX's with it): the book, its totals, the
    venue's cumulative volume and the change of the totals since the book before the last trade."""
    return (
        [code, hhmmss(sec), "0"]
        + [str(x) for x in book.ask_prices]
        + [str(x) for x in book.bid_prices]
        + [str(x) for x in book.ask_sizes]
        + [str(x) for x in book.bid_sizes]
        + [str(book.total_ask), str(book.total_bid), "0", "0"]
        + ["0", "0", "0", "0", "3", "0.00"]
        + [str(acml_vol)]
        + [str(book.total_ask - before.total_ask), str(book.total_bid - before.total_bid), "0", "0"]
        + ["0"]
    )


def midpoint_price(book: Book | None) -> int:
    """(best ask + best bid) / 2 in whole won, rounded down (the sim's choice); 0 without a live two-sided book."""
    if book is None or not book.ask_prices[0] or not book.bid_prices[0]:
        return 0
    return (book.ask_prices[0] + book.bid_prices[0]) // 2


def midpoint_fields(krx: Book | None, nxt: Book | None) -> list[str]:
    """KMID_PRC, KMID_TOTAL_RSQN, KMID_CLS_CODE, NMID_PRC, NMID_TOTAL_RSQN, NMID_CLS_CODE.

    KIS documents no semantics; the sim's: the midpoint of KRX's and of NXT's live book (``None`` = that venue is
    not trading the code now), no resting midpoint orders (quantity 0, class code "0")."""
    return [str(midpoint_price(krx)), "0", "0", str(midpoint_price(nxt)), "0", "0"]
