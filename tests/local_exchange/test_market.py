"""The local exchange's synthetic market: listings, daily chain, ticks, wire records, bars, books.

Every identity is checked against arithmetic done here, independently of the sim's own helpers:
exact rationals for the 2-dp fields, the KRX tick table and price-limit rule re-implemented from
the regulation text, cumulative sums recomputed from the per-trade arrays.
"""

from __future__ import annotations

import random
import time
from datetime import date, datetime, timedelta
from fractions import Fraction

import numpy as np
import pytest

from local_exchange.listings import generate_listings
from local_exchange.market import Market
from local_exchange.records import ratio_2dp
from observer_resources.calendar import KST, previous_trading_day, session
from observer_resources.kis.protocol import H0STASP0_FIELDS, H0STCNT0_FIELDS, H0STCNT0_INDEX, krx_tick_size

F = H0STCNT0_INDEX
DAY = date(2026, 3, 10)  # an ordinary Tuesday
SEED = 3


def kst(d: date, h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, h, m, s, tzinfo=KST)


def sec_of(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def hhmmss(sec: int) -> str:
    return f"{sec // 3600:02d}{sec % 3600 // 60:02d}{sec % 60:02d}"


def krx_limits(base: int) -> tuple[int, int]:
    """KRX price-limit rule: width = 30 % of base cut to the base's tick; upper cut to its own tick."""
    t = krx_tick_size(base)
    width = (base * 3 // 10) // t * t
    up = base + width
    up -= up % krx_tick_size(up)
    return base - width, up


def on_grid(p: int) -> bool:
    return p > 0 and p % krx_tick_size(p) == 0


def isin_ok(isin: str) -> bool:
    digits = "".join(str(int(c, 36)) for c in isin[:-1])
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10 == int(isin[-1])


def close_to_2dp(text: str, exact: Fraction) -> bool:
    """`text` is `exact` with exactly two decimals, rounded half away from zero."""
    q = exact * 100
    r = int(abs(q) + Fraction(1, 2))  # floor(|q| + 1/2)
    want = r if q >= 0 else -r
    whole, _, frac = text.lstrip("-").partition(".")
    return len(frac) == 2 and whole.isdigit() and frac.isdigit() and Fraction(text) * 100 == want


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=SEED)


@pytest.fixture(scope="module")
def sample(market: Market) -> list[str]:
    """Busy, quiet and special symbols (preferred, ETF, ETN, SPAC, liquidation)."""
    by_activity = sorted((x for x in market.listings if not x.halted), key=lambda x: -x.activity)
    rng = random.Random(11)
    picks = [x.code for x in by_activity[:3]] + rng.sample([x.code for x in by_activity[100:]], 8)
    for pred in (
        lambda x: x.preferred,
        lambda x: x.group == "EF",
        lambda x: x.etp in (3, 4),
        lambda x: x.spac,
        lambda x: x.liquidation,
    ):
        picks.append(next(x.code for x in by_activity if pred(x) and x.code not in picks))
    return picks


# --- golden-record arithmetic -------------------------------------------------------------------


def test_ratio_formatting_reproduces_the_golden_record() -> None:
    # §8.4 golden record: VWAP, CTTR, PRDY_CTRT and PRDY_SMNS_HOUR_ACML_VOL_RATE from their inputs
    assert ratio_2dp(219853241700, 3052507) == "72023.83"
    assert ratio_2dp(1159996, 1366314, 100) == "84.90"
    assert ratio_2dp(71900 - 72000, 72000, 100) == "-0.14"
    assert ratio_2dp(3052507, 2424142, 100) == "125.92"
    assert ratio_2dp(0, 5, 100) == "0.00" and ratio_2dp(-1, 100_000, 100) == "0.00"
    assert ratio_2dp(1, 800, 100) == "0.13" and ratio_2dp(-1, 800, 100) == "-0.13"  # half away from zero
    assert ratio_2dp(5, 0) == "0.00"


# --- listings -----------------------------------------------------------------------------------


def test_listings_mix_is_realistic(market: Market) -> None:
    xs = market.listings
    assert len(xs) == 2600
    codes = [x.code for x in xs]
    assert len(set(codes)) == len(codes)
    assert len({x.isin for x in xs}) == len(xs)
    kospi = sum(x.market == "kospi" for x in xs)
    assert 900 <= kospi <= 1000 and 1600 <= len(xs) - kospi <= 1700
    for x in xs:
        assert len(x.isin) == 12 and x.isin.startswith("KR7") and isin_ok(x.isin), x
        name = x.name.encode("cp949")
        assert 0 < len(name) <= 40 and "," not in x.name, x
        if x.etp in (3, 4):
            assert x.code[0] == "Q" and len(x.code) == 7 and x.code[1:].isdigit()
        else:
            assert len(x.code) == 6 and x.code.isalnum()
        assert x.listed_shares > 0 and x.listing_date <= date(2017, 12, 31)
    stocks = [x for x in xs if x.is_stock]
    common = [x for x in stocks if not x.preferred and not x.spac]
    assert len(common) > len(xs) * 0.7
    prefs = [x for x in xs if x.preferred]
    assert len(prefs) >= 50 and any(not x.code[-1].isdigit() for x in prefs)
    for x in prefs:
        parent = market.by_code[x.parent]
        assert x.code[:5] == parent.code[:5] and x.name.startswith(parent.name) and "우" in x.name[len(parent.name) :]
    etfs = [x for x in xs if x.group == "EF"]
    assert len(etfs) >= 25 and {x.etp for x in etfs} == {1, 2}
    etns = [x for x in xs if x.etp in (3, 4)]
    assert len(etns) >= 20 and {x.etp for x in etns} == {3, 4}
    # the masters' stock group holds >= 2,500 codes even without ETNs (docs/collector-rules.md §2.1 floor)
    assert sum(x.group == "ST" and x.etp == 0 for x in xs) >= 2_500
    spacs = [x for x in xs if x.spac]
    assert len(spacs) >= 30 and all(x.market == "kosdaq" and 1_900 <= x.base_level <= 2_200 for x in spacs)
    assert all("스팩" in x.name for x in spacs)
    groups = {x.group for x in xs}
    assert {"ST", "EF", "RT", "MF", "IF", "SC", "DR", "BC", "FE", "FS"} <= groups
    assert sum(x.halted for x in xs) >= 5
    assert sum(x.liquidation for x in xs) >= 2 and sum(x.administrative for x in xs) >= 10
    assert {x.alarm for x in xs} == {"00", "01", "02", "03"}
    acts = sorted((x.activity for x in xs), reverse=True)
    assert acts[39] >= 3.0 and acts[0] <= 15.0
    commons = sorted(x.activity for x in xs if x.group == "ST" and x.etp == 0 and not (x.preferred or x.spac))
    assert 0.05 <= commons[len(commons) // 2] <= 0.1  # the median common share trades every 10-20 s
    assert sum(0 < a < 0.002 for a in acts) >= len(xs) // 50  # and a deliberately quiet few remain
    assert all(x.activity == 0 for x in xs if x.halted)


def test_listings_are_deterministic_per_seed() -> None:
    assert generate_listings(5, 600) == generate_listings(5, 600)
    assert generate_listings(5, 600) != generate_listings(6, 600)
    small = generate_listings(5, 40)
    assert len(small) == 40 and len({x.code for x in small}) == 40


@pytest.mark.parametrize("d", [date(2018, 1, 3), date(2021, 7, 15), date(2024, 12, 30), DAY, date(2029, 5, 4)])
def test_55_to_65_percent_of_common_stocks_close_at_or_above_4000(market: Market, d: date) -> None:
    common = [x for x in market.listings if x.is_stock and not x.preferred and not x.spac]
    share = sum(market.prev_close(x.code, d) >= 4_000 for x in common) / len(common)
    assert 0.55 <= share <= 0.65, share


# --- daily chain --------------------------------------------------------------------------------


def test_close_chain_is_consistent_with_ticks(market: Market, sample: list[str]) -> None:
    days = [date(2018, 1, 2), date(2025, 1, 2), date(2026, 3, 9), DAY, date(2026, 11, 19)]
    for code in sample:
        for d in days:
            t = market.day_ticks(code, d)
            assert t.price[-1] == market.close(code, d)
            assert t.prev_close == market.prev_close(code, d)
            if d > date(2018, 1, 2):
                assert market.prev_close(code, d) == market.close(code, previous_trading_day(d))
    # on a holiday the base is the last trading day's close
    assert market.prev_close(sample[0], date(2026, 3, 8)) == market.close(sample[0], date(2026, 3, 6))
    with pytest.raises(ValueError):
        market.close(sample[0], date(2026, 3, 8))


def test_daily_moves_stay_inside_the_price_limits(market: Market) -> None:
    days = [d for d in (date(2024, 1, 2) + timedelta(i) for i in range(400)) if market.is_trading_day(d)]
    for x in market.listings[::7]:
        closes = [market.close(x.code, d) for d in days]
        prev = market.prev_close(x.code, days[0])
        for c in closes:
            lo, hi = krx_limits(prev)
            assert lo <= c <= hi and on_grid(c)
            prev = c


# --- ticks --------------------------------------------------------------------------------------


def check_day_arrays(market: Market, code: str, d: date) -> None:
    t = market.day_ticks(code, d)
    s = session(d)
    assert s is not None
    n = len(t)
    assert n >= 2
    for name in (
        "sec",
        "price",
        "qty",
        "side",
        "acml_vol",
        "acml_value",
        "buy_cnt",
        "sell_cnt",
        "buy_qty",
        "sell_qty",
        "high",
        "low",
    ):
        assert getattr(t, name).shape == (n,), name
    sec, price, qty = t.sec.astype(np.int64), t.price.astype(np.int64), t.qty.astype(np.int64)
    open_s, close_s = sec_of(s.open), sec_of(s.close)
    assert sec[0] == open_s and sec[-1] == close_s and np.all(np.diff(sec) >= 0)
    # continuous trading stops at close - 10 min; the closing auction prints once at the close
    assert not np.any(sec[:-1] >= close_s - 600), "a continuous trade inside the closing auction"
    lo, hi = krx_limits(t.prev_close)
    assert np.all((price >= lo) & (price <= hi))
    assert all(on_grid(int(p)) for p in np.unique(price))
    assert np.all(qty > 0) and set(np.unique(t.side).tolist()) <= {1, 5}
    assert np.array_equal(t.acml_vol, np.cumsum(qty))
    assert np.array_equal(t.acml_value, np.cumsum(price * qty))
    buys = t.side == 1
    assert np.array_equal(t.buy_cnt, np.cumsum(buys)) and np.array_equal(t.sell_cnt, np.cumsum(~buys))
    assert np.array_equal(t.buy_qty, np.cumsum(np.where(buys, qty, 0)))
    assert np.array_equal(t.sell_qty, np.cumsum(np.where(buys, 0, qty)))
    assert np.array_equal(t.high, np.maximum.accumulate(price))
    assert np.array_equal(t.low, np.minimum.accumulate(price))
    for probe in (open_s - 1, open_s, int(sec[n // 2]), close_s - 601, close_s, 86_399):
        assert t.index_at(probe) == int(np.sum(sec <= probe))


def test_tick_arrays_hold_their_invariants(market: Market, sample: list[str]) -> None:
    for code in sample:
        check_day_arrays(market, code, DAY)


def test_busy_symbols_are_busy_and_quiet_ones_go_silent(market: Market) -> None:
    top = sorted(market.listings, key=lambda x: -x.activity)[:40]
    for x in top[::8]:
        t = market.day_ticks(x.code, DAY)
        assert len(t) / 22_800 >= 2.5  # mean >= 3/s give or take Poisson noise and bursts
        per_sec = np.bincount(t.sec - t.sec[0])
        assert per_sec.max() >= 8  # bursts give many trades in one second
    quiet = [x for x in market.listings if 0 < x.activity < 0.002][:10]
    gaps = [np.diff(market.day_ticks(x.code, DAY).sec).max() for x in quiet]
    assert max(gaps) >= 600  # silent for many minutes


def test_halted_and_holiday_have_no_trades(market: Market) -> None:
    halted = next(x for x in market.listings if x.halted)
    assert len(market.day_ticks(halted.code, DAY)) == 0
    assert market.close(halted.code, DAY) == market.prev_close(halted.code, DAY)
    q = market.quote(halted.code, kst(DAY, 11))
    assert (q.price, q.open, q.acml_vol, q.trades, q.ask1, q.bid1) == (q.prev_close, 0, 0, 0, 0, 0)
    busy = max(market.listings, key=lambda x: x.activity)
    for holiday in (date(2026, 3, 7), date(2026, 3, 8), date(2026, 1, 1), date(2026, 6, 3)):
        assert not market.is_trading_day(holiday) and market.session(holiday) is None
        t = market.day_ticks(busy.code, holiday)
        assert len(t) == 0 and t.prev_close == market.prev_close(busy.code, holiday)
        assert market.minute_bars(busy.code, holiday, kst(holiday, 12)) == []
    # a weekend quote shows the last trading day's final state
    q = market.quote(busy.code, kst(date(2026, 3, 8), 12))
    assert q.day == date(2026, 3, 6) and q.price == market.close(busy.code, date(2026, 3, 6))
    assert q.trades == len(market.day_ticks(busy.code, date(2026, 3, 6)))


@pytest.mark.parametrize(
    ("d", "open_hm", "close_hm"),
    [(DAY, (9, 0), (15, 30)), (date(2026, 1, 2), (10, 0), (15, 30)), (date(2026, 11, 19), (10, 0), (16, 30))],
)
def test_session_shapes(
    market: Market, sample: list[str], d: date, open_hm: tuple[int, int], close_hm: tuple[int, int]
) -> None:
    first, last = market.session(d)
    assert (first.hour, first.minute) == open_hm and (last.hour, last.minute) == close_hm
    assert first.tzinfo is not None and first.utcoffset() == timedelta(hours=9)
    for code in sample[:6]:
        check_day_arrays(market, code, d)
        bars = market.minute_bars(code, d, kst(d, 23))
        assert bars[0].start.hour * 60 + bars[0].start.minute == open_hm[0] * 60 + open_hm[1]
        assert bars[-1].start.hour * 60 + bars[-1].start.minute == close_hm[0] * 60 + close_hm[1]
        # nothing trades during the closing auction's 10 minutes except the print at the close
        assert all(b.volume == 0 for b in bars[-11:-1]) and bars[-1].volume > 0
        q = market.quote(code, kst(d, open_hm[0], open_hm[1]) - timedelta(seconds=1))
        assert (q.trades, q.open, q.high, q.low, q.acml_vol) == (0, 0, 0, 0, 0) and q.price == q.prev_close


def test_open_mode_trades_around_the_clock() -> None:
    m = Market(seed=SEED, listings=300, clock_mode="open")
    sunday = date(2026, 3, 8)
    assert m.is_trading_day(sunday) and m.previous_trading_day(sunday) == date(2026, 3, 7)
    first, last = m.session(sunday)
    assert (first.hour, first.minute, first.second) == (0, 0, 0) and (last.hour, last.minute, last.second) == (
        23,
        59,
        59,
    )
    busy = max(m.listings, key=lambda x: x.activity)
    t = m.day_ticks(busy.code, sunday)
    at3 = kst(sunday, 3)
    n3 = t.index_at(sec_of(at3))
    assert n3 > 100 and np.any((t.sec >= 3 * 3600 - 600) & (t.sec < 3 * 3600))
    q = m.quote(busy.code, at3)
    assert q.trades == n3 and q.price == int(t.price[n3 - 1]) and q.day == sunday
    assert t.price[-1] == m.close(busy.code, sunday) and t.prev_close == m.close(busy.code, date(2026, 3, 7))
    assert t.sec[0] == 0 and t.sec[-1] == 86_399
    rec = m.trade_record(t, n3 - 1)
    assert rec[F["STCK_CNTG_HOUR"]] <= "030000" and rec[F["BSOP_DATE"]] == "20260308"


# --- wire records -------------------------------------------------------------------------------


def check_record(market: Market, t, i: int, rec: list[str]) -> None:
    lst = market.by_code[t.code]
    prev = t.prev_close
    price = int(t.price[i])
    vol, value = int(t.acml_vol[i]), int(t.acml_value[i])
    buy_q, sell_q = int(t.buy_qty[i]), int(t.sell_qty[i])
    assert len(rec) == len(H0STCNT0_FIELDS)
    g = {name: rec[k] for name, k in F.items()}
    assert g["MKSC_SHRN_ISCD"] == t.code and g["STCK_CNTG_HOUR"] == hhmmss(int(t.sec[i]))
    assert int(g["STCK_PRPR"]) == price and int(g["CNTG_VOL"]) == int(t.qty[i])
    assert int(g["ACML_VOL"]) == vol and int(g["ACML_TR_PBMN"]) == value
    # §8.4 within-record identities, exactly
    assert int(g["PRDY_VRSS"]) == price - prev
    assert close_to_2dp(g["PRDY_CTRT"], Fraction(price - prev, prev) * 100)
    assert close_to_2dp(g["WGHN_AVRG_STCK_PRC"], Fraction(value, vol))
    assert int(g["NTBY_CNTG_CSNU"]) == int(g["SHNU_CNTG_CSNU"]) - int(g["SELN_CNTG_CSNU"])
    assert int(g["SHNU_CNTG_SMTN"]) == buy_q and int(g["SELN_CNTG_SMTN"]) == sell_q
    if sell_q:
        assert close_to_2dp(g["CTTR"], Fraction(buy_q, sell_q) * 100)
    opn, high, low = int(g["STCK_OPRC"]), int(g["STCK_HGPR"]), int(g["STCK_LWPR"])
    assert opn == int(t.price[0]) and high == int(t.price[: i + 1].max()) and low == int(t.price[: i + 1].min())
    assert low <= price <= high and low <= opn <= high
    assert int(g["OPRC_VRSS_PRPR"]) == price - opn
    assert int(g["HGPR_VRSS_PRPR"]) == price - high
    assert int(g["LWPR_VRSS_PRPR"]) == price - low
    sign = lambda diff: "2" if diff > 0 else "5" if diff < 0 else "3"  # noqa: E731
    assert g["OPRC_VRSS_PRPR_SIGN"] == sign(price - opn)
    assert g["HGPR_VRSS_PRPR_SIGN"] == sign(price - high)
    assert g["LWPR_VRSS_PRPR_SIGN"] == sign(price - low)
    lo, hi = krx_limits(prev)
    want_sign = "1" if price == hi and price > prev else "4" if price == lo and price < prev else sign(price - prev)
    assert g["PRDY_VRSS_SIGN"] == want_sign
    assert g["OPRC_HOUR"] == hhmmss(int(t.sec[0]))
    first_high = int(np.argmax(t.price[: i + 1] == high))
    first_low = int(np.argmax(t.price[: i + 1] == low))
    assert g["HGPR_HOUR"] == hhmmss(int(t.sec[first_high])) and g["LWPR_HOUR"] == hhmmss(int(t.sec[first_low]))
    assert g["BSOP_DATE"] == t.day.strftime("%Y%m%d") and g["NEW_MKOP_CLS_CODE"] == "20"
    assert g["TRHT_YN"] == "N" and g["HOUR_CLS_CODE"] == "0" and g["CCLD_DVSN"] == str(int(t.side[i]))
    assert close_to_2dp(g["VOL_TNRT"], Fraction(vol, lst.listed_shares) * 100)
    # the best quotes around the trade: a buy lifted the ask, a sell hit the bid
    ask, bid = int(g["ASKP1"]), int(g["BIDP1"])
    if t.side[i] == 1:
        assert ask == price and (bid == 0 or (on_grid(bid) and bid < price))
    else:
        assert bid == price and (ask == 0 or (on_grid(ask) and ask > price))
    assert int(g["TOTAL_ASKP_RSQN"]) >= int(g["ASKP_RSQN1"]) > 0 or ask == 0
    assert int(g["TOTAL_BIDP_RSQN"]) >= int(g["BIDP_RSQN1"]) > 0 or bid == 0
    # previous trading day's cumulative volume at the same second, and its total
    pday = previous_trading_day(t.day)
    pt = market.day_ticks(t.code, pday)
    same = int(pt.acml_vol[pt.sec <= t.sec[i]][-1]) if np.any(pt.sec <= t.sec[i]) else 0
    assert int(g["PRDY_SMNS_HOUR_ACML_VOL"]) == same
    if same:
        assert close_to_2dp(g["PRDY_SMNS_HOUR_ACML_VOL_RATE"], Fraction(vol, same) * 100)
    prdy_total = int(pt.acml_vol[-1]) if len(pt) else 0
    if prdy_total:
        assert close_to_2dp(g["PRDY_VOL_VRSS_ACML_VOL_RATE"], Fraction(vol, prdy_total) * 100)


def test_trade_records_hold_every_identity(market: Market, sample: list[str]) -> None:
    rng = random.Random(5)
    for code in sample:
        t = market.day_ticks(code, DAY)
        idx = sorted({0, 1, len(t) - 2, len(t) - 1, *rng.sample(range(len(t)), min(len(t), 25))})
        for i in idx:
            check_record(market, t, i, market.trade_record(t, i))


def test_consecutive_records_are_continuous(market: Market) -> None:
    busy = max(market.listings, key=lambda x: x.activity)
    t = market.day_ticks(busy.code, DAY)
    recs = [market.trade_record(t, i) for i in range(0, 3_000)] + [
        market.trade_record(t, i) for i in range(len(t) - 500, len(t))
    ]
    for a, b, i in zip(recs, recs[1:], range(len(recs))):
        if i == 2_999:
            continue  # the jump between the two windows
        assert int(b[F["ACML_VOL"]]) == int(a[F["ACML_VOL"]]) + int(b[F["CNTG_VOL"]])
        counts = lambda r: int(r[F["SELN_CNTG_CSNU"]]) + int(r[F["SHNU_CNTG_CSNU"]])  # noqa: E731
        assert counts(b) == counts(a) + 1
        assert int(b[F["ACML_TR_PBMN"]]) == int(a[F["ACML_TR_PBMN"]]) + int(b[F["STCK_PRPR"]]) * int(b[F["CNTG_VOL"]])
        assert int(b[F["STCK_HGPR"]]) >= int(a[F["STCK_HGPR"]]) and int(b[F["STCK_LWPR"]]) <= int(a[F["STCK_LWPR"]])
        assert b[F["STCK_CNTG_HOUR"]] >= a[F["STCK_CNTG_HOUR"]]
    check_record(market, t, 1234, recs[1234])


def test_forty_seven_field_mode_appends_market_cls_code() -> None:
    m = Market(seed=SEED, listings=200, fields47=True)
    code = max(m.listings, key=lambda x: x.activity).code
    t = m.day_ticks(code, DAY)
    rec = m.trade_record(t, 10)
    assert len(rec) == 47 and rec[-1] == "2"
    plain = Market(seed=SEED, listings=200).trade_record(t, 10)
    assert rec[:46] == plain


def test_orderbook_record_matches_the_quote(market: Market, sample: list[str]) -> None:
    for code in sample[:8]:
        for at in (kst(DAY, 8, 59), kst(DAY, 9, 0, 0), kst(DAY, 10, 17, 3), kst(DAY, 15, 25), kst(DAY, 18)):
            rec = market.orderbook_record(code, at)
            q = market.quote(code, at)
            assert len(rec) == len(H0STASP0_FIELDS) == 59
            asks = [int(x) for x in rec[3:13]]
            bids = [int(x) for x in rec[13:23]]
            ask_sz = [int(x) for x in rec[23:33]]
            bid_sz = [int(x) for x in rec[33:43]]
            assert rec[0] == code and rec[1] == hhmmss(sec_of(at))
            assert (asks[0], bids[0], ask_sz[0], bid_sz[0]) == (q.ask1, q.bid1, q.ask_size1, q.bid_size1)
            assert int(rec[43]) == sum(ask_sz) == q.total_ask_size and int(rec[44]) == sum(bid_sz) == q.total_bid_size
            live_asks = [p for p in asks if p]
            live_bids = [p for p in bids if p]
            assert live_asks == sorted(live_asks) and live_bids == sorted(live_bids, reverse=True)
            assert all(on_grid(p) and q.lower_limit <= p <= q.upper_limit for p in live_asks + live_bids)
            assert all(s == 0 for p, s in zip(asks + bids, ask_sz + bid_sz) if p == 0)
            assert int(rec[53]) == q.acml_vol
            # consecutive asks are one tick apart
            for a, b in zip(live_asks, live_asks[1:]):
                assert b - a == krx_tick_size(a)


# --- quotes, bars -------------------------------------------------------------------------------


def test_quote_equals_the_tick_state(market: Market, sample: list[str]) -> None:
    rng = random.Random(9)
    for code in sample:
        t = market.day_ticks(code, DAY)
        lo, hi = krx_limits(t.prev_close)
        for _ in range(6):
            at = kst(DAY, 9) + timedelta(
                seconds=rng.randrange(0, 6 * 3600 + 31 * 60), microseconds=rng.randrange(10**6)
            )
            q = market.quote(code, at)
            n = int(np.sum(t.sec <= sec_of(at)))
            assert q.trades == n and q.day == DAY and q.prev_close == t.prev_close
            assert (q.lower_limit, q.upper_limit) == (lo, hi)
            if n == 0:
                assert q.price == t.prev_close and q.open == q.high == q.low == 0 and q.last_trade_at is None
                continue
            i = n - 1
            assert q.price == t.price[i] and q.open == t.price[0]
            assert q.high == t.price[:n].max() and q.low == t.price[:n].min()
            assert q.acml_vol == t.acml_vol[i] and q.acml_value == t.acml_value[i]
            assert q.last_trade_at == datetime.combine(DAY, datetime.min.time(), KST) + timedelta(seconds=int(t.sec[i]))
            rec = market.trade_record(t, i)
            assert (q.ask1, q.bid1) == (int(rec[F["ASKP1"]]), int(rec[F["BIDP1"]]))
            assert (q.ask_size1, q.bid_size1) == (int(rec[F["ASKP_RSQN1"]]), int(rec[F["BIDP_RSQN1"]]))
            assert (q.total_ask_size, q.total_bid_size) == (
                int(rec[F["TOTAL_ASKP_RSQN"]]),
                int(rec[F["TOTAL_BIDP_RSQN"]]),
            )


def test_minute_bars_aggregate_the_ticks(market: Market, sample: list[str]) -> None:
    for code in sample[:8]:
        t = market.day_ticks(code, DAY)
        for until in (kst(DAY, 9, 0, 0), kst(DAY, 11, 7, 42), kst(DAY, 15, 29, 59), kst(DAY, 20)):
            bars = market.minute_bars(code, DAY, until)
            u = min(sec_of(until), 15 * 3600 + 30 * 60)
            assert len(bars) == (u - 9 * 3600) // 60 + 1
            mask = t.sec <= u
            assert sum(b.volume for b in bars) == int(t.qty[mask].sum())
            assert bars[-1].acml_vol == int(t.qty[mask].sum()) and bars[-1].acml_value == int(
                (t.price * t.qty)[mask].sum()
            )
            last_close = t.prev_close
            running = 0
            for b in bars:
                m0 = b.start.hour * 3600 + b.start.minute * 60
                sel = mask & (t.sec >= m0) & (t.sec < m0 + 60)
                running += int(t.qty[sel].sum())
                assert b.volume == int(t.qty[sel].sum()) and b.acml_vol == running and b.day == DAY
                if sel.any():
                    p = t.price[sel]
                    assert (b.open, b.high, b.low, b.close) == (p[0], p.max(), p.min(), p[-1])
                    last_close = int(p[-1])
                else:
                    assert b.open == b.high == b.low == b.close == last_close
    assert market.minute_bars(sample[0], DAY, kst(DAY, 8, 59, 59)) == []
    assert market.minute_bars(sample[0], DAY, kst(DAY - timedelta(days=1), 12)) == []


def test_daily_bars_are_the_aggregate_of_ticks(market: Market, sample: list[str]) -> None:
    for code in sample[:6]:
        bars = market.daily_bars(code, DAY, 7, as_of=kst(DAY, 20))
        assert [b.day for b in bars] == sorted((b.day for b in bars), reverse=True)
        assert bars[0].day == DAY and len(bars) == 7 and all(market.is_trading_day(b.day) for b in bars)
        assert bars[1].day == previous_trading_day(DAY)
        for b in bars:
            t = market.day_ticks(code, b.day)
            assert (b.open, b.high, b.low, b.close) == (t.price[0], t.price.max(), t.price.min(), t.price[-1])
            assert b.volume == int(t.qty.sum()) and b.value == int((t.price * t.qty).sum())
            assert b.prev_close == t.prev_close == market.prev_close(code, b.day)
        # before the session today's bar is absent; during the session it is partial
        early = market.daily_bars(code, DAY, 3, as_of=kst(DAY, 8, 30))
        assert [b.day for b in early] == [b.day for b in bars[1:4]]
        mid = market.daily_bars(code, DAY, 2, as_of=kst(DAY, 10, 30))
        q = market.quote(code, kst(DAY, 10, 30))
        assert mid[0].day == DAY and (mid[0].close, mid[0].volume, mid[0].high) == (q.price, q.acml_vol, q.high)
        # a later as_of never reveals the future; `end` in the past skips today
        assert market.daily_bars(code, DAY + timedelta(days=30), 1, as_of=kst(DAY, 20))[0].day == DAY
        assert market.daily_bars(code, date(2026, 3, 8), 1, as_of=kst(DAY, 20))[0].day == date(2026, 3, 6)


def test_volume_rank(market: Market) -> None:
    at = kst(DAY, 11)
    top = market.volume_rank(at, n=30)
    assert len(top) == 30
    vols = [q.acml_vol for q in top]
    assert vols == sorted(vols, reverse=True)
    assert all(market.by_code[q.code].is_stock for q in top)
    everything = [market.quote(x.code, at) for x in market.listings if x.is_stock]
    assert top[0].acml_vol == max(q.acml_vol for q in everything)
    kospi = market.volume_rank(at, market="0001", n=10)
    kosdaq = market.volume_rank(at, market="1001", n=10)
    assert all(market.by_code[q.code].market == "kospi" for q in kospi)
    assert all(market.by_code[q.code].market == "kosdaq" for q in kosdaq)
    assert market.volume_rank(at, market="0000", n=5) == top[:5]
    with pytest.raises(ValueError):
        market.volume_rank(at, market="9999")


# --- determinism and budgets --------------------------------------------------------------------


def test_same_seed_gives_identical_results_whatever_the_query_order(sample: list[str]) -> None:
    a, b = Market(seed=SEED), Market(seed=SEED)
    days = [DAY, date(2026, 3, 9), date(2025, 1, 2)]
    codes = sample[:8]
    got_a = {(c, d): a.day_ticks(c, d) for d in days for c in codes}
    for c in reversed(codes):  # the other order, with a quote and records in between
        b.quote(c, kst(DAY, 13))
        for d in reversed(days):
            t = b.day_ticks(c, d)
            ta = got_a[(c, d)]
            for name in ("sec", "price", "qty", "side", "acml_vol", "acml_value", "high", "low"):
                assert np.array_equal(getattr(t, name), getattr(ta, name)), (c, d, name)
            assert b.trade_record(t, len(t) // 2) == a.trade_record(ta, len(ta) // 2)
    b.clear_cache()
    at = kst(DAY, 14, 3, 9)
    assert [b.quote(c, at) for c in codes] == [a.quote(c, at) for c in codes]
    assert b.orderbook_record(codes[0], at) == a.orderbook_record(codes[0], at)
    other = Market(seed=SEED + 1)
    assert other.listings != a.listings
    assert [other.close(x.code, DAY) for x in other.listings[:50]] != [a.close(x.code, DAY) for x in a.listings[:50]]


def test_budgets_time_and_memory() -> None:
    """Market() fast; day_ticks a few ms; the whole market's day costs at most 69 bytes a trade, the cache holds its bound.

    A KRX day of the whole market (~12 M trades, ~800 MB of tick arrays) is larger than the LRU bound, so a
    repeated sweep of every listing regenerates the days it evicted; the days the cache still holds answer warm.
    Timing bounds carry a 2-3x margin over the targets so a loaded CI box does not flake; the
    measured numbers are printed for the record.
    """
    t0 = time.perf_counter()
    m = Market(seed=SEED)
    t_init = time.perf_counter() - t0
    at = kst(DAY, 15, 31)
    t0 = time.perf_counter()
    quotes = [m.quote(x.code, at) for x in m.listings]
    t_cold = time.perf_counter() - t0
    held = [x.code for x in m.listings if m._cached(m._idx(x.code), DAY) is not None]
    cache_bytes = m.cache_bytes
    t0 = time.perf_counter()
    [m.quote(c, at) for c in held]
    t_warm = time.perf_counter() - t0
    total_bytes = sum(m.day_ticks(x.code, DAY).nbytes for x in m.listings)
    trades = sum(q.trades for q in quotes)
    quiet = [x.code for x in m.listings if x.activity < 0.05][:200]
    t0 = time.perf_counter()
    for c in quiet:
        m.day_ticks(c, date(2026, 3, 11))
    t_typical = (time.perf_counter() - t0) / len(quiet)
    print(
        f"\nMarket() {t_init:.3f}s; quote x2600 cold {t_cold:.2f}s warm x{len(held)} {t_warm:.3f}s; "
        f"day_ticks typical {t_typical * 1e3:.2f} ms; {trades} trades, {total_bytes / 1e6:.0f} MB"
    )
    assert total_bytes <= 69 * trades and total_bytes < 1_000e6
    assert cache_bytes <= 400 * 2**20 and len(held) >= len(m.listings) // 2
    assert t_init < 1.0 and t_cold < 6.0 and t_warm < 0.6 and t_typical < 0.010
