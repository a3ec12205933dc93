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
    "code": "6-character KRX short code",
    "name": "Korean name from the master file",
    "market": "KOSPI or KOSDAQ",
    "isin": "12-character ISIN",
    "prev_close": "previous trading day's close, KRW (membership requires >= 4,000)",
    "base_price": "the master's base price, KRW",
    "preferred": "preferred share",
    "administrative": "designated an administrative issue",
    "market_warning": "market warning code from the master",
    "listed_shares": "listed shares",
    "market_cap_100m": "market capitalization, 100 million KRW",
}

SNAPSHOT_COLUMNS = {
    "slot_ts": "the 10-minute slot instant (KST) this row belongs to",
    "code": "6-character KRX short code",
    "name": "Korean name (from the day's universe)",
    "price": "current price at fetch time, KRW",
    "change": "change against the previous close, KRW",
    "change_rate": "change against the previous close, %",
    "prev_close": "previous close, KRW",
    "volume": "cumulative day volume (not per interval)",
    "trade_value": "cumulative traded value, KRW",
    "bid": "best bid, KRW; null where the source has none (never 0)",
    "ask": "best ask, KRW; null where the source has none",
    "source": "live (fetched in the slot) or restored (rebuilt from minute bars)",
    "restored_from": "KIS endpoint a restored row came from; null when live",
    "tr_id": "KIS transaction id of the answer",
    "fetched_at": "when the answer was received (KST)",
}

TICK_COLUMNS = {
    "code": "6-character KRX short code",
    "exchange_ts": "trade time from the exchange (1 s resolution, KST)",
    "receive_ts": "when the frame was received (µs, KST)",
    "price": "trade price, KRW",
    "qty": "trade size (CNTG_VOL)",
    "acml_vol": "cumulative day volume after this trade",
    "key_id": "app key whose session received the frame",
    "conn_id": "<run>/<connection> that received it",
    "frame_seq": "journal line counter of the frame (provenance)",
    "mitigation_level": "load mitigation level when received; null when unknown",
    "quality_flag": "ok, or gap on the first tick after a cumulative-volume break or reconnect",
    "missing_volume": "on a break: volume lost before this tick",
}

SAMPLE_COLUMNS = {
    **TICK_COLUMNS,
    "bucket_start": "start of the receive-time bucket (KST)",
    "bucket_s": "bucket width, seconds (0.5; 1 or 2 under mitigation)",
    "bucket_trades": "trades in the bucket",
    "bucket_volume": "summed trade size of the bucket",
    "bucket_high": "highest trade price in the bucket, KRW",
    "bucket_low": "lowest trade price in the bucket, KRW",
}

RESTORED_COLUMNS = {
    "code": "6-character KRX short code",
    "exchange_ts": "the restored trade's time (1 s resolution, KST)",
    "price": "trade price, KRW",
    "qty": "trade size",
    "acml_vol": "cumulative day volume after this trade",
    "source": "always restored",
    "restored_from": "the KIS endpoint it came from",
    "hole_lo": "the hole (lo, hi] of cumulative volume this trade fills: lo",
    "hole_hi": "the hole's hi",
    "gap_id": "the gap marker overlapping the hole, if any",
    "fetched_at": "when it was fetched (KST)",
}

GAP_COLUMNS = {
    "gap_id": "stable id of the gap",
    "kind": "track_a_missing_slot, track_a_missing_symbol, track_a_late, track_b_loss, track_b_silence, "
    "ws_disconnect, capture_restart, manual_stop, rate_limit, ...",
    "scope": "swing, scalp or all",
    "symbol": "null for slot- or connection-wide gaps",
    "slot_ts": "Track A slot the row is about",
    "end": "null while a marker is still open",
    "severity": "minor, major or critical",
    "data_lost": "data was lost (not a silence)",
    "restorable": "the backfill can restore it",
    "status": "open, restored, unrecoverable or info",
    "evidence": "JSON",
    "source_files": "JSON list of the files the row was derived from",
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
