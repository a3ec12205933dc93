"""``/__sim__/`` admin API on the REST port: stats, clock, ground truth and fault injection.

Tests drive the exchange through these routes (never by reaching into the process), so every
route answers plain JSON and a bad request gets HTTP 400 with ``{"error": ...}`` saying why.
Routes are listed in docs/local-exchange.md.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from local_exchange import corporate_actions
from local_exchange.accounts import appkey_id
from local_exchange.faults import FaultError
from local_exchange.venues import NXT_LAUNCH, venues_for
from local_exchange.ws import TRADE_TRS, truth_feed_builder, truth_sent_json
from observer_resources.calendar import KST, CalendarRangeError
from observer_resources.kis import protocol as p

if TYPE_CHECKING:
    from local_exchange.state import SimState

PREFIX = "/__sim__"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False, default=_default),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def _default(o: Any) -> Any:
    if isinstance(o, (datetime, date, time)):
        return o.isoformat()
    if hasattr(o, "item"):  # numpy scalar
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class BadRequest(Exception):
    pass


def _parse_day(v: str | None, default: date) -> date:
    if not v:
        return default
    try:
        return date.fromisoformat(v) if "-" in v else datetime.strptime(v, "%Y%m%d").date()
    except ValueError:
        raise BadRequest(f"day must be YYYYMMDD or YYYY-MM-DD, got {v!r}") from None


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def _parse_hms(v: str | None, default: int) -> int:
    if not v:
        return default
    if not v.isdigit() or len(v) not in (4, 6):
        raise BadRequest(f"time must be HHMMSS, got {v!r}")
    v = v.ljust(6, "0")
    h, m, s = int(v[:2]), int(v[2:4]), int(v[4:])
    if h > 23 or m > 59 or s > 59:
        raise BadRequest(f"time out of range: {v!r}")
    return h * 3600 + m * 60 + s


def _parse_at(v: str | None, default: datetime) -> datetime:
    if not v:
        return default
    try:
        at = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"at must be an ISO datetime with an offset, got {v!r}") from None
    if at.tzinfo is None:
        raise BadRequest(f"at must carry a UTC offset (e.g. +09:00), got {v!r}")
    return at.astimezone(KST)


def quote_json(q: Any) -> dict[str, Any]:
    fields = (
        "code",
        "at",
        "day",
        "price",
        "prev_close",
        "open",
        "high",
        "low",
        "acml_vol",
        "acml_value",
        "trades",
        "ask1",
        "bid1",
        "ask_size1",
        "bid_size1",
        "total_ask_size",
        "total_bid_size",
        "upper_limit",
        "lower_limit",
        "last_trade_at",
    )
    return {f: getattr(q, f, None) for f in fields}


def add_routes(app: web.Application, state: SimState, *, market: bool = True) -> None:
    """The ``/__sim__`` routes; without a synthetic ``market`` only stats and faults (a replay or relay)."""

    def guarded(fn):  # noqa: ANN001, ANN202
        async def wrapper(request: web.Request) -> web.Response:
            try:
                return await fn(request)
            except BadRequest as exc:
                return _json({"error": str(exc)}, status=400)
            except FaultError as exc:
                return _json({"error": str(exc)}, status=400)
            except CalendarRangeError as exc:
                return _json({"error": str(exc)}, status=400)

        return wrapper

    async def info(request: web.Request) -> web.Response:
        now = state.clock.now()
        return _json(
            {
                "mode": state.mode,
                "seed": state.seed,
                "clock_mode": state.clock_mode,
                "listings": len(state.market.listings),
                "fields": 47 if state.fields47 else 46,
                "rest_url": state.rest_url,
                "ws_url": state.ws_url,
                "now": now.isoformat(),
                "speed": state.clock.speed,
            }
        )

    async def stats(request: web.Request) -> web.Response:
        total, by = state.hub.active_counts()
        snap = state.stats.snapshot(ws_sessions_active=total, ws_active_by_key=by)
        snap["ws_connections_open"] = len(state.hub.sessions)
        key = request.query.get("appkey")
        if key:
            snap["appkey"] = appkey_id(key)
            snap["for_appkey"] = snap["by_appkey"].get(key, {})
        return _json(snap)

    async def reset_stats(request: web.Request) -> web.Response:
        state.stats.reset()
        return _json({"ok": True})

    def clock_json() -> dict[str, Any]:
        now = state.clock.now()
        try:
            sess = state.market.session(now.date())
        except CalendarRangeError:
            sess = None
        return {
            "now": now.isoformat(),
            "speed": state.clock.speed,
            "day": now.date().isoformat(),
            "trading_day": sess is not None,
            "session": {"first_trade": sess[0].isoformat(), "closing_print": sess[1].isoformat()} if sess else None,
        }

    async def clock_get(request: web.Request) -> web.Response:
        return _json(clock_json())

    async def clock_post(request: web.Request) -> web.Response:
        body = await _body(request)
        at = _parse_at(body.get("at"), None) if body.get("at") else None  # type: ignore[arg-type]
        speed = body.get("speed")
        if speed is not None and (not isinstance(speed, (int, float)) or isinstance(speed, bool)):
            raise BadRequest("speed must be a number >= 0")
        try:
            state.clock.set(at=at, speed=speed)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return _json(clock_json())

    def _code(request: web.Request) -> str:
        code = request.query.get("code", "")
        if code not in state.market.by_code:
            raise BadRequest(f"unknown code {code!r}")
        return code

    async def truth_ticks(request: web.Request) -> web.Response:
        code = _code(request)
        now = state.clock.now()
        day = _parse_day(request.query.get("day"), now.date())
        lo_s = _parse_hms(request.query.get("from"), 0)
        hi_s = _parse_hms(request.query.get("to"), 86_399)
        with_records = request.query.get("records", "1") not in ("0", "false", "no")
        revealed = request.query.get("revealed", "0") in ("1", "true", "yes")
        venue = request.query.get("venue", "KRX").upper()
        if venue not in ("KRX", "NXT", "UN"):
            raise BadRequest("venue must be KRX, NXT or UN")
        ticks = state.hub.day_ticks(code, day)
        if ticks is not None and venue != "KRX":
            ticks = state.market.venue_ticks(code, day, venue)
            with_records = False  # H0STCNT0 records are KRX's; NXT and UN are served as plain trades
        out: list[dict[str, Any]] = []
        if ticks is not None:
            if revealed and day == now.date():
                hi_s = min(hi_s, now.hour * 3600 + now.minute * 60 + now.second)
            lo = int(ticks.index_at(lo_s - 1)) if lo_s > 0 else 0
            hi = int(ticks.index_at(hi_s))
            for i in range(lo, hi):
                sec = int(ticks.sec[i])
                row: dict[str, Any] = {
                    "index": i,
                    "time": f"{sec // 3600:02d}{sec // 60 % 60:02d}{sec % 60:02d}",
                    "price": int(ticks.price[i]),
                    "qty": int(ticks.qty[i]),
                    "side": int(ticks.side[i]),
                    "acml_vol": int(ticks.acml_vol[i]),
                    "acml_value": int(ticks.acml_value[i]),
                }
                if with_records:
                    row["record"] = state.market.trade_record(ticks, i)
                out.append(row)
        return _json(
            {
                "code": code,
                "venue": venue,
                "day": day.strftime("%Y%m%d"),
                "trading_day": ticks is not None,
                "total_ticks_in_day": len(ticks) if ticks is not None else 0,
                "fields": list(p.H0STCNT0_FIELDS) + ([p.H0STCNT0_EXTRA_FIELD] if state.fields47 else []),
                "count": len(out),
                "ticks": out,
            }
        )

    async def truth_sent(request: web.Request) -> web.Response:
        key = request.query.get("appkey", "")
        if not key:
            raise BadRequest("appkey is required")
        code = _code(request)
        tr_id = request.query.get("tr_id", p.TR_WS_TRADE)
        if tr_id not in TRADE_TRS:
            raise BadRequest(f"tr_id must be one of {', '.join(TRADE_TRS)}, got {tr_id!r}")
        return _json(truth_sent_json(state.hub, key, code, tr_id))

    async def truth_feed(request: web.Request) -> web.Response:
        """What one feed sent one app key for one code, record by record (trade feeds: withheld ticks too)."""
        key = request.query.get("appkey", "")
        if not key:
            raise BadRequest("appkey is required")
        tr_id = request.query.get("tr_id", "")
        if tr_id not in p.WS_REALTIME_TRS:
            raise BadRequest(f"tr_id must be one of {', '.join(sorted(p.WS_REALTIME_TRS))}, got {tr_id!r}")
        code = _code(request)
        # the logs are read here, on the event loop that appends to them; rebuilding many trade records takes a
        # while, so that runs in a thread and the stream keeps flowing
        return _json(await asyncio.to_thread(truth_feed_builder(state.hub, key, tr_id, code)))

    async def truth_quote(request: web.Request) -> web.Response:
        code = _code(request)
        at = _parse_at(request.query.get("at"), state.clock.now())
        venue = request.query.get("venue", "KRX")  # KRX, NXT or UN: that venue's quote, as J/NX/UN answer it
        if venue not in ("KRX", "NXT", "UN"):
            raise BadRequest(f"venue must be KRX, NXT or UN, got {venue!r}")
        return _json(quote_json(state.market.venue_quote(code, at, venue)))

    async def truth_nxt(request: web.Request) -> web.Response:
        """The NXT list of a day (default: the sim's date) and its period's mid-quarter cut, as search-stock-info
        reports them."""
        day = _parse_day(request.query.get("day"), state.clock.now().date())
        # the first ask of a period ranks every listing's cap: off the event loop, as the REST handlers do
        period = await asyncio.to_thread(venues_for(state.market).period, day)
        if period is None:
            return _json(
                {
                    "venue": "NXT",
                    "day": _ymd(day),
                    "launch": _ymd(NXT_LAUNCH),
                    "period": None,
                    "count": 0,
                    "members": [],
                    "halted": [],
                    "dropped": [],
                }
            )
        members = sorted(period.members(day))
        return _json(
            {
                "venue": "NXT",
                "day": _ymd(day),
                "launch": _ymd(NXT_LAUNCH),
                "period": {
                    "start": _ymd(period.start),
                    "end": _ymd(period.end),
                    "selected": len(period.selected),
                    "index_members": len(period.index_members & set(period.selected)),
                    "drop_day": _ymd(period.drop_day) if period.drop_day else None,
                },
                "count": len(members),
                "members": members,
                "halted": sorted(period.halted),
                "dropped": [
                    {"code": c, "day": _ymd(period.drop_day), "dropped": day >= period.drop_day}
                    for c in period.dropped
                    if period.drop_day is not None
                ],
            }
        )

    async def truth_corporate_actions(request: web.Request) -> web.Response:
        """The corporate actions of one listing (``code``) or of every listing, oldest first."""
        m = state.market
        codes = [_code(request)] if request.query.get("code") else [x.code for x in m.listings]
        return _json({"actions": [e.to_json() for c in codes for e in corporate_actions.actions_of(m, c)]})

    async def truth_daily_bars(request: web.Request) -> web.Response:
        """KRX daily bars of ``code`` from ``from`` to ``to`` (inclusive, oldest first), raw and adjusted, with the
        day's marker fields: what inquire-daily-itemchartprice answers for J with either FID_ORG_ADJ_PRC."""
        code = _code(request)
        m = state.market
        now = state.clock.now()
        lo = _parse_day(request.query.get("from"), now.date())
        hi = min(_parse_day(request.query.get("to"), now.date()), now.date())
        if lo > hi:
            raise BadRequest(f"from {lo} is after to {hi}")
        bars = [b for b in m.daily_bars(code, hi, (hi - lo).days + 1, as_of=now) if b.day >= lo]
        rows = []
        for b in reversed(bars):
            r = corporate_actions.as_raw(m, code, b)
            rows.append(
                {
                    "day": b.day,
                    "raw": {f: getattr(r, f) for f in ("open", "high", "low", "close", "volume", "value")},
                    "adjusted": {f: getattr(b, f) for f in ("open", "high", "low", "close", "volume", "value")},
                    "ratio": float(corporate_actions.ratio_on(m, code, b.day)),
                    **corporate_actions.markers_on(m, code, b.day),
                }
            )
        return _json({"code": code, "bars": rows})

    async def listings(request: web.Request) -> web.Response:
        mkt = request.query.get("market")
        limit = int(request.query.get("limit", "0") or 0)
        order = request.query.get("order", "code")
        rows = [li for li in state.market.listings if mkt in (None, "", li.market)]
        if order == "activity":
            rows.sort(key=lambda li: (-li.activity, li.code))
        if limit > 0:
            rows = rows[:limit]
        return _json(
            {
                "count": len(rows),
                "listings": [
                    {
                        "code": li.code,
                        "name": li.name,
                        "market": li.market,
                        "group": li.group,
                        "etp": li.etp,
                        "preferred": li.preferred,
                        "spac": li.spac,
                        "halted": li.halted,
                        "liquidation": li.liquidation,
                        "administrative": li.administrative,
                        "alarm": li.alarm,
                        "activity": li.activity,
                    }
                    for li in rows
                ],
            }
        )

    async def faults_get(request: web.Request) -> web.Response:
        return _json(state.faults.to_json())

    async def faults_post(request: web.Request) -> web.Response:
        body = await _body(request)
        fault = state.faults.add(body)
        if fault.kind == "token_expire_now":
            n = state.accounts.expire_tokens(state.clock.now(), fault.appkey)
            state.faults.use(fault, {"tokens_expired": n})
            state.faults.finish(fault)
        elif fault.kind in ("ws_drop", "ws_silent", "ws_stall"):
            await state.hub.apply_fault(fault)
        return _json(fault.to_json())

    async def faults_delete(request: web.Request) -> web.Response:
        n = state.faults.clear()
        for s in state.hub.sessions.values():
            s.silent_until = 0.0
            for reg in s.regs.values():
                reg.stalled_until = 0.0
        return _json({"cleared": n})

    r = app.router
    r.add_get(PREFIX + "/stats", guarded(stats))
    r.add_post(PREFIX + "/reset-stats", guarded(reset_stats))
    r.add_get(PREFIX + "/faults", guarded(faults_get))
    r.add_post(PREFIX + "/faults", guarded(faults_post))
    r.add_delete(PREFIX + "/faults", guarded(faults_delete))
    if not market:
        return
    r.add_get(PREFIX + "/info", guarded(info))
    r.add_get(PREFIX + "/clock", guarded(clock_get))
    r.add_post(PREFIX + "/clock", guarded(clock_post))
    r.add_get(PREFIX + "/truth/ticks", guarded(truth_ticks))
    r.add_get(PREFIX + "/truth/sent", guarded(truth_sent))
    r.add_get(PREFIX + "/truth/feed", guarded(truth_feed))
    r.add_get(PREFIX + "/truth/quote", guarded(truth_quote))
    r.add_get(PREFIX + "/truth/nxt", guarded(truth_nxt))
    r.add_get(PREFIX + "/truth/corporate_actions", guarded(truth_corporate_actions))
    r.add_get(PREFIX + "/truth/daily_bars", guarded(truth_daily_bars))
    r.add_get(PREFIX + "/listings", guarded(listings))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body
