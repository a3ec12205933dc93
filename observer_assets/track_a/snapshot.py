"""Track A snapshot rows: from KIS quotes to one typed table per slot (pure, no I/O).

The raw archive of a slot is JSON lines of what KIS answered (each row's fields as sent, plus when it was
fetched); the Parquet table is derived from it. Keeping the raw first means a re-run after a crash rebuilds
exactly the same table instead of a different snapshot taken later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

import pyarrow as pa

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
    ]
)
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


def row_from_multprice(raw: Mapping[str, str]) -> dict:
    """One `intstock-multprice` output row (FHKST11300006)."""
    return {
        "code": raw.get("inter_shrn_iscd", "").strip(),
        "name": raw.get("inter_kor_isnm", "").strip(),
        "price": _int(raw, "inter2_prpr"),
        "change": _int(raw, "inter2_prdy_vrss"),
        "change_rate": _float(raw, "prdy_ctrt"),
        "open": _int(raw, "inter2_oprc"),
        "high": _int(raw, "inter2_hgpr"),
        "low": _int(raw, "inter2_lwpr"),
        "prev_close": _int(raw, "inter2_prdy_clpr"),
        "volume": _int(raw, "acml_vol"),
        "trade_value": _int(raw, "acml_tr_pbmn"),
        "bid": _pos(_int(raw, "inter2_bidp")),
        "ask": _pos(_int(raw, "inter2_askp")),
        "bid_size": _int(raw, "shnu_rsqn"),
        "ask_size": _int(raw, "seln_rsqn"),
        "upper_limit": _int(raw, "inter2_mxpr"),
        "lower_limit": _int(raw, "inter2_llam"),
    }


def row_from_inquire_price(raw: Mapping[str, str]) -> dict:
    """One `inquire-price` output (FHKST01010100): no best bid/ask in this TR, so those stay null."""
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
    }


PARSERS = {"FHKST11300006": row_from_multprice, "FHKST01010100": row_from_inquire_price}


def raw_line(tr_id: str, code: str, fields: Mapping[str, str], fetched_at: datetime) -> str:
    return json.dumps(
        {"tr_id": tr_id, "code": code, "fetched_at": fetched_at.isoformat(), "fields": dict(fields)},
        ensure_ascii=False,
        sort_keys=True,
    )


def table_from_raw(lines: Iterable[str], slot_ts: datetime, names: Mapping[str, str]) -> pa.Table:
    """The slot's table from its raw archive lines; one row per code (the last answer wins), sorted by code."""
    by_code: dict[str, dict] = {}
    for line in lines:
        rec = json.loads(line)
        row = PARSERS[rec["tr_id"]](rec["fields"])
        row["code"] = row["code"] or rec["code"]
        row["name"] = row["name"] or names.get(row["code"])
        row["tr_id"] = rec["tr_id"]
        row["fetched_at"] = datetime.fromisoformat(rec["fetched_at"]).astimezone(KST)
        by_code[row["code"]] = row
    rows = [by_code[c] for c in sorted(by_code)]
    cols = {f.name: [] for f in SNAPSHOT_SCHEMA}
    for r in rows:
        for name in cols:
            if name == "slot_ts":
                cols[name].append(slot_ts)
            elif name == "source":
                cols[name].append("live")
            elif name == "restored_from":
                cols[name].append(None)
            else:
                cols[name].append(r.get(name))
    return pa.table(cols, schema=SNAPSHOT_SCHEMA)
