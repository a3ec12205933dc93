"""The ``output`` objects of each quote TR, built from the synthetic market (pure functions).

KIS returns every documented field of a TR, each as a string; third-party clients read many of
them, so each builder returns exactly the field list of docs/kis-protocol.md Appendix A, in that order,
with an empty string where a value does not apply. Values are consistent with each other (change
= price - previous close, VWAP = value / volume, ...) and with the stream at the same instant.
Fundamentals the market does not model (PER, EPS, foreign holdings) are stable per-symbol
numbers derived from the code, so repeated calls agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from observer_resources.kis.protocol import krx_tick_size

# --- field lists (docs/kis-protocol.md Appendix A) --------------------------------------------
INQUIRE_PRICE_FIELDS = tuple(
    "iscd_stat_cls_code, marg_rate, rprs_mrkt_kor_name, new_hgpr_lwpr_cls_code, bstp_kor_isnm, temp_stop_yn, "
    "oprc_rang_cont_yn, clpr_rang_cont_yn, crdt_able_yn, grmn_rate_cls_code, elw_pblc_yn, stck_prpr, prdy_vrss, "
    "prdy_vrss_sign, prdy_ctrt, acml_tr_pbmn, acml_vol, prdy_vrss_vol_rate, stck_oprc, stck_hgpr, stck_lwpr, "
    "stck_mxpr, stck_llam, stck_sdpr, wghn_avrg_stck_prc, hts_frgn_ehrt, frgn_ntby_qty, pgtr_ntby_qty, "
    "pvt_scnd_dmrs_prc, pvt_frst_dmrs_prc, pvt_pont_val, pvt_frst_dmsp_prc, pvt_scnd_dmsp_prc, dmrs_val, dmsp_val, "
    "cpfn, rstc_wdth_prc, stck_fcam, stck_sspr, aspr_unit, hts_deal_qty_unit_val, lstn_stcn, hts_avls, per, pbr, "
    "stac_month, vol_tnrt, eps, bps, d250_hgpr, d250_hgpr_date, d250_hgpr_vrss_prpr_rate, d250_lwpr, d250_lwpr_date, "
    "d250_lwpr_vrss_prpr_rate, stck_dryy_hgpr, dryy_hgpr_vrss_prpr_rate, dryy_hgpr_date, stck_dryy_lwpr, "
    "dryy_lwpr_vrss_prpr_rate, dryy_lwpr_date, w52_hgpr, w52_hgpr_vrss_prpr_ctrt, w52_hgpr_date, w52_lwpr, "
    "w52_lwpr_vrss_prpr_ctrt, w52_lwpr_date, whol_loan_rmnd_rate, ssts_yn, stck_shrn_iscd, fcam_cnnm, cpfn_cnnm, "
    "apprch_rate, frgn_hldn_qty, vi_cls_code, ovtm_vi_cls_code, last_ssts_cntg_qty, invt_caful_yn, "
    "mrkt_warn_cls_code, short_over_yn, sltr_yn, mang_issu_cls_code".split(", ")
)
SEARCH_INFO_FIELDS = tuple(
    "pdno, prdt_type_cd, std_pdno, shtn_pdno, prdt_name, prdt_name120, prdt_abrv_name, prdt_eng_name, "
    "prdt_eng_name120, prdt_eng_abrv_name, prdt_sale_stat_cd, prdt_risk_grad_cd, prdt_clsf_cd, prdt_clsf_name, "
    "sale_strt_dt, sale_end_dt, wrap_asst_type_cd, ivst_prdt_type_cd, ivst_prdt_type_cd_name, frst_erlm_dt".split(", ")
)
# CTPF1002R: the 67 fields KIS documents, in its order; the last two are the NXT flags (docs/kis-protocol.md §6.10)
SEARCH_STOCK_INFO_FIELDS = tuple(
    "pdno, prdt_type_cd, mket_id_cd, scty_grp_id_cd, excg_dvsn_cd, setl_mmdd, lstg_stqt, lstg_cptl_amt, cpta, papr, "
    "issu_pric, kospi200_item_yn, scts_mket_lstg_dt, scts_mket_lstg_abol_dt, kosdaq_mket_lstg_dt, "
    "kosdaq_mket_lstg_abol_dt, frbd_mket_lstg_dt, frbd_mket_lstg_abol_dt, reits_kind_cd, etf_dvsn_cd, oilf_fund_yn, "
    "idx_bztp_lcls_cd, idx_bztp_mcls_cd, idx_bztp_scls_cd, stck_kind_cd, mfnd_opng_dt, mfnd_end_dt, "
    "dpsi_erlm_cncl_dt, etf_cu_qty, prdt_name, prdt_name120, prdt_abrv_name, std_pdno, prdt_eng_name, "
    "prdt_eng_name120, prdt_eng_abrv_name, dpsi_aptm_erlm_yn, etf_txtn_type_cd, etf_type_cd, lstg_abol_dt, "
    "nwst_odst_dvsn_cd, sbst_pric, thco_sbst_pric, thco_sbst_pric_chng_dt, tr_stop_yn, admn_item_yn, thdt_clpr, "
    "bfdy_clpr, clpr_chng_dt, std_idst_clsf_cd, std_idst_clsf_cd_name, idx_bztp_lcls_cd_name, "
    "idx_bztp_mcls_cd_name, idx_bztp_scls_cd_name, ocr_no, crfd_item_yn, elec_scty_yn, issu_istt_cd, "
    "etf_chas_erng_rt_dbnb, etf_etn_ivst_heed_item_yn, stln_int_rt_dvsn_cd, frnr_psnl_lmt_rt, "
    "lstg_rqsr_issu_istt_cd, lstg_rqsr_item_cd, trst_istt_issu_istt_cd, cptt_trad_tr_psbl_yn, nxt_tr_stop_yn".split(
        ", "
    )
)
MULTPRICE_FIELDS = tuple(
    "kospi_kosdaq_cls_name, mrkt_trtm_cls_name, hour_cls_code, inter_shrn_iscd, inter_kor_isnm, inter2_prpr, "
    "inter2_prdy_vrss, prdy_vrss_sign, prdy_ctrt, acml_vol, inter2_oprc, inter2_hgpr, inter2_lwpr, inter2_llam, "
    "inter2_mxpr, inter2_askp, inter2_bidp, seln_rsqn, shnu_rsqn, total_askp_rsqn, total_bidp_rsqn, acml_tr_pbmn, "
    "inter2_prdy_clpr, oprc_vrss_hgpr_rate, intr_antc_cntg_vrss, intr_antc_cntg_vrss_sign, "
    "intr_antc_cntg_prdy_ctrt, intr_antc_vol, inter2_sdpr".split(", ")
)
TIME_CHART_OUTPUT1_FIELDS = tuple(
    "prdy_vrss, prdy_vrss_sign, prdy_ctrt, stck_prdy_clpr, acml_vol, acml_tr_pbmn, hts_kor_isnm, stck_prpr".split(", ")
)
TIME_CHART_OUTPUT2_FIELDS = tuple(
    "stck_bsop_date, stck_cntg_hour, stck_prpr, stck_oprc, stck_hgpr, stck_lwpr, cntg_vol, acml_tr_pbmn".split(", ")
)
DAILY_PRICE_FIELDS = tuple(
    "stck_bsop_date, stck_oprc, stck_hgpr, stck_lwpr, stck_clpr, acml_vol, prdy_vrss_vol_rate, prdy_vrss, "
    "prdy_vrss_sign, prdy_ctrt, hts_frgn_ehrt, frgn_ntby_qty, flng_cls_code, acml_prtt_rate".split(", ")
)
DAILY_CHART_OUTPUT1_FIELDS = tuple(
    "prdy_vrss, prdy_vrss_sign, prdy_ctrt, stck_prdy_clpr, acml_vol, acml_tr_pbmn, hts_kor_isnm, stck_prpr, "
    "stck_shrn_iscd, prdy_vol, stck_mxpr, stck_llam, stck_oprc, stck_hgpr, stck_lwpr, stck_prdy_oprc, "
    "stck_prdy_hgpr, stck_prdy_lwpr, askp, bidp, prdy_vrss_vol, vol_tnrt, stck_fcam, lstn_stcn, cpfn, hts_avls, "
    "per, eps, pbr, itewhol_loan_rmnd_ratem".split(", ")
)
DAILY_CHART_OUTPUT2_FIELDS = tuple(
    "stck_bsop_date, stck_clpr, stck_oprc, stck_hgpr, stck_lwpr, acml_vol, acml_tr_pbmn, flng_cls_code, prtt_rate, "
    "mod_yn, prdy_vrss_sign, prdy_vrss, revl_issu_reas".split(", ")
)
CONCLUSION_OUTPUT1_FIELDS = tuple(
    "stck_prpr, prdy_vrss, prdy_vrss_sign, prdy_ctrt, acml_vol, prdy_vol, rprs_mrkt_kor_name".split(", ")
)
CONCLUSION_OUTPUT2_FIELDS = tuple(
    "stck_cntg_hour, stck_pbpr, prdy_vrss, prdy_vrss_sign, prdy_ctrt, askp, bidp, tday_rltv, acml_vol, cnqn".split(", ")
)
VOLUME_RANK_FIELDS = tuple(
    "hts_kor_isnm, mksc_shrn_iscd, data_rank, stck_prpr, prdy_vrss_sign, prdy_vrss, prdy_ctrt, acml_vol, prdy_vol, "
    "lstn_stcn, avrg_vol, n_befr_clpr_vrss_prpr_rate, vol_inrt, vol_tnrt, nday_vol_tnrt, avrg_tr_pbmn, "
    "tr_pbmn_tnrt, nday_tr_pbmn_tnrt, acml_tr_pbmn".split(", ")
)
CHK_HOLIDAY_FIELDS = ("bass_dt", "wday_dvsn_cd", "bzdy_yn", "tr_day_yn", "opnd_yn", "sttl_day_yn")

SECTORS = (
    "전기·전자",
    "화학",
    "서비스업",
    "의약품",
    "운수장비",
    "유통업",
    "금융업",
    "철강·금속",
    "기계",
    "음식료품",
    "건설업",
    "통신업",
    "섬유·의복",
    "운수창고",
    "종이·목재",
    "비금속광물",
    "IT 서비스",
    "제약",
    "반도체",
    "기타제조",
)


# --- small pure helpers -----------------------------------------------------------------------
def num(x: Any) -> str:
    """An integer (or integral float) as KIS writes it."""
    return str(int(round(x))) if x is not None else ""


def dec(x: float, places: int = 2) -> str:
    return f"{x:.{places}f}"


def pct(a: float, b: float, places: int = 2) -> str:
    """a / b × 100 with fixed decimals; 0 when b is 0 (KIS prints 0.00, never an error)."""
    return dec(a / b * 100 if b else 0.0, places)


def ymd(d: date | None) -> str:
    return d.strftime("%Y%m%d") if d is not None else ""


def change_sign(price: int, prev: int, upper: int | None = None, lower: int | None = None) -> str:
    """prdy_vrss_sign: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down."""
    if upper and price >= upper and price > prev:
        return "1"
    if lower and price <= lower and price < prev:
        return "4"
    if price > prev:
        return "2"
    if price < prev:
        return "5"
    return "3"


def _h(code: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) for a symbol (unmodelled fundamentals)."""
    digest = hashlib.sha256(f"{salt}:{code}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def listing_mrkt_name(li: Any) -> str:
    return "KOSPI" if li.market == "kospi" else "KOSDAQ"


def stat_code(li: Any) -> str:
    """iscd_stat_cls_code: 51 administrative, 52 risk, 53 warning, 54 caution, 58 halted, 55 normal (credit ok)."""
    if li.halted:
        return "58"
    if li.administrative:
        return "51"
    return {3: "52", 2: "53", 1: "54"}.get(_alarm(li), "55")


def _alarm(li: Any) -> int:
    try:
        return int(li.alarm or 0)
    except (TypeError, ValueError):
        return 0


def yn(flag: Any) -> str:
    return "Y" if flag else "N"


class Fundamentals:
    """Stable per-symbol fundamentals the market does not model."""

    def __init__(self, li: Any, ref_price: int):
        c = li.code
        self.per = 4.0 + 36.0 * _h(c, "per")
        self.pbr = 0.3 + 3.2 * _h(c, "pbr")
        self.eps = int(ref_price / self.per) if ref_price else 0
        self.bps = int(ref_price / self.pbr) if ref_price else 0
        self.frgn_rate = 55.0 * _h(c, "frgn") ** 2
        self.frgn_qty = int(li.listed_shares * self.frgn_rate / 100)
        self.loan_rate = 2.0 * _h(c, "loan")
        self.sector = SECTORS[int(_h(c, "sector") * len(SECTORS))]


def _minus(d: date, days: int) -> date:
    return d - timedelta(days=days)


# --- builders ---------------------------------------------------------------------------------
def inquire_price(li: Any, q: Any, prev_bar: Any | None, past: Sequence[tuple[date, int, int]]) -> dict[str, str]:
    """FHKST01010100 ``output``. ``prev_bar``: the previous trading day's DailyBar; ``past``: (day, high,
    low) of finished days before ``q.day``, newest first, about one year (older days may carry
    high = low = close: the sim keeps only recent days' intraday extremes cheap to compute)."""
    prev = q.prev_close
    price = q.price
    f = Fundamentals(li, prev)
    traded = q.acml_vol > 0
    rows = [(q.day, q.high, q.low)] if traded else []
    rows += list(past)

    def extremes(subset: list[tuple[date, int, int]]) -> tuple[int, str, int, str]:
        if not subset:
            return price, ymd(q.day), price, ymd(q.day)
        hi = max(subset, key=lambda r: (r[1], r[0]))
        lo = min(subset, key=lambda r: (r[2], _neg(r[0])))
        return hi[1], ymd(hi[0]), lo[2], ymd(lo[0])

    d250 = extremes(rows[:250])
    dryy = extremes([r for r in rows if r[0].year == q.day.year])
    w52 = extremes([r for r in rows if r[0] > _minus(q.day, 364)])
    pb = prev_bar
    if pb is not None:
        pv = (pb.high + pb.low + pb.close) / 3
        r1, s1 = 2 * pv - pb.low, 2 * pv - pb.high
        r2, s2 = pv + (pb.high - pb.low), pv - (pb.high - pb.low)
        dm = (pb.high + pb.low + 2 * pb.close) / 4
        pivots = (num(r2), num(r1), num(pv), num(s1), num(s2), num(2 * dm - pb.low), num(2 * dm - pb.high))
        prev_vol = pb.volume
    else:
        pivots = ("0",) * 7
        prev_vol = 0
    cap_shares = li.listed_shares
    out = {
        "iscd_stat_cls_code": stat_code(li),
        "marg_rate": "40.00",
        "rprs_mrkt_kor_name": listing_mrkt_name(li),
        "new_hgpr_lwpr_cls_code": "",
        "bstp_kor_isnm": f.sector,
        "temp_stop_yn": yn(li.halted),
        "oprc_rang_cont_yn": "N",
        "clpr_rang_cont_yn": "N",
        "crdt_able_yn": "N" if (li.administrative or li.halted) else "Y",
        "grmn_rate_cls_code": "40",
        "elw_pblc_yn": "N",
        "stck_prpr": num(price),
        "prdy_vrss": num(price - prev),
        "prdy_vrss_sign": change_sign(price, prev, q.upper_limit, q.lower_limit),
        "prdy_ctrt": pct(price - prev, prev),
        "acml_tr_pbmn": num(q.acml_value),
        "acml_vol": num(q.acml_vol),
        "prdy_vrss_vol_rate": pct(q.acml_vol, prev_vol),
        "stck_oprc": num(q.open),
        "stck_hgpr": num(q.high),
        "stck_lwpr": num(q.low),
        "stck_mxpr": num(q.upper_limit),
        "stck_llam": num(q.lower_limit),
        "stck_sdpr": num(prev),
        "wghn_avrg_stck_prc": dec(q.acml_value / q.acml_vol if q.acml_vol else 0.0),
        "hts_frgn_ehrt": dec(f.frgn_rate),
        "frgn_ntby_qty": "0",
        "pgtr_ntby_qty": "0",
        "pvt_scnd_dmrs_prc": pivots[0],
        "pvt_frst_dmrs_prc": pivots[1],
        "pvt_pont_val": pivots[2],
        "pvt_frst_dmsp_prc": pivots[3],
        "pvt_scnd_dmsp_prc": pivots[4],
        "dmrs_val": pivots[5],
        "dmsp_val": pivots[6],
        "cpfn": num(cap_shares * li.par_value / 100_000_000),
        "rstc_wdth_prc": num(q.upper_limit - prev),
        "stck_fcam": num(li.par_value),
        "stck_sspr": num(_floor_tick(prev * 0.7)),
        "aspr_unit": num(krx_tick_size(price or prev or 1)),
        "hts_deal_qty_unit_val": "1",
        "lstn_stcn": num(cap_shares),
        "hts_avls": num(price * cap_shares / 100_000_000),
        "per": dec(price / f.eps if f.eps else 0.0),
        "pbr": dec(price / f.bps if f.bps else 0.0),
        "stac_month": "12",
        "vol_tnrt": pct(q.acml_vol, cap_shares),
        "eps": dec(f.eps),
        "bps": dec(f.bps),
        "d250_hgpr": num(d250[0]),
        "d250_hgpr_date": d250[1],
        "d250_hgpr_vrss_prpr_rate": pct(price - d250[0], d250[0]),
        "d250_lwpr": num(d250[2]),
        "d250_lwpr_date": d250[3],
        "d250_lwpr_vrss_prpr_rate": pct(price - d250[2], d250[2]),
        "stck_dryy_hgpr": num(dryy[0]),
        "dryy_hgpr_vrss_prpr_rate": pct(price - dryy[0], dryy[0]),
        "dryy_hgpr_date": dryy[1],
        "stck_dryy_lwpr": num(dryy[2]),
        "dryy_lwpr_vrss_prpr_rate": pct(price - dryy[2], dryy[2]),
        "dryy_lwpr_date": dryy[3],
        "w52_hgpr": num(w52[0]),
        "w52_hgpr_vrss_prpr_ctrt": pct(price - w52[0], w52[0]),
        "w52_hgpr_date": w52[1],
        "w52_lwpr": num(w52[2]),
        "w52_lwpr_vrss_prpr_ctrt": pct(price - w52[2], w52[2]),
        "w52_lwpr_date": w52[3],
        "whol_loan_rmnd_rate": dec(f.loan_rate),
        "ssts_yn": "Y",
        "stck_shrn_iscd": li.code,
        "fcam_cnnm": "원",
        "cpfn_cnnm": "억",
        "apprch_rate": "0.00",
        "frgn_hldn_qty": num(f.frgn_qty),
        "vi_cls_code": "N",
        "ovtm_vi_cls_code": "N",
        "last_ssts_cntg_qty": "0",
        "invt_caful_yn": yn(_alarm(li) == 1),
        "mrkt_warn_cls_code": f"{_alarm(li):02d}",
        "short_over_yn": "N",
        "sltr_yn": yn(li.liquidation),
        "mang_issu_cls_code": yn(li.administrative),
    }
    return _ordered(out, INQUIRE_PRICE_FIELDS)


def _neg(d: date) -> int:
    return -d.toordinal()


def _floor_tick(price: float) -> int:
    p = int(price)
    t = krx_tick_size(max(p, 1))
    return p - p % t


def _ordered(values: dict[str, str], fields: Iterable[str]) -> dict[str, str]:
    """Exactly ``fields`` in order; a missing one is a bug in the builder, not an empty value."""
    out = {k: values[k] for k in fields}
    if len(out) != len(values):
        extra = set(values) - set(out)
        raise AssertionError(f"builder produced fields outside the list: {sorted(extra)}")
    return out


def session_codes(q: Any, at: datetime, session: tuple[datetime, datetime] | None) -> tuple[str, str]:
    """(mrkt_trtm_cls_name, hour_cls_code) for an instant: before/in/after the session."""
    if session is None:
        return "장종료", "0"
    first, close = session
    if at < first:
        return "장개시전", "B"
    if at < close:
        return "장중", "0"
    return "장종료", "0"


def multprice_row(li: Any, q: Any, *, mrkt_trtm: str, hour_cls: str) -> dict[str, str]:
    prev = q.prev_close
    out = {
        "kospi_kosdaq_cls_name": "코스피" if li.market == "kospi" else "코스닥",
        "mrkt_trtm_cls_name": mrkt_trtm,
        "hour_cls_code": hour_cls,
        "inter_shrn_iscd": li.code,
        "inter_kor_isnm": li.name,
        "inter2_prpr": num(q.price),
        "inter2_prdy_vrss": num(q.price - prev),
        "prdy_vrss_sign": change_sign(q.price, prev, q.upper_limit, q.lower_limit),
        "prdy_ctrt": pct(q.price - prev, prev),
        "acml_vol": num(q.acml_vol),
        "inter2_oprc": num(q.open),
        "inter2_hgpr": num(q.high),
        "inter2_lwpr": num(q.low),
        "inter2_llam": num(q.lower_limit),
        "inter2_mxpr": num(q.upper_limit),
        "inter2_askp": num(q.ask1),
        "inter2_bidp": num(q.bid1),
        "seln_rsqn": num(q.ask_size1),
        "shnu_rsqn": num(q.bid_size1),
        "total_askp_rsqn": num(q.total_ask_size),
        "total_bidp_rsqn": num(q.total_bid_size),
        "acml_tr_pbmn": num(q.acml_value),
        "inter2_prdy_clpr": num(prev),
        "oprc_vrss_hgpr_rate": pct(q.high - q.open, q.open),
        "intr_antc_cntg_vrss": "0",
        "intr_antc_cntg_vrss_sign": "3",
        "intr_antc_cntg_prdy_ctrt": "0.00",
        "intr_antc_vol": "0",
        "inter2_sdpr": num(prev),
    }
    return _ordered(out, MULTPRICE_FIELDS)


def chart_output1(li: Any, q: Any) -> dict[str, str]:
    prev = q.prev_close
    out = {
        "prdy_vrss": num(q.price - prev),
        "prdy_vrss_sign": change_sign(q.price, prev, q.upper_limit, q.lower_limit),
        "prdy_ctrt": pct(q.price - prev, prev),
        "stck_prdy_clpr": num(prev),
        "acml_vol": num(q.acml_vol),
        "acml_tr_pbmn": num(q.acml_value),
        "hts_kor_isnm": li.name,
        "stck_prpr": num(q.price),
    }
    return _ordered(out, TIME_CHART_OUTPUT1_FIELDS)


def minute_row(bar: Any) -> dict[str, str]:
    out = {
        "stck_bsop_date": ymd(bar.day),
        "stck_cntg_hour": bar.start.strftime("%H%M%S"),
        "stck_prpr": num(bar.close),
        "stck_oprc": num(bar.open),
        "stck_hgpr": num(bar.high),
        "stck_lwpr": num(bar.low),
        "cntg_vol": num(bar.volume),
        "acml_tr_pbmn": num(bar.acml_value),
    }
    return _ordered(out, TIME_CHART_OUTPUT2_FIELDS)


def daily_price_row(
    li: Any, bar: Any, prev_volume: int | None, markers: dict[str, str] | None = None
) -> dict[str, str]:
    """``markers``: the day's corporate-action fields (local_exchange/corporate_actions.py), else none."""
    f = Fundamentals(li, bar.prev_close)
    m = markers or {}
    out = {
        "stck_bsop_date": ymd(bar.day),
        "stck_oprc": num(bar.open),
        "stck_hgpr": num(bar.high),
        "stck_lwpr": num(bar.low),
        "stck_clpr": num(bar.close),
        "acml_vol": num(bar.volume),
        "prdy_vrss_vol_rate": pct(bar.volume, prev_volume or 0),
        "prdy_vrss": num(bar.close - bar.prev_close),
        "prdy_vrss_sign": change_sign(bar.close, bar.prev_close),
        "prdy_ctrt": pct(bar.close - bar.prev_close, bar.prev_close),
        "hts_frgn_ehrt": dec(f.frgn_rate),
        "frgn_ntby_qty": "0",
        "flng_cls_code": m.get("flng_cls_code", "00"),
        "acml_prtt_rate": m.get("prtt_rate", "0.00"),
    }
    return _ordered(out, DAILY_PRICE_FIELDS)


def daily_chart_output1(li: Any, q: Any, prev_bar: Any | None) -> dict[str, str]:
    prev = q.prev_close
    f = Fundamentals(li, prev)
    pv = prev_bar.volume if prev_bar is not None else 0
    out = {
        "prdy_vrss": num(q.price - prev),
        "prdy_vrss_sign": change_sign(q.price, prev, q.upper_limit, q.lower_limit),
        "prdy_ctrt": pct(q.price - prev, prev),
        "stck_prdy_clpr": num(prev),
        "acml_vol": num(q.acml_vol),
        "acml_tr_pbmn": num(q.acml_value),
        "hts_kor_isnm": li.name,
        "stck_prpr": num(q.price),
        "stck_shrn_iscd": li.code,
        "prdy_vol": num(pv),
        "stck_mxpr": num(q.upper_limit),
        "stck_llam": num(q.lower_limit),
        "stck_oprc": num(q.open),
        "stck_hgpr": num(q.high),
        "stck_lwpr": num(q.low),
        "stck_prdy_oprc": num(prev_bar.open) if prev_bar is not None else "0",
        "stck_prdy_hgpr": num(prev_bar.high) if prev_bar is not None else "0",
        "stck_prdy_lwpr": num(prev_bar.low) if prev_bar is not None else "0",
        "askp": num(q.ask1),
        "bidp": num(q.bid1),
        "prdy_vrss_vol": num(q.acml_vol - pv),
        "vol_tnrt": pct(q.acml_vol, li.listed_shares),
        "stck_fcam": num(li.par_value),
        "lstn_stcn": num(li.listed_shares),
        "cpfn": num(li.listed_shares * li.par_value / 100_000_000),
        "hts_avls": num(q.price * li.listed_shares / 100_000_000),
        "per": dec(q.price / f.eps if f.eps else 0.0),
        "eps": dec(f.eps),
        "pbr": dec(q.price / f.bps if f.bps else 0.0),
        "itewhol_loan_rmnd_ratem": dec(f.loan_rate),
    }
    return _ordered(out, DAILY_CHART_OUTPUT1_FIELDS)


def daily_chart_row(bar: Any, markers: dict[str, str] | None = None) -> dict[str, str]:
    """``markers``: the day's corporate-action fields (local_exchange/corporate_actions.py), else none."""
    m = markers or {}
    out = {
        "stck_bsop_date": ymd(bar.day),
        "stck_clpr": num(bar.close),
        "stck_oprc": num(bar.open),
        "stck_hgpr": num(bar.high),
        "stck_lwpr": num(bar.low),
        "acml_vol": num(bar.volume),
        "acml_tr_pbmn": num(bar.value),
        "flng_cls_code": m.get("flng_cls_code", "00"),
        "prtt_rate": m.get("prtt_rate", "0.00"),
        "mod_yn": m.get("mod_yn", "N"),
        "prdy_vrss_sign": change_sign(bar.close, bar.prev_close),
        "prdy_vrss": num(bar.close - bar.prev_close),
        "revl_issu_reas": "",
    }
    return _ordered(out, DAILY_CHART_OUTPUT2_FIELDS)


def conclusion_output1(li: Any, q: Any, prev_volume: int) -> dict[str, str]:
    prev = q.prev_close
    out = {
        "stck_prpr": num(q.price),
        "prdy_vrss": num(q.price - prev),
        "prdy_vrss_sign": change_sign(q.price, prev, q.upper_limit, q.lower_limit),
        "prdy_ctrt": pct(q.price - prev, prev),
        "acml_vol": num(q.acml_vol),
        "prdy_vol": num(prev_volume),
        "rprs_mrkt_kor_name": listing_mrkt_name(li),
    }
    return _ordered(out, CONCLUSION_OUTPUT1_FIELDS)


CCNL_FIELDS = ("stck_cntg_hour", "stck_prpr", "prdy_vrss", "prdy_vrss_sign", "cntg_vol", "tday_rltv", "prdy_ctrt")


def ccnl_row(record: Sequence[str], index: dict[str, int]) -> dict[str, str]:
    """One FHKST01010300 row from the trade's stream record: the seven fields KIS answers, in its order."""
    names = ("STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS", "PRDY_VRSS_SIGN", "CNTG_VOL", "CTTR", "PRDY_CTRT")
    return {k: record[index[n]] for k, n in zip(CCNL_FIELDS, names)}


def conclusion_row(record: Sequence[str], index: dict[str, int]) -> dict[str, str]:
    """One FHPST01060000 row from an H0STCNT0 record of the same tick (so REST equals the stream)."""
    r = lambda name: record[index[name]]  # noqa: E731
    out = {
        "stck_cntg_hour": r("STCK_CNTG_HOUR"),
        "stck_pbpr": r("STCK_PRPR"),
        "prdy_vrss": r("PRDY_VRSS"),
        "prdy_vrss_sign": r("PRDY_VRSS_SIGN"),
        "prdy_ctrt": r("PRDY_CTRT"),
        "askp": r("ASKP1"),
        "bidp": r("BIDP1"),
        "tday_rltv": r("CTTR"),
        "acml_vol": r("ACML_VOL"),
        "cnqn": r("CNTG_VOL"),
    }
    return _ordered(out, CONCLUSION_OUTPUT2_FIELDS)


def volume_rank_row(li: Any, q: Any, rank: int, history: Sequence[Any]) -> dict[str, str]:
    """``history``: the last few finished daily bars before ``q.day``, newest first; the averages
    (avrg_vol, avrg_tr_pbmn, nday_*) are over those days."""
    prev = q.prev_close
    prev_vol = history[0].volume if history else 0
    avg_vol = sum(b.volume for b in history[:20]) / len(history[:20]) if history else 0
    avg_val = sum(b.value for b in history[:20]) / len(history[:20]) if history else 0
    nday_vol = sum(b.volume for b in history[:20])
    nday_val = sum(b.value for b in history[:20])
    n_befr = history[min(len(history), 20) - 1].close if history else prev
    shares = li.listed_shares
    out = {
        "hts_kor_isnm": li.name,
        "mksc_shrn_iscd": li.code,
        "data_rank": str(rank),
        "stck_prpr": num(q.price),
        "prdy_vrss_sign": change_sign(q.price, prev, q.upper_limit, q.lower_limit),
        "prdy_vrss": num(q.price - prev),
        "prdy_ctrt": pct(q.price - prev, prev),
        "acml_vol": num(q.acml_vol),
        "prdy_vol": num(prev_vol),
        "lstn_stcn": num(shares),
        "avrg_vol": num(avg_vol),
        "n_befr_clpr_vrss_prpr_rate": pct(q.price - n_befr, n_befr),
        "vol_inrt": pct(q.acml_vol - prev_vol, prev_vol) if prev_vol else "0.00",
        "vol_tnrt": pct(q.acml_vol, shares),
        "nday_vol_tnrt": pct(nday_vol, shares),
        "avrg_tr_pbmn": num(avg_val),
        "tr_pbmn_tnrt": pct(q.acml_value, q.price * shares) if q.price else "0.00",
        "nday_tr_pbmn_tnrt": pct(nday_val, q.price * shares) if q.price else "0.00",
        "acml_tr_pbmn": num(q.acml_value),
    }
    return _ordered(out, VOLUME_RANK_FIELDS)


def holiday_row(d: date, opened: bool) -> dict[str, str]:
    weekday = d.isoweekday() % 7 + 1  # 01 Sunday .. 07 Saturday
    business = d.weekday() < 5 and opened
    out = {
        "bass_dt": ymd(d),
        "wday_dvsn_cd": f"{weekday:02d}",
        "bzdy_yn": yn(business),
        "tr_day_yn": yn(business),
        "opnd_yn": yn(opened),
        "sttl_day_yn": yn(opened),
    }
    return _ordered(out, CHK_HOLIDAY_FIELDS)


def search_info(li: Any) -> dict[str, str]:
    eng = f"SIM {li.code} {'PREF' if li.preferred else 'CO'}"
    clsf = {"EF": ("101210", "ETF"), "ST": ("101010", "주권")}.get(getattr(li, "group", "ST"), ("101010", "주권"))
    if getattr(li, "etp", 0) in (3, 4, "3", "4") or li.code.startswith("Q"):
        clsf = ("101220", "ETN")
    out = {
        "pdno": li.code,
        "prdt_type_cd": "300",
        "std_pdno": li.isin,
        "shtn_pdno": li.code,
        "prdt_name": li.name,
        "prdt_name120": li.name,
        "prdt_abrv_name": li.name,
        "prdt_eng_name": eng,
        "prdt_eng_name120": eng,
        "prdt_eng_abrv_name": eng,
        "prdt_sale_stat_cd": "",
        "prdt_risk_grad_cd": "",
        "prdt_clsf_cd": clsf[0],
        "prdt_clsf_name": clsf[1],
        "sale_strt_dt": "",
        "sale_end_dt": "",
        "wrap_asst_type_cd": "",
        "ivst_prdt_type_cd": "",
        "ivst_prdt_type_cd_name": "",
        "frst_erlm_dt": ymd(li.listing_date),
    }
    return _ordered(out, SEARCH_INFO_FIELDS)


def kis_pdno(code: str) -> str:
    """The 12-character product number KIS echoes: '00000A' + a stock's short code ('00000A000660' in KIS's
    example); an ETN's Q code is zero-filled the same way (an assumption)."""
    return (code if code.startswith("Q") else "A" + code).rjust(12, "0")


def _stock_kind(li: Any) -> str:
    """stck_kind_cd: 101 common, 201/202 first/second preferred, 000 anything that is not a share."""
    if not li.is_stock or li.spac:
        return "000"
    if not li.preferred:
        return "101"
    return "202" if li.code[-1] in "7L" else "201"


def search_stock_info(
    li: Any,
    *,
    kospi200: bool,
    last_close: tuple[date, int, int] | None,
    nxt: tuple[bool, bool],
) -> dict[str, str]:
    """CTPF1002R ``output``. ``last_close``: (day, close, the close before it) of the latest finished session;
    ``nxt``: (trades on NXT, halted on NXT) from venues.py. Codes the sim does not model stay empty, as KIS
    leaves its own unknowns."""
    kospi = li.market == "kospi"
    group = "EN" if li.etp in (3, 4) else li.group
    common = li.is_stock and not li.preferred and not li.spac
    eng = f"SIM {li.code} {'PREF' if li.preferred else 'CO'}"
    listed = ymd(li.listing_date)
    close_day, close, before = last_close if last_close is not None else (None, None, None)
    out = {
        "pdno": kis_pdno(li.code),
        "prdt_type_cd": "300",
        "mket_id_cd": "STK" if kospi else "KSQ",
        "scty_grp_id_cd": group,
        "excg_dvsn_cd": "02" if kospi else "03",
        "setl_mmdd": "12",
        "lstg_stqt": num(li.listed_shares),
        "lstg_cptl_amt": "0",
        "cpta": num(li.listed_shares * li.par_value),
        "papr": num(li.par_value),
        "issu_pric": num(li.par_value),
        "kospi200_item_yn": yn(kospi200),
        "scts_mket_lstg_dt": listed if kospi else "",
        "scts_mket_lstg_abol_dt": "",
        "kosdaq_mket_lstg_dt": "" if kospi else listed,
        "kosdaq_mket_lstg_abol_dt": "",
        "frbd_mket_lstg_dt": "",
        "frbd_mket_lstg_abol_dt": "",
        "reits_kind_cd": "",
        "etf_dvsn_cd": "" if li.group == "EF" else "0",
        "oilf_fund_yn": "N",
        "idx_bztp_lcls_cd": "",
        "idx_bztp_mcls_cd": "",
        "idx_bztp_scls_cd": "",
        "stck_kind_cd": _stock_kind(li),
        "mfnd_opng_dt": "",
        "mfnd_end_dt": "",
        "dpsi_erlm_cncl_dt": "",
        "etf_cu_qty": "0",
        "prdt_name": li.name + "보통주" if common else li.name,
        "prdt_name120": li.name + "보통주" if common else li.name,
        "prdt_abrv_name": li.name,
        "std_pdno": li.isin,
        "prdt_eng_name": eng,
        "prdt_eng_name120": eng,
        "prdt_eng_abrv_name": eng,
        "dpsi_aptm_erlm_yn": "Y",
        "etf_txtn_type_cd": "00",
        "etf_type_cd": "",
        "lstg_abol_dt": "",
        "nwst_odst_dvsn_cd": "1",
        "sbst_pric": "",
        "thco_sbst_pric": "",
        "thco_sbst_pric_chng_dt": "",
        "tr_stop_yn": yn(li.halted),
        "admn_item_yn": yn(li.administrative),
        "thdt_clpr": num(close),
        "bfdy_clpr": num(before),
        "clpr_chng_dt": ymd(close_day),
        "std_idst_clsf_cd": "",
        "std_idst_clsf_cd_name": "",
        "idx_bztp_lcls_cd_name": "",
        "idx_bztp_mcls_cd_name": "",
        "idx_bztp_scls_cd_name": "",
        "ocr_no": "",
        "crfd_item_yn": "N",
        "elec_scty_yn": "Y",
        "issu_istt_cd": "",
        "etf_chas_erng_rt_dbnb": "",
        "etf_etn_ivst_heed_item_yn": "N",
        "stln_int_rt_dvsn_cd": "",
        "frnr_psnl_lmt_rt": "",
        "lstg_rqsr_issu_istt_cd": "",
        "lstg_rqsr_item_cd": "",
        "trst_istt_issu_istt_cd": "",
        "cptt_trad_tr_psbl_yn": yn(nxt[0]),
        "nxt_tr_stop_yn": yn(nxt[0] and nxt[1]),
    }
    return _ordered(out, SEARCH_STOCK_INFO_FIELDS)


def aggregate_bars(bars_newest_first: Sequence[Any], period: str) -> list[Any]:
    """Daily bars → W/M/Y bars (newest first) with the DailyBar attribute names."""
    if period == "D":
        return list(bars_newest_first)

    def key(d: date) -> tuple[int, ...]:
        if period == "W":
            y, w, _ = d.isocalendar()
            return (y, w)
        if period == "M":
            return (d.year, d.month)
        return (d.year,)

    groups: list[list[Any]] = []
    for b in bars_newest_first:
        if groups and key(groups[-1][0].day) == key(b.day):
            groups[-1].append(b)
        else:
            groups.append([b])
    out = []
    for g in groups:  # each group newest first
        out.append(
            SimpleNamespace(
                day=g[0].day,
                open=g[-1].open,
                high=max(b.high for b in g),
                low=min(b.low for b in g),
                close=g[0].close,
                volume=sum(b.volume for b in g),
                value=sum(b.value for b in g),
                prev_close=g[-1].prev_close,
            )
        )
    return out
