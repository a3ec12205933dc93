"""Track B compaction: journal lines (raw frames) -> typed tick tables, and the fixed-rate sampled view.

Pure (no I/O): the asset reads segments with ``journal.read_journal`` and writes the result with
``lake.write_table_atomic``.

**Which partition a tick belongs to: the hour of receipt**, i.e. the journal segment its frame was written to.
A frame is one line of exactly one segment, and ``compact`` keeps every tick of every line it is given, so a
tick is never in two partitions nor in none — including the tick received at 10:59:59.9 that KIS stamped
11:00:00 (it is in hour 10, with ``exchange_ts`` 11:00:00). Partitioning by exchange time would need the next
hour's segment before an hour could be closed, and would still have to place ticks by receipt when the
exchange clock is wrong. Consumers that want exchange-time windows filter on ``exchange_ts``.

**Gap flags** (docs/collector-rules.md §8.4) need the previous tick of each code, which for the first tick of an hour is
in the previous partition: ``stats['carry']`` (last tick per code, JSON-able) of hour H is ``prev=`` for H+1.

**Sampling** buckets by receive time: KIS's exchange time has 1-second resolution, so 0.5 s buckets cannot be
formed from it; receive time (µs) is also what the earlier live recorder sampled on. See ``sample``.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.track_b.journal_read import JournalLine
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import Malformed, ParseStats, TradeBatch, parse_message

TZ = "Asia/Seoul"
SAMPLE_LIMIT = 100  # malformed / bad-line samples kept in stats (all are counted)
CARRY_RECENT = 64  # ticks per code remembered across the hour boundary to drop repeated frames
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

SAMPLE_EXTRA = [
    ("bucket_start", pa.timestamp("us", tz=TZ)),
    ("bucket_s", pa.float32()),
    ("bucket_trades", pa.int64()),
    ("bucket_volume", pa.int64()),  # sum of qty in the bucket: volume totals survive sampling
    ("bucket_high", pa.int64()),
    ("bucket_low", pa.int64()),
]
SAMPLE_SCHEMA = pa.schema(list(TICK_SCHEMA) + [pa.field(n, t) for n, t in SAMPLE_EXTRA])
DEFAULT_BUCKETS = {0: 0.5, 1: 1.0, 2: 2.0}  # docs/collector-rules.md §4.6: 2 Hz, 1 Hz, 0.5 Hz


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


class _Acc:
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


def _rx_us(rx: datetime) -> int:
    d = rx - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def compact(
    lines: Iterable[JournalLine],
    *,
    day: date,
    hour: int,
    prev: Mapping[str, Mapping] | None = None,
) -> tuple[pa.Table, dict]:
    """Every valid ``H0STCNT0`` record of the given journal lines, typed, de-duplicated, gap-flagged.

    ``lines`` are the lines of the hour's segment(s) (one per app key), as ``read_journal`` yields them; every
    tick of every line is kept whatever its receive time (lines received outside the hour — a clock step — are
    counted in ``rx_outside_hour``). Exact duplicates (same code, same ACML_VOL, same fields: a duplicated
    frame) are dropped and counted. ``prev`` is the previous hour's ``stats['carry']``.

    Returns the table sorted by (code, acml_vol) and stats: ticks, symbols, per_code, duplicates_dropped,
    acml_conflicts, vol_breaks {code: {count, missing_volume}}, gap_ticks, reconnect_flags, malformed frames
    and records (counted by reason, first samples kept), bad journal lines, connections, carry.
    """
    start = datetime(day.year, day.month, day.day, hour, tzinfo=KST)
    end = start + timedelta(hours=1)
    acc = _Acc()
    pstats = ParseStats()
    kinds: Counter = Counter()
    messages: Counter = Counter()
    malformed: Counter = Counter()
    samples: list[dict] = []
    bad_lines: Counter = Counter()
    bad_samples: list[dict] = []
    recovered: list[dict] = []
    conns: dict[str, dict] = {}
    other_date = rx_outside = frames = 0
    day_s = day.strftime("%Y%m%d")

    for ln in lines:
        if not ln.ok:
            bad_lines[ln.error or "bad"] += 1
            if len(bad_samples) < SAMPLE_LIMIT:
                bad_samples.append(
                    {"path": str(ln.path), "offset": ln.offset, "error": ln.error, "bytes": len(ln.raw or b"")}
                )
            continue
        kinds[ln.kind] += 1
        if ln.kind != "frame":  # control lines: a recovery's report is evidence of a gap in the record
            cut = (
                ln.meta.get("recovered")
                if ln.kind == "open"
                else (ln.meta if ln.kind == "close" and ln.meta.get("reason") == "recovered" else None)
            )
            if cut and (cut.get("cut_bytes") or cut.get("bad_lines")):
                recovered.append(
                    {
                        "path": str(ln.path),
                        "at": ln.rx.isoformat() if ln.rx else None,
                        "cut_bytes": cut.get("cut_bytes", 0),
                        "bad_lines": cut.get("bad_lines", 0),
                    }
                )
            continue
        frames += 1
        rx = ln.rx
        assert rx is not None
        if not start <= rx < end:
            rx_outside += 1
        conn_id = ln.conn_id
        c = conns.get(conn_id)
        if c is None:
            c = conns[conn_id] = {
                "conn_id": conn_id,
                "key_id": ln.key_id,
                "first_rx": rx,
                "last_rx": rx,
                "frames": 0,
                "ticks": 0,
            }
        c["frames"] += 1
        if rx > c["last_rx"]:
            c["last_rx"] = rx
        if rx < c["first_rx"]:
            c["first_rx"] = rx
        msg = parse_message(ln.payload if ln.payload is not None else "", pstats)
        kind = type(msg)
        if kind is TradeBatch and msg.tr_id == p.TR_WS_TRADE:
            if msg.records:
                ml = ln.mitigation_level
                acc.add(msg.records, (_rx_us(rx), conn_id, ln.key_id, ln.n, None if ml is None else int(ml)))
                c["ticks"] += len(msg.records)
                for t in msg.records:
                    if t.raw[33] != day_s:
                        other_date += 1
            for r in msg.rejected:
                malformed[f"record:{r.reason}"] += 1
                if len(samples) < SAMPLE_LIMIT:
                    samples.append(
                        {
                            "rx": rx.isoformat(),
                            "conn_id": conn_id,
                            "n": ln.n,
                            "reason": r.reason,
                            "detail": r.detail,
                            "record": "^".join(r.raw)[:400],
                        }
                    )
        elif kind is Malformed:
            malformed[f"frame:{msg.reason}"] += 1
            if len(samples) < SAMPLE_LIMIT:
                samples.append(
                    {
                        "rx": rx.isoformat(),
                        "conn_id": conn_id,
                        "n": ln.n,
                        "reason": msg.reason,
                        "excerpt": msg.raw_excerpt,
                        "flag": ln.meta.get("bad"),
                    }
                )
        else:
            tr = getattr(msg, "tr_id", "")
            messages[f"{kind.__name__}:{tr}" if tr else kind.__name__] += 1

    table, fp = acc.table()
    table, fp, stats = _finish(table, fp, prev or {})
    stats.update(
        {
            "day": day.isoformat(),
            "hour": hour,
            "lines": sum(kinds.values()) + sum(bad_lines.values()),
            "frames": frames,
            "line_kinds": dict(kinds),
            "other_messages": dict(messages),
            "malformed": dict(malformed),
            "malformed_frames": sum(v for k, v in malformed.items() if k.startswith("frame:")),
            "malformed_records": sum(v for k, v in malformed.items() if k.startswith("record:")),
            "malformed_samples": samples,
            "bad_lines": dict(bad_lines),
            "bad_line_samples": bad_samples,
            "journal_recoveries": recovered,
            "rx_outside_hour": rx_outside,
            "other_business_date": other_date,
            "parse": pstats.as_dict(),
            "connections": [
                {**c, "first_rx": c["first_rx"].isoformat(), "last_rx": c["last_rx"].isoformat()}
                for c in sorted(conns.values(), key=lambda c: c["first_rx"])
            ],
            "between_connections_s": _between(conns),
        }
    )
    return table, stats


def _between(conns: dict[str, dict]) -> float:
    """Seconds between the last frame of one connection and the first of the next, per key: a lower bound
    of disconnected time derived from the record alone (the capture's events are authoritative)."""
    total = 0.0
    by_key: dict[str | None, list[dict]] = {}
    for c in conns.values():
        by_key.setdefault(c["key_id"], []).append(c)
    for cs in by_key.values():
        cs.sort(key=lambda c: c["first_rx"])
        for a, b in zip(cs, cs[1:]):
            total += max(0.0, (b["first_rx"] - a["last_rx"]).total_seconds())
    return round(total, 6)


def _finish(table: pa.Table, fp: np.ndarray, prev: Mapping[str, Mapping]) -> tuple[pa.Table, np.ndarray, dict]:
    n0 = table.num_rows
    if n0 == 0:
        return (
            table,
            fp,
            {
                "ticks": 0,
                "symbols": 0,
                "per_code": {},
                "duplicates_dropped": 0,
                "acml_conflicts": 0,
                "vol_breaks": {},
                "gap_ticks": 0,
                "reconnect_flags": 0,
                "unchecked_first_ticks": 0,
                "carry": dict(prev),
            },
        )
    # sort: (code, acml_vol, fingerprint, arrival) so identical records are adjacent, first arrival first
    work = table.append_column("_fp", pa.array(fp)).append_column("_i", pa.array(np.arange(n0, dtype=np.int64)))
    idx = pc.sort_indices(
        work, sort_keys=[("code", "ascending"), ("acml_vol", "ascending"), ("_fp", "ascending"), ("_i", "ascending")]
    )
    table = table.take(idx)
    fp = fp[idx.to_numpy()]
    codes_d = pc.dictionary_encode(table["code"]).combine_chunks()
    code_i = codes_d.indices.to_numpy(zero_copy_only=False)
    code_names = codes_d.dictionary.to_pylist()
    acml = table["acml_vol"].to_numpy()
    same_code = np.zeros(n0, dtype=bool)
    same_code[1:] = code_i[1:] == code_i[:-1]
    same_acml = np.zeros(n0, dtype=bool)
    same_acml[1:] = same_code[1:] & (acml[1:] == acml[:-1])
    dup = np.zeros(n0, dtype=bool)
    dup[1:] = same_acml[1:] & (fp[1:] == fp[:-1])
    conflicts = int((same_acml & ~dup).sum())
    # the first ticks of a code may repeat the previous hour's last ones (a frame repeated across the hour)
    carry_dup = 0
    for i in np.flatnonzero(~same_code):
        c = prev.get(code_names[code_i[i]])
        if not c:
            continue
        recent = {(int(a_), int(f_)) for a_, f_ in c.get("recent", ())}
        top = int(c["acml_vol"])
        j = i
        while j < n0 and code_i[j] == code_i[i] and acml[j] <= top:
            if not dup[j] and (int(acml[j]), int(fp[j])) in recent:
                dup[j] = True
                carry_dup += 1
            j += 1
    dups = int(dup.sum())
    if dups:
        keep = ~dup
        table = table.filter(pa.array(keep))
        fp, code_i, acml = fp[keep], code_i[keep], acml[keep]
    n = table.num_rows
    qty = table["qty"].to_numpy()
    conn_d = pc.dictionary_encode(table["conn_id"]).combine_chunks()
    conn_i = conn_d.indices.to_numpy(zero_copy_only=False)
    conn_names = conn_d.dictionary.to_pylist()
    key_d = pc.dictionary_encode(table["key_id"].fill_null("")).combine_chunks()
    key_i = key_d.indices.to_numpy(zero_copy_only=False)
    key_names = key_d.dictionary.to_pylist()

    same_code = np.zeros(n, dtype=bool)
    same_code[1:] = code_i[1:] == code_i[:-1]
    prev_acml = np.empty(n, dtype=np.int64)
    prev_acml[1:] = acml[:-1]
    checked = same_code.copy()
    reconnect = np.zeros(n, dtype=bool)
    reconnect[1:] = same_code[1:] & (key_i[1:] == key_i[:-1]) & (conn_i[1:] != conn_i[:-1])
    unchecked = 0
    for i in np.flatnonzero(~same_code):  # first tick of each code: compare with the previous hour's last
        c = prev.get(code_names[code_i[i]])
        if c is None:
            unchecked += 1
            continue
        prev_acml[i] = int(c["acml_vol"])
        checked[i] = True
        if c.get("key_id") == key_names[key_i[i]] and c.get("conn_id") != conn_names[conn_i[i]]:
            reconnect[i] = True
    missing = acml - qty - prev_acml
    brk = checked & (missing != 0)
    gap = brk | reconnect
    flags = np.where(gap, "gap", "ok")
    table = table.set_column(table.schema.get_field_index("quality_flag"), "quality_flag", pa.array(flags, pa.string()))
    table = table.set_column(
        table.schema.get_field_index("missing_volume"),
        "missing_volume",
        pa.array(np.where(brk, missing, 0), pa.int64(), mask=~brk),
    )

    vol_breaks: dict[str, dict] = {}
    for i in np.flatnonzero(brk):
        b = vol_breaks.setdefault(code_names[code_i[i]], {"count": 0, "missing_volume": 0, "overlap_volume": 0})
        b["count"] += 1
        m = int(missing[i])
        if m > 0:
            b["missing_volume"] += m
        else:
            b["overlap_volume"] += -m
    per_code = Counter()
    counts = np.bincount(code_i, minlength=len(code_names))
    for j, name in enumerate(code_names):
        if counts[j]:
            per_code[name] = int(counts[j])
    # carry: the last tick of each code and its last CARRY_RECENT (acml_vol, fingerprint), rows being sorted
    carry = {k: dict(v) for k, v in prev.items()}
    starts = np.flatnonzero(~same_code)
    ends = np.append(starts[1:], n)
    ex = table["exchange_ts"].cast(pa.int64()).to_numpy() // 1000
    for s_, e_ in zip(starts, ends):
        name = code_names[code_i[s_]]
        i = e_ - 1
        mine = [
            [int(a_), int(f_)]
            for a_, f_ in zip(acml[max(s_, e_ - CARRY_RECENT) : e_], fp[max(s_, e_ - CARRY_RECENT) : e_])
        ]
        older = [x for x in (prev.get(name) or {}).get("recent", ()) if x[0] < mine[0][0]]
        carry[name] = {
            "acml_vol": int(acml[i]),
            "conn_id": conn_names[conn_i[i]],
            "key_id": key_names[key_i[i]],
            "exchange_ts": int(ex[i]),
            "recent": (older + mine)[-CARRY_RECENT:],
        }
    stats = {
        "ticks": n,
        "symbols": len(per_code),
        "per_code": dict(sorted(per_code.items())),
        "duplicates_dropped": dups,
        "duplicates_of_previous_hour": carry_dup,
        "acml_conflicts": conflicts,
        "vol_breaks": vol_breaks,
        "missing_volume": sum(b["missing_volume"] for b in vol_breaks.values()),
        "gap_ticks": int(gap.sum()),
        "reconnect_flags": int(reconnect.sum()),
        "unchecked_first_ticks": unchecked,
        "carry": carry,
    }
    return table, fp, stats


def sample(ticks: pa.Table, *, bucket_s_by_level: Mapping[int, float] = DEFAULT_BUCKETS) -> pa.Table:
    """Fixed-rate view: per code, the last tick (highest ACML_VOL) of each receive-time bucket, plus the bucket's
    trade count, summed volume, high and low, so totals survive sampling.

    The bucket width comes from the mitigation level each tick was recorded under (null = level 0): 0.5 s /
    1 s / 2 s. Buckets are aligned to whole KST seconds (``floor(receive_ts / width)``) and keyed by (code, width),
    so each tick is in exactly one bucket even across a level change. A bucket holding any ``gap`` tick is
    flagged ``gap``; its ``missing_volume`` is the sum of its ticks' missing volume.
    """
    n = ticks.num_rows
    if n == 0:
        return SAMPLE_SCHEMA.empty_table()
    levels = ticks["mitigation_level"].fill_null(0).cast(pa.int64()).to_numpy()
    unknown = set(np.unique(levels).tolist()) - set(bucket_s_by_level)
    if unknown:
        raise ValueError(f"no bucket width for mitigation level(s) {sorted(unknown)}; have {dict(bucket_s_by_level)}")
    width_us = np.zeros(n, dtype=np.int64)
    for lvl, w in bucket_s_by_level.items():
        if w <= 0:
            raise ValueError(f"bucket width for level {lvl} must be > 0, got {w}")
        width_us[levels == lvl] = int(round(w * 1_000_000))
    rx = ticks["receive_ts"].cast(pa.int64()).to_numpy()
    bucket = rx // width_us
    work = ticks.append_column("_w", pa.array(width_us)).append_column("_b", pa.array(bucket))
    order = pc.sort_indices(
        work, sort_keys=[("code", "ascending"), ("_w", "ascending"), ("_b", "ascending"), ("acml_vol", "ascending")]
    ).to_numpy()
    codes = pc.dictionary_encode(ticks["code"]).combine_chunks().indices.to_numpy(zero_copy_only=False)[order]
    w, b = width_us[order], bucket[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (codes[1:] != codes[:-1]) | (w[1:] != w[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new)
    lasts = np.append(starts[1:] - 1, n - 1)
    qty = ticks["qty"].to_numpy()[order]
    price = ticks["price"].to_numpy()[order]
    gap = (ticks["quality_flag"].to_numpy(zero_copy_only=False) == "gap")[order]
    miss = ticks["missing_volume"].fill_null(0).to_numpy()[order]
    out = ticks.take(pa.array(order[lasts]))
    any_gap = np.maximum.reduceat(gap.astype(np.int8), starts).astype(bool)
    miss_sum = np.add.reduceat(miss, starts)
    out = out.set_column(
        out.schema.get_field_index("quality_flag"),
        "quality_flag",
        pa.array(np.where(any_gap, "gap", "ok"), pa.string()),
    )
    out = out.set_column(
        out.schema.get_field_index("missing_volume"), "missing_volume", pa.array(miss_sum, pa.int64(), mask=~any_gap)
    )
    extra = {
        "bucket_start": pa.array(b[starts] * w[starts], pa.int64()).cast(pa.timestamp("us", tz=TZ)),
        "bucket_s": pa.array(w[starts] / 1e6, pa.float32()),
        "bucket_trades": pa.array(np.diff(np.append(starts, n)), pa.int64()),
        "bucket_volume": pa.array(np.add.reduceat(qty, starts), pa.int64()),
        "bucket_high": pa.array(np.maximum.reduceat(price, starts), pa.int64()),
        "bucket_low": pa.array(np.minimum.reduceat(price, starts), pa.int64()),
    }
    for name, arr in extra.items():
        out = out.append_column(pa.field(name, arr.type), arr)
    out = out.sort_by([("code", "ascending"), ("bucket_start", "ascending"), ("bucket_s", "ascending")])
    return out.cast(SAMPLE_SCHEMA)
