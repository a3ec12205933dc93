"""The local exchange's REST server: KIS's token endpoints, quote TRs and master files (aiohttp).

Wire details follow docs/kis-protocol.md §2-§6 and §10 byte for byte where clients depend on them:
JSON bodies with every number a string, the rt_cd/msg_cd/msg1 envelope, response headers
``Content-Type`` (that capitalisation) and lower-case ``tr_id`` / ``tr_cont`` / ``gt_uid``, the
gateway's error codes and HTTP statuses, and query names matched case-insensitively.

Order of checks on a ``/uapi`` call, as a gateway would do them: injected REST faults, token
(EGW00121 / EGW00123), app key / secret headers, per-key rate limit (EGW00201), tr_id, paper
refusal, then the TR's own parameters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from local_exchange import rest_outputs as out
from local_exchange.accounts import CredentialError, Token, TokenError, appkey_id
from observer_resources.calendar import KST, CalendarRangeError
from observer_resources.kis import protocol as p

if TYPE_CHECKING:
    from local_exchange.state import SimState

log = logging.getLogger("observer.sim.rest")

STATE: web.AppKey[Any] = web.AppKey("sim_state", object)
JSON_CT = "application/json; charset=utf-8"

# Codes the sim uses where KIS's exact answer is undocumented (docs/local-exchange.md lists them).
NO_DATA_MSG_CD = "KIOK0560"
NO_DATA_MSG1 = "조회할 자료가 없습니다"
BAD_TR_MSG_CD = "OPSQ0002"
BAD_TR_MSG1 = "없는 서비스 코드 입니다"
INPUT_MSG_CD = "OPSQ2001"

CONCLUSION_ROWS = 30
HOLIDAY_ROWS = 20
HOLIDAY_HORIZON_DAYS = 60
VOLUME_RANK_ROWS = 30
MINUTE_HISTORY_DAYS = 366
RECENT_DAYS = 5
EXTREMES_DAYS = 250
CONTINUATIONS_MAX = 10_000


class InputError(Exception):
    """A TR parameter is missing or invalid: KIS answers rt_cd 1/2 with OPSQ2001."""

    def __init__(self, msg1: str, rt_cd: str = "2"):
        self.msg1 = msg1
        self.rt_cd = rt_cd
        super().__init__(msg1)


class NoData(Exception):
    """Unknown symbol / product: rt_cd 7."""


# --- response helpers -------------------------------------------------------------------------
def gt_uid() -> str:
    return uuid.uuid4().hex.upper()


def kis_response(payload: dict[str, Any], *, status: int = 200, tr_id: str = "", tr_cont: str = "D") -> web.Response:
    headers = {"Content-Type": JSON_CT, "tr_id": tr_id, "tr_cont": tr_cont, "gt_uid": gt_uid()}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(body=body, status=status, headers=headers)


def kis_ok(tr_id: str, tr_cont: str = "D", **payload: Any) -> web.Response:
    return kis_response(
        {"rt_cd": "0", "msg_cd": p.OK_MSG_CD, "msg1": p.OK_MSG1, **payload}, tr_id=tr_id, tr_cont=tr_cont
    )


def kis_fail(
    msg_cd: str, msg1: str | None = None, *, status: int = 500, rt_cd: str = "1", tr_id: str = ""
) -> web.Response:
    text = msg1 if msg1 is not None else p.ERROR_MESSAGES.get(msg_cd, "")
    return kis_response({"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": text}, status=status, tr_id=tr_id, tr_cont="")


def _failed(response: web.Response) -> bool:
    """Whether a KIS answer is a failure (rt_cd != "0"); the envelope is always at the body's start."""
    body = response.body
    return isinstance(body, bytes) and not body.startswith(b'{"rt_cd":"0"')


def _rate_limited(response: web.Response) -> bool:
    body = response.body
    return isinstance(body, bytes) and b'"msg_cd":"EGW00201"' in body[:60]


def oauth_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_CT})


def oauth_error(err: CredentialError) -> web.Response:
    return oauth_response({"error_code": err.code, "error_description": err.description}, status=err.http_status)


# --- parameter helpers ------------------------------------------------------------------------
def upper_params(request: web.Request) -> dict[str, str]:
    """Query parameters by upper-cased name (KIS matches names case-insensitively)."""
    return {k.upper(): v for k, v in request.query.items()}


def need(params: dict[str, str], name: str) -> str:
    v = params.get(name)
    if v is None or v.strip() == "":
        raise InputError(f"ERROR INPUT FIELD NOT FOUND [{name}]", rt_cd="1")
    return v.strip()


def parse_ymd(value: str, name: str) -> date:
    try:
        if len(value) != 8 or not value.isdigit():
            raise ValueError
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise InputError(f"ERROR INVALID {name}") from None


def parse_hms(value: str, name: str) -> time:
    v = value.strip()
    try:
        if not v.isdigit() or len(v) not in (4, 6):
            raise ValueError
        v = v.ljust(6, "0")
        return time(int(v[:2]), int(v[2:4]), int(v[4:]))
    except ValueError:
        raise InputError(f"ERROR INVALID {name}") from None


def check_market_div(params: dict[str, str], name: str = "FID_COND_MRKT_DIV_CODE") -> None:
    if need(params, name).upper() not in ("J", "NX", "UN"):
        raise InputError(f"ERROR INVALID {name}")


def sec_of(t: datetime | time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


# --- the application --------------------------------------------------------------------------
class Continuations:
    """Server-side paging state per (token, tr_id, params), as KIS keeps it for tr_cont: N."""

    def __init__(self, cap: int = CONTINUATIONS_MAX):
        self._d: OrderedDict[tuple, Any] = OrderedDict()
        self._cap = cap
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            v = self._d.get(key)
            return dict(v) if v is not None else None

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._cap:
                self._d.popitem(last=False)

    def drop(self, key: tuple) -> None:
        with self._lock:
            self._d.pop(key, None)


Handler = Callable[["RestApi", dict[str, str], Token, str], web.Response]


class RestApi:
    """Request handling bound to one SimState."""

    def __init__(self, state: SimState):
        self.s = state
        self.conts = Continuations()
        self._history_cache: OrderedDict[tuple, list[Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._master_cache: dict[tuple[str, date], bytes] = {}
        self.handlers: dict[str, Handler] = {
            "inquire-price": RestApi.inquire_price,
            "intstock-multprice": RestApi.multprice,
            "inquire-daily-price": RestApi.daily_price,
            "inquire-daily-itemchartprice": RestApi.daily_itemchart,
            "inquire-time-itemchartprice": RestApi.time_itemchart,
            "inquire-time-dailychartprice": RestApi.time_dailychart,
            "inquire-time-itemconclusion": RestApi.conclusion,
            "volume-rank": RestApi.volume_rank,
            "chk-holiday": RestApi.chk_holiday,
            "search-info": RestApi.search_info,
        }

    # --- oauth --------------------------------------------------------------------------
    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            raise CredentialError("EGW00101") from None
        if not isinstance(body, dict):
            raise CredentialError("EGW00101")
        return body

    async def token(self, request: web.Request) -> web.Response:
        s = self.s
        appkey: str | None = None
        try:
            body = await self._json_body(request)
            appkey = _str(body.get("appkey"))
            if body.get("grant_type") != "client_credentials":
                raise CredentialError("EGW00101")
            if appkey is not None and (f := s.faults.first("token_refuse", appkey=appkey)) is not None:
                s.faults.use(f, {"appkey": appkey_id(appkey)})
                raise CredentialError(p.EGW_TOKEN_TOO_OFTEN)
            now = s.clock.now()
            tok, new = s.accounts.issue_token(appkey, body.get("appsecret"), now)
        except CredentialError as err:
            if err.code == p.EGW_TOKEN_TOO_OFTEN:
                s.stats.inc("token_refused_total", appkey)
            return oauth_error(err)
        s.stats.inc("tokens_issued_total", tok.appkey)
        if new:
            s.stats.inc("tokens_new_total", tok.appkey)
        remaining = max(0, int((tok.expires_at - now).total_seconds()))
        return oauth_response(
            {
                "access_token": tok.value,
                "access_token_token_expired": tok.expired_str(),
                "token_type": "Bearer",
                "expires_in": remaining,
            }
        )

    async def revoke(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
            done = self.s.accounts.revoke(body.get("appkey"), body.get("appsecret"), body.get("token"))
        except CredentialError as err:
            return oauth_error(err)
        msg = "접근토큰 폐기에 성공하였습니다" if done else "이미 폐기되었거나 유효하지 않은 접근토큰입니다"
        return oauth_response({"code": 200, "message": msg})

    async def approval(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
            if body.get("grant_type") != "client_credentials":
                raise CredentialError("EGW00101")
            key = self.s.accounts.issue_approval(body.get("appkey"), body.get("secretkey"))
        except CredentialError as err:
            return oauth_error(err)
        self.s.stats.inc("approval_keys_issued_total", body.get("appkey"))
        return oauth_response({"approval_key": key})

    # --- masters ------------------------------------------------------------------------
    async def master(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        mkt = {"kospi_code.mst.zip": "kospi", "kosdaq_code.mst.zip": "kosdaq"}.get(name)
        if mkt is None:
            raise web.HTTPNotFound(text=f"no master file {name} on the local exchange (kospi, kosdaq)")
        from local_exchange import master as master_mod

        day = self.s.clock.now().date()
        key = (mkt, day)
        data = self._master_cache.get(key)
        if data is None:
            data = await asyncio.to_thread(master_mod.build_master_zip, self.s.market, mkt, day)
            self._master_cache = {key: data} | {k: v for k, v in self._master_cache.items() if k[1] == day}
        return web.Response(body=data, headers={"Content-Type": "application/zip"})

    # --- /uapi dispatch -----------------------------------------------------------------
    async def quotations(self, request: web.Request) -> web.Response:
        s = self.s
        name = request.match_info["name"]
        h = request.headers
        header_key = h.get("appkey") or None
        s.stats.inc("requests_total", header_key)
        tr_id = (h.get("tr_id") or "").strip()

        if (f := s.faults.first("rest_slow", appkey=header_key)) is not None:
            s.faults.use(f, {"path": name})
            await asyncio.sleep(float(f.params.get("seconds", 1.0)))
        if (f := s.faults.first("rest_5xx", appkey=header_key)) is not None:
            status = int(f.params.get("status", 503))
            s.faults.use(f, {"path": name, "status": status})
            s.stats.inc("rest_errors_total", header_key)
            text = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}.get(status, "Server Error")
            html = f"<html><head><title>{status} {text}</title></head><body><center><h1>{status} {text}</h1></center></body></html>"
            return web.Response(status=status, body=html.encode(), headers={"Content-Type": "text/html"})
        if (f := s.faults.first("rest_rate_limit", appkey=header_key)) is not None:
            s.faults.use(f, {"path": name})
            s.stats.inc("rate_limited_total", header_key)
            return kis_fail(p.EGW_RATE, tr_id=tr_id)

        response = await self._authorized(request, name, tr_id, header_key)
        if _failed(response) and not _rate_limited(response):
            s.stats.inc("rest_errors_total", header_key)
        return response

    async def _authorized(self, request: web.Request, name: str, tr_id: str, header_key: str | None) -> web.Response:
        """Token, key headers, rate limit, tr_id, paper refusal, then the TR handler."""
        s = self.s
        h = request.headers
        now = s.clock.now()
        try:
            tok = s.accounts.check_token(h.get("authorization"), now)
        except TokenError as err:
            return kis_fail(err.code, tr_id=tr_id)
        account = s.accounts.account(tok.appkey)
        assert account is not None
        if header_key is None:
            return kis_fail("EGW00102", "AppKey는 필수입니다.", tr_id=tr_id)
        if header_key != tok.appkey:
            return kis_fail("EGW00103", "유효하지 않은 AppKey입니다.", tr_id=tr_id)
        if not h.get("appsecret"):
            return kis_fail("EGW00104", "AppSecret는 필수입니다.", tr_id=tr_id)
        if h.get("appsecret") != account.secret:
            return kis_fail(p.EGW_BAD_SECRET, tr_id=tr_id)
        if not s.accounts.rate_allow(tok.appkey):
            s.stats.inc("rate_limited_total", tok.appkey)
            return kis_fail(p.EGW_RATE, tr_id=tr_id)

        expected = p.QUOTE_PATHS.get(name)
        handler = self.handlers.get(name)
        if expected is None or handler is None:
            raise web.HTTPNotFound(text=f"no such quotation path: {name}")
        allowed = {expected}
        if account.mode == "paper" and expected[0] in "TJC":
            allowed.add("V" + expected[1:])  # paper clients swap T/J/C for V (§3.2)
        if tr_id not in allowed:
            return kis_fail(BAD_TR_MSG_CD, BAD_TR_MSG1, tr_id=tr_id)
        if account.mode == "paper" and expected in p.PAPER_REFUSED_TRS:
            return kis_fail("", p.PAPER_REFUSAL_MSG1, tr_id=tr_id)
        params = upper_params(request)
        tr_cont = (h.get("tr_cont") or "").strip().upper()
        try:
            # market work can take a while on first touch (a busy symbol's past days): keep it off the
            # event loop so the stream's emit loops and PINGPONGs keep their pace
            return await asyncio.to_thread(handler, self, params, tok, tr_cont)
        except InputError as err:
            return kis_response({"rt_cd": err.rt_cd, "msg_cd": INPUT_MSG_CD, "msg1": err.msg1}, tr_id=tr_id, tr_cont="")
        except NoData:
            return kis_response(
                {"rt_cd": p.NO_DATA_RT_CD, "msg_cd": NO_DATA_MSG_CD, "msg1": NO_DATA_MSG1}, tr_id=tr_id, tr_cont=""
            )
        except CalendarRangeError as err:
            return kis_response(
                {"rt_cd": "1", "msg_cd": INPUT_MSG_CD, "msg1": f"ERROR INVALID DATE ({err})"}, tr_id=tr_id, tr_cont=""
            )

    # --- market access ------------------------------------------------------------------
    def listing(self, code: str) -> Any:
        code = code.strip()
        li = self.s.market.by_code.get(code)
        if li is None and len(code) == 7 and code[0] in "AJ":
            li = self.s.market.by_code.get(code[1:])
        if li is None:
            raise NoData()
        return li

    def _cached(self, key: tuple, compute: Callable[[], list[Any]]) -> list[Any]:
        with self._cache_lock:
            hit = self._history_cache.get(key)
        if hit is not None:
            return hit
        value = compute()
        with self._cache_lock:
            self._history_cache[key] = value
            while len(self._history_cache) > 8192:
                self._history_cache.popitem(last=False)
        return value

    def recent(self, code: str, day: date) -> list[Any]:
        """The last RECENT_DAYS finished daily bars before ``day``, newest first (cached).

        Kept short on purpose: a finished day's bar costs the market a full day of ticks the first
        time, and a busy symbol's year would take seconds."""

        def compute() -> list[Any]:
            m = self.s.market
            try:
                prev = m.previous_trading_day(day)
                return list(m.daily_bars(code, prev, RECENT_DAYS, as_of=datetime.combine(day, time(0), KST)))
            except CalendarRangeError:
                return []

        return self._cached(("recent", code, day), compute)

    def past_extremes(self, code: str, day: date) -> list[tuple[date, int, int]]:
        """(day, high, low) for about a year of finished days before ``day``: real extremes for the
        recent days, the official close for older ones (cheap: no ticks needed)."""

        def compute() -> list[Any]:
            m = self.s.market
            recent = self.recent(code, day)
            rows = [(b.day, b.high, b.low) for b in recent]
            d = recent[-1].day if recent else day
            try:
                while len(rows) < EXTREMES_DAYS:
                    d = m.previous_trading_day(d)
                    c = m.close(code, d)
                    rows.append((d, c, c))
            except (CalendarRangeError, ValueError):
                pass
            return rows

        return self._cached(("extremes", code, day), compute)

    def session_of(self, d: date) -> tuple[datetime, datetime] | None:
        try:
            return self.s.market.session(d)
        except CalendarRangeError:
            return None

    # --- TR handlers --------------------------------------------------------------------
    def inquire_price(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        q = self.s.market.quote(li.code, self.s.clock.now())
        recent = self.recent(li.code, q.day)
        output = out.inquire_price(li, q, recent[0] if recent else None, self.past_extremes(li.code, q.day))
        return kis_ok(p.TR_INQUIRE_PRICE, output=output)

    def multprice(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
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
        now = self.s.clock.now()
        rows = []
        for n, code in sorted(pairs):
            check_market_div(params, f"FID_COND_MRKT_DIV_CODE_{n}")
            li = self.s.market.by_code.get(code)
            if li is None:
                continue  # KIS leaves unknown codes out of the list
            q = self.s.market.quote(li.code, now)
            trtm, hour = out.session_codes(q, now, self.session_of(q.day))
            rows.append(out.multprice_row(li, q, mrkt_trtm=trtm, hour_cls=hour))
        return kis_ok(p.TR_MULTPRICE, output=rows)

    def daily_price(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        period = (params.get("FID_PERIOD_DIV_CODE") or "D").upper()
        if period not in ("D", "W", "M"):
            raise InputError("ERROR INVALID FID_PERIOD_DIV_CODE")
        now = self.s.clock.now()
        span = {"D": 1, "W": 5, "M": 23}[period] * (p.DAILY_PRICE_ROWS + 1) + 10
        bars = self.s.market.daily_bars(li.code, now.date(), span, as_of=now)
        agg = out.aggregate_bars(bars, period)
        rows = []
        for i, b in enumerate(agg[: p.DAILY_PRICE_ROWS]):
            prev_vol = agg[i + 1].volume if i + 1 < len(agg) else 0
            rows.append(out.daily_price_row(li, b, prev_vol))
        return kis_ok(p.TR_DAILY_PRICE, output=rows)

    def daily_itemchart(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        d1 = parse_ymd(need(params, "FID_INPUT_DATE_1"), "FID_INPUT_DATE_1")
        d2 = parse_ymd(need(params, "FID_INPUT_DATE_2"), "FID_INPUT_DATE_2")
        period = (params.get("FID_PERIOD_DIV_CODE") or "D").upper()
        if period not in ("D", "W", "M", "Y"):
            raise InputError("ERROR INVALID FID_PERIOD_DIV_CODE")
        now = self.s.clock.now()
        q = self.s.market.quote(li.code, now)
        hist = self.recent(li.code, q.day)
        output1 = out.daily_chart_output1(li, q, hist[0] if hist else None)
        end = min(d2, now.date())
        rows: list[dict[str, str]] = []
        if d1 <= end:
            per_row = {"D": 1, "W": 5, "M": 23, "Y": 250}[period]
            calendar_days = (end - d1).days + 1
            n = min(calendar_days, per_row * (p.DAILY_ITEMCHART_ROWS + 1), 2600)
            bars = [b for b in self.s.market.daily_bars(li.code, end, n, as_of=now) if b.day >= d1]
            rows = [out.daily_chart_row(b) for b in out.aggregate_bars(bars, period)[: p.DAILY_ITEMCHART_ROWS]]
        return kis_ok(p.TR_DAILY_ITEMCHART, output1=output1, output2=rows)

    def time_itemchart(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        hour = parse_hms(need(params, "FID_INPUT_HOUR_1"), "FID_INPUT_HOUR_1")
        now = self.s.clock.now()
        q = self.s.market.quote(li.code, now)
        # HOUR_1 names a minute bar: the whole minute is included (clients page by "earliest - 1 min")
        until = datetime.combine(q.day, hour.replace(second=59), KST)
        if until > now:
            until = now  # a future time is clamped to now
        bars = self.s.market.minute_bars(li.code, q.day, until) if self.session_of(q.day) else []
        rows = [out.minute_row(b) for b in reversed(bars[-p.TIME_ITEMCHART_ROWS :])]
        return kis_ok(p.TR_TIME_ITEMCHART, output1=out.chart_output1(li, q), output2=rows)

    def time_dailychart(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        m = self.s.market
        now = self.s.clock.now()
        q = m.quote(li.code, now)
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
            if self.session_of(d):
                bars = m.minute_bars(li.code, d, until)
                for b in reversed(bars):
                    rows.append(out.minute_row(b))
                    if len(rows) >= p.TIME_DAILYCHART_ROWS:
                        break
            d = m.previous_trading_day(d)
            until = datetime.combine(d, time(23, 59, 59), KST)
        return kis_ok(p.TR_TIME_DAILYCHART, output1=out.chart_output1(li, q), output2=rows)

    def conclusion(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        check_market_div(params)
        li = self.listing(need(params, "FID_INPUT_ISCD"))
        m = self.s.market
        now = self.s.clock.now()
        q = m.quote(li.code, now)
        key = (tok.value, p.TR_TIME_CONCLUSION, tuple(sorted(params.items())))
        state = self.conts.get(key) if tr_cont == "N" else None
        if state is None:
            raw_hour = params.get("FID_INPUT_HOUR_1") or ""
            limit = sec_of(parse_hms(raw_hour, "FID_INPUT_HOUR_1")) if raw_hour.strip() else 86_399
            ticks = m.day_ticks(li.code, q.day) if self.session_of(q.day) else None
            if ticks is not None and q.day == now.date():
                limit = min(limit, sec_of(now))
            anchor = ticks.index_at(limit) if ticks is not None else 0
            state = {"day": q.day, "anchor": anchor, "served": 0}
        ticks = m.day_ticks(li.code, state["day"]) if state["anchor"] else None
        hi = state["anchor"] - state["served"]
        lo = max(0, hi - CONCLUSION_ROWS)
        rows = [out.conclusion_row(m.trade_record(ticks, i), p.H0STCNT0_INDEX) for i in range(hi - 1, lo - 1, -1)]
        state["served"] += hi - lo
        more = lo > 0
        if more:
            self.conts.put(key, state)
        else:
            self.conts.drop(key)
        hist = self.recent(li.code, q.day)
        output1 = out.conclusion_output1(li, q, hist[0].volume if hist else 0)
        return kis_ok(p.TR_TIME_CONCLUSION, "M" if more else "D", output1=output1, output2=rows)

    def volume_rank(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
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
        now = self.s.clock.now()
        quotes = self.s.market.volume_rank(now, market=scope, n=len(self.s.market.listings))
        if blng in ("2", "3", "4"):
            quotes = sorted(quotes, key=lambda q: (-q.acml_value, q.code))
        rows = []
        for q in quotes:
            li = self.s.market.by_code[q.code]
            if div == "1" and li.preferred or div == "2" and not li.preferred:
                continue
            if _excluded(li, excl):
                continue
            if p1 and q.price < p1 or p2 and q.price > p2 or q.acml_vol < vol_floor:
                continue
            rows.append(out.volume_rank_row(li, q, len(rows) + 1, self.recent(li.code, q.day)))
            if len(rows) >= VOLUME_RANK_ROWS:
                break
        return kis_ok(p.TR_VOLUME_RANK, output=rows)

    def chk_holiday(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        base = parse_ymd(need(params, "BASS_DT"), "BASS_DT")
        nk = (params.get("CTX_AREA_NK") or "").strip()
        start = parse_ymd(nk, "CTX_AREA_NK") if nk else base
        horizon = base + timedelta(days=HOLIDAY_HORIZON_DAYS - 1)
        rows = []
        d = start
        while d <= horizon and len(rows) < HOLIDAY_ROWS:
            try:
                opened = self.s.market.is_trading_day(d)
            except CalendarRangeError:
                break
            rows.append(out.holiday_row(d, opened))
            d += timedelta(days=1)
        more = d <= horizon and bool(rows) and _in_calendar(self.s.market, d)
        fk = ymd_or_empty(base) if more else ""
        next_nk = ymd_or_empty(d) if more else ""
        return kis_ok(p.TR_CHK_HOLIDAY, "M" if more else "D", ctx_area_fk=fk, ctx_area_nk=next_nk, output=rows)

    def search_info(self, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        pdno = need(params, "PDNO")
        if (params.get("PRDT_TYPE_CD") or "300").strip() != "300":
            raise NoData()
        return kis_ok(p.TR_SEARCH_INFO, output=out.search_info(self.listing(pdno)))


def ymd_or_empty(d: date) -> str:
    return d.strftime("%Y%m%d")


def _in_calendar(market: Any, d: date) -> bool:
    try:
        market.is_trading_day(d)
        return True
    except CalendarRangeError:
        return False


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


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def make_rest_app(state: SimState) -> web.Application:
    """The REST application: KIS paths, master files and the ``/__sim__`` admin API."""
    from local_exchange import admin

    app = web.Application(client_max_size=1 << 20)
    api = RestApi(state)
    app[STATE] = state
    app.router.add_post(p.PATH_TOKEN, api.token)
    app.router.add_post(p.PATH_REVOKE, api.revoke)
    app.router.add_post(p.PATH_APPROVAL, api.approval)
    app.router.add_get(p.QUOTE_BASE + "/{name}", api.quotations)
    app.router.add_get("/common/master/{name}", api.master)
    admin.add_routes(app, state, api)
    return app
