"""Journal frames -> typed Arrow tick rows (schema, column mapping), apart from the line loop in compaction."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_resources.calendar import KST

TZ = "Asia/Seoul"
_CHUNK = 20_000  # ticks held as Python objects before they become Arrow columns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TICK_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("seq", pa.int64()),  # 1-based per code and day, in cumulative-volume order; continues across hours
        ("exchange_ts", pa.timestamp("ms", tz=TZ)),  # BSOP_DATE + STCK_CNTG_HOUR (1 s resolution; ms: Parquet's unit)
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        ("price", pa.int64()),  # STCK_PRPR: this trade's price
        ("qty", pa.int64()),  # CNTG_VOL: this trade's size
        ("acml_vol", pa.int64()),
        ("acml_value", pa.int64()),
        ("day_open", pa.int64()),  # STCK_OPRC/HGPR/LWPR: the day's running values, not this trade's
        ("day_high", pa.int64()),
        ("day_low", pa.int64()),
        ("change", pa.int64()),
        ("change_sign", pa.string()),
        ("change_rate", pa.float64()),
        ("vwap", pa.float64()),
        ("ask1", pa.int64()),  # null when absent, never 0
        ("bid1", pa.int64()),
        ("ask_size1", pa.int64()),
        ("bid_size1", pa.int64()),
        ("total_ask_size", pa.int64()),
        ("total_bid_size", pa.int64()),
        ("sell_cnt", pa.int64()),
        ("buy_cnt", pa.int64()),
        ("sell_qty", pa.int64()),
        ("buy_qty", pa.int64()),
        ("strength", pa.float64()),  # CTTR
        ("trade_class", pa.string()),  # CCLD_DVSN
        ("session_code", pa.string()),  # NEW_MKOP_CLS_CODE
        ("hour_cls_code", pa.string()),  # HOUR_CLS_CODE
        ("market_cls_code", pa.string()),  # MARKET_CLS_CODE, the 47th field; null in 46-field frames
        ("halted", pa.bool_()),
        ("vi_active", pa.bool_()),  # from HOUR_CLS_CODE (VI_BY_HOUR_CLS); null where the code cannot tell
        ("vi_standard_price", pa.int64()),  # VI_STND_PRC: a reference price sent on every record, not a flag
        ("key_id", pa.string()),
        ("conn_id", pa.string()),  # <run>/<connection>
        ("frame_seq", pa.int64()),  # journal line counter ``n`` of the frame (provenance)
        ("mitigation_level", pa.int8()),  # null when the journal line did not carry it
        ("quality_flag", pa.string()),  # 'ok' | 'gap' | 'after_reconnect' (compaction_quality)
        ("missing_volume", pa.int64()),  # on a cumulative-volume break: ACML_VOL - CNTG_VOL - previous ACML_VOL
        ("after_reconnect", pa.bool_()),  # first tick of the code over a new connection or after an outage
    ]
)
#: columns compaction_quality fills once the whole hour is built and sorted
DERIVED = frozenset({"seq", "quality_flag", "missing_volume", "after_reconnect"})
#: HOUR_CLS_CODE -> vi_active: '0' continuous trading (no VI), 'C' single-price period after 09:00 (a VI);
#: A/B/D (closing, pre-open, after-hours auctions) are auctions anyway and the code does not say whether a VI
#: extended them, so null (docs/kis-protocol.md §8.4)
VI_BY_HOUR_CLS: dict[str, bool] = {"0": False, "C": True}


#: columns an earlier schema named for what KIS calls them; their values are the day's, not the trade's
RENAMED = {"open": "day_open", "high": "day_high", "low": "day_low"}


def vi_column(hour_cls_code: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``vi_active`` of a column of HOUR_CLS_CODE values, as the compaction derives it record by record."""
    out = pa.nulls(len(hour_cls_code), pa.bool_())
    for code, flag in VI_BY_HOUR_CLS.items():
        out = pc.if_else(pc.fill_null(pc.equal(hour_cls_code, code), False), flag, out)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def code_groups(codes: pa.ChunkedArray | pa.Array, seq_start: Mapping[str, int] | None) -> tuple[np.ndarray, ...]:
    """For a code column already in order: (first-of-code mask, 1-based seq continuing from ``seq_start``)."""
    d = pc.dictionary_encode(codes)
    d = d.combine_chunks() if isinstance(d, pa.ChunkedArray) else d
    ci = d.indices.to_numpy(zero_copy_only=False)
    names = d.dictionary.to_pylist()
    n = len(ci)
    first = np.ones(n, dtype=bool)
    first[1:] = ci[1:] != ci[:-1]
    starts = np.flatnonzero(first)
    base = np.array([int((seq_start or {}).get(names[ci[i]], 0)) for i in starts], dtype=np.int64)
    seq = np.arange(1, n + 1, dtype=np.int64) - np.repeat(starts - base, np.diff(np.append(starts, n)))
    return first, seq


def upgrade_ticks_table(t: pa.Table, seq_start: Mapping[str, int] | None = None) -> pa.Table:
    """A tick table written under the earlier schema, in ``TICK_SCHEMA``; a current table comes back as it is.

    Rows keep their order. ``open/high/low`` become ``day_open/day_high/day_low`` (same values). ``seq`` numbers
    each code's ticks in (acml_vol, row) order within this table from ``seq_start[code] + 1``: without
    ``seq_start`` it restarts at 1 in every hour, so a migration walking a day's hours in order passes the
    previous hour's ``seq_end``. ``vi_active`` is derived from ``hour_cls_code`` as the compaction does;
    ``market_cls_code`` is null (the earlier compaction dropped it; the journal still has it).
    ``after_reconnect`` is true where a code's tick came over another ``conn_id`` than its previous one in the
    table, and on a first tick the earlier compaction flagged ``gap`` without missing volume (its reconnect
    flag); null on the other first ticks; outages recorded without a connection change need a compaction from
    the journal. ``quality_flag`` becomes 'gap' (volume break), 'after_reconnect' or 'ok'.
    """
    if set(t.column_names) >= set(TICK_SCHEMA.names):
        return t.select(TICK_SCHEMA.names).cast(TICK_SCHEMA)
    t = t.rename_columns([RENAMED.get(c, c) for c in t.column_names])
    n = t.num_rows
    order = pc.sort_indices(t, [("code", "ascending"), ("acml_vol", "ascending")]).to_numpy()
    first, seq_sorted = code_groups(t["code"].take(order), seq_start)
    conn = pc.dictionary_encode(t["conn_id"].take(order).fill_null("")).combine_chunks().indices.to_numpy()
    moved = np.zeros(n, dtype=bool)
    moved[1:] = conn[1:] != conn[:-1]
    old_flag = t["quality_flag"].take(order).to_numpy(zero_copy_only=False)
    brk = t["missing_volume"].take(order).is_valid().to_numpy(zero_copy_only=False)
    was_reconnect = first & (old_flag == "gap") & ~brk
    after = (~first & moved) | was_reconnect
    known = ~first | was_reconnect
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)  # row -> its place in the sorted order: v[back] is v in row order
    flags = np.where(brk, "gap", np.where(after, "after_reconnect", "ok"))
    derived = {
        "seq": pa.array(seq_sorted[back], pa.int64()),
        "after_reconnect": pa.array(after[back], pa.bool_(), mask=~known[back]),
        "quality_flag": pa.array(flags[back], pa.string()),
        "vi_active": vi_column(t["hour_cls_code"]),
    }
    return assemble(TICK_SCHEMA, t, derived)


def assemble(schema: pa.Schema, t: pa.Table, derived: Mapping[str, pa.Array]) -> pa.Table:
    """``schema``'s columns from ``derived``, else from ``t`` (cast), else null: an upgraded table."""

    def column(f: pa.Field) -> pa.Array | pa.ChunkedArray:
        if f.name in derived:
            return derived[f.name]
        if f.name in t.column_names:
            return t[f.name].cast(f.type)
        return pa.nulls(t.num_rows, f.type)

    return pa.Table.from_arrays([column(f) for f in schema], schema=schema)


def seq_end(t: pa.Table) -> dict[str, int]:
    """The last ``seq`` of each code in a tick table: ``seq_start`` for the next hour's ``upgrade_ticks_table``."""
    if t.num_rows == 0:
        return {}
    g = t.group_by("code").aggregate([("seq", "max")])
    return dict(zip(g["code"].to_pylist(), g["seq_max"].to_pylist()))


def _epoch_s(day: str, hhmmss: str, cache: dict[str, int]) -> int:
    key = day + hhmmss
    v = cache.get(key)
    if v is None:
        v = int(
            datetime(
                int(day[:4]),
                int(day[4:6]),
                int(day[6:]),
                int(hhmmss[:2]),
                int(hhmmss[2:4]),
                int(hhmmss[4:]),
                tzinfo=KST,
            ).timestamp()
        )
        cache[key] = v
    return v


class TickBuilder:
    """Ticks as Python objects in bounded chunks, turned into Arrow record batches."""

    def __init__(self) -> None:
        self.trades: list = []
        self.metas: list[tuple] = []  # per tick: (rx_us, conn_id, key_id, n, ml)
        self.fps: list[int] = []
        self.batches: list[pa.RecordBatch] = []
        self.fp_chunks: list[np.ndarray] = []
        self.ex_cache: dict[str, int] = {}

    def add(self, records: list, meta: tuple) -> None:
        crc = zlib.crc32
        for t in records:
            self.trades.append(t)
            self.metas.append(meta)
            self.fps.append(crc("^".join(t.raw).encode()))
        if len(self.trades) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        ts, ms = self.trades, self.metas
        if not ts:
            return
        exc = self.ex_cache
        cols = {
            "code": [t.code for t in ts],
            "exchange_ts": [_epoch_s(t.raw[33], t.exchange_time, exc) for t in ts],
            "receive_ts": [m[0] for m in ms],
            "price": [t.price for t in ts],
            "qty": [t.qty for t in ts],
            "acml_vol": [t.acml_vol for t in ts],
            "acml_value": [t.acml_value for t in ts],
            "day_open": [t.open for t in ts],
            "day_high": [t.high for t in ts],
            "day_low": [t.low for t in ts],
            "change": [t.change for t in ts],
            "change_sign": [t.change_sign for t in ts],
            "change_rate": [t.change_rate for t in ts],
            "vwap": [t.vwap for t in ts],
            "ask1": [t.ask1 for t in ts],
            "bid1": [t.bid1 for t in ts],
            "ask_size1": [t.ask_size1 for t in ts],
            "bid_size1": [t.bid_size1 for t in ts],
            "total_ask_size": [t.total_ask_size for t in ts],
            "total_bid_size": [t.total_bid_size for t in ts],
            "sell_cnt": [t.sell_cnt for t in ts],
            "buy_cnt": [t.buy_cnt for t in ts],
            "sell_qty": [t.sell_qty for t in ts],
            "buy_qty": [t.buy_qty for t in ts],
            "strength": [t.strength for t in ts],
            "trade_class": [t.trade_class for t in ts],
            "session_code": [t.session_code for t in ts],
            "hour_cls_code": [t.hour_cls_code for t in ts],
            "market_cls_code": [t.market_cls_code for t in ts],
            "halted": [t.halted for t in ts],
            "vi_active": [VI_BY_HOUR_CLS.get(t.hour_cls_code) for t in ts],
            "vi_standard_price": [t.vi_standard_price for t in ts],
            "key_id": [m[2] for m in ms],
            "conn_id": [m[1] for m in ms],
            "frame_seq": [m[3] for m in ms],
            "mitigation_level": [m[4] for m in ms],
        }
        arrays = []
        for f in TICK_SCHEMA:
            if f.name in DERIVED:
                arrays.append(pa.nulls(len(ts), f.type))
            elif f.name == "exchange_ts":
                arrays.append(pa.array(np.array(cols["exchange_ts"], dtype=np.int64) * 1000).cast(f.type))
            elif f.name == "receive_ts":
                arrays.append(pa.array(cols["receive_ts"], pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(cols[f.name], f.type))
        self.batches.append(pa.RecordBatch.from_arrays(arrays, schema=TICK_SCHEMA))
        self.fp_chunks.append(np.array(self.fps, dtype=np.int64))
        self.trades, self.metas, self.fps = [], [], []

    def table(self) -> tuple[pa.Table, np.ndarray]:
        self.flush()
        t = pa.Table.from_batches(self.batches, schema=TICK_SCHEMA)
        fp = np.concatenate(self.fp_chunks) if self.fp_chunks else np.zeros(0, dtype=np.int64)
        return t, fp


def rx_us(rx: datetime) -> int:
    d = rx - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
