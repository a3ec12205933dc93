"""KIS Open API wire constants shared by the client and the local exchange.

One module so that the client and the simulator cannot drift apart on a path, a tr_id, an error
code or a field position. Source: docs/kis-protocol.md (sections cited inline).
"""

from __future__ import annotations

from typing import Final

# --- hosts (§1) -------------------------------------------------------------------------------
REAL_REST_URL: Final = "https://openapi.koreainvestment.com:9443"
PAPER_REST_URL: Final = "https://openapivts.koreainvestment.com:29443"
REAL_WS_URL: Final = "ws://ops.koreainvestment.com:21000"
PAPER_WS_URL: Final = "ws://ops.koreainvestment.com:31000"
MASTER_DOWNLOAD_URL: Final = "https://new.real.download.dws.co.kr"

APP_KEY_LEN: Final = 36
APP_SECRET_LEN: Final = 180

# --- auth paths (§2) --------------------------------------------------------------------------
PATH_TOKEN: Final = "/oauth2/tokenP"
PATH_REVOKE: Final = "/oauth2/revokeP"
PATH_APPROVAL: Final = "/oauth2/Approval"

TOKEN_LIFETIME_S: Final = 86_400
TOKEN_SAME_WITHIN_S: Final = 6 * 3600
TOKEN_MIN_INTERVAL_S: Final = 60
TOKEN_EXPIRED_FMT: Final = "%Y-%m-%d %H:%M:%S"  # access_token_token_expired, KST, no zone

# --- quotation TRs (§6) -----------------------------------------------------------------------
QUOTE_BASE: Final = "/uapi/domestic-stock/v1/quotations"

TR_INQUIRE_PRICE: Final = "FHKST01010100"
TR_MULTPRICE: Final = "FHKST11300006"
TR_CCNL: Final = "FHKST01010300"  # the latest 30 trades, newest first (§6.2a)
TR_DAILY_PRICE: Final = "FHKST01010400"
TR_DAILY_ITEMCHART: Final = "FHKST03010100"
TR_TIME_ITEMCHART: Final = "FHKST03010200"
TR_TIME_DAILYCHART: Final = "FHKST03010230"
TR_TIME_CONCLUSION: Final = "FHPST01060000"
TR_VOLUME_RANK: Final = "FHPST01710000"
TR_CHK_HOLIDAY: Final = "CTCA0903R"
TR_SEARCH_INFO: Final = "CTPF1604R"
TR_SEARCH_STOCK_INFO: Final = "CTPF1002R"  # stock info, the only place KIS tells whether a stock trades on NXT (§6.10)

#: path suffix -> tr_id the local exchange expects on it
QUOTE_PATHS: Final[dict[str, str]] = {
    "inquire-price": TR_INQUIRE_PRICE,
    "intstock-multprice": TR_MULTPRICE,
    "inquire-ccnl": TR_CCNL,
    "inquire-daily-price": TR_DAILY_PRICE,
    "inquire-daily-itemchartprice": TR_DAILY_ITEMCHART,
    "inquire-time-itemchartprice": TR_TIME_ITEMCHART,
    "inquire-time-dailychartprice": TR_TIME_DAILYCHART,
    "inquire-time-itemconclusion": TR_TIME_CONCLUSION,
    "volume-rank": TR_VOLUME_RANK,
    "chk-holiday": TR_CHK_HOLIDAY,
    "search-info": TR_SEARCH_INFO,
    "search-stock-info": TR_SEARCH_STOCK_INFO,
}

#: TRs KIS does not offer on the paper (VTS) host (§5.1, §10.2)
PAPER_REFUSED_TRS: Final = frozenset({TR_MULTPRICE, TR_VOLUME_RANK, TR_CHK_HOLIDAY, TR_SEARCH_STOCK_INFO})

MULTPRICE_MAX: Final = 30
CCNL_ROWS: Final = 30
TIME_ITEMCHART_ROWS: Final = 30
TIME_DAILYCHART_ROWS: Final = 120
DAILY_PRICE_ROWS: Final = 30
DAILY_ITEMCHART_ROWS: Final = 100

# --- envelope and errors (§3.4, §4) -----------------------------------------------------------
OK_MSG_CD: Final = "MCA00000"
OK_MSG1: Final = "정상처리 되었습니다."
#: search-stock-info's success envelope in KIS's own example: another code, msg1 space-padded to 80 CP949 bytes (§6.10)
LOOKUP_OK_MSG_CD: Final = "KIOK0530"
LOOKUP_OK_MSG1: Final = "조회되었습니다" + " " * 66

EGW_RATE: Final = "EGW00201"
EGW_EXPIRED: Final = "EGW00123"
EGW_INVALID_TOKEN: Final = "EGW00121"
EGW_TOKEN_TOO_OFTEN: Final = "EGW00133"
EGW_BAD_SECRET: Final = "EGW00105"

ERROR_MESSAGES: Final[dict[str, str]] = {
    EGW_RATE: "초당 거래건수를 초과하였습니다.",
    EGW_EXPIRED: "기간이 만료된 token 입니다.",
    EGW_INVALID_TOKEN: "유효하지 않은 token 입니다.",
    EGW_TOKEN_TOO_OFTEN: "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
    EGW_BAD_SECRET: "유효하지 않은 AppSecret입니다.",
}
#: HTTP status KIS uses for each gateway code
ERROR_HTTP_STATUS: Final[dict[str, int]] = {
    EGW_RATE: 500,
    EGW_EXPIRED: 500,
    EGW_INVALID_TOKEN: 500,
    EGW_TOKEN_TOO_OFTEN: 403,
    EGW_BAD_SECRET: 403,
}
PAPER_REFUSAL_MSG1: Final = "모의투자 TR 이 아닙니다."
NO_DATA_RT_CD: Final = "7"

# --- WebSocket (§8) ---------------------------------------------------------------------------
WS_PATHS: Final = ("/", "/tryitout")  # plus /tryitout/<TR>
TR_WS_TRADE: Final = "H0STCNT0"
TR_WS_ORDERBOOK: Final = "H0STASP0"
TR_PINGPONG: Final = "PINGPONG"
WS_MAX_REGISTRATIONS: Final = 41

TR_TYPE_REGISTER: Final = "1"
TR_TYPE_UNREGISTER: Final = "2"

OPSP_SUBSCRIBED: Final = "OPSP0000"
OPSP_UNSUBSCRIBED: Final = "OPSP0001"
OPSP_ALREADY: Final = "OPSP0002"
OPSP_NOT_REGISTERED: Final = "OPSP0003"
OPSP_MAX_OVER: Final = "OPSP0008"
OPSP_KEY_IN_USE: Final = "OPSP8996"

OPSP_MESSAGES: Final[dict[str, tuple[str, str]]] = {  # msg_cd -> (rt_cd, msg1)
    OPSP_SUBSCRIBED: ("0", "SUBSCRIBE SUCCESS"),
    OPSP_UNSUBSCRIBED: ("0", "UNSUBSCRIBE SUCCESS"),
    OPSP_ALREADY: ("1", "ALREADY IN SUBSCRIBE"),
    OPSP_NOT_REGISTERED: ("1", "UNSUBSCRIBE ERROR(not found!)"),
    OPSP_MAX_OVER: ("1", "MAX SUBSCRIBE OVER"),
    OPSP_KEY_IN_USE: ("9", "ALREADY IN USE appkey"),
}

#: H0STCNT0 record fields in order (§8.4); a 47th MARKET_CLS_CODE may follow (§8.6)
H0STCNT0_FIELDS: Final = (
    "MKSC_SHRN_ISCD",
    "STCK_CNTG_HOUR",
    "STCK_PRPR",
    "PRDY_VRSS_SIGN",
    "PRDY_VRSS",
    "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC",
    "STCK_OPRC",
    "STCK_HGPR",
    "STCK_LWPR",
    "ASKP1",
    "BIDP1",
    "CNTG_VOL",
    "ACML_VOL",
    "ACML_TR_PBMN",
    "SELN_CNTG_CSNU",
    "SHNU_CNTG_CSNU",
    "NTBY_CNTG_CSNU",
    "CTTR",
    "SELN_CNTG_SMTN",
    "SHNU_CNTG_SMTN",
    "CCLD_DVSN",
    "SHNU_RATE",
    "PRDY_VOL_VRSS_ACML_VOL_RATE",
    "OPRC_HOUR",
    "OPRC_VRSS_PRPR_SIGN",
    "OPRC_VRSS_PRPR",
    "HGPR_HOUR",
    "HGPR_VRSS_PRPR_SIGN",
    "HGPR_VRSS_PRPR",
    "LWPR_HOUR",
    "LWPR_VRSS_PRPR_SIGN",
    "LWPR_VRSS_PRPR",
    "BSOP_DATE",
    "NEW_MKOP_CLS_CODE",
    "TRHT_YN",
    "ASKP_RSQN1",
    "BIDP_RSQN1",
    "TOTAL_ASKP_RSQN",
    "TOTAL_BIDP_RSQN",
    "VOL_TNRT",
    "PRDY_SMNS_HOUR_ACML_VOL",
    "PRDY_SMNS_HOUR_ACML_VOL_RATE",
    "HOUR_CLS_CODE",
    "MRKT_TRTM_CLS_CODE",
    "VI_STND_PRC",
)
H0STCNT0_EXTRA_FIELD: Final = "MARKET_CLS_CODE"
H0STCNT0_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(H0STCNT0_FIELDS)}

#: H0STASP0 order book: 59 fields (§8.5)
H0STASP0_FIELDS: Final = (
    ("MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE")
    + tuple(f"ASKP{i}" for i in range(1, 11))
    + tuple(f"BIDP{i}" for i in range(1, 11))
    + tuple(f"ASKP_RSQN{i}" for i in range(1, 11))
    + tuple(f"BIDP_RSQN{i}" for i in range(1, 11))
    + (
        "TOTAL_ASKP_RSQN",
        "TOTAL_BIDP_RSQN",
        "OVTM_TOTAL_ASKP_RSQN",
        "OVTM_TOTAL_BIDP_RSQN",
        "ANTC_CNPR",
        "ANTC_CNQN",
        "ANTC_VOL",
        "ANTC_CNTG_VRSS",
        "ANTC_CNTG_VRSS_SIGN",
        "ANTC_CNTG_PRDY_CTRT",
        "ACML_VOL",
        "TOTAL_ASKP_RSQN_ICDC",
        "TOTAL_BIDP_RSQN_ICDC",
        "OVTM_TOTAL_ASKP_ICDC",
        "OVTM_TOTAL_BIDP_ICDC",
        "STCK_DEAL_CLS_CODE",
    )
)
assert len(H0STCNT0_FIELDS) == 46 and len(H0STASP0_FIELDS) == 59

# --- the per-venue feeds (§8.7): KRX ``ST``, NXT ``NX``, unified ``UN`` -------------------------
TR_WS_TRADE_NXT: Final = "H0NXCNT0"
TR_WS_TRADE_UN: Final = "H0UNCNT0"
TR_WS_ORDERBOOK_NXT: Final = "H0NXASP0"
TR_WS_ORDERBOOK_UN: Final = "H0UNASP0"
TR_WS_EXPECTED: Final = "H0STANC0"
TR_WS_EXPECTED_NXT: Final = "H0NXANC0"
TR_WS_EXPECTED_UN: Final = "H0UNANC0"
TR_WS_STATUS: Final = "H0STMKO0"
TR_WS_STATUS_NXT: Final = "H0NXMKO0"
TR_WS_STATUS_UN: Final = "H0UNMKO0"

#: NXT and unified trades: the H0STCNT0 layout, field 22 named CNTG_CLS_CODE; the unified one names no venue
H0NXCNT0_FIELDS: Final = tuple("CNTG_CLS_CODE" if n == "CCLD_DVSN" else n for n in H0STCNT0_FIELDS)
H0UNCNT0_FIELDS: Final = H0NXCNT0_FIELDS
#: NXT and unified books add the KRX and NXT midpoint quotes
H0NXASP0_FIELDS: Final = H0STASP0_FIELDS + (
    "KMID_PRC",
    "KMID_TOTAL_RSQN",
    "KMID_CLS_CODE",
    "NMID_PRC",
    "NMID_TOTAL_RSQN",
    "NMID_CLS_CODE",
)
H0UNASP0_FIELDS: Final = H0NXASP0_FIELDS
#: expected (auction) price: the trade layout without VI_STND_PRC on KRX, with it on NXT and unified
H0STANC0_FIELDS: Final = H0NXCNT0_FIELDS[:45]
H0NXANC0_FIELDS: Final = H0NXCNT0_FIELDS
H0UNANC0_FIELDS: Final = H0NXCNT0_FIELDS
#: market status (장운영); the unified feed has no code field
H0STMKO0_FIELDS: Final = (
    "MKSC_SHRN_ISCD",
    "TRHT_YN",
    "TR_SUSP_REAS_CNTT",
    "MKOP_CLS_CODE",
    "ANTC_MKOP_CLS_CODE",
    "MRKT_TRTM_CLS_CODE",
    "DIVI_APP_CLS_CODE",
    "ISCD_STAT_CLS_CODE",
    "VI_CLS_CODE",
    "OVTM_VI_CLS_CODE",
    "EXCH_CLS_CODE",
)
H0NXMKO0_FIELDS: Final = H0STMKO0_FIELDS
H0UNMKO0_FIELDS: Final = H0STMKO0_FIELDS[1:]

#: every real-time data TR the client may register, with its record width
WS_FEED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    TR_WS_TRADE: H0STCNT0_FIELDS,
    TR_WS_TRADE_NXT: H0NXCNT0_FIELDS,
    TR_WS_TRADE_UN: H0UNCNT0_FIELDS,
    TR_WS_ORDERBOOK: H0STASP0_FIELDS,
    TR_WS_ORDERBOOK_NXT: H0NXASP0_FIELDS,
    TR_WS_ORDERBOOK_UN: H0UNASP0_FIELDS,
    TR_WS_EXPECTED: H0STANC0_FIELDS,
    TR_WS_EXPECTED_NXT: H0NXANC0_FIELDS,
    TR_WS_EXPECTED_UN: H0UNANC0_FIELDS,
    TR_WS_STATUS: H0STMKO0_FIELDS,
    TR_WS_STATUS_NXT: H0NXMKO0_FIELDS,
    TR_WS_STATUS_UN: H0UNMKO0_FIELDS,
}
WS_FEED_WIDTHS: Final[dict[str, int]] = {tr: len(f) for tr, f in WS_FEED_FIELDS.items()}
WS_REALTIME_TRS: Final = frozenset(WS_FEED_FIELDS)
assert WS_FEED_WIDTHS == {
    "H0STCNT0": 46,
    "H0NXCNT0": 46,
    "H0UNCNT0": 46,
    "H0STASP0": 59,
    "H0NXASP0": 65,
    "H0UNASP0": 65,
    "H0STANC0": 45,
    "H0NXANC0": 46,
    "H0UNANC0": 46,
    "H0STMKO0": 11,
    "H0NXMKO0": 11,
    "H0UNMKO0": 10,
}

# --- market-status feed code values (§8.5) ---------------------------------------------------------
#: MKOP_CLS_CODE / ANTC_MKOP_CLS_CODE per phase name. KIS documents no values for the status feeds, so these are
#: the local exchange's own, and the collector compares them with its phase table (docs/kis-protocol.md §8.5):
#: the first digit says before (1), during (2) or after (3, 4) the regular session, like the first digit of
#: H0STCNT0's NEW_MKOP_CLS_CODE; "00" means the venue runs no phase (closed or a break).
STATUS_PHASE_CODES: Final[dict[str | None, str]] = {
    None: "00",
    "pre_market": "11",
    "opening_auction": "12",
    "regular": "20",
    "main": "20",
    "closing_auction": "22",
    "closing_price": "31",
    "after_market_orders": "32",
    "after_market": "33",
    "after_hours_single": "41",
}
#: MRKT_TRTM_CLS_CODE per phase kind (the local exchange's own values): how the running phase matches orders
STATUS_KIND_CODES: Final[dict[str | None, str]] = {
    None: "0",
    "continuous": "1",
    "auction": "2",
    "periodic_auction": "3",
    "closing_price": "4",
}
#: EXCH_CLS_CODE (the local exchange's own values): the venue whose phase a status record reports
STATUS_EXCH_CODES: Final[dict[str, str]] = {"KRX": "1", "NXT": "2"}


# --- master files (§7) ------------------------------------------------------------------------
MASTER_PATHS: Final[dict[str, str]] = {
    "kospi": "/common/master/kospi_code.mst.zip",
    "kosdaq": "/common/master/kosdaq_code.mst.zip",
}
MASTER_TAIL_LEN: Final[dict[str, int]] = {"kospi": 227, "kosdaq": 221}
MASTER_ENCODING: Final = "cp949"


def krx_tick_size(price: int) -> int:
    """KRX price increment for a stock at ``price`` (2023 unified table, KOSPI and KOSDAQ)."""
    if price < 2_000:
        return 1
    if price < 5_000:
        return 5
    if price < 20_000:
        return 10
    if price < 50_000:
        return 50
    if price < 200_000:
        return 100
    if price < 500_000:
        return 500
    return 1_000
