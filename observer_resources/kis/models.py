"""Typed values the KIS client hands out: real-time records, REST results, raw REST pages and request counters.

KIS sends every number as a string; these classes carry them converted (prices and volumes
``int`` KRW/shares, rates ``float``, dates ``date``, times tz-aware KST ``datetime``). Each also
keeps what KIS sent (``raw``) so an archive can store the exact bytes' meaning and nothing
is lost when KIS adds a field.

Ordering rule for every list the REST client returns: **oldest first** (chronological), whatever
order KIS used on the wire (mostly newest first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# --- real-time (WebSocket) -----------------------------------------------------------------------


@dataclass(slots=True)
class Trade:
    """One ``H0STCNT0`` record (one trade). Field comments give the KIS name.

    Codes (``change_sign``, ``trade_class``, ``session_code``, ``hour_cls_code``,
    ``market_cls_code``) stay strings: they are classes, not quantities.
    """

    code: str  # MKSC_SHRN_ISCD
    exchange_time: str  # STCK_CNTG_HOUR, HHMMSS
    exchange_dt: datetime  # BSOP_DATE + STCK_CNTG_HOUR, tz-aware KST
    price: int  # STCK_PRPR
    change: int  # PRDY_VRSS (signed)
    change_sign: str  # PRDY_VRSS_SIGN: 1 up-limit, 2 up, 3 flat, 4 down-limit, 5 down
    change_rate: float  # PRDY_CTRT (%)
    vwap: float  # WGHN_AVRG_STCK_PRC
    open: int  # STCK_OPRC
    high: int  # STCK_HGPR
    low: int  # STCK_LWPR
    ask1: int | None  # ASKP1; None when 0 or absent, never 0
    bid1: int | None  # BIDP1; None when 0 or absent, never 0
    qty: int  # CNTG_VOL (this trade)
    acml_vol: int  # ACML_VOL
    acml_value: int  # ACML_TR_PBMN (KRW)
    sell_cnt: int  # SELN_CNTG_CSNU
    buy_cnt: int  # SHNU_CNTG_CSNU
    net_cnt: int  # NTBY_CNTG_CSNU
    strength: float  # CTTR
    sell_qty: int  # SELN_CNTG_SMTN
    buy_qty: int  # SHNU_CNTG_SMTN
    trade_class: str  # CCLD_DVSN: 1 buy, 3 pre-open, 5 sell
    buy_ratio: float  # SHNU_RATE
    prdy_vol_rate: float  # PRDY_VOL_VRSS_ACML_VOL_RATE
    session_code: str  # NEW_MKOP_CLS_CODE
    halted: bool  # TRHT_YN == 'Y'
    ask_size1: int  # ASKP_RSQN1
    bid_size1: int  # BIDP_RSQN1
    total_ask_size: int  # TOTAL_ASKP_RSQN
    total_bid_size: int  # TOTAL_BIDP_RSQN
    hour_cls_code: str  # HOUR_CLS_CODE
    vi_standard_price: int | None  # VI_STND_PRC; None when 0 or empty
    market_cls_code: str | None  # 47th field MARKET_CLS_CODE; None in the 46-field layout
    extra: tuple[str, ...]  # fields after the 46 known ones, as sent
    raw: tuple[str, ...] = field(repr=False)  # every field of the record, as sent


@dataclass(slots=True)
class OrderBook:
    """One ``H0STASP0`` record (10-level book). Prices of empty levels are 0 as KIS sends them."""

    code: str
    time: str  # BSOP_HOUR, HHMMSS
    hour_cls_code: str
    asks: tuple[int, ...]  # ASKP1..10
    bids: tuple[int, ...]  # BIDP1..10
    ask_sizes: tuple[int, ...]
    bid_sizes: tuple[int, ...]
    total_ask_size: int
    total_bid_size: int
    expected_price: int  # ANTC_CNPR
    expected_qty: int  # ANTC_CNQN
    acml_vol: int
    extra: tuple[str, ...]
    raw: tuple[str, ...] = field(repr=False)


# --- REST ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quote:
    """``inquire-price`` (FHKST01010100): one symbol's current price."""

    code: str
    price: int
    change: int
    change_sign: str
    change_rate: float
    open: int
    high: int
    low: int
    upper_limit: int
    lower_limit: int
    base_price: int  # stck_sdpr (≈ previous close)
    acml_vol: int
    acml_value: int
    vwap: float
    prdy_vol_rate: float
    vol_turnover: float
    listed_shares: int
    market_cap: int  # hts_avls, 100 M KRW
    per: float
    pbr: float
    eps: float
    bps: float
    foreign_ratio: float
    halted: bool  # temp_stop_yn
    status_code: str  # iscd_stat_cls_code
    warning_code: str  # mrkt_warn_cls_code
    vi_code: str
    market_name: str  # rprs_mrkt_kor_name
    sector_name: str  # bstp_kor_isnm
    w52_high: int
    w52_high_date: date | None
    w52_low: int
    w52_low_date: date | None
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MultiQuote:
    """One row of ``intstock-multprice`` (FHKST11300006), including best bid/ask."""

    code: str
    name: str
    price: int
    change: int
    change_sign: str
    change_rate: float
    acml_vol: int
    acml_value: int
    open: int
    high: int
    low: int
    upper_limit: int
    lower_limit: int
    ask1: int | None  # None when 0 or empty
    bid1: int | None
    ask_size1: int
    bid_size1: int
    total_ask_size: int
    total_bid_size: int
    prev_close: int
    base_price: int
    market_name: str  # kospi_kosdaq_cls_name
    hour_cls_code: str
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DailyBar:
    """A day (or week/month/year) bar from ``inquire-daily-price`` or ``inquire-daily-itemchartprice``.

    ``value`` (traded KRW) is only in the chart TR; ``foreign_ratio`` only in daily-price.
    """

    day: date
    open: int
    high: int
    low: int
    close: int
    volume: int
    value: int | None
    change: int
    change_sign: str
    change_rate: float | None
    foreign_ratio: float | None
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ChartSummary:
    """``output1`` of the chart TRs: the symbol's state when the chart was served."""

    code: str
    name: str
    price: int
    change: int
    change_sign: str
    change_rate: float
    prev_close: int
    acml_vol: int
    acml_value: int
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MinuteBar:
    """One minute bar (FHKST03010200 / FHKST03010230). ``at`` is the bar's KST time stamp."""

    at: datetime
    close: int
    open: int
    high: int
    low: int
    volume: int
    acml_value: int
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MinuteBars:
    summary: ChartSummary | None
    bars: list[MinuteBar]  # oldest first


@dataclass(frozen=True, slots=True)
class Conclusion:
    """One trade from ``inquire-time-itemconclusion`` (FHPST01060000)."""

    at: datetime  # today (the serving day) + stck_cntg_hour, KST
    price: int
    change: int
    change_sign: str
    change_rate: float
    ask1: int | None
    bid1: int | None
    strength: float  # tday_rltv
    acml_vol: int
    qty: int  # cnqn
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class VolumeRankRow:
    rank: int
    code: str
    name: str
    price: int
    change: int
    change_sign: str
    change_rate: float
    acml_vol: int
    prev_vol: int
    listed_shares: int
    avg_vol: int
    vol_increase_rate: float
    vol_turnover: float
    avg_value: int
    acml_value: int
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class HolidayRow:
    """One day of ``chk-holiday`` (CTCA0903R). ``market_open`` (opnd_yn) is the trading-day answer."""

    day: date
    weekday_code: str
    business_day: bool
    transaction_day: bool
    market_open: bool
    settlement_day: bool
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """``search-info`` (CTPF1604R)."""

    code: str  # pdno
    short_code: str  # shtn_pdno
    isin: str  # std_pdno
    product_type: str  # prdt_type_cd
    name: str  # prdt_name
    abbr_name: str
    eng_name: str
    classification: str  # prdt_clsf_name
    first_listed: date | None  # frst_erlm_dt
    raw: Mapping[str, str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StockInfo:
    """``search-stock-info`` (CTPF1002R): a stock's reference data and, the reason to ask, its NXT status.

    The master files carry no NXT flag (docs/kis-protocol.md §6.10), so this is where a collector learns which
    codes also trade on Nextrade. ``nxt_halted`` is only ever true for a code with ``nxt_tradable``.
    """

    code: str  # short code, from pdno ('00000A005930' -> '005930')
    name: str  # prdt_abrv_name, the name the master files carry
    full_name: str  # prdt_name ('삼성전자보통주')
    isin: str  # std_pdno
    market_id: str  # mket_id_cd: STK (KOSPI), KSQ (KOSDAQ), KNX (KONEX)
    group: str  # scty_grp_id_cd: ST, EF, EN, ...
    listed_shares: int  # lstg_stqt
    par_value: int  # papr
    kospi200: bool  # kospi200_item_yn
    listed: date | None  # scts_mket_lstg_dt or kosdaq_mket_lstg_dt
    halted: bool  # tr_stop_yn: trading halted on KRX
    administrative: bool  # admn_item_yn
    nxt_tradable: bool  # cptt_trad_tr_psbl_yn
    nxt_halted: bool  # nxt_tr_stop_yn
    raw: Mapping[str, str] = field(repr=False, compare=False)


# --- REST transport --------------------------------------------------------------------------------


@dataclass
class RestStats:
    """Counters of one client. ``requests`` counts HTTP requests actually sent."""

    requests: int = 0
    pages: int = 0
    retries: Counter = field(default_factory=Counter)  # cause -> n ('rate_limit', 'token', 'transient')
    errors: Counter = field(default_factory=Counter)  # msg_cd / error kind -> n (final failures)
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    limiter_wait_seconds: float = 0.0
    limiter_waits: int = 0  # requests whose permit took longer than rest_transport.LIMITER_WAIT_EPS
    limiter_max_wait_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "pages": self.pages,
            "retries": dict(self.retries),
            "errors": dict(self.errors),
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "limiter_wait_seconds": round(self.limiter_wait_seconds, 3),
            "limiter_waits": self.limiter_waits,
            "limiter_max_wait_seconds": round(self.limiter_max_wait_seconds, 3),
        }


@dataclass(frozen=True)
class Page:
    """One raw answer of ``KisRestClient.request``, before typing (``rows``)."""

    body: dict[str, Any]
    tr_cont: str  # response header: F/M more, D/E last, '' unknown
