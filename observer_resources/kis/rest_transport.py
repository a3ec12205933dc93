"""The KIS REST transport (docs/kis-protocol.md §3, §4, §6): requests, retries, the shared rate limit and token,
error mapping, paging and system events; ``rest.KisRestClient`` adds one method per TR on top of it.

Outcomes are decided on the body's ``rt_cd`` / ``msg_cd`` (or ``error_code``), never on the HTTP
status alone — KIS sends gateway errors as HTTP 500 with a normal body:

============================  ==========================================================
``EGW00201`` (rate limit)     jittered exponential backoff 0.1..1 s, ≤ ``max_rate_retries``
                              retries, then ``RateLimitedError``
``EGW00123`` / ``EGW00121``   ``tokens.refresh(rejected)`` once, retry once, then
                              ``TokenExpiredError``
network error, 5xx w/o body   retry after 1 s then 2 s, then ``TransientError``
paper refusal                 ``PaperUnsupportedError``
``rt_cd`` 7                   ``NoDataError``
credential codes (EGW001xx)   ``BadCredentialsError`` at once (no retry storm)
anything else ``rt_cd != 0``  ``KisApiError``, no sleep, no retry
============================  ==========================================================

Every HTTP request first takes a permit from the shared ``RateLimiter``. Secrets, tokens and headers are never
logged.

Given an :class:`~observer_resources.events.EventLog`, the transport records every EGW00201 answer as a
``rate_limit_rejected`` system event, and on close one ``rate_limit_waits`` event summing the limiter's waits
(a per-request event would be thousands a day).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import httpx

from observer_resources import metrics
from observer_resources.events import EventLog
from observer_resources.kis import protocol as p
from observer_resources.kis.auth import CREDENTIAL_CODES
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    KisError,
    KisResponseError,
    NoDataError,
    PaperUnsupportedError,
    RateLimitedError,
    TokenExpiredError,
    TokenIssueTooSoonError,
    TransientError,
)
from observer_resources.kis.models import Page, RestStats
from observer_resources.kis.ports import RateLimiter, TokenProvider

log = logging.getLogger("observer.kis")

#: token-endpoint style credential refusals (EGW00105 documented; 101-104 KIS's numbering)
TOKEN_CODES = frozenset({p.EGW_EXPIRED, p.EGW_INVALID_TOKEN})
MORE_PAGES = frozenset({"F", "M"})
RATE_BACKOFF_MIN, RATE_BACKOFF_MAX = 0.1, 1.0
TRANSIENT_DELAYS = (1.0, 2.0)
#: a limiter wait shorter than this is the store access itself, not a wait for the budget
LIMITER_WAIT_EPS = 0.01


class RestTransport:
    """One app key's KIS REST transport: every request goes through the shared ``limiter`` and ``tokens``."""

    def __init__(
        self,
        config: KisConfig,
        tokens: TokenProvider,
        limiter: RateLimiter,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        max_rate_retries: int = 5,
        transient_delays: Sequence[float] = TRANSIENT_DELAYS,
        max_pages: int = 10_000,
        events: EventLog | None = None,
    ) -> None:
        self.config = config
        self.events = events
        self._closed = False
        self._tokens = tokens
        self._limiter = limiter
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self._base = config.rest_url.rstrip("/")
        self.max_rate_retries = max_rate_retries
        self.transient_delays = tuple(transient_delays)
        self.max_pages = max_pages
        self.stats = RestStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        st = self.stats
        if st.limiter_waits or st.rate_limit_waits:
            self._event(
                "rate_limit_waits",
                requests=st.requests,
                waited_requests=st.limiter_waits,
                wait_seconds=round(st.limiter_wait_seconds, 3),
                max_wait_seconds=round(st.limiter_max_wait_seconds, 3),
                rate_limit_retries=st.rate_limit_waits,
                rate_limit_retry_seconds=round(st.rate_limit_wait_seconds, 3),
                rate_limit_failures=st.errors.get(p.EGW_RATE, 0),
            )
        if self._own_http:
            await self._http.aclose()

    def _event(self, event_type: str, **fields: Any) -> None:
        """One system event; a failure to record it is logged, never raised into the request."""
        if self.events is None:
            return
        try:
            self.events.emit(event_type, key_id=self.config.key_id, **fields)
        except Exception:
            log.exception("could not record the %s event key_id=%s", event_type, self.config.key_id)

    async def request(self, name: str, tr_id: str, params: Mapping[str, str], *, tr_cont: str = "") -> Page:
        """GET ``/uapi/domestic-stock/v1/quotations/<name>`` with KIS's headers; returns the success
        page or raises the typed error (see the module docstring)."""
        url = f"{self._base}{p.QUOTE_BASE}/{name}"
        rate_tries = 0
        token_retried = False
        transient_tries = 0
        while True:
            try:
                token = await self._tokens.access_token()
            except KisError as exc:  # bad credentials, issuance refused, token endpoint down: no request sent
                self.stats.errors[f"token:{getattr(exc, 'code', '') or type(exc).__name__}"] += 1
                raise
            # The permit comes after the token: a permit taken while a token is being issued (100-300 ms) would
            # be spent late, together with the other waiters', and bunch them into one of KIS's seconds (measured:
            # one EGW00201 at the start of every cold 2,500-symbol Track A run).
            waited = await self._limiter.acquire()
            metrics.observe_limiter_wait(self.config.key_id, waited)
            self.stats.limiter_wait_seconds += waited
            if waited > LIMITER_WAIT_EPS:
                self.stats.limiter_waits += 1
                self.stats.limiter_max_wait_seconds = max(self.stats.limiter_max_wait_seconds, waited)
            headers = {
                "content-type": "application/json; charset=utf-8",
                "authorization": f"Bearer {token}",
                "appkey": self.config.app_key,
                "appsecret": self.config.app_secret,
                "tr_id": tr_id,
                "custtype": "P",
                "tr_cont": tr_cont,
            }
            self.stats.requests += 1
            sent = _time.perf_counter()
            try:
                resp = await self._http.get(url, params=dict(params), headers=headers, timeout=self._timeout)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                metrics.observe_request(tr_id, "error", _time.perf_counter() - sent, "transport")
                why = f"{type(exc).__name__}"
                if transient_tries < len(self.transient_delays):
                    await self._transient_wait(tr_id, why, transient_tries)
                    transient_tries += 1
                    continue
                self.stats.errors["transient"] += 1
                raise TransientError(f"{tr_id}: {why} after {transient_tries + 1} attempts") from None

            body = _json_body(resp)
            code = str(body.get("msg_cd") or body.get("error_code") or "") if body is not None else ""
            rt_cd = str(body.get("rt_cd") or "") if body is not None else ""
            message = str(body.get("msg1") or body.get("error_description") or "") if body is not None else ""
            answered_ok = rt_cd == "0" and body is not None
            metrics.observe_request(
                tr_id,
                "ok" if answered_ok else "rate_limited" if code == p.EGW_RATE else "error",
                _time.perf_counter() - sent,
                None if answered_ok else metrics.error_code(code, rt_cd, resp.status_code),
            )
            if body is None or not (rt_cd or code):
                if resp.status_code >= 500 or resp.status_code == 429:
                    if transient_tries < len(self.transient_delays):
                        await self._transient_wait(
                            tr_id, f"HTTP {resp.status_code} without a KIS body", transient_tries
                        )
                        transient_tries += 1
                        continue
                    self.stats.errors["transient"] += 1
                    raise TransientError(
                        f"{tr_id}: HTTP {resp.status_code} without a KIS body, {transient_tries + 1} attempts"
                    )
                if body is not None and resp.status_code < 400:
                    self.stats.errors["bad_body"] += 1
                    raise KisResponseError(f"{tr_id}: HTTP {resp.status_code} body without rt_cd/msg_cd")
                self.stats.errors[f"http_{resp.status_code}"] += 1
                raise KisApiError(
                    "", f"HTTP {resp.status_code} without a KIS body", http_status=resp.status_code, tr_id=tr_id
                )
            if rt_cd == "0":
                self.stats.pages += 1
                return Page(body, resp.headers.get("tr_cont", "").strip())

            status = resp.status_code
            if code == p.EGW_RATE:
                if rate_tries < self.max_rate_retries:
                    delay = _rate_delay(rate_tries)
                    rate_tries += 1
                    self.stats.retries["rate_limit"] += 1
                    self.stats.rate_limit_waits += 1
                    self.stats.rate_limit_wait_seconds += delay
                    log.info(
                        "kis %s: EGW00201 rate limited, retry %d/%d in %.2fs",
                        tr_id,
                        rate_tries,
                        self.max_rate_retries,
                        delay,
                    )
                    self._event(
                        "rate_limit_rejected",
                        tr_id=tr_id,
                        code=code,
                        http_status=status,
                        retry=rate_tries,
                        max_retries=self.max_rate_retries,
                        wait_seconds=round(delay, 3),
                        gave_up=False,
                    )
                    await asyncio.sleep(delay)
                    continue
                self._fail(code, tr_id, message)
                self._event(
                    "rate_limit_rejected",
                    tr_id=tr_id,
                    code=code,
                    http_status=status,
                    retry=None,
                    max_retries=self.max_rate_retries,
                    wait_seconds=0.0,
                    gave_up=True,
                )
                raise RateLimitedError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            if code in TOKEN_CODES:
                if not token_retried:
                    token_retried = True
                    self.stats.retries["token"] += 1
                    log.warning(
                        "kis %s: %s (%s), refreshing the access token and retrying once",
                        tr_id,
                        code,
                        "expired" if code == p.EGW_EXPIRED else "invalid",
                    )
                    await self._tokens.refresh(token)
                    continue
                self._fail(code, tr_id, message)
                raise TokenExpiredError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            self._fail(code or f"rt_cd_{rt_cd}", tr_id, message)
            if code in CREDENTIAL_CODES:
                raise BadCredentialsError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            if code == p.EGW_TOKEN_TOO_OFTEN:
                raise TokenIssueTooSoonError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            if p.PAPER_REFUSAL_MSG1.replace(" ", "") in message.replace(" ", ""):
                raise PaperUnsupportedError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            if rt_cd == p.NO_DATA_RT_CD:
                raise NoDataError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)
            raise KisApiError(code, message, http_status=status, tr_id=tr_id, rt_cd=rt_cd)

    async def _transient_wait(self, tr_id: str, why: str, attempt: int) -> None:
        delay = self.transient_delays[attempt]
        self.stats.retries["transient"] += 1
        log.warning("kis %s: %s, retry %d/%d in %.1fs", tr_id, why, attempt + 1, len(self.transient_delays), delay)
        await asyncio.sleep(delay)

    def _fail(self, code: str, tr_id: str, message: str) -> None:
        self.stats.errors[code] += 1
        log.warning("kis %s failed: %s %s", tr_id, code, message)

    async def _pages(
        self,
        name: str,
        tr_id: str,
        params: dict[str, str],
        *,
        next_params: Callable[[Page], dict[str, str] | None],
    ) -> list[Page]:
        """Follow KIS continuation (response tr_cont F/M -> request tr_cont N) until D/E or no more."""
        pages = [await self.request(name, tr_id, params)]
        while pages[-1].tr_cont in MORE_PAGES:
            if len(pages) >= self.max_pages:
                raise KisResponseError(f"{tr_id}: more than {self.max_pages} pages; stopping")
            nxt = next_params(pages[-1])
            if nxt is None:
                break
            pages.append(await self.request(name, tr_id, nxt, tr_cont="N"))
        return pages


def _json_body(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _rate_delay(attempt: int) -> float:
    """Exponential 0.1, 0.2, 0.4, 0.8, 1.0 s ... with ±20 % jitter, kept within [0.1, 1.0]."""
    base = min(RATE_BACKOFF_MAX, RATE_BACKOFF_MIN * (2**attempt))
    return min(RATE_BACKOFF_MAX, max(RATE_BACKOFF_MIN, base * random.uniform(0.8, 1.2)))
