"""Loss accounting on a built tick table (duplicates, volume breaks, gap flags, sequence, carry), apart from the
line loop.

Per code, after de-duplication and in cumulative-volume order:

* ``seq`` numbers the ticks 1, 2, ... per code and day, continuing from the previous hour's carry, so that
  (code, seq) orders a day's ticks although ``exchange_ts`` has 1 s resolution.
* ``missing_volume`` / ``quality_flag = 'gap'``: the cumulative-volume identity broke against the previous tick.
* ``after_reconnect``: the previous tick of the code came over another connection (a reconnect, a capture restart,
  the code moving to another key), or a recorded outage of the key began between the two ticks. True even when the
  volume shows no loss: a quiet symbol loses nothing visible in an outage. Null when the code has no earlier tick
  that day in view. ``quality_flag = 'after_reconnect'`` on such a tick when the volume check passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CARRY_RECENT = 64  # ticks per code remembered across the hour boundary to drop repeated frames
#: a recorded outage of the capture: (key_id, or None for every key; its start in µs since the epoch)
Outage = tuple[str | None, int]


def dedupe_and_flag(
    table: pa.Table, fp: np.ndarray, prev: Mapping[str, Mapping], outages: Sequence[Outage] = ()
) -> tuple[pa.Table, np.ndarray, dict]:
    """Sorted by (code, acml_vol), duplicates dropped (``fp``: each row's record fingerprint), numbered (``seq``),
    every break of the cumulative volume and every change of connection flagged against the previous tick, the
    first of an hour against ``prev`` (the carry)."""
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
    rx = table["receive_ts"].cast(pa.int64()).to_numpy()
    conn_d = pc.dictionary_encode(table["conn_id"]).combine_chunks()
    conn_i = conn_d.indices.to_numpy(zero_copy_only=False)
    conn_names = conn_d.dictionary.to_pylist()
    key_d = pc.dictionary_encode(table["key_id"].fill_null("")).combine_chunks()
    key_i = key_d.indices.to_numpy(zero_copy_only=False)
    key_names = key_d.dictionary.to_pylist()

    same_code = np.zeros(n, dtype=bool)
    same_code[1:] = code_i[1:] == code_i[:-1]
    starts = np.flatnonzero(~same_code)
    prev_acml = np.empty(n, dtype=np.int64)
    prev_acml[1:] = acml[:-1]
    prev_rx = np.empty(n, dtype=np.int64)
    prev_rx[1:] = rx[:-1]
    key_ix = {k: j for j, k in enumerate(key_names)}
    prev_key_i = np.full(n, -1, dtype=np.int64)  # -1: a key not in this hour
    prev_key_i[1:] = key_i[:-1]
    checked = same_code.copy()
    reconnect = np.zeros(n, dtype=bool)
    reconnect[1:] = same_code[1:] & (conn_i[1:] != conn_i[:-1])
    seq_base = np.zeros(len(starts), dtype=np.int64)
    unchecked = 0
    for g, i in enumerate(starts):  # first tick of each code: compare with the previous hour's last
        c = prev.get(code_names[code_i[i]])
        if c is None:
            unchecked += 1
            continue
        seq_base[g] = int(c.get("seq", 0))
        prev_acml[i] = int(c["acml_vol"])
        prev_rx[i] = int(c.get("rx_us", rx[i]))
        prev_key_i[i] = key_ix.get(c.get("key_id"), -1)
        checked[i] = True
        reconnect[i] = c.get("conn_id") != conn_names[conn_i[i]]
    lengths = np.diff(np.append(starts, n))
    seq = np.arange(1, n + 1, dtype=np.int64) - np.repeat(starts - seq_base, lengths)
    for key, a in outages:  # the code's first tick received after an outage of its key began
        hit = checked & (prev_rx <= a) & (rx > a)
        if key is not None:
            k = key_ix.get(key, -2)
            hit &= (key_i == k) | (prev_key_i == k)
        reconnect |= hit
    missing = acml - qty - prev_acml
    brk = checked & (missing != 0)
    gap = brk | reconnect
    flags = np.where(brk, "gap", np.where(reconnect, "after_reconnect", "ok"))
    cols = {
        "seq": pa.array(seq, pa.int64()),
        "quality_flag": pa.array(flags, pa.string()),
        "missing_volume": pa.array(np.where(brk, missing, 0), pa.int64(), mask=~brk),
        "after_reconnect": pa.array(reconnect, pa.bool_(), mask=~checked),
    }
    for name, arr in cols.items():
        table = table.set_column(table.schema.get_field_index(name), name, arr)

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
            "seq": int(seq[i]),
            "conn_id": conn_names[conn_i[i]],
            "key_id": key_names[key_i[i]],
            "exchange_ts": int(ex[i]),
            "rx_us": int(rx[i]),
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
