"""KIS's REST envelope and parameter rules, in one place so the dispatcher and every TR handler answer alike.

Bodies are compact JSON with every number a string and the rt_cd/msg_cd/msg1 envelope first; response
headers are ``Content-Type`` (that capitalisation) and lower-case ``tr_id`` / ``tr_cont`` / ``gt_uid``;
query names match case-insensitively (docs/kis-protocol.md §2-§6).
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time
from typing import Any

from aiohttp import web

from local_exchange.accounts import CredentialError
from observer_resources.kis import protocol as p

JSON_CT = "application/json; charset=utf-8"

# Codes the sim uses where KIS's exact answer is undocumented (docs/local-exchange.md lists them).
NO_DATA_MSG_CD = "KIOK0560"
NO_DATA_MSG1 = "조회할 자료가 없습니다"
BAD_TR_MSG_CD = "OPSQ0002"
BAD_TR_MSG1 = "없는 서비스 코드 입니다"
INPUT_MSG_CD = "OPSQ2001"


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


VENUE_OF_DIV = {"J": "KRX", "NX": "NXT", "UN": "UN"}


def check_market_div(params: dict[str, str], name: str = "FID_COND_MRKT_DIV_CODE") -> str:
    """The venue the market code names: KRX (J), NXT (NX) or UN (both venues combined)."""
    v = VENUE_OF_DIV.get(need(params, name).upper())
    if v is None:
        raise InputError(f"ERROR INVALID {name}")
    return v


def sec_of(t: datetime | time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second
