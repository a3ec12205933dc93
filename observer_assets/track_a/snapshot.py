"""Track A snapshot rows: from KIS quotes to one typed table per slot (pure, no I/O).

The raw archive of a slot is JSON lines of what KIS answered (each row's fields as sent, plus when it was
fetched); the Parquet table is derived from it. Keeping the raw first means a re-run after a crash rebuilds
exactly the same table instead of a different snapshot taken later.

A column one TR does not carry is null in its rows, never guessed: the multi-quote has the book totals, the session
phase and the expected auction but no halt, VI or issue status; ``inquire-price`` has those three and none of the
former. ``upgrade_snapshot_table`` brings a table written before the later columns to the current schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from observer_resources.calendar import KST

TS = pa.timestamp("us", tz="Asia/Seoul")

SNAPSHOT_SCHEMA = pa.schema(
    [
        ("slot_ts", TS),
        ("code", pa.string()),
        ("name", pa.string()),
        ("price", pa.int64()),
        ("change", pa.int64()),
        ("change_rate", pa.float64()),
        ("open", pa.int64()),
        ("high", pa.int64()),
        ("low", pa.int64()),
        ("prev_close", pa.int64()),
        ("volume", pa.int64()),  # cumulative day volume (acml_vol), not per interval
        ("trade_value", pa.int64()),  # cumulative traded value, KRW
        ("bid", pa.int64()),  # best bid; null where the source has none
        ("ask", pa.int64()),
        ("bid_size", pa.int64()),
        ("ask_size", pa.int64()),
        ("upper_limit", pa.int64()),
        ("lower_limit", pa.int64()),
        ("source", pa.string()),  # live | restored
        ("restored_from", pa.string()),  # endpoint a restored row came from; null when live
        ("tr_id", pa.string()),
        ("fetched_at", TS),
        # --- added later: null in tables written before them (upgrade_snapshot_table) ---
        ("total_ask_size", pa.int64()),  # resting ask quantity over the whole book; multi-quote only
        ("total_bid_size", pa.int64()),
        ("change_sign", pa.int8()),  # 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down
        ("session_phase", pa.string()),  # mrkt_trtm_cls_name as sent; multi-quote only
        ("hour_cls_code", pa.string()),  # as sent; multi-quote only (docs: the code table)
        ("expected_price", pa.int64()),  # the auction's expected cross, KRW; null when there is none
        ("expected_volume", pa.int64()),
        ("halted", pa.bool_()),  # temp_stop_yn; inquire-price only
        ("vi_code", pa.string()),  # vi_cls_code as sent; inquire-price only
        ("status_code", pa.string()),  # iscd_stat_cls_code as sent; inquire-price only
        ("key_id", pa.string()),  # the app key that fetched the row (never the key itself)
        ("late_s", pa.float64()),  # fetched_at - slot_ts, seconds
        ("venue", pa.string()),  # whose quote: KRX, NXT or unified (KIS market code J, NX, UN); KRX before it existed
    ]
)
#: KIS market code -> the ``venue`` a row says (docs/kis-protocol.md: the J/NX/UN codes)
VENUE_OF_MARKET = {"J": "KRX", "NX": "NXT", "UN": "unified"}
#: the columns a table written before the later ones lacks (and upgrade_snapshot_table adds)
ADDED_COLUMNS = SNAPSHOT_SCHEMA.names[SNAPSHOT_SCHEMA.get_field_index("total_ask_size") :]
FAILURE_SCHEMA = pa.schema([("code", pa.string()), ("error", pa.string()), ("at", TS)])


def _int(raw: Mapping[str, str], key: str) -> int | None:
    v = (raw.get(key) or "").strip()
    if not v:
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def _float(raw: Mapping[str, str], key: str) -> float | None:
    v = (raw.get(key) or "").strip()
    try:
        return float(v) if v else None
    except ValueError:
        return None


def _pos(v: int | None) -> int | None:
    return v if v else None  # 0 means "none" for bid/ask in KIS bodies; never store it as a price


def _text(raw: Mapping[str, str], key: str) -> str | None:
    v = (raw.get(key) or "").strip()
    return v or None


def _yn(raw: Mapping[str, str], key: str) -> bool | None:
    v = (raw.get(key) or "").strip().upper()
    return True if v == "Y" else False if v == "N" else None


#: prdy_vrss_sign and the other KIS sign codes: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down
SIGN_DIRECTION = {1: 1, 2: 1, 3: 0, 4: -1, 5: -1}


def _sign(raw: Mapping[str, str], key: str) -> int | None:
    v = _int(raw, key)
    return v if v in SIGN_DIRECTION else None


def expected_cross(
    raw: Mapping[str, str], price: int | None, change: int | None, prev_close: int | None
) -> tuple[int | None, int | None]:
    """(expected price, expected volume) of the auction the multi-quote reports, or (None, None) without one.

    KIS sends the expected cross as a difference (``intr_antc_cntg_vrss``, its direction in
    ``intr_antc_cntg_vrss_sign``) against the price changes are measured from, and the expected volume
    (``intr_antc_vol``). A volume of 0 means no orders cross: there is no expected price then, whatever the
    difference says (the continuous session sends 0 / sign 3 / 0). The reference is ``price - change``, the price
    KIS measures changes from (the previous close, unless a corporate action adjusted the day's base price), and
    ``prev_close`` when no price is known yet."""
    vol = _int(raw, "intr_antc_vol")
    if not vol or vol < 0:
        return None, None
    diff = _int(raw, "intr_antc_cntg_vrss")
    sign = _sign(raw, "intr_antc_cntg_vrss_sign")
    ref = price - change if price and change is not None else prev_close
    if diff is None or ref is None:
        return None, vol
    return ref + (abs(diff) * SIGN_DIRECTION[sign] if sign is not None else diff), vol


def row_from_multprice(raw: Mapping[str, str]) -> dict:
    """One `intstock-multprice` output row (FHKST11300006): no halt, VI or issue status in this TR, so null."""
    price, change, prev = _int(raw, "inter2_prpr"), _int(raw, "inter2_prdy_vrss"), _int(raw, "inter2_prdy_clpr")
    expected_price, expected_volume = expected_cross(raw, price, change, prev)
    return {
        "code": raw.get("inter_shrn_iscd", "").strip(),
        "name": raw.get("inter_kor_isnm", "").strip(),
        "price": price,
        "change": change,
        "change_rate": _float(raw, "prdy_ctrt"),
        "open": _int(raw, "inter2_oprc"),
        "high": _int(raw, "inter2_hgpr"),
        "low": _int(raw, "inter2_lwpr"),
        "prev_close": prev,
        "volume": _int(raw, "acml_vol"),
        "trade_value": _int(raw, "acml_tr_pbmn"),
        "bid": _pos(_int(raw, "inter2_bidp")),
        "ask": _pos(_int(raw, "inter2_askp")),
        "bid_size": _int(raw, "shnu_rsqn"),
        "ask_size": _int(raw, "seln_rsqn"),
        "upper_limit": _int(raw, "inter2_mxpr"),
        "lower_limit": _int(raw, "inter2_llam"),
        "total_ask_size": _int(raw, "total_askp_rsqn"),
        "total_bid_size": _int(raw, "total_bidp_rsqn"),
        "change_sign": _sign(raw, "prdy_vrss_sign"),
        "session_phase": _text(raw, "mrkt_trtm_cls_name"),
        "hour_cls_code": _text(raw, "hour_cls_code"),
        "expected_price": expected_price,
        "expected_volume": expected_volume,
        "halted": None,
        "vi_code": None,
        "status_code": None,
    }


def row_from_inquire_price(raw: Mapping[str, str]) -> dict:
    """One `inquire-price` output (FHKST01010100): no best bid/ask, book totals, session phase or expected auction
    in this TR, so those stay null."""
    return {
        "code": raw.get("stck_shrn_iscd", "").strip(),
        "name": None,
        "price": _int(raw, "stck_prpr"),
        "change": _int(raw, "prdy_vrss"),
        "change_rate": _float(raw, "prdy_ctrt"),
        "open": _int(raw, "stck_oprc"),
        "high": _int(raw, "stck_hgpr"),
        "low": _int(raw, "stck_lwpr"),
        "prev_close": _int(raw, "stck_sdpr"),
        "volume": _int(raw, "acml_vol"),
        "trade_value": _int(raw, "acml_tr_pbmn"),
        "bid": None,
        "ask": None,
        "bid_size": None,
        "ask_size": None,
        "upper_limit": _int(raw, "stck_mxpr"),
        "lower_limit": _int(raw, "stck_llam"),
        "total_ask_size": None,
        "total_bid_size": None,
        "change_sign": _sign(raw, "prdy_vrss_sign"),
        "session_phase": None,
        "hour_cls_code": None,
        "expected_price": None,
        "expected_volume": None,
        "halted": _yn(raw, "temp_stop_yn"),
        "vi_code": _text(raw, "vi_cls_code"),
        "status_code": _text(raw, "iscd_stat_cls_code"),
    }


PARSERS = {"FHKST11300006": row_from_multprice, "FHKST01010100": row_from_inquire_price}


def raw_line(
    tr_id: str,
    code: str,
    fields: Mapping[str, str],
    fetched_at: datetime,
    key_id: str | None = None,
    market: str = "J",
) -> str:
    """One archive line: the answer's fields as sent, when it came, (with several keys) which key asked and (when
    not KRX's) the market code it was asked on; a line without one was asked on ``J``."""
    rec = {"tr_id": tr_id, "code": code, "fetched_at": fetched_at.isoformat(), "fields": dict(fields)}
    if key_id is not None:
        rec["key_id"] = key_id
    if market != "J":
        rec["market"] = market
    return json.dumps(rec, ensure_ascii=False, sort_keys=True)


def late_seconds(slot_ts: pa.Array | pa.ChunkedArray, fetched_at: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """``fetched_at - slot_ts`` in seconds (float, µs exact); null where either is."""
    us = pc.cast(pc.subtract(fetched_at, slot_ts), pa.int64())
    out = pc.divide(pc.cast(us, pa.float64()), 1e6)
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out], pa.float64())


def snapshot_table(rows: Sequence[Mapping]) -> pa.Table:
    """Rows keyed by column name (a key left out is null) as a SNAPSHOT_SCHEMA table; ``late_s`` is computed."""
    cols = {
        f.name: pa.chunked_array([pa.array([r.get(f.name) for r in rows], f.type)], f.type) for f in SNAPSHOT_SCHEMA
    }
    cols["late_s"] = late_seconds(cols["slot_ts"], cols["fetched_at"])
    return pa.Table.from_arrays([cols[n] for n in SNAPSHOT_SCHEMA.names], schema=SNAPSHOT_SCHEMA)


def table_from_raw(lines: Iterable[str], slot_ts: datetime, names: Mapping[str, str]) -> pa.Table:
    """The slot's table from its raw archive lines; one row per code (the last answer wins), sorted by code.
    An archive written before lines named their key gives a null ``key_id``."""
    by_code: dict[str, dict] = {}
    for line in lines:
        rec = json.loads(line)
        row = PARSERS[rec["tr_id"]](rec["fields"])
        row["code"] = row["code"] or rec["code"]
        row["name"] = row["name"] or names.get(row["code"])
        row["tr_id"] = rec["tr_id"]
        row["fetched_at"] = datetime.fromisoformat(rec["fetched_at"]).astimezone(KST)
        row["key_id"] = rec.get("key_id")
        row["venue"] = VENUE_OF_MARKET[rec.get("market", "J")]
        row.update(slot_ts=slot_ts, source="live", restored_from=None)
        by_code[row["code"]] = row
    return snapshot_table([by_code[c] for c in sorted(by_code)])


def upgrade_snapshot_table(t: pa.Table) -> pa.Table:
    """A snapshot table written with an earlier schema in the current one (idempotent on a current table).

    Columns added since are null, except ``late_s``, which is computed from ``fetched_at`` and ``slot_ts``. A column
    the schema does not know is refused rather than dropped: whatever wrote it is not this module."""
    unknown = [n for n in t.column_names if n not in SNAPSHOT_SCHEMA.names]
    if unknown:
        raise ValueError(f"not a Track A snapshot table: unknown columns {unknown}")
    lacking = [n for n in ("slot_ts", "code", "fetched_at") if n not in t.column_names]
    if lacking:
        raise ValueError(f"not a Track A snapshot table: no {lacking}")
    cols = []
    for f in SNAPSHOT_SCHEMA:
        if f.name in t.column_names:
            cols.append(t[f.name].cast(f.type))
        elif f.name == "late_s":
            cols.append(late_seconds(t["slot_ts"].cast(TS), t["fetched_at"].cast(TS)))
        elif f.name == "venue":  # every row written before the column was a KRX (J) quote or bar
            cols.append(pa.chunked_array([pa.array(["KRX"] * t.num_rows, pa.string())], pa.string()))
        else:
            cols.append(pa.chunked_array([pa.nulls(t.num_rows, f.type)], f.type))
    return pa.Table.from_arrays(cols, schema=SNAPSHOT_SCHEMA)
