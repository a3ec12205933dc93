"""The fixed-rate sampled view of an hour's ticks, apart from compaction: it reads only the finished tick table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.track_b.compaction_ticks import (
    RENAMED,
    TICK_SCHEMA,
    TZ,
    assemble,
    code_groups,
    upgrade_ticks_table,
    vi_column,
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


def sample(ticks: pa.Table, *, bucket_s_by_level: Mapping[int, float] = DEFAULT_BUCKETS) -> pa.Table:
    """Fixed-rate view: per code, the last tick (highest ACML_VOL) of each receive-time bucket, plus the bucket's
    trade count, summed volume, high and low, so totals survive sampling.

    The bucket width comes from the mitigation level each tick was recorded under (null = level 0): 0.5 s /
    1 s / 2 s. Buckets are aligned to whole KST seconds (``floor(receive_ts / width)``) and keyed by (code, width),
    so each tick is in exactly one bucket even across a level change. A bucket holding any ``gap`` tick is
    flagged ``gap`` (its ``missing_volume`` is the sum of its ticks' missing volume), else ``after_reconnect`` if
    any tick is; ``after_reconnect`` is true if any tick's is, null if none is true and one is unknown. The other
    columns, ``seq`` included, are the bucket's last tick's.
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
    flag = ticks["quality_flag"].to_numpy(zero_copy_only=False)[order]
    miss = ticks["missing_volume"].fill_null(0).to_numpy()[order]
    ar = ticks["after_reconnect"]
    ar_true = pc.fill_null(ar, False).to_numpy(zero_copy_only=False)[order]
    ar_null = ar.is_null().to_numpy(zero_copy_only=False)[order]
    out = ticks.take(pa.array(order[lasts]))

    def anyof(x: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(x.astype(np.int8), starts).astype(bool)

    any_gap, any_after = anyof(flag == "gap"), anyof(ar_true)
    derived = {
        "quality_flag": pa.array(np.where(any_gap, "gap", np.where(any_after, "after_reconnect", "ok")), pa.string()),
        "missing_volume": pa.array(np.add.reduceat(miss, starts), pa.int64(), mask=~any_gap),
        "after_reconnect": pa.array(any_after, pa.bool_(), mask=~any_after & anyof(ar_null)),
    }
    for name, arr in derived.items():
        out = out.set_column(out.schema.get_field_index(name), name, arr)
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


def upgrade_sampled_table(
    t: pa.Table, ticks: pa.Table | None = None, seq_start: Mapping[str, int] | None = None
) -> pa.Table:
    """A sampled table written under the earlier schema, in ``SAMPLE_SCHEMA``; a current table comes back as it is.

    With the hour's ``ticks`` (old or current schema) it is rebuilt from them exactly as the asset builds it
    (``sample`` with the default widths, the only ones the asset has used), ``seq_start`` going to
    ``upgrade_ticks_table``. Without them the columns are upgraded in place, rows in their order: renames and
    ``vi_active`` as for ticks, ``market_cls_code`` null, ``seq`` = ``seq_start[code]`` + the running sum of
    ``bucket_trades`` in cumulative-volume order (exact unless frames arrived out of cumulative-volume order
    across buckets), ``after_reconnect`` true where the earlier flag was ``gap`` with no missing volume (a
    reconnect) or the last tick's connection differs from the code's previous bucket's, null on other first
    buckets of a code.
    """
    if set(t.column_names) >= set(SAMPLE_SCHEMA.names):
        return t.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)
    if ticks is not None:
        return sample(upgrade_ticks_table(ticks, seq_start))
    t = t.rename_columns([RENAMED.get(c, c) for c in t.column_names])
    n = t.num_rows
    order = pc.sort_indices(t, [("code", "ascending"), ("acml_vol", "ascending")]).to_numpy()
    codes = t["code"].take(order)
    first, _ = code_groups(codes, None)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, n))
    trades = t["bucket_trades"].take(order).to_numpy()
    run = np.cumsum(trades)
    base = np.array([int((seq_start or {}).get(c, 0)) for c in codes.take(starts).to_pylist()], dtype=np.int64)
    seq = run - np.repeat(run[starts] - trades[starts] - base, lengths)
    conn = pc.dictionary_encode(t["conn_id"].take(order).fill_null("")).combine_chunks().indices.to_numpy()
    moved = np.zeros(n, dtype=bool)
    moved[1:] = conn[1:] != conn[:-1]
    old_gap = t["quality_flag"].take(order).to_numpy(zero_copy_only=False) == "gap"
    miss = t["missing_volume"].take(order).fill_null(0).to_numpy()
    brk = old_gap & (miss != 0)
    after = (~first & moved) | (old_gap & (miss == 0))
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)  # row -> its place in the sorted order

    def scatter(v: np.ndarray) -> np.ndarray:
        return v[back]

    derived = {
        "seq": pa.array(scatter(seq), pa.int64()),
        "after_reconnect": pa.array(scatter(after), pa.bool_(), mask=scatter(first & ~after)),
        "quality_flag": pa.array(scatter(np.where(brk, "gap", np.where(after, "after_reconnect", "ok"))), pa.string()),
        "missing_volume": pa.array(scatter(miss), pa.int64(), mask=~scatter(brk)),
        "vi_active": vi_column(t["hour_cls_code"]),
    }
    return assemble(SAMPLE_SCHEMA, t, derived)
