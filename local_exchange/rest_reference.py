"""The reference-data TRs: product info (search-info), stock info (search-stock-info) and the business-day
calendar (chk-holiday).

They depend on the listing, the calendar and the venue lists only, never on the clock's intraday market state.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from local_exchange import rest_outputs as out
from local_exchange.accounts import Token
from local_exchange.rest_context import TrContext
from local_exchange.rest_wire import InputError, NoData, kis_ok, kis_response, need, parse_ymd
from local_exchange.venues import venues_for
from observer_resources.calendar import CalendarRangeError
from observer_resources.kis import protocol as p

HOLIDAY_ROWS = 20
HOLIDAY_HORIZON_DAYS = 60
# PRDT_TYPE_CD values KIS documents for search-stock-info: 300 stocks/ETF/ETN/ELW, 301 futures and options,
# 302 bonds, 306 ELS. The sim lists only the first kind.
STOCK_INFO_PRODUCT_TYPES = ("300", "301", "302", "306")


def chk_holiday(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    base = parse_ymd(need(params, "BASS_DT"), "BASS_DT")
    nk = (params.get("CTX_AREA_NK") or "").strip()
    start = parse_ymd(nk, "CTX_AREA_NK") if nk else base
    horizon = base + timedelta(days=HOLIDAY_HORIZON_DAYS - 1)
    rows = []
    d = start
    while d <= horizon and len(rows) < HOLIDAY_ROWS:
        try:
            opened = ctx.s.market.is_trading_day(d)
        except CalendarRangeError:
            break
        rows.append(out.holiday_row(d, opened))
        d += timedelta(days=1)
    more = d <= horizon and bool(rows) and _in_calendar(ctx.s.market, d)
    fk = ymd_or_empty(base) if more else ""
    next_nk = ymd_or_empty(d) if more else ""
    return kis_ok(p.TR_CHK_HOLIDAY, "M" if more else "D", ctx_area_fk=fk, ctx_area_nk=next_nk, output=rows)


def search_info(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    pdno = need(params, "PDNO")
    if (params.get("PRDT_TYPE_CD") or "300").strip() != "300":
        raise NoData()
    return kis_ok(p.TR_SEARCH_INFO, output=out.search_info(ctx.listing(pdno)))


def search_stock_info(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    """CTPF1002R as of the sim's date: the listing's reference data and its NXT flags (venues.py)."""
    kind = need(params, "PRDT_TYPE_CD")
    pdno = need(params, "PDNO")
    if kind not in STOCK_INFO_PRODUCT_TYPES:
        raise InputError("ERROR INVALID PRDT_TYPE_CD")
    if kind != "300":
        raise NoData()
    li = ctx.listing(pdno)
    market = ctx.s.market
    now = ctx.s.clock.now()
    day = now.date()
    venues = venues_for(market)
    output = out.search_stock_info(
        li,
        kospi200=li.market == "kospi" and li.code in venues.index_on(day),
        last_close=_last_close(ctx, li.code, now),
        nxt=venues.status(li.code, day),
    )
    body = {"rt_cd": "0", "msg_cd": p.LOOKUP_OK_MSG_CD, "msg1": p.LOOKUP_OK_MSG1, "output": output}
    return kis_response(body, tr_id=p.TR_SEARCH_STOCK_INFO)


def _last_close(ctx: TrContext, code: str, now: datetime) -> tuple[date, int, int] | None:
    """(day, close, previous close) of the latest session that has closed by ``now``."""
    market = ctx.s.market
    day = now.date()
    try:
        session = market.session(day)
        closed = day if session is not None and now >= session[1] else market.previous_trading_day(day)
        return closed, market.close(code, closed), market.prev_close(code, closed)
    except (CalendarRangeError, ValueError):
        return None


def ymd_or_empty(d: date) -> str:
    return d.strftime("%Y%m%d")


def _in_calendar(market: Any, d: date) -> bool:
    try:
        market.is_trading_day(d)
        return True
    except CalendarRangeError:
        return False
