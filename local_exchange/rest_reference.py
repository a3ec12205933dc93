"""The reference-data TRs: product info (search-info) and the business-day calendar (chk-holiday).

They depend on the listing and the calendar only, never on the clock's market state.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiohttp import web

from local_exchange import rest_outputs as out
from local_exchange.accounts import Token
from local_exchange.rest_context import TrContext
from local_exchange.rest_wire import NoData, kis_ok, need, parse_ymd
from observer_resources.calendar import CalendarRangeError
from observer_resources.kis import protocol as p

HOLIDAY_ROWS = 20
HOLIDAY_HORIZON_DAYS = 60


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


def ymd_or_empty(d: date) -> str:
    return d.strftime("%Y%m%d")


def _in_calendar(market: Any, d: date) -> bool:
    try:
        market.is_trading_day(d)
        return True
    except CalendarRangeError:
        return False
