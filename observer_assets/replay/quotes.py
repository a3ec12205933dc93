"""The replay's REST TRs, answered as of the replay clock from what the day recorded, never invented.

* ``inquire-price`` and ``intstock-multprice``: the latest Track A slot at or before the clock holding the code on
  that venue (J -> KRX, NX -> NXT, UN -> the unified quote). Fields the snapshot keeps are filled; the others are
  empty strings, as the exchange sends a field that does not apply.
* ``inquire-time-itemchartprice`` / ``inquire-time-dailychartprice``: the day's ``minute_bars`` of that venue whose
  minute has ended by the clock.
* ``search-info``: the codes the day knows (universe, snapshots, recorded streams), with the universe's name.
* every other TR, and any code or venue without a record: KIS's "no data" answer (rt_cd 7, KIOK0560).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from local_exchange import rest_outputs as out
from local_exchange.accounts import Token
from local_exchange.rest_context import TrContext
from local_exchange.rest_quotes import multprice_pairs
from local_exchange.rest_wire import NoData, check_market_div, kis_ok, need, parse_hms, parse_ymd
from observer_assets.replay.recording import us
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.storage import lake, layout

#: snapshot ``venue`` and minute-bar ``venue`` of each venue check_market_div names
SNAPSHOT_VENUE = {"KRX": "KRX", "NXT": "NXT", "UN": "unified"}


def _num(v: Any) -> str:
    return "" if v is None else str(int(v))


def _rate(v: Any) -> str:
    return "" if v is None else f"{float(v):.2f}"


class RecordedQuotes:
    """The day's Track A snapshots, minute bars and universe names, indexed for "as of the clock" look-ups."""

    def __init__(self, root: Any, day: date, extra_codes: set[str] | None = None) -> None:
        self.day = day
        self.snaps: dict[tuple[str, str], tuple[list[int], list[dict[str, Any]]]] = {}
        self.bars: dict[tuple[str, str], tuple[list[int], list[dict[str, Any]]]] = {}
        self.names: dict[str, str] = {}
        self.slots = 0
        base = Path(str(root))
        for f in sorted((base / layout.TRACK_A / f"date={day.isoformat()}").glob("slot=T*/snapshot.parquet")):
            self.slots += 1
            for row in lake.read_table(f).to_pylist():
                key = (row["code"], row.get("venue") or "KRX")
                self._put(self.snaps, key, us(row["slot_ts"]), row)
                if row.get("name"):
                    self.names.setdefault(row["code"], row["name"])
        for table in (layout.minute_bars_path(root, day),):
            try:
                rows = lake.read_table(table).to_pylist()
            except (FileNotFoundError, OSError):
                rows = []
            for row in rows:
                self._put(self.bars, (row["code"], row["venue"]), us(row["minute"]), row)
        self.minute_bars = sum(len(v[0]) for v in self.bars.values())
        try:
            for row in lake.read_table(layout.universe_path(root, day), columns=["code", "name"]).to_pylist():
                self.names[row["code"]] = row["name"] or self.names.get(row["code"], "")
        except (FileNotFoundError, OSError, KeyError):
            pass
        self.codes = set(self.names) | {c for c, _ in self.snaps} | {c for c, _ in self.bars} | (extra_codes or set())
        for index in (self.snaps, self.bars):
            for times, rows in index.values():
                order = sorted(range(len(times)), key=times.__getitem__)
                times[:] = [times[i] for i in order]
                rows[:] = [rows[i] for i in order]

    @staticmethod
    def _put(index: dict, key: tuple[str, str], t: int, row: dict[str, Any]) -> None:
        times, rows = index.setdefault(key, ([], []))
        times.append(t)
        rows.append(row)

    def snapshot(self, code: str, venue: str, now: datetime) -> dict[str, Any] | None:
        """The code's row of the latest slot at or before ``now`` on ``venue`` (KRX / NXT / UN)."""
        hit = self.snaps.get((code, SNAPSHOT_VENUE[venue]))
        if hit is None:
            return None
        i = bisect.bisect_right(hit[0], us(now))
        return hit[1][i - 1] if i else None

    def minute_rows(self, code: str, venue: str, until: datetime, now: datetime) -> list[dict[str, Any]]:
        """Bars of the venue starting at or before ``until`` whose minute ended by ``now``, oldest first."""
        hit = self.bars.get((code, venue))
        if hit is None:
            return []
        last_start = min(us(until), us(now - timedelta(minutes=1)))
        return hit[1][: bisect.bisect_right(hit[0], last_start)]


def _code(params: dict[str, str], name: str = "FID_INPUT_ISCD") -> str:
    code = need(params, name).strip()
    return code[1:] if len(code) == 7 and code[0] in "AJ" else code


def handlers(q: RecordedQuotes) -> dict[str, Callable[[TrContext, dict[str, str], Token, str], web.Response]]:
    """The replay's handler for every quotation path (rest.HANDLERS' names)."""

    def inquire_price(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        venue = check_market_div(params)
        row = q.snapshot(_code(params), venue, ctx.s.clock.now())
        if row is None:
            raise NoData()
        v = {
            "stck_prpr": _num(row["price"]),
            "prdy_vrss": _num(row["change"]),
            "prdy_vrss_sign": _num(row.get("change_sign")),
            "prdy_ctrt": _rate(row["change_rate"]),
            "acml_tr_pbmn": _num(row["trade_value"]),
            "acml_vol": _num(row["volume"]),
            "stck_oprc": _num(row["open"]),
            "stck_hgpr": _num(row["high"]),
            "stck_lwpr": _num(row["low"]),
            "stck_mxpr": _num(row["upper_limit"]),
            "stck_llam": _num(row["lower_limit"]),
            "stck_sdpr": _num(row["prev_close"]),
            "temp_stop_yn": {True: "Y", False: "N"}.get(row.get("halted"), ""),
            "vi_cls_code": row.get("vi_code") or "",
            "iscd_stat_cls_code": row.get("status_code") or "",
            "stck_shrn_iscd": row["code"],
        }
        return kis_ok(p.TR_INQUIRE_PRICE, output={k: v.get(k, "") for k in out.INQUIRE_PRICE_FIELDS})

    def multprice(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        now = ctx.s.clock.now()
        rows = []
        for n, code in multprice_pairs(params):  # the exchange's own input checks
            row = q.snapshot(code, check_market_div(params, f"FID_COND_MRKT_DIV_CODE_{n}"), now)
            if row is None:
                continue  # left out, as KIS leaves out a code it has nothing for
            v = {
                "mrkt_trtm_cls_name": row.get("session_phase") or "",
                "hour_cls_code": row.get("hour_cls_code") or "",
                "inter_shrn_iscd": row["code"],
                "inter_kor_isnm": row.get("name") or q.names.get(row["code"], ""),
                "inter2_prpr": _num(row["price"]),
                "inter2_prdy_vrss": _num(row["change"]),
                "prdy_vrss_sign": _num(row.get("change_sign")),
                "prdy_ctrt": _rate(row["change_rate"]),
                "acml_vol": _num(row["volume"]),
                "inter2_oprc": _num(row["open"]),
                "inter2_hgpr": _num(row["high"]),
                "inter2_lwpr": _num(row["low"]),
                "inter2_llam": _num(row["lower_limit"]),
                "inter2_mxpr": _num(row["upper_limit"]),
                "inter2_askp": _num(row["ask"]),
                "inter2_bidp": _num(row["bid"]),
                "seln_rsqn": _num(row["ask_size"]),
                "shnu_rsqn": _num(row["bid_size"]),
                "total_askp_rsqn": _num(row.get("total_ask_size")),
                "total_bidp_rsqn": _num(row.get("total_bid_size")),
                "acml_tr_pbmn": _num(row["trade_value"]),
                "inter2_prdy_clpr": _num(row["prev_close"]),
                "intr_antc_vol": _num(row.get("expected_volume")),
            }
            rows.append({k: v.get(k, "") for k in out.MULTPRICE_FIELDS})
        return kis_ok(p.TR_MULTPRICE, output=rows)

    def output1(code: str, venue: str, now: datetime) -> dict[str, str]:
        row = q.snapshot(code, venue, now)
        v = {}
        if row is not None:
            v = {
                "prdy_vrss": _num(row["change"]),
                "prdy_vrss_sign": _num(row.get("change_sign")),
                "prdy_ctrt": _rate(row["change_rate"]),
                "stck_prdy_clpr": _num(row["prev_close"]),
                "acml_vol": _num(row["volume"]),
                "acml_tr_pbmn": _num(row["trade_value"]),
                "hts_kor_isnm": row.get("name") or q.names.get(code, ""),
                "stck_prpr": _num(row["price"]),
            }
        return {k: v.get(k, "") for k in out.TIME_CHART_OUTPUT1_FIELDS}

    def bar_row(b: dict[str, Any]) -> dict[str, str]:
        start = b["minute"].astimezone(KST)
        v = {
            "stck_bsop_date": start.strftime("%Y%m%d"),
            "stck_cntg_hour": start.strftime("%H%M%S"),
            "stck_prpr": _num(b["close"]),
            "stck_oprc": _num(b["open"]),
            "stck_hgpr": _num(b["high"]),
            "stck_lwpr": _num(b["low"]),
            "cntg_vol": _num(b["volume"]),
            "acml_tr_pbmn": _num(b["value"]),
        }
        return {k: v[k] for k in out.TIME_CHART_OUTPUT2_FIELDS}

    def bars(code: str, venue: str, day: date, hour: time, now: datetime, limit: int) -> list[dict[str, str]]:
        if day != q.day:
            return []  # the replay holds one day
        until = datetime.combine(day, hour.replace(second=59), KST)
        return [bar_row(b) for b in reversed(q.minute_rows(code, venue, until, now)[-limit:])]

    def time_itemchart(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        venue, code, now = check_market_div(params), _code(params), ctx.s.clock.now()
        hour = parse_hms(need(params, "FID_INPUT_HOUR_1"), "FID_INPUT_HOUR_1")
        rows = bars(code, venue, q.day, hour, now, p.TIME_ITEMCHART_ROWS)
        head = output1(code, venue, now)
        if not rows and not any(head.values()):
            raise NoData()
        return kis_ok(p.TR_TIME_ITEMCHART, output1=head, output2=rows)

    def time_dailychart(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        venue, code, now = check_market_div(params), _code(params), ctx.s.clock.now()
        d = parse_ymd(need(params, "FID_INPUT_DATE_1"), "FID_INPUT_DATE_1")
        hour = parse_hms(params.get("FID_INPUT_HOUR_1") or "235959", "FID_INPUT_HOUR_1")
        rows = bars(code, venue, d, hour, now, p.TIME_DAILYCHART_ROWS)
        head = output1(code, venue, now)
        if not rows and not any(head.values()):
            raise NoData()
        return kis_ok(p.TR_TIME_DAILYCHART, output1=head, output2=rows)

    def search_info(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        code = _code(params, "PDNO")
        if (params.get("PRDT_TYPE_CD") or "300").strip() != "300" or code not in q.codes:
            raise NoData()
        name = q.names.get(code, "")
        v = {
            "pdno": code,
            "prdt_type_cd": "300",
            "shtn_pdno": code,
            "prdt_name": name,
            "prdt_name120": name,
            "prdt_abrv_name": name,
        }
        return kis_ok(p.TR_SEARCH_INFO, output={k: v.get(k, "") for k in out.SEARCH_INFO_FIELDS})

    def no_record(ctx: TrContext, params: dict[str, str], tok: Token, tr_cont: str) -> web.Response:
        raise NoData()

    own = {
        "inquire-price": inquire_price,
        "intstock-multprice": multprice,
        "inquire-time-itemchartprice": time_itemchart,
        "inquire-time-dailychartprice": time_dailychart,
        "search-info": search_info,
    }
    return {name: own.get(name, no_record) for name in p.QUOTE_PATHS}
