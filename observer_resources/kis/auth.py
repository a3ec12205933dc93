"""KIS OAuth calls: access token, WebSocket approval key, revoke (docs/kis-protocol.md §2 "Authentication").

Single calls only — no caching, no retry. Sharing one token between processes and pacing issuance
(KIS allows one per minute per app key) is ``observer_resources.shared.tokens``'s job.

Token-endpoint failures come as HTTP 403 with ``error_code`` / ``error_description`` (not the
``rt_cd`` / ``msg_cd`` shape of ``/uapi``), and are decided on that code (§4):
``EGW00133`` → :class:`TokenIssueTooSoonError`; credential refusals → :class:`BadCredentialsError`
(never retried); anything else → :class:`KisApiError`; no answer or a 5xx without a KIS body →
:class:`TransientError`. Messages never carry the key, the secret or a token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    KisError,
    TokenIssueTooSoonError,
    TransientError,
)

log = logging.getLogger("observer.kis.token")

#: Credential refusals of the token endpoints: EGW00105 is documented; 101-104 follow KIS's
#: EGW001xx numbering (invalid request, app key missing, invalid app key, secret missing).
CREDENTIAL_CODES = frozenset({"EGW00101", "EGW00102", "EGW00103", "EGW00104", p.EGW_BAD_SECRET})

_JSON_HEADERS = {"content-type": "application/json; charset=utf-8", "accept": "application/json"}


@dataclass(frozen=True)
class IssuedToken:
    """An access token as KIS issued it. ``expires_at`` comes from ``access_token_token_expired``
    (KST), not from issue time + ``expires_in``, which drifts (§2.1)."""

    access_token: str = field(repr=False)
    expires_at: datetime
    issued_at: datetime

    def __repr__(self) -> str:
        return f"IssuedToken(expires_at={self.expires_at.isoformat()}, issued_at={self.issued_at.isoformat()})"


def parse_token_expiry(value: Any) -> datetime:
    """``'2026-06-24 22:03:52'`` (KST, no zone) → an aware KST datetime. ValueError if malformed."""
    if not isinstance(value, str):
        raise ValueError("access_token_token_expired is missing")
    return datetime.strptime(value.strip(), p.TOKEN_EXPIRED_FMT).replace(tzinfo=KST)


def parse_token_body(body: Any, issued_at: datetime) -> IssuedToken:
    """The success body of ``/oauth2/tokenP`` → IssuedToken (pure; KisApiError if unusable)."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise KisApiError("", "token response without access_token", http_status=200)
    try:
        expires_at = parse_token_expiry(body.get("access_token_token_expired"))
    except ValueError:
        # Not seen from KIS; fall back on expires_in rather than lose a valid token, and say so.
        try:
            seconds = int(body.get("expires_in"))
        except (TypeError, ValueError):
            raise KisApiError("", "token response without a usable expiry", http_status=200) from None
        expires_at = issued_at + timedelta(seconds=seconds)
        log.warning("token response lacks access_token_token_expired; using expires_in=%ss", seconds)
    return IssuedToken(body["access_token"], expires_at, issued_at)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***`` (a server might echo what it was sent)."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def token_endpoint_error(status: int, body: Any, *, what: str, secrets: tuple[str, ...] = ()) -> KisError:
    """Map a failed token/approval/revoke answer to a typed error (pure)."""
    code = message = ""
    if isinstance(body, dict):
        code = str(body.get("error_code") or body.get("msg_cd") or "")
        message = scrub(str(body.get("error_description") or body.get("msg1") or ""), secrets)
    if code == p.EGW_TOKEN_TOO_OFTEN:
        return TokenIssueTooSoonError(code, message or p.ERROR_MESSAGES[code], http_status=status, tr_id=what)
    if code in CREDENTIAL_CODES or (not code and status == 401):
        return BadCredentialsError(code, message or "credentials refused", http_status=status, tr_id=what)
    if not code and (status >= 500 or status == 429):
        return TransientError(f"{what}: HTTP {status} without a KIS body")
    return KisApiError(code, message or "unexpected answer", http_status=status, tr_id=what)


async def _post(
    http: httpx.AsyncClient, config: KisConfig, path: str, payload: dict[str, str], what: str, *extra_secrets: str
) -> Any:
    """POST JSON; return the parsed body of a 200, raise the typed error otherwise."""
    url = config.rest_url.rstrip("/") + path
    try:
        resp = await http.post(url, json=payload, headers=_JSON_HEADERS)
    except httpx.HTTPError as exc:  # transport errors, timeouts, protocol errors
        raise TransientError(f"{what}: {type(exc).__name__} talking to {config.rest_url}") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code == 200 and isinstance(body, dict) and not body.get("error_code"):
        return body
    raise token_endpoint_error(
        resp.status_code, body, what=what, secrets=(config.app_key, config.app_secret, *extra_secrets)
    )


async def issue_access_token(http: httpx.AsyncClient, config: KisConfig, *, now: datetime | None = None) -> IssuedToken:
    """``POST /oauth2/tokenP``. Within 6 h of the last issuance KIS returns the same token; a second
    issuance within a minute is refused (TokenIssueTooSoonError)."""
    issued_at = now or clock.now()
    body = await _post(
        http,
        config,
        p.PATH_TOKEN,
        {"grant_type": "client_credentials", "appkey": config.app_key, "appsecret": config.app_secret},
        "tokenP",
    )
    return parse_token_body(body, issued_at)


async def issue_approval_key(http: httpx.AsyncClient, config: KisConfig) -> str:
    """``POST /oauth2/Approval`` (the secret goes in ``secretkey``); one key per WebSocket connection attempt."""
    body = await _post(
        http,
        config,
        p.PATH_APPROVAL,
        {"grant_type": "client_credentials", "appkey": config.app_key, "secretkey": config.app_secret},
        "Approval",
    )
    key = body.get("approval_key")
    if not isinstance(key, str) or not key:
        raise KisApiError("", "approval response without approval_key", http_status=200, tr_id="Approval")
    return key


async def revoke_access_token(http: httpx.AsyncClient, config: KisConfig, token: str) -> None:
    """``POST /oauth2/revokeP``. Only the HTTP status is relied on; the body is undocumented (§2.2)."""
    await _post(
        http,
        config,
        p.PATH_REVOKE,
        {"appkey": config.app_key, "appsecret": config.app_secret, "token": token},
        "revokeP",
        token,
    )
