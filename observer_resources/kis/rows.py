"""KIS JSON rows -> the typed values of ``models``, and dates/times -> KIS parameter strings (pure, no I/O).

Kept apart from ``rest`` so the client module is transport only (requests, retries, paging), and so code that
pages an endpoint itself (the Track B restore) types its rows with the same converters. ``typed_row`` is where a
bad value becomes a ``KisResponseError`` naming the TR.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any

from observer_resources.calendar import KST
from observer_resources.kis.errors import KisResponseError
from observer_resources.kis.models import (
    ChartSummary,
    Conclusion,
    DailyBar,
    HolidayRow,
    MinuteBar,
    MultiQuote,
    ProductInfo,
    Quote,
    StockInfo,
    VolumeRankRow,
)

# --- value conversion (pure) ------------------------------------------------------------------------


def _int(v: Any) -> int:
    """KIS integer string -> int; '' -> 0 (KIS leaves non-applicable numbers empty)."""
    if v is None or v == "":
        return 0
    try:
        return int(v)
    except ValueError:
        f = float(v)  # '123.00' in some integer columns
        if f.is_integer():
            return int(f)
        raise


def _opt_int(v: Any) -> int | None:
    """Best bid/ask and the like: None when 0 or empty, never 0."""
    return _int(v) or None


def _float(v: Any) -> float:
    return float(v) if v not in (None, "") else 0.0


def _opt_float(v: Any) -> float | None:
    return float(v) if v not in (None, "") else None


def _date(v: Any) -> date | None:
    if not v:
        return None
    s = str(v)
    if len(s) != 8 or not s.isdigit():
        raise ValueError(f"bad date {s!r}")
    return date(int(s[:4]), int(s[4:6]), int(s[6:]))


def _hms(v: Any) -> time:
    s = str(v)
    if len(s) != 6 or not s.isdigit():
        raise ValueError(f"bad time {s!r}")
    return time(int(s[:2]), int(s[2:4]), int(s[4:]))


def _at(day: date, hhmmss: Any) -> datetime:
    return datetime.combine(day, _hms(hhmmss), tzinfo=KST)


def _yn(v: Any) -> bool:
    return str(v).upper() == "Y"


def typed_row(tr_id: str, build: Callable[[Mapping[str, Any]], Any], row: Any) -> Any:
    """Run a row builder; a bad value becomes a KisResponseError naming the TR and the row."""
    if not isinstance(row, Mapping):
        raise KisResponseError(f"{tr_id}: expected an object row, got {type(row).__name__}")
    try:
        return build(row)
    except (KeyError, ValueError, TypeError) as exc:
        raise KisResponseError(f"{tr_id}: cannot type row ({type(exc).__name__}: {exc})") from exc


def output_rows(body: Mapping[str, Any], key: str) -> list[Any]:
    v = body.get(key)
    if v is None or v == "":
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        return [v]
    raise KisResponseError(f"{key} is {type(v).__name__}, not a list")


# --- row builders (pure) ----------------------------------------------------------------------------


def quote_from(o: Mapping[str, Any]) -> Quote:
    return Quote(
        code=o["stck_shrn_iscd"],
        price=_int(o["stck_prpr"]),
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_float(o["prdy_ctrt"]),
        open=_int(o["stck_oprc"]),
        high=_int(o["stck_hgpr"]),
        low=_int(o["stck_lwpr"]),
        upper_limit=_int(o["stck_mxpr"]),
        lower_limit=_int(o["stck_llam"]),
        base_price=_int(o["stck_sdpr"]),
        acml_vol=_int(o["acml_vol"]),
        acml_value=_int(o["acml_tr_pbmn"]),
        vwap=_float(o["wghn_avrg_stck_prc"]),
        prdy_vol_rate=_float(o["prdy_vrss_vol_rate"]),
        vol_turnover=_float(o["vol_tnrt"]),
        listed_shares=_int(o["lstn_stcn"]),
        market_cap=_int(o["hts_avls"]),
        per=_float(o["per"]),
        pbr=_float(o["pbr"]),
        eps=_float(o["eps"]),
        bps=_float(o["bps"]),
        foreign_ratio=_float(o["hts_frgn_ehrt"]),
        halted=_yn(o["temp_stop_yn"]),
        status_code=o["iscd_stat_cls_code"],
        warning_code=o["mrkt_warn_cls_code"],
        vi_code=o["vi_cls_code"],
        market_name=o["rprs_mrkt_kor_name"],
        sector_name=o["bstp_kor_isnm"],
        w52_high=_int(o["w52_hgpr"]),
        w52_high_date=_date(o["w52_hgpr_date"]),
        w52_low=_int(o["w52_lwpr"]),
        w52_low_date=_date(o["w52_lwpr_date"]),
        raw=dict(o),
    )


def multi_quote_from(o: Mapping[str, Any]) -> MultiQuote:
    return MultiQuote(
        code=o["inter_shrn_iscd"],
        name=o["inter_kor_isnm"],
        price=_int(o["inter2_prpr"]),
        change=_int(o["inter2_prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_float(o["prdy_ctrt"]),
        acml_vol=_int(o["acml_vol"]),
        acml_value=_int(o["acml_tr_pbmn"]),
        open=_int(o["inter2_oprc"]),
        high=_int(o["inter2_hgpr"]),
        low=_int(o["inter2_lwpr"]),
        upper_limit=_int(o["inter2_mxpr"]),
        lower_limit=_int(o["inter2_llam"]),
        ask1=_opt_int(o["inter2_askp"]),
        bid1=_opt_int(o["inter2_bidp"]),
        ask_size1=_int(o["seln_rsqn"]),
        bid_size1=_int(o["shnu_rsqn"]),
        total_ask_size=_int(o["total_askp_rsqn"]),
        total_bid_size=_int(o["total_bidp_rsqn"]),
        prev_close=_int(o["inter2_prdy_clpr"]),
        base_price=_int(o["inter2_sdpr"]),
        market_name=o["kospi_kosdaq_cls_name"],
        hour_cls_code=o["hour_cls_code"],
        raw=dict(o),
    )


def daily_price_bar_from(o: Mapping[str, Any]) -> DailyBar:
    return DailyBar(
        day=_date(o["stck_bsop_date"]),
        open=_int(o["stck_oprc"]),
        high=_int(o["stck_hgpr"]),  # type: ignore[arg-type]
        low=_int(o["stck_lwpr"]),
        close=_int(o["stck_clpr"]),
        volume=_int(o["acml_vol"]),
        value=None,
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_opt_float(o["prdy_ctrt"]),
        foreign_ratio=_opt_float(o.get("hts_frgn_ehrt")),
        raw=dict(o),
    )


def daily_chart_bar_from(o: Mapping[str, Any]) -> DailyBar:
    return DailyBar(
        day=_date(o["stck_bsop_date"]),
        open=_int(o["stck_oprc"]),
        high=_int(o["stck_hgpr"]),  # type: ignore[arg-type]
        low=_int(o["stck_lwpr"]),
        close=_int(o["stck_clpr"]),
        volume=_int(o["acml_vol"]),
        value=_int(o["acml_tr_pbmn"]),
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=None,
        foreign_ratio=None,
        raw=dict(o),
    )


def chart_summary_from(o: Mapping[str, Any], code: str) -> ChartSummary:
    return ChartSummary(
        code=o.get("stck_shrn_iscd") or code,
        name=o.get("hts_kor_isnm", ""),
        price=_int(o["stck_prpr"]),
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_float(o["prdy_ctrt"]),
        prev_close=_int(o["stck_prdy_clpr"]),
        acml_vol=_int(o["acml_vol"]),
        acml_value=_int(o["acml_tr_pbmn"]),
        raw=dict(o),
    )


def minute_bar_from(o: Mapping[str, Any]) -> MinuteBar:
    return MinuteBar(
        at=_at(_date(o["stck_bsop_date"]), o["stck_cntg_hour"]),
        close=_int(o["stck_prpr"]),  # type: ignore[arg-type]
        open=_int(o["stck_oprc"]),
        high=_int(o["stck_hgpr"]),
        low=_int(o["stck_lwpr"]),
        volume=_int(o["cntg_vol"]),
        acml_value=_int(o["acml_tr_pbmn"]),
        raw=dict(o),
    )


def conclusion_from(o: Mapping[str, Any], day: date) -> Conclusion:
    return Conclusion(
        at=_at(day, o["stck_cntg_hour"]),
        price=_int(o["stck_pbpr"]),
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_float(o["prdy_ctrt"]),
        ask1=_opt_int(o["askp"]),
        bid1=_opt_int(o["bidp"]),
        strength=_float(o["tday_rltv"]),
        acml_vol=_int(o["acml_vol"]),
        qty=_int(o["cnqn"]),
        raw=dict(o),
    )


def volume_rank_from(o: Mapping[str, Any]) -> VolumeRankRow:
    return VolumeRankRow(
        rank=_int(o["data_rank"]),
        code=o["mksc_shrn_iscd"],
        name=o["hts_kor_isnm"],
        price=_int(o["stck_prpr"]),
        change=_int(o["prdy_vrss"]),
        change_sign=o["prdy_vrss_sign"],
        change_rate=_float(o["prdy_ctrt"]),
        acml_vol=_int(o["acml_vol"]),
        prev_vol=_int(o["prdy_vol"]),
        listed_shares=_int(o["lstn_stcn"]),
        avg_vol=_int(o["avrg_vol"]),
        vol_increase_rate=_float(o["vol_inrt"]),
        vol_turnover=_float(o["vol_tnrt"]),
        avg_value=_int(o["avrg_tr_pbmn"]),
        acml_value=_int(o["acml_tr_pbmn"]),
        raw=dict(o),
    )


def holiday_from(o: Mapping[str, Any]) -> HolidayRow:
    return HolidayRow(
        day=_date(o["bass_dt"]),  # type: ignore[arg-type]
        weekday_code=o["wday_dvsn_cd"],
        business_day=_yn(o["bzdy_yn"]),
        transaction_day=_yn(o["tr_day_yn"]),
        market_open=_yn(o["opnd_yn"]),
        settlement_day=_yn(o["sttl_day_yn"]),
        raw=dict(o),
    )


def product_info_from(o: Mapping[str, Any]) -> ProductInfo:
    return ProductInfo(
        code=o["pdno"],
        short_code=o.get("shtn_pdno", ""),
        isin=o.get("std_pdno", ""),
        product_type=o.get("prdt_type_cd", ""),
        name=o.get("prdt_name", ""),
        abbr_name=o.get("prdt_abrv_name", ""),
        eng_name=o.get("prdt_eng_name", ""),
        classification=o.get("prdt_clsf_name", ""),
        first_listed=_date(o.get("frst_erlm_dt")),
        raw=dict(o),
    )


def short_code(pdno: str) -> str:
    """KIS's 12-character product number -> the short code: '00000A005930' -> '005930', '00000Q500001' ->
    'Q500001'; anything else is returned as sent."""
    s = pdno.strip()
    if len(s) == 12 and s[:5] == "00000" and s[5] in "AQ":
        return s[6:] if s[5] == "A" else s[5:]
    return s


def stock_info_from(o: Mapping[str, Any]) -> StockInfo:
    """The NXT flag is required: an answer without it cannot say what the call was made for, so it fails
    (``typed_row`` turns the KeyError into a KisResponseError) rather than reading as "not on NXT"."""
    nxt = _yn(o["cptt_trad_tr_psbl_yn"])
    return StockInfo(
        code=short_code(o["pdno"]),
        name=o.get("prdt_abrv_name", ""),
        full_name=o.get("prdt_name", ""),
        isin=o.get("std_pdno", ""),
        market_id=o.get("mket_id_cd", ""),
        group=o.get("scty_grp_id_cd", ""),
        listed_shares=_int(o.get("lstg_stqt")),
        par_value=_int(o.get("papr")),
        kospi200=_yn(o.get("kospi200_item_yn")),
        listed=_date(o.get("scts_mket_lstg_dt")) or _date(o.get("kosdaq_mket_lstg_dt")),
        halted=_yn(o.get("tr_stop_yn")),
        administrative=_yn(o.get("admn_item_yn")),
        nxt_tradable=nxt,
        nxt_halted=nxt and _yn(o.get("nxt_tr_stop_yn")),
        raw=dict(o),
    )


# --- request parameters (the other way: Python values -> KIS strings) ------------------------------------


def yyyymmdd(d: date) -> str:
    return d.strftime("%Y%m%d")


def hhmmss(t: str | time) -> str:
    s = t.strftime("%H%M%S") if isinstance(t, time) else str(t)
    _hms(s)  # validate before sending
    return s
