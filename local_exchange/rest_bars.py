"""The chart TRs: daily, weekly, monthly and yearly bars, and minute bars of today or a past day.

Clients page them by time, not by tr_cont, so unlike trades by time they keep no paging state.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from aiohttp import web

from local_exchange import corporate_actions as ca
from local_exchange import rest_outputs as out
from local_exchange.accounts import Token
from local_exchange.rest_context import TrContext
from local_exchange.rest_wire import InputError, check_market_div, kis_ok, need, parse_hms, parse_ymd
from local_exchange.venue_bars import day_venue, venue_daily_bars, venue_minute_bars
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p

MINUTE_HISTORY_DAYS = 366


def adjusted_asked(params: dict[str, str], adjusted_code: str) -> bool:
    """``FID_ORG_ADJ_PRC``: the two daily TRs spell "adjusted" oppositely (docs/kis-protocol.md §6.3/§6.4):
    inquire-daily-itemchartprice 0 = adjusted, 1 = raw; inquire-daily-price 0 = raw, 1 = adjusted. Absent: adjusted
    (what the exchange answered before it knew corporate actions)."""
    v = (params.get("FID_ORG_ADJ_PRC") or "").strip()
    if v not in ("", "0", "1"):
        raise InputError("ERROR INVALID FID_ORG_ADJ_PRC")
    return v in ("", adjusted_code)


def _basis(ctx: TrContext, code: str, bars: list, adjusted: bool) -> list:
    """The chain's bars are the adjusted series; raw ones are put back on each day's own share basis."""
    return bars if adjusted else [ca.as_raw(ctx.s.market, code, b) for b in bars]


def daily_price(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    li, _, _ = ctx.venue_quote(params)  # NX without NXT data today: rt_cd 7
    venue = check_market_div(params)  # per day: a past day may have NXT trades when today has none
    period = (params.get("FID_PERIOD_DIV_CODE") or "D").upper()
    if period not in ("D", "W", "M"):
        raise InputError("ERROR INVALID FID_PERIOD_DIV_CODE")
    now = ctx.s.clock.now()
    span = {"D": 1, "W": 5, "M": 23}[period] * (p.DAILY_PRICE_ROWS + 1) + 10
    adjusted = adjusted_asked(params, "1")
    bars = venue_daily_bars(ctx.s.market, li.code, now.date(), span, as_of=now, venue=venue)
    agg = out.aggregate_bars(_basis(ctx, li.code, bars, adjusted), period)
    rows = []
    for i, b in enumerate(agg[: p.DAILY_PRICE_ROWS]):
        prev_vol = agg[i + 1].volume if i + 1 < len(agg) else 0
        marks = ca.markers_on(ctx.s.market, li.code, b.day) if period == "D" else None
        rows.append(out.daily_price_row(li, b, prev_vol, marks))
    return kis_ok(p.TR_DAILY_PRICE, output=rows)


def daily_itemchart(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    li, venue, q = ctx.venue_quote(params)
    m = ctx.s.market
    d1 = parse_ymd(need(params, "FID_INPUT_DATE_1"), "FID_INPUT_DATE_1")
    d2 = parse_ymd(need(params, "FID_INPUT_DATE_2"), "FID_INPUT_DATE_2")
    period = (params.get("FID_PERIOD_DIV_CODE") or "D").upper()
    if period not in ("D", "W", "M", "Y"):
        raise InputError("ERROR INVALID FID_PERIOD_DIV_CODE")
    adjusted = adjusted_asked(params, "0")
    now = ctx.s.clock.now()
    if venue == "KRX":
        hist = ctx.recent(li.code, q.day)
    else:
        pday = m._prev_day(q.day)
        hist = venue_daily_bars(m, li.code, pday, 1, as_of=now, venue=venue) if pday is not None else []
    output1 = out.daily_chart_output1(li, q, hist[0] if hist else None)
    end = min(d2, now.date())
    rows: list[dict[str, str]] = []
    if d1 <= end:
        per_row = {"D": 1, "W": 5, "M": 23, "Y": 250}[period]
        calendar_days = (end - d1).days + 1
        n = min(calendar_days, per_row * (p.DAILY_ITEMCHART_ROWS + 1), 2600)
        asked = check_market_div(params)  # per day: a past day may have NXT trades when today has none
        bars = [b for b in venue_daily_bars(m, li.code, end, n, as_of=now, venue=asked) if b.day >= d1]
        agg = out.aggregate_bars(_basis(ctx, li.code, bars, adjusted), period)[: p.DAILY_ITEMCHART_ROWS]
        rows = [out.daily_chart_row(b, ca.markers_on(m, li.code, b.day) if period == "D" else None) for b in agg]
    return kis_ok(p.TR_DAILY_ITEMCHART, output1=output1, output2=rows)


def time_itemchart(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    li, venue, q = ctx.venue_quote(params)
    hour = parse_hms(need(params, "FID_INPUT_HOUR_1"), "FID_INPUT_HOUR_1")
    now = ctx.s.clock.now()
    # HOUR_1 names a minute bar: the whole minute is included (clients page by "earliest - 1 min")
    until = datetime.combine(q.day, hour.replace(second=59), KST)
    if until > now:
        until = now  # a future time is clamped to now
    bars = venue_minute_bars(ctx.s.market, li.code, q.day, until, venue) if ctx.session_of(q.day) else []
    rows = [out.minute_row(b) for b in reversed(bars[-p.TIME_ITEMCHART_ROWS :])]
    return kis_ok(p.TR_TIME_ITEMCHART, output1=out.chart_output1(li, q), output2=rows)


def time_dailychart(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    li, _, q = ctx.venue_quote(params)
    asked = check_market_div(params)  # mapped per day below: NXT may trade the code on some days only
    m = ctx.s.market
    now = ctx.s.clock.now()
    d = parse_ymd(need(params, "FID_INPUT_DATE_1"), "FID_INPUT_DATE_1")
    hour = parse_hms(params.get("FID_INPUT_HOUR_1") or "235959", "FID_INPUT_HOUR_1")
    until = datetime.combine(d, hour.replace(second=59), KST)
    if until > now:
        until = now
        d = q.day if q.day <= now.date() else now.date()
        until = min(until, datetime.combine(d, time(23, 59, 59), KST))
    oldest = now.date() - timedelta(days=MINUTE_HISTORY_DAYS)
    rows: list[dict[str, str]] = []
    guard = 0
    while len(rows) < p.TIME_DAILYCHART_ROWS and d >= oldest and guard < 30:
        guard += 1
        v = day_venue(m, li.code, d, asked) if ctx.session_of(d) else None
        if v is not None:
            bars = venue_minute_bars(m, li.code, d, until, v)
            for b in reversed(bars):
                rows.append(out.minute_row(b))
                if len(rows) >= p.TIME_DAILYCHART_ROWS:
                    break
        d = m.previous_trading_day(d)
        until = datetime.combine(d, time(23, 59, 59), KST)
    return kis_ok(p.TR_TIME_DAILYCHART, output1=out.chart_output1(li, q), output2=rows)
