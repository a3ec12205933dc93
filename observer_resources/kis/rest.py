"""Async REST client for KIS quotations (docs/kis-protocol.md §3, §4, §6).

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

Every HTTP request first takes a permit from the shared ``RateLimiter``. Lists are returned
**oldest first** (see ``models``). Secrets, tokens and headers are never logged. This module is the
transport only (requests, retries, paging): the pure conversions to and from KIS strings are ``rows``, so
code that pages an endpoint itself types its rows the same way without the client.

Given an :class:`~observer_resources.events.EventLog`, the client records every EGW00201 answer as a
``rate_limit_rejected`` system event, and on close one ``rate_limit_waits`` event summing the limiter's waits
(a per-request event would be thousands a day).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time as _time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import httpx

from observer_resources import clock, metrics
from observer_resources.calendar import session as krx_session
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
from observer_resources.kis.models import (
    ChartSummary,
    Conclusion,
    DailyBar,
    HolidayRow,
    MinuteBar,
    MinuteBars,
    MultiQuote,
    Page,
    ProductInfo,
    Quote,
    RestStats,
    VolumeRankRow,
)
from observer_resources.kis.ports import RateLimiter, TokenProvider
from observer_resources.kis.rows import (
    chart_summary_from,
    conclusion_from,
    daily_chart_bar_from,
    daily_price_bar_from,
    hhmmss,
    holiday_from,
    minute_bar_from,
    multi_quote_from,
    output_rows,
    product_info_from,
    quote_from,
    typed_row,
    volume_rank_from,
    yyyymmdd,
)

log = logging.getLogger("observer.kis")

#: token-endpoint style credential refusals (EGW00105 documented; 101-104 KIS's numbering)
TOKEN_CODES = frozenset({p.EGW_EXPIRED, p.EGW_INVALID_TOKEN})
MORE_PAGES = frozenset({"F", "M"})
RATE_BACKOFF_MIN, RATE_BACKOFF_MAX = 0.1, 1.0
TRANSIENT_DELAYS = (1.0, 2.0)
#: a limiter wait shorter than this is the store access itself, not a wait for the budget
LIMITER_WAIT_EPS = 0.01


# --- the client -------------------------------------------------------------------------------------


class KisRestClient:
    """One app key's REST client. Share one instance per process; every request goes through the
    shared ``limiter`` and ``tokens``."""

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
        return f"KisRestClient({self.config!r})"

    async def __aenter__(self) -> KisRestClient:
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

    # --- transport ------------------------------------------------------------------------------

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

    # --- quotations -----------------------------------------------------------------------------

    async def inquire_price(self, code: str, market: str = "J") -> Quote:
        page = await self.request(
            "inquire-price", p.TR_INQUIRE_PRICE, {"FID_COND_MRKT_DIV_CODE": market, "FID_INPUT_ISCD": code}
        )
        return typed_row(p.TR_INQUIRE_PRICE, quote_from, page.body.get("output"))

    async def multi_price(self, codes: Sequence[str], market: str = "J") -> list[MultiQuote]:
        """Up to 30 symbols in one call (real keys only). Rows come back in request order; a code KIS
        does not return is missing from the result (logged), never replaced by another row."""
        codes = list(codes)
        if not codes:
            return []
        if len(codes) > p.MULTPRICE_MAX:
            raise ValueError(f"multi_price takes at most {p.MULTPRICE_MAX} codes, got {len(codes)}")
        params: dict[str, str] = {}
        for i, c in enumerate(codes, start=1):
            params[f"FID_COND_MRKT_DIV_CODE_{i}"] = market
            params[f"FID_INPUT_ISCD_{i}"] = c
        page = await self.request("intstock-multprice", p.TR_MULTPRICE, params)
        rows = [typed_row(p.TR_MULTPRICE, multi_quote_from, r) for r in output_rows(page.body, "output")]
        by_code = {r.code: r for r in rows}
        missing = [c for c in codes if c not in by_code]
        if missing:
            log.warning(
                "kis %s: %d of %d codes missing from the answer: %s",
                p.TR_MULTPRICE,
                len(missing),
                len(codes),
                ",".join(missing[:10]),
            )
        return [by_code[c] for c in codes if c in by_code]

    async def daily_price(
        self, code: str, period: str = "D", adjusted: bool = True, market: str = "J"
    ) -> list[DailyBar]:
        """The last 30 D/W/M bars, oldest first. Row for today is present during/after a session:
        pick the previous close by date, not by position."""
        page = await self.request(
            "inquire-daily-price",
            p.TR_DAILY_PRICE,
            {
                "FID_COND_MRKT_DIV_CODE": market,
                "FID_INPUT_ISCD": code,
                "FID_PERIOD_DIV_CODE": period,
                "FID_ORG_ADJ_PRC": "1" if adjusted else "0",
            },
        )
        bars = [typed_row(p.TR_DAILY_PRICE, daily_price_bar_from, r) for r in output_rows(page.body, "output")]
        return sorted(bars, key=lambda b: b.day)

    async def daily_chart(
        self, code: str, start: date, end: date, period: str = "D", *, adjusted: bool = True, market: str = "J"
    ) -> list[DailyBar]:
        """Bars between ``start`` and ``end`` inclusive, oldest first, paging back 100 rows at a time by
        moving the end date before the oldest row received."""
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        bars: dict[date, DailyBar] = {}
        to = end
        for _ in range(self.max_pages):
            page = await self.request(
                "inquire-daily-itemchartprice",
                p.TR_DAILY_ITEMCHART,
                {
                    "FID_COND_MRKT_DIV_CODE": market,
                    "FID_INPUT_ISCD": code,
                    "FID_INPUT_DATE_1": yyyymmdd(start),
                    "FID_INPUT_DATE_2": yyyymmdd(to),
                    "FID_PERIOD_DIV_CODE": period,
                    "FID_ORG_ADJ_PRC": "0" if adjusted else "1",
                },
            )
            rows = [r for r in output_rows(page.body, "output2") if isinstance(r, Mapping) and r.get("stck_bsop_date")]
            got = [typed_row(p.TR_DAILY_ITEMCHART, daily_chart_bar_from, r) for r in rows]
            got = [b for b in got if start <= b.day <= end]
            if not got:
                break
            for b in got:
                bars.setdefault(b.day, b)
            oldest = min(b.day for b in got)
            if oldest <= start or oldest >= to + timedelta(days=1) or len(rows) < p.DAILY_ITEMCHART_ROWS:
                break
            to = oldest - timedelta(days=1)
        return [bars[d] for d in sorted(bars)]

    async def minute_bars(
        self, code: str, until_hhmmss: str | time, include_past: bool = True, market: str = "J"
    ) -> MinuteBars:
        """One page (≤ 30 bars) of today's minute bars ending at ``until_hhmmss``, oldest first."""
        page = await self.request(
            "inquire-time-itemchartprice",
            p.TR_TIME_ITEMCHART,
            {
                "FID_ETC_CLS_CODE": "",
                "FID_COND_MRKT_DIV_CODE": market,
                "FID_INPUT_ISCD": code,
                "FID_INPUT_HOUR_1": hhmmss(until_hhmmss),
                "FID_PW_DATA_INCU_YN": "Y" if include_past else "N",
            },
        )
        return self._minute_page(p.TR_TIME_ITEMCHART, page, code)

    def _minute_page(self, tr_id: str, page: Page, code: str) -> MinuteBars:
        out1 = page.body.get("output1")
        summary = None
        if isinstance(out1, Mapping) and out1:
            summary = typed_row(tr_id, lambda o: chart_summary_from(o, code), out1)
        rows = [r for r in output_rows(page.body, "output2") if isinstance(r, Mapping) and r.get("stck_cntg_hour")]
        bars = [typed_row(tr_id, minute_bar_from, r) for r in rows]
        return MinuteBars(summary, sorted(bars, key=lambda b: b.at))

    async def minute_bars_all(
        self, code: str, until: str | time = "153000", *, since: str | time | None = None, market: str = "J"
    ) -> MinuteBars:
        """Today's minute bars up to ``until``, oldest first, de-duplicated: pages back by asking again one
        minute before the earliest bar, until ``since`` (default: the KRX session open of the bars' day)
        or an empty page (≈ 13 calls a day)."""
        hour = hhmmss(until)
        floor = hhmmss(since) if since is not None else None
        bars: dict[datetime, MinuteBar] = {}
        summary: ChartSummary | None = None
        for _ in range(self.max_pages):
            page = await self.minute_bars(code, hour, include_past=True, market=market)
            summary = summary or page.summary
            if not page.bars:
                break
            for b in page.bars:
                bars.setdefault(b.at, b)
            earliest = page.bars[0].at
            if floor is None:
                s = krx_session(earliest.date())
                floor = s.open.strftime("%H%M%S") if s is not None else "090000"
            nxt = earliest - timedelta(minutes=1)
            nxt_hour = nxt.strftime("%H%M%S")
            if earliest.strftime("%H%M%S") <= floor or nxt.date() != earliest.date():
                break
            if nxt_hour >= hour:  # no progress: the server ignored the hour
                log.warning("kis %s: paging made no progress at %s; stopping", p.TR_TIME_ITEMCHART, hour)
                break
            hour = nxt_hour
        return MinuteBars(summary, [bars[k] for k in sorted(bars)])

    async def past_minute_bars(
        self, code: str, day: date, hour: str | time = "153000", *, include_past: bool = True, market: str = "J"
    ) -> MinuteBars:
        """One page (≤ 120 bars) of ``day``'s minute bars ending at ``hour``, oldest first (real keys)."""
        page = await self.request(
            "inquire-time-dailychartprice",
            p.TR_TIME_DAILYCHART,
            {
                "FID_COND_MRKT_DIV_CODE": market,
                "FID_INPUT_ISCD": code,
                "FID_INPUT_HOUR_1": hhmmss(hour),
                "FID_INPUT_DATE_1": yyyymmdd(day),
                "FID_PW_DATA_INCU_YN": "Y" if include_past else "N",
                "FID_FAKE_TICK_INCU_YN": "",
            },
        )
        return self._minute_page(p.TR_TIME_DAILYCHART, page, code)

    async def conclusions(
        self, code: str, until_hhmmss: str | time = "153000", *, day: date | None = None, market: str = "J"
    ) -> list[Conclusion]:
        """Every trade of the serving day at or before ``until_hhmmss``, **oldest first** (KIS sends newest
        first), following continuation (tr_cont M -> N) until the last page (D).

        The rows carry no date: ``day`` stamps them (default: today in KST). KIS keeps the continuation
        per token: if the token is replaced mid-way the server starts over, so a refresh during paging can
        repeat rows (rare: tokens are refreshed ahead of expiry)."""
        serving_day = day or clock.now().date()
        params = {"FID_COND_MRKT_DIV_CODE": market, "FID_INPUT_ISCD": code, "FID_INPUT_HOUR_1": hhmmss(until_hhmmss)}
        pages = await self._pages(
            "inquire-time-itemconclusion", p.TR_TIME_CONCLUSION, params, next_params=lambda _page: params
        )
        rows = [r for pg in pages for r in output_rows(pg.body, "output2")]
        ticks = [typed_row(p.TR_TIME_CONCLUSION, lambda o: conclusion_from(o, serving_day), r) for r in rows]
        ticks.reverse()  # pages and rows arrive newest first
        return ticks

    async def volume_rank(
        self,
        *,
        market_scope: str = "0000",
        div_cls: str = "0",
        blng_cls: str = "0",
        target_mask: str = "111111111",
        exclude_mask: str = "0000000000",
        price_min: str = "",
        price_max: str = "",
        volume_min: str = "",
        market: str = "J",
    ) -> list[VolumeRankRow]:
        """The top-N volume ranking (real keys only), in rank order. Not a universe listing."""
        params = {
            "FID_COND_MRKT_DIV_CODE": market,
            "FID_COND_SCR_DIV_CODE": "20171",
            "FID_INPUT_ISCD": market_scope,
            "FID_DIV_CLS_CODE": div_cls,
            "FID_BLNG_CLS_CODE": blng_cls,
            "FID_TRGT_CLS_CODE": target_mask,
            "FID_TRGT_EXLS_CLS_CODE": exclude_mask,
            "FID_INPUT_PRICE_1": price_min,
            "FID_INPUT_PRICE_2": price_max,
            "FID_VOL_CNT": volume_min,
            "FID_INPUT_DATE_1": "",
        }
        pages = await self._pages("volume-rank", p.TR_VOLUME_RANK, params, next_params=lambda _page: params)
        rows = [
            typed_row(p.TR_VOLUME_RANK, volume_rank_from, r) for pg in pages for r in output_rows(pg.body, "output")
        ]
        return sorted(rows, key=lambda r: r.rank)

    async def holidays(self, base_date: date) -> list[HolidayRow]:
        """Calendar rows from ``base_date`` on, oldest first, following the CTX continuation keys.
        KIS asks for about one call a day (it touches the core ledger)."""
        params = {"BASS_DT": yyyymmdd(base_date), "CTX_AREA_NK": "", "CTX_AREA_FK": ""}
        seen_keys: set[tuple[str, str]] = set()

        def next_params(page: Page) -> dict[str, str] | None:
            b = page.body
            nk = str(b.get("ctx_area_nk") or b.get("CTX_AREA_NK") or "").strip()
            fk = str(b.get("ctx_area_fk") or b.get("CTX_AREA_FK") or "").strip()
            if not (nk or fk) or (nk, fk) in seen_keys:
                return None
            seen_keys.add((nk, fk))
            return {"BASS_DT": yyyymmdd(base_date), "CTX_AREA_NK": nk, "CTX_AREA_FK": fk}

        pages = await self._pages("chk-holiday", p.TR_CHK_HOLIDAY, params, next_params=next_params)
        rows: dict[date, HolidayRow] = {}
        for pg in pages:
            for r in output_rows(pg.body, "output"):
                h = typed_row(p.TR_CHK_HOLIDAY, holiday_from, r)
                rows.setdefault(h.day, h)
        return [rows[d] for d in sorted(rows)]

    async def search_info(self, code: str, product_type: str = "300") -> ProductInfo:
        page = await self.request("search-info", p.TR_SEARCH_INFO, {"PDNO": code, "PRDT_TYPE_CD": product_type})
        return typed_row(p.TR_SEARCH_INFO, product_info_from, page.body.get("output"))


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


__all__ = ["KisRestClient", "KisResponseError", "Page", "RestStats", "CREDENTIAL_CODES"]
