"""Async REST client for KIS quotations: one method per TR, typed results (docs/kis-protocol.md §3, §4, §6).

The transport (requests, retries, the rate limit and token, error mapping, paging, system events) is
``rest_transport``; the module docstring there lists which error each KIS answer raises. Lists are returned
**oldest first** (see ``models``). The pure conversions to and from KIS strings are ``rows``, so code that pages an
endpoint itself types its rows the same way without the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta

from observer_resources import clock
from observer_resources.calendar import session as krx_session
from observer_resources.kis import protocol as p
from observer_resources.kis.auth import CREDENTIAL_CODES
from observer_resources.kis.errors import KisResponseError
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
    StockInfo,
    VolumeRankRow,
)
from observer_resources.kis.rest_transport import RestTransport
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
    stock_info_from,
    typed_row,
    volume_rank_from,
    yyyymmdd,
)

log = logging.getLogger("observer.kis")


class KisRestClient(RestTransport):
    """One app key's REST client. Share one instance per process; every request goes through the
    shared ``limiter`` and ``tokens``."""

    async def inquire_price(self, code: str, market: str = "J") -> Quote:
        page = await self.request(
            "inquire-price", p.TR_INQUIRE_PRICE, {"FID_COND_MRKT_DIV_CODE": market, "FID_INPUT_ISCD": code}
        )
        return typed_row(p.TR_INQUIRE_PRICE, quote_from, page.body.get("output"))

    async def multi_price(self, codes: Sequence[str], market: str | Sequence[str] = "J") -> list[MultiQuote]:
        """Up to 30 symbols in one call (real keys only), each on ``market`` (one code for all, or one per code:
        each pair of the request carries its own). Rows come back in request order; a code KIS does not return is
        missing from the result (logged), never replaced by another row."""
        codes = list(codes)
        if not codes:
            return []
        if len(codes) > p.MULTPRICE_MAX:
            raise ValueError(f"multi_price takes at most {p.MULTPRICE_MAX} codes, got {len(codes)}")
        markets = [market] * len(codes) if isinstance(market, str) else list(market)
        if len(markets) != len(codes):
            raise ValueError(f"multi_price got {len(markets)} market codes for {len(codes)} codes")
        params: dict[str, str] = {}
        for i, (c, m) in enumerate(zip(codes, markets, strict=True), start=1):
            params[f"FID_COND_MRKT_DIV_CODE_{i}"] = m
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

    async def search_stock_info(self, code: str) -> StockInfo:
        """A stock's reference data and NXT status as of today (real keys only; one call per code, so a universe
        refresh costs one call per stock). An unknown code raises ``NoDataError``."""
        page = await self.request("search-stock-info", p.TR_SEARCH_STOCK_INFO, {"PRDT_TYPE_CD": "300", "PDNO": code})
        return typed_row(p.TR_SEARCH_STOCK_INFO, stock_info_from, page.body.get("output"))


__all__ = ["KisRestClient", "KisResponseError", "Page", "RestStats", "CREDENTIAL_CODES"]
