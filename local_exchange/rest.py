"""The local exchange's REST server: KIS's token endpoints, the /uapi dispatch and master files (aiohttp).

Order of checks on a ``/uapi`` call, as a gateway would do them: injected REST faults, token
(EGW00121 / EGW00123), app key / secret headers, per-key rate limit (EGW00201), tr_id, paper
refusal, then the TR's own parameters (the handlers in rest_quotes, rest_bars, rest_reference).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from aiohttp import web

from local_exchange import rest_bars, rest_quotes, rest_reference
from local_exchange.accounts import CredentialError, TokenError, appkey_id
from local_exchange.rest_context import Handler, TrContext
from local_exchange.rest_wire import (
    BAD_TR_MSG1,
    BAD_TR_MSG_CD,
    INPUT_MSG_CD,
    NO_DATA_MSG1,
    NO_DATA_MSG_CD,
    InputError,
    NoData,
    kis_fail,
    kis_response,
    oauth_error,
    oauth_response,
    upper_params,
)
from observer_resources.calendar import CalendarRangeError
from observer_resources.kis import protocol as p

if TYPE_CHECKING:
    from local_exchange.state import SimState

log = logging.getLogger("observer.sim.rest")

# The /uapi quotation paths and the function answering each (tr_id checks come from protocol.QUOTE_PATHS).
HANDLERS: dict[str, Handler] = {
    "inquire-price": rest_quotes.inquire_price,
    "intstock-multprice": rest_quotes.multprice,
    "inquire-ccnl": rest_quotes.ccnl,
    "inquire-daily-price": rest_bars.daily_price,
    "inquire-daily-itemchartprice": rest_bars.daily_itemchart,
    "inquire-time-itemchartprice": rest_bars.time_itemchart,
    "inquire-time-dailychartprice": rest_bars.time_dailychart,
    "inquire-time-itemconclusion": rest_quotes.conclusion,
    "volume-rank": rest_quotes.volume_rank,
    "chk-holiday": rest_reference.chk_holiday,
    "search-info": rest_reference.search_info,
    "search-stock-info": rest_reference.search_stock_info,
}


def _failed(response: web.Response) -> bool:
    """Whether a KIS answer is a failure (rt_cd != "0"); the envelope is always at the body's start."""
    body = response.body
    return isinstance(body, bytes) and not body.startswith(b'{"rt_cd":"0"')


def _rate_limited(response: web.Response) -> bool:
    body = response.body
    return isinstance(body, bytes) and b'"msg_cd":"EGW00201"' in body[:60]


class RestApi:
    """Request handling bound to one SimState."""

    def __init__(self, state: SimState):
        self.s = state
        self.ctx = TrContext(state)
        self._master_cache: dict[tuple[str, date], bytes] = {}

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
            now = (s.token_clock or s.clock).now()
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
        now = (s.token_clock or s.clock).now()
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
        handler = (s.rest_handlers or HANDLERS).get(name)
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
            return await asyncio.to_thread(handler, self.ctx, params, tok, tr_cont)
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


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None
