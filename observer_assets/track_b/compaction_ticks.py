"""Journal frames -> typed Arrow tick rows (schema, column mapping), apart from the line loop in compaction."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from observer_resources.calendar import KST

TZ = "Asia/Seoul"
_CHUNK = 20_000  # ticks held as Python objects before they become Arrow columns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TICK_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("exchange_ts", pa.timestamp("ms", tz=TZ)),  # BSOP_DATE + STCK_CNTG_HOUR (1 s resolution; ms: Parquet's unit)
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        ("price", pa.int64()),
        ("qty", pa.int64()),  # CNTG_VOL
        ("acml_vol", pa.int64()),
        ("acml_value", pa.int64()),
        ("open", pa.int64()),
        ("high", pa.int64()),
        ("low", pa.int64()),
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
        ("hour_cls_code", pa.string()),
        ("halted", pa.bool_()),
        ("vi_standard_price", pa.int64()),
        ("key_id", pa.string()),
        ("conn_id", pa.string()),  # <run>/<connection>
        ("frame_seq", pa.int64()),  # journal line counter ``n`` of the frame (provenance)
        ("mitigation_level", pa.int8()),  # null when the journal line did not carry it
        ("quality_flag", pa.string()),  # 'ok' | 'gap'
        ("missing_volume", pa.int64()),  # on a cumulative-volume break: ACML_VOL - CNTG_VOL - previous ACML_VOL
    ]
)


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
            "open": [t.open for t in ts],
            "high": [t.high for t in ts],
            "low": [t.low for t in ts],
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
            "halted": [t.halted for t in ts],
            "vi_standard_price": [t.vi_standard_price for t in ts],
            "key_id": [m[2] for m in ms],
            "conn_id": [m[1] for m in ms],
            "frame_seq": [m[3] for m in ms],
            "mitigation_level": [m[4] for m in ms],
        }
        arrays = []
        for f in TICK_SCHEMA:
            if f.name in ("quality_flag", "missing_volume"):
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
