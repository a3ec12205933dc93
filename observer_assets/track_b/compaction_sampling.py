"""The fixed-rate sampled view of an hour's ticks, apart from compaction: it reads only the finished tick table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.track_b.compaction_ticks import TICK_SCHEMA, TZ

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
