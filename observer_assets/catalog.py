"""What the Dagster catalog says about each table asset: its columns, its owner, where it lives, how many rows.

The column schema is built from the very ``pa.Schema`` an asset writes, so the catalog cannot drift from the
files; a column description naming a column the schema lacks is refused at import. Materializations add
``dagster/row_count`` and ``dagster/uri`` (a ``file://`` URI, or the lake's URL with any credentials redacted).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from observer_resources.secrets import redact_url

OWNERS = ["team:observer"]
COLUMN_SCHEMA = "dagster/column_schema"
ROW_COUNT = "dagster/row_count"
URI = "dagster/uri"


def table_schema(schema: pa.Schema, descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    """A Dagster TableSchema with one column per field of ``schema`` (Arrow type names), described where known."""
    descriptions = descriptions or {}
    unknown = sorted(set(descriptions) - set(schema.names))
    if unknown:
        raise ValueError(f"column descriptions for columns the schema does not have: {unknown}")
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=descriptions.get(f.name)) for f in schema]
    )


def definition_metadata(
    schema: pa.Schema, descriptions: Mapping[str, str] | None, path: str, **extra: Any
) -> dict[str, Any]:
    """Static metadata of a table asset: its column schema and the path pattern of its files."""
    return {COLUMN_SCHEMA: table_schema(schema, descriptions), "path": path, **extra}


def uri(path: Any) -> str:
    """``file://`` URI of a local file; the URL (userinfo and secret query values redacted) of a remote one."""
    if isinstance(path, Path):
        return path.resolve().as_uri()
    return redact_url(str(path))


def materialized(rows: int, path: Any) -> dict[str, Any]:
    """Materialization metadata every table asset reports: rows written and where."""
    return {ROW_COUNT: int(rows), URI: uri(path), "path": dg.MetadataValue.path(str(path))}


# --- column descriptions (the catalog's words; the types come from the schemas) -------------------------------------
UNIVERSE_COLUMNS = {
    "code": "6-character KRX short code (alphanumeric for new-style preferred shares, e.g. 00088K)",
    "name": "Korean name from the master file",
    "market": "kospi or kosdaq: the master file the row came from",
    "isin": "12-character ISIN",
    "prev_close": "previous trading day's close, KRW, from the exchange (membership requires >= 4,000)",
    "base_price": "the master's base price (stck_sdpr), KRW: the previous close adjusted for corporate actions",
    "preferred": "preferred share (false: common share)",
    "administrative": "designated an administrative issue (관리종목)",
    "market_warning": "market warning code: 00 none, 01 investment caution, 02 investment warning, 03 investment risk",
    "listed_shares": "listed shares (the master counts thousands: a multiple of 1,000)",
    "market_cap_100m": "previous day's market capitalization, 100 million KRW (억원)",
    "sector_large": "index-sector code, large division (4 characters, e.g. 0027 manufacturing); null when unclassified",
    "sector_medium": "index-sector code, medium division (e.g. 0013 electrical and electronics); null when unclassified",
    "sector_small": "index-sector code, small division; null when unclassified",
    "kospi200_sector": "KOSPI 200 sector code (1 construction and machinery ... 8 consumer discretionary); "
    "null when not a KOSPI 200 constituent",
    "in_kospi200": "KOSPI 200 constituent (the master gives it a KOSPI 200 sector); false on KOSDAQ",
    "in_kospi100": "KOSPI 100 constituent; false on KOSDAQ (its master has no such column)",
    "in_kospi50": "KOSPI 50 constituent; false on KOSDAQ (its master has no such column)",
    "in_krx100": "KRX 100 constituent",
    "in_kosdaq150": "KOSDAQ 150 constituent; false on KOSPI (its master has no such column)",
    "in_krx300": "KRX 300 constituent",
    "listing_date": "date the share was listed; null when the master leaves it blank",
    "lot_size": "regular-session trading unit, shares (1 for every stock today)",
    "market_warning_level": "market_warning decoded: none, caution, warning or risk; null for a code not listed",
    "warning_notice": "notice that a market warning (02) or risk (03) designation may follow (시장경고 위험예고)",
    "investment_attention": "KOSDAQ investment-attention issue (투자주의환기종목: weak fundamentals or "
    "governance); false on KOSPI (its master has no such column)",
    "short_term_overheat": "short-term overheating code: 0 none, 1 designation notice, 2 designated, "
    "3 designation extended (단기과열종목)",
    "short_sale_overheat": "designated a short-selling overheated issue (공매도과열종목): short sales banned the "
    "next trading day",
    "abnormal_surge": "flagged an abnormal price surge (이상급등종목)",
    "unfaithful_disclosure": "designated an unfaithful-disclosure corporation (불성실공시법인)",
    "low_liquidity": "designated a low-liquidity issue (저유동성종목)",
    "nxt_tradable": "also trades on Nextrade (NXT) that day, from search-stock-info; null when not known (not asked: "
    "the KRX-only day; paper keys; a day built before; a failed call)",
    "nxt_halted": "NXT halted it that day (only ever true with nxt_tradable); null when not known",
}

PREV_CLOSE_COLUMNS = {
    "code": "6-character KRX short code of a candidate the exchange answered for",
    "prev_close": "its previous trading day's close, KRW, as the universe was built from it",
}

NXT_STATUS_COLUMNS = {
    "code": "6-character KRX short code of a member",
    "nxt_tradable": "search-stock-info's cptt_trad_tr_psbl_yn: the stock trades on NXT that day; null if the call failed",
    "nxt_halted": "its nxt_tr_stop_yn: NXT halted the stock that day; null if the call failed",
    "error": "why the flags are null (the error of the call); null when it answered",
}

EXCLUSION_COLUMNS = {
    "code": "short code of the master row left out",
    "market": "kospi or kosdaq: the master file the row came from; null in a table migrated from free-text reasons",
    "name": "Korean name from the master; null in a migrated table",
    "category": "why: duplicate_code, not_stock_group, etp, etn_code, spac, halted, liquidation, no_prev_close or "
    "below_min_prev_close",
    "detail": "non-numeric detail: the security group code (not_stock_group, e.g. EF) or the ETP class (etp, "
    "3/4 ETN, 5 listed trust); null otherwise",
    "prev_close": "previous close, KRW, for below_min_prev_close; null otherwise (not fetched or not had)",
    "min_prev_close": "the previous-close floor, KRW, a below_min_prev_close row missed; null otherwise",
}

SNAPSHOT_COLUMNS = {
    "slot_ts": "the 10-minute slot instant (KST) the row belongs to; the row describes the market at fetched_at",
    "code": "6-character KRX short code",
    "name": "Korean name (the multi-quote's, else the day's universe)",
    "price": "last trade price at fetch time, KRW",
    "change": "change as KIS sends it: price minus the day's base price (the previous close unless a corporate "
    "action adjusted it), KRW",
    "change_rate": "change against the base price, % (2 decimals, as KIS sends it)",
    "open": "the day's opening price, KRW; null on restored rows",
    "high": "the day's high so far, KRW; null on restored rows",
    "low": "the day's low so far, KRW; null on restored rows",
    "prev_close": "previous trading day's close, KRW",
    "volume": "cumulative day volume, shares (not per interval)",
    "trade_value": "cumulative traded value, KRW",
    "bid": "best bid, KRW; null where the source has none (never 0)",
    "ask": "best ask, KRW; null where the source has none (never 0)",
    "bid_size": "quantity resting at the best bid, shares; null where the source has none",
    "ask_size": "quantity resting at the best ask, shares; null where the source has none",
    "upper_limit": "the day's upper price limit, KRW; null on restored rows",
    "lower_limit": "the day's lower price limit, KRW; null on restored rows",
    "source": "live (fetched in the slot) or restored (rebuilt from minute bars)",
    "restored_from": "KIS endpoint a restored row came from; null when live",
    "tr_id": "KIS transaction id of the answer: FHKST11300006 multi-quote, FHKST01010100 inquire-price, "
    "FHKST03010200/FHKST03010230 minute bars (restored)",
    "fetched_at": "when the answer was received (KST, µs); for restored rows, when the bars were fetched",
    "total_ask_size": "quantity resting on the whole ask side of the book, shares; multi-quote only, else null",
    "total_bid_size": "quantity resting on the whole bid side of the book, shares; multi-quote only, else null",
    "change_sign": "direction of change: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down; null on restored rows",
    "session_phase": "KIS's market-phase name as sent (mrkt_trtm_cls_name, Korean text); multi-quote only, else null",
    "hour_cls_code": "KIS's hour class as sent: 0 regular, A after-close expected, B pre-open expected, C expected "
    "in session (VI), D after-hours single-price expected; multi-quote only, else null",
    "expected_price": "expected auction cross price, KRW; null when there is no expected cross (expected volume 0) "
    "or the source has none",
    "expected_volume": "expected auction cross volume, shares; null when there is none",
    "halted": "trading halted (temp_stop_yn); inquire-price only, null on multi-quote and restored rows",
    "vi_code": "volatility-interruption class as sent (vi_cls_code; N = none); inquire-price only, else null",
    "status_code": "issue status class as sent (iscd_stat_cls_code, e.g. 51 administrative, 55 normal, 58 halted); "
    "inquire-price only, else null",
    "key_id": "the app key that fetched the row (key-<hash>, never the key); null in rows from archives before it",
    "late_s": "fetched_at - slot_ts, seconds; for restored rows how long after the slot the bars were fetched",
    "venue": "whose quote or bars the row holds: KRX (market code J), NXT (NX) or unified (UN: both venues' trades, "
    "cumulative volume KRX + NXT); a stock NXT trades is quoted unified across the two-venue day, KRX in rows "
    "written before the column",
}

FAILURE_COLUMNS = {
    "code": "6-character KRX short code not collected in the slot's live fetch",
    "error": "why: the KIS error class and code, 'deadline: next slot', 'missing from multi-quote answer', or "
    "'key <id> degraded: …'",
    "at": "when the slot's fetch started (KST)",
    "key_id": "the app key whose shard held the code",
}

DAILY_COLUMNS = {
    **SNAPSHOT_COLUMNS,
    "slot": "the slot as a string, THHMM (KST), the same as the per-slot files' slot= directory",
    "interval_volume": "volume minus the same code's at the previous slot, shares: what traded between the two "
    "fetches; null for the code's first slot of the day or when the previous slot has no row for it",
    "interval_trade_value": "trade_value minus the same code's at the previous slot, KRW; null as interval_volume",
}

MINUTE_BAR_COLUMNS = {
    "code": "short code (6 characters)",
    "venue": "the tape the bar is of: KRX, NXT, or UN (the unified KRX + NXT tape)",
    "market": "the KIS market code asked (FID_COND_MRKT_DIV_CODE): J, NX or UN",
    "minute": "the bar's start (HH:MM:00, KST): it covers the trades stamped HH:MM:00..HH:MM:59",
    "open": "first trade price of the minute, KRW",
    "high": "highest trade price of the minute, KRW",
    "low": "lowest trade price of the minute, KRW",
    "close": "last trade price of the minute, KRW",
    "volume": "shares traded in the minute (cntg_vol)",
    "value": "KIS's acml_tr_pbmn as served: the day's traded value up to the bar's end, KRW",
    "source": "the chart endpoint: inquire-time-dailychartprice (real keys) or inquire-time-itemchartprice (today)",
    "fetched_at": "when the page holding the bar was received (KST)",
}

PROOF_COLUMNS = {
    "code": "short code (6 characters)",
    "venue": "the captured tape: KRX, NXT or unified",
    "market": "the KIS market whose minute bars were the witness: J, NX or UN (J for the unified tape of a stock "
    "NXT does not trade)",
    "minute": "the minute (HH:MM:00, KST) by trade time; only minutes the capture held the code for all of",
    "kis_volume": "KIS's volume of the minute (0 when KIS has no bar for it)",
    "live_volume": "volume of the live ticks of the minute",
    "live_trades": "live ticks of the minute (KIS's bars carry no trade count: shown, not judged)",
    "restored_volume": "volume of the restored ticks of the minute",
    "restored_trades": "restored ticks of the minute",
    "kis_open": "KIS's open of the minute (null, as its high, low and close, when KIS has no volume in it)",
    "kis_high": "KIS's high of the minute",
    "kis_low": "KIS's low of the minute",
    "kis_close": "KIS's close of the minute",
    "tape_open": "the open of the live and restored ticks of the minute together, in trade order",
    "tape_high": "the tape's high of the minute",
    "tape_low": "the tape's low of the minute",
    "tape_close": "the tape's close of the minute",
    "status": "agree (live ticks alone equal KIS), restored (with the restored ticks they do), explained (they "
    "differ inside a recorded gap), differs (nothing on record explains it: a track_b_unproven row)",
    "gap_id": "the gap row that explains the minute (explained only)",
}

TICK_COLUMNS = {
    "code": "6-character KRX short code (MKSC_SHRN_ISCD)",
    "seq": "1-based number of the trade per code and day in cumulative-volume order, continuing across hours; "
    "order a day's trades by (code, seq): exchange_ts alone cannot (1 s resolution, many trades per second)",
    "exchange_ts": "trade time from the exchange, KST (BSOP_DATE + STCK_CNTG_HOUR: 1 s resolution)",
    "receive_ts": "when the frame was received, KST (µs); every record of a frame shares it",
    "price": "this trade's price, KRW (STCK_PRPR)",
    "qty": "this trade's size, shares (CNTG_VOL)",
    "acml_vol": "cumulative day volume after this trade, shares (ACML_VOL)",
    "acml_value": "cumulative day traded value after this trade, KRW (ACML_TR_PBMN)",
    "day_open": "the day's opening price so far, KRW (STCK_OPRC): the same on every row, not this trade's",
    "day_high": "the day's running high up to this trade, KRW (STCK_HGPR): not this trade's price nor a bar high",
    "day_low": "the day's running low up to this trade, KRW (STCK_LWPR): not this trade's price nor a bar low",
    "change": "price minus the previous close, KRW, signed (PRDY_VRSS)",
    "change_sign": "PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down",
    "change_rate": "change against the previous close, percent, 2 decimals (PRDY_CTRT)",
    "vwap": "the day's volume-weighted average price so far, KRW (WGHN_AVRG_STCK_PRC = acml_value / acml_vol)",
    "ask1": "best ask after the trade, KRW (ASKP1); null when absent, never 0",
    "bid1": "best bid after the trade, KRW (BIDP1); null when absent, never 0",
    "ask_size1": "shares offered at the best ask (ASKP_RSQN1)",
    "bid_size1": "shares bid at the best bid (BIDP_RSQN1)",
    "total_ask_size": "shares offered over the whole book (TOTAL_ASKP_RSQN)",
    "total_bid_size": "shares bid over the whole book (TOTAL_BIDP_RSQN)",
    "sell_cnt": "the day's count of sell-initiated trades so far (SELN_CNTG_CSNU)",
    "buy_cnt": "the day's count of buy-initiated trades so far (SHNU_CNTG_CSNU)",
    "sell_qty": "the day's sell-initiated volume so far, shares (SELN_CNTG_SMTN)",
    "buy_qty": "the day's buy-initiated volume so far, shares (SHNU_CNTG_SMTN)",
    "strength": "buy_qty / sell_qty x 100, percent (CTTR, 'trade strength')",
    "trade_class": "CCLD_DVSN: 1 buy-initiated, 3 pre-open, 5 sell-initiated",
    "session_code": "NEW_MKOP_CLS_CODE, 2 characters: first 1 pre-open, 2 regular, 3 post-close, 4 after-hours "
    "single price, 7/8 buy-in; second 0 normal, 1 closing price, 2 block, 3 basket, 7 liquidation, 8 buy-in",
    "hour_cls_code": "HOUR_CLS_CODE: 0 continuous trading, A closing auction (expected price), B pre-open "
    "(expected price), C single price after 09:00 (a VI), D after-hours single price (expected price)",
    "market_cls_code": "MARKET_CLS_CODE, the 47th field KIS announced: 1 pre, 2 regular, 3 after, 5 closing "
    "price; null when the frame had 46 fields",
    "halted": "trading halted (TRHT_YN = Y)",
    "vi_active": "the record was sent during a volatility interruption (hour_cls_code C); false in continuous "
    "trading (0); null in the scheduled auctions (A, B, D) and for other codes, where the frame cannot tell",
    "vi_standard_price": "VI_STND_PRC, the static-VI reference price, KRW: sent on every row, so not a VI flag "
    "(use vi_active); null when 0 or empty",
    "key_id": "app key whose session received the frame",
    "conn_id": "<run>/<connection> that received it: a new value on every reconnect or capture restart",
    "frame_seq": "journal line counter of the frame (provenance, not an order of trades)",
    "mitigation_level": "load mitigation level when received (0, 1, 2); null when unknown",
    "quality_flag": "gap: the cumulative volume broke before this trade (missing_volume says by how much); "
    "after_reconnect: the first trade of the code after a reconnect or a recorded outage, volume intact; ok",
    "missing_volume": "on a gap: shares traded between the previous trade in view and this one that never "
    "arrived (negative: overlap); null otherwise",
    "after_reconnect": "first trade of the code over a new connection (reconnect, restart, another app key) or "
    "after a recorded outage of its key, even when no volume is missing; null for the code's first trade "
    "of the day in view",
}

_PROVENANCE_COLUMNS = {
    "key_id": "the app key's id (a hash, never the key) whose session received the record",
    "conn_id": "<run>/<connection> the frame came over",
    "frame_seq": "journal line counter n of the frame (provenance, not an order)",
}
BOOK_COLUMNS = {
    "code": "6-character KRX short code (MKSC_SHRN_ISCD)",
    "venue": "whose book: KRX (H0STASP0), NXT (H0NXASP0) or UN, the unified book of both (H0UNASP0)",
    "exchange_ts": "book time from the exchange, KST: the partition's day + BSOP_HOUR (1 s resolution)",
    "receive_ts": "when the frame was received, KST (µs); the order the books arrived in",
    "hour_cls_code": "HOUR_CLS_CODE as sent: 0 continuous trading; auctions and VIs otherwise",
    **{f"ask{i}": f"ask price at level {i}, KRW (ASKP{i}); 0 = no order at that level" for i in range(1, 11)},
    **{f"bid{i}": f"bid price at level {i}, KRW (BIDP{i}); 0 = no order at that level" for i in range(1, 11)},
    **{f"ask_size{i}": f"shares offered at level {i} (ASKP_RSQN{i})" for i in range(1, 11)},
    **{f"bid_size{i}": f"shares bid at level {i} (BIDP_RSQN{i})" for i in range(1, 11)},
    "total_ask_size": "shares offered over all levels (TOTAL_ASKP_RSQN)",
    "total_bid_size": "shares bid over all levels (TOTAL_BIDP_RSQN)",
    "expected_price": "expected crossing price during an auction, KRW (ANTC_CNPR); 0 outside auctions",
    "expected_qty": "expected crossing quantity during an auction (ANTC_CNQN)",
    "acml_vol": "the venue's cumulative day volume when the book was sent (ACML_VOL)",
    "krx_mid_price": "KRX midpoint order book price (KMID_PRC): NXT and unified books only, null on KRX's",
    "krx_mid_total_size": "shares resting at the KRX midpoint (KMID_TOTAL_RSQN); null on KRX's book",
    "krx_mid_cls_code": "KMID_CLS_CODE as sent; null on KRX's book",
    "nxt_mid_price": "NXT midpoint order book price (NMID_PRC): NXT and unified books only, null on KRX's",
    "nxt_mid_total_size": "shares resting at the NXT midpoint (NMID_TOTAL_RSQN); null on KRX's book",
    "nxt_mid_cls_code": "NMID_CLS_CODE as sent; null on KRX's book",
    **_PROVENANCE_COLUMNS,
}
BOOK_SAMPLE_COLUMNS = {
    **{k: v for k, v in BOOK_COLUMNS.items() if k in ("code", "venue", "exchange_ts", "receive_ts", "acml_vol")},
    "bucket_start": "start of the 1 s receive-time bucket (KST, aligned to whole seconds)",
    "bucket_books": "books received in the bucket for the code and venue; the row is the last of them",
    **{k: v for k, v in BOOK_COLUMNS.items() if k[:3] in ("ask", "bid") and k[-1] in "12345" and not k.endswith("10")},
    "total_ask_size": BOOK_COLUMNS["total_ask_size"],
    "total_bid_size": BOOK_COLUMNS["total_bid_size"],
    "expected_price": BOOK_COLUMNS["expected_price"],
}
EXPECTED_COLUMNS = {
    "code": "6-character KRX short code (MKSC_SHRN_ISCD)",
    "venue": "whose auction: KRX (H0STANC0), NXT (H0NXANC0) or UN (H0UNANC0)",
    "exchange_ts": "time of the expected price, KST (BSOP_DATE + STCK_CNTG_HOUR: 1 s resolution)",
    "receive_ts": "when the frame was received, KST (µs)",
    "expected_price": "the price the auction would cross at now, KRW (STCK_PRPR of the expected-price layout)",
    "change": "expected price minus the previous close, KRW, signed (PRDY_VRSS)",
    "change_sign": "PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down",
    "change_rate": "change against the previous close, percent (PRDY_CTRT)",
    "expected_volume": "the volume the auction would cross (ACML_VOL of the expected-price layout)",
    "session_code": "NEW_MKOP_CLS_CODE as sent: which session the auction belongs to",
    "halted": "TRHT_YN = Y: trading in the symbol is halted",
    **_PROVENANCE_COLUMNS,
}
STATUS_COLUMNS = {
    "receive_ts": "when the frame was received, KST (µs); the order the announcements arrived in",
    "venue": "whose phase the record reports: the feed's venue, or on the unified feed the one EXCH_CLS_CODE names",
    "feed": "the feed it came over: KRX (H0STMKO0), NXT (H0NXMKO0) or UN (H0UNMKO0)",
    "code": "the code the feed was registered on (OBSERVER_TRACK_B_STATUS_CODE); null on the unified feed",
    "halted": "TRHT_YN = Y: trading in the code is halted",
    "phase_code": "MKOP_CLS_CODE: the venue's phase now (docs/kis-protocol.md §8.5 lists the codes)",
    "next_phase_code": "ANTC_MKOP_CLS_CODE: the venue's next phase",
    "trading_kind_code": "MRKT_TRTM_CLS_CODE: how the running phase matches orders",
    "vi_code": "VI_CLS_CODE as sent: a volatility interruption of the code",
    "record": "the record's fields joined with ^, exactly as received",
    **_PROVENANCE_COLUMNS,
}
SAMPLE_COLUMNS = {
    **TICK_COLUMNS,
    "seq": "seq of the bucket's last trade (see track_b ticks)",
    "price": "the bucket's last trade price, KRW (use bucket_high/bucket_low for its range)",
    "qty": "the bucket's last trade size, shares (use bucket_volume for the bucket's volume)",
    "quality_flag": "gap if any trade of the bucket is gap, else after_reconnect if any is, else ok",
    "missing_volume": "on a gap bucket: the summed missing volume of its trades; null otherwise",
    "after_reconnect": "true if any trade of the bucket is after_reconnect; null if none is and one is unknown",
    "bucket_start": "start of the receive-time bucket, KST",
    "bucket_s": "bucket width, seconds (0.5; 1 or 2 under mitigation)",
    "bucket_trades": "trades in the bucket",
    "bucket_volume": "summed trade size of the bucket, shares",
    "bucket_high": "highest trade price in the bucket, KRW",
    "bucket_low": "lowest trade price in the bucket, KRW",
}

RESTORED_COLUMNS = {
    "code": "6-character KRX short code",
    "exchange_ts": "the restored trade's time, KST (1 s resolution)",
    "price": "trade price, KRW (stck_pbpr)",
    "qty": "trade size, shares (cnqn)",
    "acml_vol": "cumulative day volume after this trade, shares; order restored trades by (code, acml_vol)",
    "change": "price minus the previous close, KRW, signed",
    "change_sign": "1 upper limit, 2 up, 3 unchanged, 4 lower limit, 5 down",
    "change_rate": "change against the previous close, percent",
    "ask1": "best ask at the trade, KRW; null when absent",
    "bid1": "best bid at the trade, KRW; null when absent",
    "strength": "trade strength at the trade, percent (tday_rltv)",
    "source": "always restored",
    "restored_from": "the KIS endpoint it came from",
    "hole_lo": "the hole (lo, hi] of cumulative volume this trade fills: lo",
    "hole_hi": "the hole's hi",
    "gap_id": "the gap marker overlapping the hole, if any",
    "fetched_at": "when it was fetched, KST",
}

GAP_COLUMNS = {
    "gap_id": "stable id of the gap: the capture's gap_id for a marker window, else a hash of kind, time and symbol "
    "(the same gap keeps its id when the report is re-run)",
    "kind": "track_a_missing_slot (no live rows past the 2-minute grace), track_a_missing_symbol (a universe "
    "symbol absent from a slot's live rows), track_a_late (live rows, first fetched after the grace), track_b_loss "
    "(trades proven lost by a cumulative-volume break outside any window), track_b_silence (no trade for >= 10 s "
    "while connected: not a loss), track_b_phase_missing (a phase of the Track B window no capture ran through), "
    "ws_disconnect, capture_restart, manual_stop (connection-wide windows from the "
    "capture's gap markers), rate_limit (EGW00201 rejections: a notice)",
    "scope": "swing (Track A), scalp (Track B) or all",
    "symbol": "the symbol of a per-symbol row; null for slot- or connection-wide rows",
    "key_id": "the app key whose session a Track B row is about (from the marker or the ticks); null otherwise or "
    "when not recorded",
    "slot_ts": "the Track A slot instant (KST) a Track A row is about; null for Track B rows",
    "start": "when the gap began (KST): the slot, the slot plus the grace for a late one, the last tick before a "
    "loss or silence, the marker's start",
    "end": "when it ended (KST); null while a marker is still open",
    "seconds": "its length in seconds; a window's length counts only time inside the capture's window and up to "
    "the report's as-of time",
    "severity": "minor, major or critical",
    "reason": "why, on evidence only: rate_limit (KIS answered EGW00201), api_error (another KIS error), "
    "no_data_received (answered without it; Track B trades that never arrived, silences), deadline (the run reached "
    "the next slot first), system_error (Observer's run failed on a non-KIS error; the capture died), "
    "launched_late (the slot's run was created after the grace: nothing launched it at the slot), started_late "
    "(created in time, began after the grace), not_run (no run of the slot exists), ws_disconnect, ws_timeout, "
    "manual_stop (the capture's marker reason), unknown (nothing on record says why)",
    "data_lost": "data could have been or was lost: a missing slot or symbol; a proven Track B loss; a window while "
    "codes were subscribed and no tick shows them complete across it. False for lateness, silences, rate-limit "
    "notices and windows with nothing subscribed or every subscribed code's volume unbroken",
    "subscribed_codes": "for a window: codes the session held then (slot_change events since the capture started); "
    "null when the events cannot tell",
    "missing_volume": "shares proven lost (cumulative-volume breaks; for a window, the sum inside it); 0 when "
    "nothing was lost; null when not measured",
    "missing_trades": "trades proven lost, from the cumulative buy/sell counts; null when not measured",
    "error_code": "the KIS error code behind the reason (EGW00201 for rate limits); null otherwise",
    "evidence": "JSON: what the row rests on (failures, the slot's runs, rate-limit rejections, the marker, the "
    "codes subscribed, the losses and why data_lost is what it is)",
    "restorable": "a backfill can still fill it (Track A from minute bars; Track B from today's conclusions only)",
    "restore_how": "minute_bars_today, minute_bars_past or conclusions; null when not restorable",
    "status": "open (may still be filled), restored (a backfill filled it), unrecoverable (it cannot be) or info "
    "(not a loss)",
    "restored_from": "the KIS endpoint(s) the restoring rows came from; null unless restored",
    "source_files": "JSON list of the files the row was derived from",
    "venue": "whose data the row is about: KRX, NXT or unified (a Track A symbol's quote at the slot; KRX+unified for "
    "a whole slot that quoted both); a Track B loss or silence its tape (KRX, unified, NXT); other capture rows "
    "KRX; null in reports written before",
    "phase": "each of those venues' phase at the row's instant (a Track A slot, else the gap's start), VENUE:name "
    "joined by +, e.g. KRX:regular or KRX:regular+NXT:main; break between phases, closed outside them",
}

COVERAGE_COLUMNS = {
    "slot": "the slot, spelt T0910",
    "slot_ts": "the slot instant (KST)",
    "state": "live (a live snapshot exists), restored (no live rows, a backfill gave some), missing (nothing) or "
    "pending (still inside its 2-minute grace when the report ran)",
    "expected": "universe symbols the slot should hold",
    "live": "universe symbols with a live row",
    "restored": "universe symbols without a live row that a backfill restored",
    "missing": "universe symbols with neither (expected - live - restored); null while pending",
    "coverage_ratio": "(live + restored) / expected; null while pending or without a universe",
    "live_ratio": "live / expected; null while pending or without a universe",
    "failures": "rows of the slot's failures file (0: no file, no failures)",
    "first_fetched_at": "when the first live row was fetched (KST); null without live rows",
    "late_seconds": "first_fetched_at - slot_ts, seconds; null without live rows",
    "reason": "the gap report's reason for a missing or late slot; null when it was neither",
    "restored_from": "the KIS endpoint(s) its restored rows came from",
}

VERDICT_COLUMNS = {
    "rule": "the anomaly-day rule: ws_reconnects, ws_disconnection_seconds, gaps_of_60s, critical_gap, "
    "anomaly_marker; or a rule decided elsewhere (track_b_record_rate, cpu, disk_usage, etl_failure, backup_failure)",
    "decided": "the gap report decides this rule (false: decided elsewhere, value and fired null)",
    "fired": "value >= threshold",
    "value": "what was measured: reconnects, disconnected seconds, data-loss gaps >= 60 s, critical gaps, 1 when the "
    "capture wrote an anomaly marker",
    "threshold": "the value at which the rule fires",
    "unit": "count, seconds or marker present",
    "detail": "JSON: the gap_ids behind a count, the marker's rules",
    "anomaly_day": "any rule fired: the day is an anomaly day (the same on every row)",
    "as_of": "the report's as-of time (KST): nothing after it was judged",
}

# system_events writes one JSON document per day; this is the shape of its top-level members
SYSTEM_EVENTS_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("generated_at", pa.string()),
        ("events_files", pa.list_(pa.string())),
        ("events_file_exists", pa.bool_()),
        ("torn_lines", pa.int64()),
        ("bad_lines", pa.int64()),
        ("bad_line_numbers", pa.map_(pa.string(), pa.list_(pa.int64()))),
        ("note", pa.string()),
        ("events", pa.int64()),
        ("first_at", pa.string()),
        ("last_at", pa.string()),
        ("by_type", pa.map_(pa.string(), pa.int64())),
        ("websocket", pa.struct([])),
        ("slots", pa.struct([])),
        ("mitigation", pa.struct([])),
        ("gaps", pa.struct([])),
        ("tokens", pa.struct([])),
        ("rate_limit", pa.struct([])),
        ("etl", pa.struct([])),
        ("backup", pa.struct([])),
        ("retention", pa.struct([])),
        ("anomalies", pa.list_(pa.string())),
        ("capture", pa.struct([])),
    ]
)
SYSTEM_EVENTS_COLUMNS = {
    "events": "events read for the day (every host's file)",
    "by_type": "event count per event type",
    "note": "why the summary may be incomplete (no file, torn or unreadable lines)",
    "websocket": "connects, disconnects, reconnect attempts, disconnected seconds",
    "gaps": "gap markers opened, closed, still open, critical",
    "etl": "universe and Track A results and failures",
}

JOURNAL_SCHEMA = pa.schema(
    [
        ("rx", pa.string()),
        ("r", pa.string()),
        ("c", pa.int64()),
        ("n", pa.int64()),
        ("t", pa.string()),
        ("ml", pa.int8()),
        ("p", pa.string()),
        ("p64", pa.string()),
        ("crc", pa.string()),
    ]
)
JOURNAL_COLUMNS = {
    "rx": "receive time (µs, +09:00)",
    "r": "capture run id (one per process)",
    "c": "connection id within the run",
    "n": "line counter per run (a hole is visible)",
    "t": "line kind; absent = frame, else open/close/caller kinds",
    "ml": "mitigation level when received",
    "p": "the WebSocket frame text exactly as received",
    "p64": "the frame, base64, when it was not UTF-8",
    "crc": "CRC32 of every byte before it (detects torn or damaged lines)",
}
