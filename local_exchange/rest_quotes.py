"""The quote TRs: current price, multi-quote, trades by time and the volume ranking.

They answer from the market's state at the clock's instant, so they agree with the stream at that moment.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from local_exchange import rest_outputs as out
from local_exchange.accounts import Token
from local_exchange.nxt import is_trading
from local_exchange.rest_context import TrContext
from local_exchange.rest_wire import InputError, NoData, check_market_div, kis_ok, need, parse_hms, sec_of
from local_exchange.venue_bars import venue_prev_volume, venue_session
from local_exchange.venue_records import venue_trade_records
from observer_resources.kis import protocol as p

CONCLUSION_ROWS = 30
VOLUME_RANK_ROWS = 30


def inquire_price(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    venue = check_market_div(params)
    li = ctx.listing(need(params, "FID_INPUT_ISCD"))
    now = ctx.s.clock.now()
    q = ctx.s.market.venue_quote(li.code, now, venue)
    if venue == "NXT" and not is_trading(ctx.s.market, li.code, q.day):
        raise NoData()  # KIS has no NXT data for a code that does not trade there
    recent = ctx.recent(li.code, q.day)
    output = out.inquire_price(li, q, recent[0] if recent else None, ctx.past_extremes(li.code, q.day))
    return kis_ok(p.TR_INQUIRE_PRICE, output=output)


def multprice_pairs(params: dict[str, str]) -> list[tuple[int, str]]:
    """The multi-quote's (n, code) pairs in n order, its inputs checked as KIS checks them (at most 30, pair 1 given)."""
    pairs: list[tuple[int, str]] = []
    for k, v in params.items():
        if k.startswith("FID_INPUT_ISCD_"):
            try:
                n = int(k.rsplit("_", 1)[1])
            except ValueError:
                raise InputError(f"ERROR INVALID {k}") from None
            if n < 1 or n > p.MULTPRICE_MAX:
                raise InputError(f"ERROR INVALID {k}: AT MOST {p.MULTPRICE_MAX} ITEMS")
            if v.strip():
                pairs.append((n, v.strip()))
        elif k.startswith("FID_COND_MRKT_DIV_CODE_"):
            suffix = k.rsplit("_", 1)[1]
            if suffix.isdigit() and int(suffix) > p.MULTPRICE_MAX:
                raise InputError(f"ERROR INVALID {k}: AT MOST {p.MULTPRICE_MAX} ITEMS")
    if not any(n == 1 for n, _ in pairs):
        raise InputError("ERROR INPUT FIELD NOT FOUND [FID_INPUT_ISCD_1]", rt_cd="1")
    return sorted(pairs)


def multprice(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    now = ctx.s.clock.now()
    m = ctx.s.market
    rows = []
    for n, code in multprice_pairs(params):
        venue = check_market_div(params, f"FID_COND_MRKT_DIV_CODE_{n}")
        li = m.by_code.get(code)
        if li is None:
            continue  # KIS leaves unknown codes out of the list
        q = m.venue_quote(li.code, now, venue)
        if venue == "NXT" and not is_trading(m, li.code, q.day):
            continue  # no NXT data for this code: left out like an unknown code
        session = ctx.session_of(q.day) if venue == "KRX" else venue_session(m, q.day, venue)
        trtm, hour = out.session_codes(q, now, session)
        rows.append(out.multprice_row(li, q, mrkt_trtm=trtm, hour_cls=hour))
    return kis_ok(p.TR_MULTPRICE, output=rows)


def ccnl(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    """The venue's latest trades as of the clock, newest first; after the close, the day's last ones."""
    li, venue, q = ctx.venue_quote(params)
    m = ctx.s.market
    now = ctx.s.clock.now()
    ticks = m.venue_ticks(li.code, q.day, venue) if ctx.session_of(q.day) else None
    if ticks is None:
        return kis_ok(p.TR_CCNL, output=[])
    hi = ticks.index_at(sec_of(now)) if q.day == now.date() else len(ticks)
    lo = max(0, hi - p.CCNL_ROWS)
    if venue == "KRX":
        records = [m.trade_record(ticks, i) for i in range(hi - 1, lo - 1, -1)]
    else:
        records = venue_trade_records(m, ticks, lo, hi, venue)[::-1] if hi > lo else []
    return kis_ok(p.TR_CCNL, output=[out.ccnl_row(r, p.H0STCNT0_INDEX) for r in records])


def conclusion(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    li, venue, q = ctx.venue_quote(params)
    m = ctx.s.market
    now = ctx.s.clock.now()
    key = (tok.value, p.TR_TIME_CONCLUSION, tuple(sorted(params.items())))
    state = ctx.conts.get(key) if tr_cont == "N" else None
    if state is None:
        raw_hour = params.get("FID_INPUT_HOUR_1") or ""
        limit = sec_of(parse_hms(raw_hour, "FID_INPUT_HOUR_1")) if raw_hour.strip() else 86_399
        ticks = m.venue_ticks(li.code, q.day, venue) if ctx.session_of(q.day) else None
        if ticks is not None and q.day == now.date():
            limit = min(limit, sec_of(now))
        anchor = ticks.index_at(limit) if ticks is not None else 0
        state = {"day": q.day, "anchor": anchor, "served": 0}
    ticks = m.venue_ticks(li.code, state["day"], venue) if state["anchor"] else None
    hi = state["anchor"] - state["served"]
    lo = max(0, hi - CONCLUSION_ROWS)
    if venue == "KRX":
        records = [m.trade_record(ticks, i) for i in range(hi - 1, lo - 1, -1)]
    else:  # the H0NXCNT0 / H0UNCNT0 records of the same ticks, so REST equals that venue's stream
        records = venue_trade_records(m, ticks, lo, hi, venue)[::-1] if hi > lo else []
    rows = [out.conclusion_row(r, p.H0STCNT0_INDEX) for r in records]
    state["served"] += hi - lo
    more = lo > 0
    if more:
        ctx.conts.put(key, state)
    else:
        ctx.conts.drop(key)
    if venue == "KRX":
        hist = ctx.recent(li.code, q.day)
        prev_volume = hist[0].volume if hist else 0
    else:
        prev_volume = venue_prev_volume(m, li.code, q.day, venue)
    output1 = out.conclusion_output1(li, q, prev_volume)
    return kis_ok(p.TR_TIME_CONCLUSION, "M" if more else "D", output1=output1, output2=rows)


def volume_rank(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
    check_market_div(params)
    scope = (params.get("FID_INPUT_ISCD") or "0000").strip()
    if scope not in ("0000", "0001", "1001"):
        raise InputError("ERROR INVALID FID_INPUT_ISCD")
    div = (params.get("FID_DIV_CLS_CODE") or "0").strip() or "0"
    excl = (params.get("FID_TRGT_EXLS_CLS_CODE") or "").strip()
    blng = (params.get("FID_BLNG_CLS_CODE") or "0").strip() or "0"
    p1 = _int_or_none(params.get("FID_INPUT_PRICE_1"))
    p2 = _int_or_none(params.get("FID_INPUT_PRICE_2"))
    vol_floor = _int_or_none(params.get("FID_VOL_CNT")) or 0
    now = ctx.s.clock.now()
    quotes = ctx.s.market.volume_rank(now, market=scope, n=len(ctx.s.market.listings))
    if blng in ("2", "3", "4"):
        quotes = sorted(quotes, key=lambda q: (-q.acml_value, q.code))
    rows = []
    for q in quotes:
        li = ctx.s.market.by_code[q.code]
        if div == "1" and li.preferred or div == "2" and not li.preferred:
            continue
        if _excluded(li, excl):
            continue
        if p1 and q.price < p1 or p2 and q.price > p2 or q.acml_vol < vol_floor:
            continue
        rows.append(out.volume_rank_row(li, q, len(rows) + 1, ctx.recent(li.code, q.day)))
        if len(rows) >= VOLUME_RANK_ROWS:
            break
    return kis_ok(p.TR_VOLUME_RANK, output=rows)


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None and v.strip() else None
    except ValueError:
        raise InputError("ERROR INVALID PRICE/VOLUME FILTER") from None


def _excluded(li: Any, mask: str) -> bool:
    """FID_TRGT_EXLS_CLS_CODE: risk/warn/caution, managed, liquidation, bad disclosure, preferred,
    halted, ETF, ETN, no-credit, SPAC (1 = exclude)."""
    if not mask:
        return False
    m = mask.ljust(10, "0")
    etp = str(getattr(li, "etp", "0") or "0")
    checks = (
        bool(out._alarm(li)),
        bool(li.administrative),
        bool(li.liquidation),
        False,
        bool(li.preferred),
        bool(li.halted),
        etp in ("1", "2") or getattr(li, "group", "") == "EF",
        etp in ("3", "4"),
        bool(li.administrative or li.halted),
        bool(li.spac),
    )
    return any(m[i] == "1" and checks[i] for i in range(10))
