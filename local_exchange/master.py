"""KIS stock master files (`kospi_code.mst.zip`, `kosdaq_code.mst.zip`) for the local exchange.

The collector builds its universe from these files with the official fixed-width layout (§7), so
each line must survive the official parser byte for byte: CP949 head (code, ISIN, name), then a
pure-ASCII tail of exactly 227 (KOSPI) / 221 (KOSDAQ) bytes whose columns follow
`stocks_info/kis_kospi_code_mst.py` / `kis_kosdaq_code_mst.py` and their C headers.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date
from typing import TYPE_CHECKING, Literal

from local_exchange.listings import KNOWN_CODES, NAME_MAX_BYTES, Listing
from local_exchange.records import _mix
from observer_resources.calendar import CalendarRangeError
from observer_resources.kis.protocol import MASTER_ENCODING, MASTER_TAIL_LEN

if TYPE_CHECKING:
    from local_exchange.market import Market

HEAD_CODE_WIDTH = 9
HEAD_ISIN_WIDTH = 12

# (column, width) in file order; widths from the official parsers, names from the C headers.
_FLAGS_KOSPI = (
    "mnin_cls_code_yn",
    "low_current_yn",
    "sprn_strr_nmix_issu_yn",
    "kospi200_apnt_cls_code",
    "kospi100_issu_yn",
    "kospi50_issu_yn",
    "krx_issu_yn",
    "etp_prod_cls_code",
    "elw_pblc_yn",
    "krx100_issu_yn",
    "krx_car_yn",
    "krx_smcn_yn",
    "krx_bio_yn",
    "krx_bank_yn",
    "etpr_undt_objt_co_yn",
    "krx_enrg_chms_yn",
    "krx_stel_yn",
    "short_over_cls_code",
    "krx_medi_cmnc_yn",
    "krx_cnst_yn",
    "krx_fnnc_svc_yn",
    "krx_scrt_yn",
    "krx_ship_yn",
    "krx_insu_yn",
    "krx_trnp_yn",
    "sri_nmix_yn",
)
_FLAGS_KOSDAQ = (
    "vntr_issu_yn",
    "low_current_yn",
    "krx_issu_yn",
    "etp_prod_cls_code",
    "krx100_issu_yn",
    "krx_car_yn",
    "krx_smcn_yn",
    "krx_bio_yn",
    "krx_bank_yn",
    "etpr_undt_objt_co_yn",
    "krx_enrg_chms_yn",
    "krx_stel_yn",
    "short_over_cls_code",
    "krx_medi_cmnc_yn",
    "krx_cnst_yn",
    "invt_alrm_yn",
    "krx_scrt_yn",
    "krx_ship_yn",
    "krx_insu_yn",
    "krx_trnp_yn",
    "ksq150_nmix_yn",
)
_MIDDLE = (
    ("stck_sdpr", 9),
    ("frml_mrkt_deal_qty_unit", 5),
    ("ovtm_mrkt_deal_qty_unit", 5),
    ("trht_yn", 1),
    ("sltr_yn", 1),
    ("mang_issu_yn", 1),
    ("mrkt_alrm_cls_code", 2),
    ("mrkt_alrm_risk_adnt_yn", 1),
    ("insn_pbnt_yn", 1),
    ("byps_lstn_yn", 1),
    ("flng_cls_code", 2),
    ("fcam_mod_cls_code", 2),
    ("icic_cls_code", 2),
    ("marg_rate", 3),
    ("crdt_able", 1),
    ("crdt_days", 3),
    ("prdy_vol", 12),
    ("stck_fcam", 12),
    ("stck_lstn_date", 8),
    ("lstn_stcn", 15),
    ("cpfn", 21),
    ("stac_month", 2),
    ("po_prc", 7),
    ("prst_cls_code", 1),
    ("ssts_hot_yn", 1),
    ("stange_runup_yn", 1),
    ("krx300_issu_yn", 1),
)
_TAIL_END = (
    ("sale_account", 9),
    ("bsop_prfi", 9),
    ("op_prfi", 9),
    ("thtr_ntin", 5),
    ("roe", 9),
    ("base_date", 8),
    ("prdy_avls_scal", 9),
    ("grp_code", 3),
    ("co_crdt_limt_over_yn", 1),
    ("secu_lend_able_yn", 1),
    ("stln_able_yn", 1),
)
_HEAD_COLS = (
    ("scrt_grp_cls_code", 2),
    ("avls_scal_cls_code", 1),
    ("bstp_larg_div_code", 4),
    ("bstp_medm_div_code", 4),
    ("bstp_smal_div_code", 4),
)

COLUMNS: dict[str, tuple[tuple[str, int], ...]] = {
    "kospi": _HEAD_COLS + tuple((f, 1) for f in _FLAGS_KOSPI) + _MIDDLE + (("kospi_issu_yn", 1),) + _TAIL_END,
    "kosdaq": _HEAD_COLS + tuple((f, 1) for f in _FLAGS_KOSDAQ) + _MIDDLE + _TAIL_END,
}
for _m, _cols in COLUMNS.items():
    assert sum(w for _, w in _cols) == MASTER_TAIL_LEN[_m], _m
assert len(COLUMNS["kospi"]) == 70 and len(COLUMNS["kosdaq"]) == 64

# Index sectors. A real listing's industry is listed in _KNOWN_INDUSTRY below; any other company's comes from the
# first word of its name found here (a preferred share's name starts with its common share's, so both sit in one
# industry), else from a hash of its code. KOSPI industries are KRX's classic KOSPI industry-index codes (0005 food
# ... 0026 services; a manufacturing industry sits under 0027 manufacturing as the large division). KOSDAQ's 10xx
# codes here are plausible stand-ins, not KRX's table.
_INDUSTRY_WORDS: tuple[tuple[str, str], ...] = (
    ("반도체", "0013"),
    ("디스플레이", "0013"),
    ("이노텍", "0013"),
    ("전자", "0013"),
    ("전선", "0013"),
    ("금융지주", "0021"),
    ("증권", "0024"),
    ("인베스트", "0024"),
    ("보험", "0025"),
    ("화재", "0025"),
    ("생명과학", "0009"),
    ("바이오", "0009"),
    ("제약", "0009"),
    ("파마", "0009"),
    ("헬스케어", "0009"),
    ("랩스", "0009"),
    ("메디칼", "0014"),
    ("정밀", "0014"),
    ("케미칼", "0008"),
    ("화학", "0008"),
    ("머티리얼즈", "0008"),
    ("소재", "0008"),
    ("에너지", "0008"),
    ("스틸", "0011"),
    ("금속", "0011"),
    ("중공업", "0015"),
    ("모터스", "0015"),
    ("오토", "0015"),
    ("로보틱스", "0012"),
    ("기계", "0012"),
    ("식품", "0005"),
    ("섬유", "0006"),
    ("제지", "0007"),
    ("건설", "0018"),
    ("해운", "0019"),
    ("항공", "0019"),
    ("통신", "0020"),
    ("네트웍스", "0020"),
    ("전기", "0017"),
    ("리테일", "0016"),
    ("유통", "0016"),
    ("물산", "0016"),
    ("엔터", "0026"),
    ("미디어", "0026"),
    ("게임즈", "0026"),
    ("소프트", "0026"),
)
_INDUSTRY_FALLBACK = ("0008", "0009", "0010", "0012", "0013", "0013", "0015", "0016", "0026")
_MANUFACTURING = frozenset(f"{i:04d}" for i in range(5, 16))
_KOSDAQ_INDUSTRY = {
    **{f"{i:04d}": f"{1019 + i:04d}" for i in range(5, 16)},  # 0005 -> 1024 ... 0015 -> 1034
    "0016": "1011",
    "0017": "1003",
    "0018": "1010",
    "0019": "1015",
    "0020": "1020",
    "0021": "1014",
    "0024": "1014",
    "0025": "1014",
    "0026": "1003",
}
KOSPI200_SECTORS = "12345678"  # the C header's codes: 1 construction/machinery ... 8 consumer discretionary
# index -> constituents per market at the default listing mix (767 KOSPI, 1,574 KOSDAQ common shares); a smaller
# sim scales them down so membership stays a minority there too
_INDEX_SIZES = {
    "kospi": {"kospi200": 200, "kospi100": 100, "kospi50": 50, "krx100": 80, "krx300": 230, "kosdaq150": 0},
    "kosdaq": {"kospi200": 0, "kospi100": 0, "kospi50": 0, "krx100": 20, "krx300": 70, "kosdaq150": 150},
}
_DEFAULT_COMMONS = {"kospi": 767, "kosdaq": 1574}

# The real listings' industries (KOSPI industry-index codes, mapped for KOSDAQ as above) and KRX sector-index
# flags, which their names do not spell; a preferred share takes its common share's.
_KNOWN_INDUSTRY: dict[str, tuple[str, tuple[str, ...]]] = {
    "005930": ("0013", ("krx_smcn_yn",)),
    "000660": ("0013", ("krx_smcn_yn",)),
    "373220": ("0013", ()),
    "207940": ("0009", ("krx_bio_yn",)),
    "005380": ("0015", ("krx_car_yn",)),
    "000270": ("0015", ("krx_car_yn",)),
    "068270": ("0009", ("krx_bio_yn",)),
    "035420": ("0026", ("krx_medi_cmnc_yn",)),
    "035720": ("0026", ("krx_medi_cmnc_yn",)),
    "051910": ("0008", ("krx_enrg_chms_yn",)),
    "006400": ("0013", ()),
    "005490": ("0011", ("krx_stel_yn",)),
    "105560": ("0021", ("krx_bank_yn",)),
    "055550": ("0021", ("krx_bank_yn",)),
    "012330": ("0015", ("krx_car_yn",)),
    "066570": ("0013", ()),
    "017670": ("0020", ("krx_medi_cmnc_yn",)),
    "030200": ("0020", ("krx_medi_cmnc_yn",)),
    "015760": ("0017", ()),
    "247540": ("0013", ()),
    "086520": ("0008", ("krx_enrg_chms_yn",)),
    "196170": ("0009", ("krx_bio_yn",)),
    "028300": ("0009", ("krx_bio_yn",)),
}
assert {c for c in KNOWN_CODES if c[-1] == "0"} == set(_KNOWN_INDUSTRY)


def _industry(x: Listing, h: int) -> str:
    known = _KNOWN_INDUSTRY.get(x.parent or x.code)
    if known is not None:
        return known[0]
    for word, code in _INDUSTRY_WORDS:
        if word in x.name:
            return code
    return _INDUSTRY_FALLBACK[h % len(_INDUSTRY_FALLBACK)]


def _sectors(x: Listing, h: int) -> tuple[str, str, str]:
    """(large, medium, small) index-sector codes of a stock; '0000' throughout for anything else."""
    if not x.is_stock:
        return "0000", "0000", "0000"
    if x.spac:
        return ("1014" if x.market == "kosdaq" else "0021"), "0000", "0000"
    ind = _industry(x, h)
    if x.market == "kosdaq":
        k = _KOSDAQ_INDUSTRY[ind]
        return ("1009", k, "0000") if ind in _MANUFACTURING else (k, "0000", "0000")
    if ind in _MANUFACTURING:
        return "0027", ind, "0000"
    if ind in ("0024", "0025"):
        return "0021", ind, "0000"
    return ind, "0000", "0000"


def index_cuts(market: str, commons: int) -> dict[str, int]:
    """How many of a market's largest common shares are in each index, for a sim with `commons` of them.

    The real common shares are KOSPI200 / KOSDAQ150 members even where a tiny sim's cut is shorter than they are.
    """
    scale = min(1.0, commons / _DEFAULT_COMMONS[market])
    return {k: round(n * scale) for k, n in _INDEX_SIZES[market].items()}


# name fragment -> KRX sector flag it sets
_SECTOR_WORDS = {
    "krx_car_yn": ("모터스", "오토"),
    "krx_smcn_yn": ("반도체",),
    "krx_bio_yn": ("바이오", "제약", "파마", "생명과학", "헬스케어", "메디칼"),
    "krx_bank_yn": ("금융지주",),
    "krx_enrg_chms_yn": ("에너지", "화학", "케미칼"),
    "krx_stel_yn": ("스틸", "금속"),
    "krx_medi_cmnc_yn": ("미디어", "통신", "엔터", "게임즈"),
    "krx_cnst_yn": ("건설",),
    "krx_scrt_yn": ("증권",),
    "krx_ship_yn": ("해운", "중공업"),
    "krx_insu_yn": ("보험", "화재"),
    "krx_trnp_yn": ("항공", "해운"),
}


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def _num(v: int, width: int) -> str:
    """Zero-padded integer, clamped into the column (a negative keeps its sign inside the width)."""
    hi = 10**width - 1
    lo = -(10 ** (width - 1) - 1)
    return f"{min(max(int(v), lo), hi):0{width}d}"


def _hash(*parts: int) -> int:
    h = 0x5EED
    for p in parts:
        h = _mix(h ^ (p & 0xFFFFFFFFFFFFFFFF))
    return h


def _code_key(code: str) -> int:
    return int.from_bytes(code.encode("ascii"), "big")


def _prst_code(x: Listing) -> str:
    if not x.preferred:
        return "0"
    return "2" if x.code[-1].isalpha() else "1"  # new-style (alphanumeric) preferred shares are 신형


def _tail_values(
    market: Market,
    x: Listing,
    day: date,
    *,
    sdpr: int,
    prdy_vol: int,
    size_rank: int,
    seed: int,
    cuts: dict[str, int],
) -> dict[str, str]:
    """Every tail column's text for one listing (before width checks)."""
    h = _hash(seed, _code_key(x.code))
    h2 = _hash(seed, _code_key(x.code), 1)  # the caution and overheat flags: independent of h's uses
    stock = x.is_stock
    common = stock and not x.preferred and not x.spac
    kospi = x.market == "kospi"
    rank = size_rank if common else 10**9
    mcap_100m = sdpr * x.listed_shares // 100_000_000
    if common:
        scale = (
            ("1" if rank < 100 else "2" if rank < 300 else "3")
            if kospi
            else ("1" if rank < 100 else "2" if rank < 400 else "3")
        )
    else:
        scale = "0"
    known = _KNOWN_INDUSTRY.get(x.code)
    if known is not None:
        sector_flags = {key: _yn(key in known[1]) for key in _SECTOR_WORDS}
    else:
        sector_flags = {key: _yn(common and any(w in x.name for w in words)) for key, words in _SECTOR_WORDS.items()}
    large, medium, small = _sectors(x, _hash(seed, _code_key(x.parent or x.code)))
    manufacturing = large in ("0027", "1009")
    risky = x.halted or x.administrative or x.liquidation or x.alarm != "00"
    # caution and overheat designations: a few stocks each, deterministic per (seed, code); never a real listing
    flagged = stock and not x.spac and x.code not in KNOWN_CODES
    overheat = h2 % 1000
    short_over = ("2" if overheat < 6 else "1" if overheat < 9 else "3" if overheat < 11 else "0") if flagged else "0"
    sales = (mcap_100m * (2 + h % 15)) // 10 if common else 0
    op_profit = sales * ((h >> 8) % 25 - 5) // 100
    net = op_profit * 7 // 10
    roe = (((h >> 16) % 4000) - 1000) / 100 if common else 0.0
    values = {
        "scrt_grp_cls_code": x.group,
        "avls_scal_cls_code": scale,
        "bstp_larg_div_code": large,
        "bstp_medm_div_code": medium,
        "bstp_smal_div_code": small,
        "mnin_cls_code_yn": _yn(manufacturing),
        "low_current_yn": _yn(flagged and (h2 >> 56) % 50 == 0),
        "sprn_strr_nmix_issu_yn": "N",
        "kospi200_apnt_cls_code": KOSPI200_SECTORS[(h >> 32) % len(KOSPI200_SECTORS)]
        if rank < cuts["kospi200"] or (kospi and common and x.code in KNOWN_CODES)
        else "0",
        "kospi100_issu_yn": _yn(rank < cuts["kospi100"]),
        "kospi50_issu_yn": _yn(rank < cuts["kospi50"]),
        "krx_issu_yn": _yn(rank < 150),
        "etp_prod_cls_code": str(x.etp),
        "elw_pblc_yn": _yn(rank < 100),
        "krx100_issu_yn": _yn(rank < cuts["krx100"]),
        "etpr_undt_objt_co_yn": _yn(x.spac),
        "short_over_cls_code": short_over,
        "krx_fnnc_svc_yn": "N",
        "sri_nmix_yn": "N",
        "vntr_issu_yn": _yn(common and not kospi and x.code not in KNOWN_CODES and (h >> 40) % 5 == 0),
        "invt_alrm_yn": _yn(flagged and not kospi and not x.administrative and (h2 >> 48) % 100 == 0),
        "ksq150_nmix_yn": _yn(rank < cuts["kosdaq150"] or (not kospi and common and x.code in KNOWN_CODES)),
        **sector_flags,
        "stck_sdpr": str(sdpr),
        "frml_mrkt_deal_qty_unit": "1",
        "ovtm_mrkt_deal_qty_unit": "1",
        "trht_yn": _yn(x.halted),
        "sltr_yn": _yn(x.liquidation),
        "mang_issu_yn": _yn(x.administrative),
        "mrkt_alrm_cls_code": x.alarm,
        "mrkt_alrm_risk_adnt_yn": _yn(x.alarm in ("01", "02") and (h2 >> 40) % 2 == 0),
        "insn_pbnt_yn": _yn(flagged and (h2 >> 30) % 1000 < (300 if x.administrative else 5)),
        "byps_lstn_yn": "N",
        "flng_cls_code": "00",
        "fcam_mod_cls_code": "00",
        "icic_cls_code": "00",
        "marg_rate": "100" if risky or not stock else ("020" if rank < 200 else "040"),
        "crdt_able": _yn(stock and not risky),
        "crdt_days": "090" if stock and not risky else "000",
        "prdy_vol": str(prdy_vol),
        "stck_fcam": str(x.par_value),
        "stck_lstn_date": x.listing_date.strftime("%Y%m%d"),
        "lstn_stcn": str(x.listed_shares // 1000),
        "cpfn": str(x.par_value * x.listed_shares),
        "stac_month": "12",
        "po_prc": "2000" if x.spac else "0",
        "prst_cls_code": _prst_code(x),
        "ssts_hot_yn": _yn(flagged and (h2 >> 10) % 1000 < 8),
        "stange_runup_yn": _yn(flagged and (h2 >> 20) % 1000 < 5),
        "krx300_issu_yn": _yn(rank < cuts["krx300"]),
        "kospi_issu_yn": _yn(kospi and stock),
        "sale_account": str(sales),
        "bsop_prfi": str(op_profit),
        "op_prfi": str(op_profit),
        "thtr_ntin": str(net),
        "roe": f"{roe:.2f}",
        "base_date": f"{day.year - 1}1200" if common else "00000000",
        "prdy_avls_scal": str(mcap_100m),
        "grp_code": f"{(h >> 48) % 80:03d}" if rank < 300 else "000",
        "co_crdt_limt_over_yn": "N",
        "secu_lend_able_yn": _yn(stock and not risky),
        "stln_able_yn": _yn(rank < 300),
    }
    return values


_NUMERIC = frozenset(
    {
        "stck_sdpr",
        "frml_mrkt_deal_qty_unit",
        "ovtm_mrkt_deal_qty_unit",
        "prdy_vol",
        "stck_fcam",
        "lstn_stcn",
        "cpfn",
        "po_prc",
        "sale_account",
        "bsop_prfi",
        "op_prfi",
        "thtr_ntin",
        "prdy_avls_scal",
    }
)


def _render(values: dict[str, str], cols: tuple[tuple[str, int], ...]) -> str:
    out = []
    for name, width in cols:
        v = values[name]
        if name in _NUMERIC:
            text = _num(int(v), width)
        elif name == "roe":
            text = f"{float(v):0{width}.2f}"
        else:
            text = v.ljust(width)
        if len(text) != width or not text.isascii():
            raise ValueError(f"master column {name} = {text!r} does not fit {width} ASCII characters")
        out.append(text)
    return "".join(out)


def master_lines(market: Market, which: Literal["kospi", "kosdaq"], day: date) -> list[bytes]:
    """One CP949 line (with '\\n') per listing of `which`, in code order."""
    if which not in COLUMNS:
        raise ValueError(f"which must be 'kospi' or 'kosdaq', got {which!r}")
    cols = COLUMNS[which]
    rows = [x for x in market.listings if x.market == which]
    try:
        prev_day = market.previous_trading_day(day)
    except CalendarRangeError:
        prev_day = None
    sdpr = {x.code: market.prev_close(x.code, day) for x in rows}
    prdy_vol = {x.code: (market.day_volume(x.code, prev_day) if prev_day else 0) for x in rows}
    commons = sorted(
        (x for x in rows if x.is_stock and not x.preferred and not x.spac),
        key=lambda x: (-sdpr[x.code] * x.listed_shares, x.code),
    )
    size_rank = {x.code: i for i, x in enumerate(commons)}
    cuts = index_cuts(which, len(commons))
    lines = []
    for x in rows:
        values = _tail_values(
            market,
            x,
            day,
            sdpr=sdpr[x.code],
            prdy_vol=prdy_vol[x.code],
            size_rank=size_rank.get(x.code, 10**9),
            seed=market.seed,
            cuts=cuts,
        )
        tail = _render(values, cols)
        name = x.name.encode(MASTER_ENCODING)
        if len(name) > NAME_MAX_BYTES:
            raise ValueError(f"name of {x.code} is {len(name)} bytes in CP949 (max {NAME_MAX_BYTES})")
        head = (
            x.code.encode("ascii").ljust(HEAD_CODE_WIDTH)
            + x.isin.encode("ascii").ljust(HEAD_ISIN_WIDTH)
            + name.ljust(NAME_MAX_BYTES)
        )
        lines.append(head + tail.encode("ascii") + b"\n")
    return lines


def build_master_zip(market: Market, which: Literal["kospi", "kosdaq"], day: date) -> bytes:
    """The `<which>_code.mst.zip` KIS serves on `day`; same (seed, day) gives identical bytes."""
    payload = b"".join(master_lines(market, which, day))
    info = zipfile.ZipInfo(f"{which}_code.mst", date_time=(day.year, day.month, day.day, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0
    info.external_attr = 0o644 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, payload, compresslevel=6)
    return buf.getvalue()
