"""The daily backup against plain ``tar`` + ``zstd`` of the same files (docs/backup.md, docs/benchmarks.md).

One realistic trading day is built in a temp dir (numpy, fixed seed, no network), then, each on a fresh
destination and interleaved ``repeats`` times (medians reported):

* ``observer``: ``observer_assets.backup.backup.run`` to a local directory — scan, per-file copy with SHA-256 of the
  original bytes, JSON/JSONL zstd-wrapped (pyarrow, level 1), manifest, and the full verification re-read
  (decompress + hash every stored file) before the marker. ``package.write`` and the ``package.verify`` it calls
  are timed separately;
* ``tar|zstd -3 -T1`` / ``-T2`` / ``-1 -T1``: ``tar -cf - <files> | zstd`` over exactly the files the package holds;
* ``tar``: ``tar -cf`` alone (the copy floor); ``sha256sum``: the hashing floor;
* in-process floors of the package's own parts: ``hashlib`` SHA-256 of every file, pyarrow zstd level 1 over the
  JSON/JSONL files, and zstd decompression of those.

The day: Track B raw journal segments written by the real ``Journal`` (41 symbols, 09:00-15:30, H0STCNT0 frames
of 1-19 records), the compacted hour tables (``TICK_SCHEMA``, zstd Parquet via ``lake.write_table_atomic``; a slice
is checked against ``compact`` of the same journal lines) and their 2 Hz samples, Track A raw JSONL
(``snapshot.raw_line`` of multprice rows), snapshot tables (``snapshot.table_from_raw``) and failure tables for
40 slots x 2,500 symbols, the universe table, and the event log.

The source lake is in the page cache (it was just written; the machine has far more RAM than the lake), so the
figures are CPU + memory bound, as a 21:00 backup of the day's fresh files is; outputs are not fsynced by any of
the candidates (``sync_s`` is the ``sync`` right after each run, reported apart). Nothing is written in the repo;
``BENCH_DIR`` chooses the temp dir's parent.

``python -m bench backup`` (defaults) or ``python -m bench.backup --ticks 2700000 --repeats 3`` (prints a table).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DAY = date(2026, 3, 10)  # a Tuesday, a normal KRX session 09:00-15:30
OPEN_S, CONT_END_S, CLOSE_S = 9 * 3600, 15 * 3600 + 20 * 60, 15 * 3600 + 30 * 60  # 15:20-15:30 closing auction
FRAME_SIZES = [1] * 60 + [2] * 15 + [3] * 10 + [5] * 8 + [10] * 5 + [19] * 2  # as bench/journal.py (mean 2.6)
KEY_ID = "k-4f1c9a2e"
SYLLABLES = list(
    "삼성전자현대기아엘지에스케이카카오네이버셀트리온포스코한화롯데신한국민우리하나제약바이오화학건설증권금융"
)


# --- the day's data --------------------------------------------------------------------------------------------


def _s(x: np.ndarray) -> pa.Array:
    return pa.array(x, pa.int64()).cast(pa.string())


def _dec2(hundredths: np.ndarray) -> pa.Array:
    """Integers in hundredths as KIS writes 2-decimal numbers ('-1.05', '0.00')."""
    h = hundredths.astype(np.int64)
    a = np.abs(h)
    sign = pa.array(np.where(h < 0, "-", ""))
    return pc.binary_join_element_wise(sign, _s(a // 100), ".", pc.utf8_lpad(_s(a % 100), 2, "0"), "")


def _pct100(num: np.ndarray, den: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """num / den x scale in hundredths (0 where den is 0)."""
    out = np.zeros(len(num), dtype=np.float64)
    np.divide(num * scale * 100.0, den, out=out, where=den != 0)
    return np.rint(out).astype(np.int64)


def _hhmmss(sec: np.ndarray) -> pa.Array:
    sec = sec.astype(np.int64)
    return pc.utf8_lpad(_s(sec // 3600 * 10000 + sec % 3600 // 60 * 100 + sec % 60), 6, "0")


def _tick(price: np.ndarray) -> np.ndarray:
    from observer_resources.kis.protocol import krx_tick_size

    return np.array([krx_tick_size(int(p)) for p in price], dtype=np.int64)


def _names(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES, int(k))) for k in rng.integers(2, 7, n)]


def _codes(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{c:06d}" for c in sorted(rng.choice(np.arange(100, 99999), n, replace=False) * 10)]


def _walk(rng: np.random.Generator, k: int, level: int, step: int, window: int = 400) -> np.ndarray:
    """A book total that drifts tick by tick around `level` (a random walk minus its moving average): resting
    totals change a little per trade, they do not jump at random."""
    x = np.cumsum(rng.integers(-step, step + 1, k)).astype(np.float64)
    c = np.cumsum(np.r_[0.0, x])
    lo = np.maximum(0, np.arange(k) - window + 1)
    ma = (c[np.arange(k) + 1] - c[lo]) / (np.arange(k) + 1 - lo)
    return np.maximum(1, level + np.rint(x - ma)).astype(np.int64)


def day_ticks(rng: np.random.Generator, n_ticks: int, codes: list[str]) -> dict[str, np.ndarray]:
    """The day's trades of `codes`, every H0STCNT0 quantity, in receive order.

    Per symbol a Zipf-like share of `n_ticks`: U-shaped arrival times 09:00-15:20 plus one closing-auction trade
    at 15:30:00, a price random walk on the KRX tick grid, lognormal sizes; receive time = trade time + 20-150 ms."""
    n_sym = len(codes)
    w = 1.0 / np.arange(1, n_sym + 1) ** 0.7
    counts = rng.multinomial(n_ticks - n_sym, w / w.sum())
    parts: list[dict[str, np.ndarray]] = []
    for i, k in enumerate(counts):
        t = np.append(OPEN_S + (CONT_END_S - OPEN_S) * np.sort(rng.beta(0.55, 0.7, k)), float(CLOSE_S))
        k += 1
        base = float(rng.lognormal(np.log(40_000), 1.1))
        tick = _tick(np.array([base]))[0]
        prev = max(tick, int(round(base / tick)) * tick)
        opn = max(tick, prev + int(rng.integers(-5, 6)) * tick)
        steps = rng.choice(np.array([-1, 0, 1]), k, p=[0.31, 0.38, 0.31]) * tick
        steps[0] = 0
        price = np.maximum(tick, opn + np.cumsum(steps))
        qty = np.maximum(1, rng.lognormal(3.2, 1.4, k)).astype(np.int64)
        side = np.where(rng.random(k) < 0.5, 1, 5)
        buy = side == 1
        acml_vol = np.cumsum(qty)
        acml_value = np.cumsum(qty * price)
        high, low = np.maximum.accumulate(price), np.minimum.accumulate(price)
        idx = np.arange(k)
        hi_i = np.maximum.accumulate(np.where(np.r_[True, price[1:] > high[:-1]], idx, 0))
        lo_i = np.maximum.accumulate(np.where(np.r_[True, price[1:] < low[:-1]], idx, 0))
        ask1 = np.where(buy, price, price + tick)
        prdy_vol = int(acml_vol[-1] * rng.uniform(0.6, 1.5))
        listed = int(rng.integers(5_000_000, 6_000_000_000))
        parts.append(
            {
                "sym": np.full(k, i),
                "t": t,
                "rx": t + rng.uniform(0.02, 0.15, k),
                "price": price,
                "prev": np.full(k, prev),
                "open": np.full(k, opn),
                "open_sec": np.full(k, int(t[0])),
                "high": high,
                "low": low,
                "high_sec": t[hi_i].astype(np.int64),
                "low_sec": t[lo_i].astype(np.int64),
                "qty": qty,
                "side": side,
                "acml_vol": acml_vol,
                "acml_value": acml_value,
                "buy_cnt": np.cumsum(buy),
                "sell_cnt": np.cumsum(~buy),
                "buy_qty": np.cumsum(np.where(buy, qty, 0)),
                "sell_qty": np.cumsum(np.where(buy, 0, qty)),
                "ask1": ask1,
                "bid1": ask1 - tick,
                "ask_size": np.maximum(1, rng.lognormal(7, 1.3, k)).astype(np.int64),
                "bid_size": np.maximum(1, rng.lognormal(7, 1.3, k)).astype(np.int64),
                "total_ask": _walk(rng, k, int(rng.integers(200_000, 3_000_000)), 2_000),
                "total_bid": _walk(rng, k, int(rng.integers(200_000, 3_000_000)), 2_000),
                "prdy_vol": np.full(k, prdy_vol),
                "prdy_same": (prdy_vol * (idx + 1) // k).astype(np.int64),
                "listed": np.full(k, listed),
            }
        )
    allp = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.argsort(allp["rx"], kind="stable")
    out = {name: v[order] for name, v in allp.items()}
    out["sec"] = out["t"].astype(np.int64)
    out["code"] = np.array(codes, dtype=object)[out["sym"]]
    return out


def _sign(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a > b, "2", np.where(a < b, "5", "3"))


def records(t: dict[str, np.ndarray], lo: int, hi: int) -> pa.Array:
    """The 46 H0STCNT0 fields of ticks lo..hi, '^'-joined, in protocol order."""
    g = {k: v[lo:hi] for k, v in t.items()}
    n = hi - lo
    price, prev, opn, high, low = g["price"], g["prev"], g["open"], g["high"], g["low"]
    const = lambda v: pa.array(np.full(n, v))  # noqa: E731
    fields = [
        pa.array(g["code"], pa.string()),
        _hhmmss(g["sec"]),
        _s(price),
        pa.array(_sign(price, prev)),
        _s(price - prev),
        _dec2(_pct100(price - prev, prev)),
        _dec2(_pct100(g["acml_value"], g["acml_vol"], 1.0)),
        _s(opn),
        _s(high),
        _s(low),
        _s(g["ask1"]),
        _s(g["bid1"]),
        _s(g["qty"]),
        _s(g["acml_vol"]),
        _s(g["acml_value"]),
        _s(g["sell_cnt"]),
        _s(g["buy_cnt"]),
        _s(g["buy_cnt"] - g["sell_cnt"]),
        _dec2(_pct100(g["buy_qty"], g["sell_qty"])),
        _s(g["sell_qty"]),
        _s(g["buy_qty"]),
        _s(g["side"]),
        _dec2(_pct100(g["buy_qty"], g["buy_qty"] + g["sell_qty"])),
        _dec2(_pct100(g["acml_vol"], g["prdy_vol"])),
        _hhmmss(g["open_sec"]),
        pa.array(_sign(price, opn)),
        _s(price - opn),
        _hhmmss(g["high_sec"]),
        pa.array(_sign(price, high)),
        _s(price - high),
        _hhmmss(g["low_sec"]),
        pa.array(_sign(price, low)),
        _s(price - low),
        const(DAY.strftime("%Y%m%d")),
        const("20"),
        const("N"),
        _s(g["ask_size"]),
        _s(g["bid_size"]),
        _s(g["total_ask"]),
        _s(g["total_bid"]),
        _dec2(_pct100(g["acml_vol"], g["listed"])),
        _s(g["prdy_same"]),
        _dec2(_pct100(g["acml_vol"], g["prdy_same"])),
        const("0"),
        const(""),
        _s(opn),
    ]
    assert len(fields) == 46
    return pc.binary_join_element_wise(*fields, "^")


def frame_bounds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Start offsets of the frames (consecutive ticks, 1-19 records each), plus n at the end."""
    sizes = rng.choice(np.array(FRAME_SIZES), n)  # more than enough
    ends = np.cumsum(sizes)
    ends = ends[ends < n]
    return np.concatenate([[0], ends, [n]]).astype(np.int64)


def tick_table(
    t: dict[str, np.ndarray],
    sel: np.ndarray,
    rx_us: np.ndarray,
    seq: np.ndarray,
    conn_id: str,
    seq_start: dict[str, int] | None = None,
) -> pa.Table:
    """The compacted hour as ``compact`` makes it from these ticks' journal lines: typed, sorted by
    (code, acml_vol), numbered from ``seq_start`` (the earlier hours' last ``seq`` per code), quality 'ok' (an
    unbroken volume chain on one connection; ``after_reconnect`` unknown on a code's first tick of the day)."""
    from observer_assets.track_b.compaction import TICK_SCHEMA
    from observer_assets.track_b.compaction_ticks import code_groups
    from observer_resources.calendar import KST

    midnight = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=KST).timestamp())
    g = {k: v[sel] for k, v in t.items()}
    n = len(g["price"])
    cols: dict[str, Any] = {
        "code": g["code"],
        "exchange_ts": (midnight + g["sec"]) * 1000,
        "receive_ts": rx_us[sel],
        "price": g["price"],
        "qty": g["qty"],
        "acml_vol": g["acml_vol"],
        "acml_value": g["acml_value"],
        "day_open": g["open"],
        "day_high": g["high"],
        "day_low": g["low"],
        "change": g["price"] - g["prev"],
        "change_sign": _sign(g["price"], g["prev"]),
        "change_rate": _pct100(g["price"] - g["prev"], g["prev"]) / 100,
        "vwap": _pct100(g["acml_value"], g["acml_vol"], 1.0) / 100,
        "ask1": g["ask1"],
        "bid1": g["bid1"],
        "ask_size1": g["ask_size"],
        "bid_size1": g["bid_size"],
        "total_ask_size": g["total_ask"],
        "total_bid_size": g["total_bid"],
        "sell_cnt": g["sell_cnt"],
        "buy_cnt": g["buy_cnt"],
        "sell_qty": g["sell_qty"],
        "buy_qty": g["buy_qty"],
        "strength": _pct100(g["buy_qty"], g["sell_qty"]) / 100,
        "trade_class": g["side"].astype(str),
        "session_code": np.full(n, "20"),
        "hour_cls_code": np.full(n, "0"),
        "market_cls_code": None,
        "halted": np.zeros(n, bool),
        "vi_active": np.zeros(n, bool),
        "vi_standard_price": g["open"],
        "key_id": np.full(n, KEY_ID),
        "conn_id": np.full(n, conn_id),
        "frame_seq": seq[sel],
        "mitigation_level": np.zeros(n, np.int8),
        "quality_flag": np.full(n, "ok"),
        "missing_volume": None,
        "seq": np.zeros(n, np.int64),  # numbered below, once sorted
        "after_reconnect": np.zeros(n, bool),
    }
    arrays = []
    for f in TICK_SCHEMA:
        v = cols[f.name]
        if v is None:
            arrays.append(pa.nulls(n, f.type))
        elif f.name in ("exchange_ts", "receive_ts"):
            arrays.append(pa.array(v, pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(v, f.type))
    table = pa.Table.from_arrays(arrays, schema=TICK_SCHEMA)
    table = table.take(pc.sort_indices(table, [("code", "ascending"), ("acml_vol", "ascending")]))
    first, seq_no = code_groups(table["code"], seq_start)
    day_first = first & np.array([c not in (seq_start or {}) for c in table["code"].to_pylist()])
    for name, arr in (
        ("seq", pa.array(seq_no, pa.int64())),
        ("after_reconnect", pa.array(np.zeros(n, bool), pa.bool_(), mask=day_first)),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    return table


def build_track_b(
    root: Path, rng: np.random.Generator, codes: list[str], n_ticks: int, check_frames: int = 1500
) -> dict:
    """Raw journal segments (the real Journal), compacted hours and 2 Hz samples; returns counts."""
    from observer_assets.track_b.compaction import compact, sample, seq_end
    from observer_assets.track_b.journal import Journal
    from observer_assets.track_b.journal_format import segments
    from observer_assets.track_b.journal_read import read_journal
    from observer_resources.calendar import KST
    from observer_resources.storage import lake
    from observer_resources.storage.layout import manifest_path, sampled_path, ticks_path

    t = day_ticks(rng, n_ticks, codes)
    n = len(t["price"])
    bounds = frame_bounds(rng, n)
    n_frames = len(bounds) - 1
    last = bounds[1:] - 1
    midnight = datetime(DAY.year, DAY.month, DAY.day, tzinfo=KST)
    midnight_us = int(midnight.timestamp()) * 1_000_000
    frame_rx_us = midnight_us + np.rint(t["rx"][last] * 1e6).astype(np.int64)
    frame_of_tick = np.repeat(np.arange(n_frames), np.diff(bounds))
    rx_us = frame_rx_us[frame_of_tick]  # every tick of a line carries the line's receive time
    frame_hour = ((frame_rx_us - midnight_us) // 3_600_000_000).astype(np.int64)
    now = [midnight + timedelta(hours=9)]
    with Journal(root, KEY_ID, clock=lambda: now[0]) as j:
        conn_id = f"{j.run_id}/1"
        for h in np.unique(frame_hour):
            fr = np.flatnonzero(frame_hour == h)
            f0, f1 = int(fr[0]), int(fr[-1]) + 1
            lo, hi = int(bounds[f0]), int(bounds[f1])
            recs = records(t, lo, hi)
            off = pa.array(bounds[f0 : f1 + 1] - lo, pa.int32())
            body = pc.binary_join(pa.ListArray.from_arrays(off, recs), "^")
            k = pc.utf8_lpad(_s(np.diff(bounds[f0 : f1 + 1])), 3, "0")
            texts = pc.binary_join_element_wise("0|H0STCNT0|", k, "|", body, "").to_pylist()
            for f, text in zip(range(f0, f1), texts):
                rx = midnight + timedelta(microseconds=int(frame_rx_us[f] - midnight_us))
                now[0] = rx
                j.append(rx, text, conn=1, mitigation_level=0)
            j.flush(timeout=60)
    hours = {}
    tick_hour = frame_hour[frame_of_tick]
    seq_start: dict[str, int] = {}
    for h in np.unique(tick_hour):
        start = midnight + timedelta(hours=int(h))
        table = tick_table(t, np.flatnonzero(tick_hour == h), rx_us, frame_of_tick, conn_id, seq_start)
        seq_start.update(seq_end(table))
        lake.write_table_atomic(ticks_path(root, start), table)
        lake.write_table_atomic(sampled_path(root, start), sample(table))
        hours[int(h)] = table.num_rows
        man = manifest_path(root, start)
        man.parent.mkdir(parents=True, exist_ok=True)
        man.write_text(
            json.dumps({"hour": start.isoformat(), "ticks": table.num_rows, "symbols": len(codes)}, indent=1)
        )
    # fidelity: compaction of the first journal lines gives exactly the rows written for them
    segs = segments(root, DAY, int(frame_hour[0]))
    lines = []
    for ln in read_journal(segs):
        if ln.kind == "frame" and ln.n is not None and ln.n < check_frames:
            lines.append(ln)
        elif ln.n is not None and ln.n >= check_frames:
            break
    got, _ = compact(lines, day=DAY, hour=int(frame_hour[0]))
    want = tick_table(t, np.flatnonzero(frame_of_tick < check_frames), rx_us, frame_of_tick, conn_id)
    cols = [c for c in got.column_names if c not in ("quality_flag", "missing_volume")]
    if not got.select(cols).equals(want.select(cols)):
        bad = [c for c in cols if not got[c].equals(want[c])]
        raise AssertionError(f"generated tick table differs from compact() of its journal lines in {bad}")
    return {"ticks": n, "frames": n_frames, "hours": hours, "checked_frames": check_frames}


def build_track_a(root: Path, rng: np.random.Generator, codes: list[str], names: list[str]) -> int:
    """Per slot: raw.jsonl (multprice rows as KIS sends them), snapshot.parquet derived from it, failures.parquet."""
    from local_exchange.rest_outputs import MULTPRICE_FIELDS
    from observer_assets.track_a.snapshot import FAILURE_SCHEMA, TS, raw_line, table_from_raw
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.kis.protocol import TR_MULTPRICE
    from observer_resources.storage import lake
    from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
    from observer_resources.storage.layout import TRACK_A_RAW as RAW
    from observer_resources.storage.layout import slot_dir

    slots = MarketCalendar("krx").track_a_slots(DAY)
    n = len(codes)
    prev = np.array([max(1000, int(p)) for p in rng.lognormal(np.log(12_000), 1.2, n)])
    tick = _tick(prev)
    prev = prev // tick * tick
    walk = np.cumsum(rng.integers(-3, 4, (len(slots), n)), axis=0) * tick
    price = np.maximum(tick, prev + walk)
    vol = np.cumsum(rng.lognormal(9, 1.8, (len(slots), n)).astype(np.int64), axis=0)
    opn = price[0]
    high, low = np.maximum.accumulate(price, axis=0), np.minimum.accumulate(price, axis=0)
    market = np.where(rng.random(n) < 0.35, "코스피", "코스닥")
    name_of = dict(zip(codes, names))
    pv, tk = prev.tolist(), tick.tolist()
    lower = [int(x * 0.7) // t * t for x, t in zip(pv, tk)]
    upper = [int(x * 1.3) // t * t for x, t in zip(pv, tk)]
    for si, slot in enumerate(slots):
        px, vl, hi_, lo_, op = price[si].tolist(), vol[si].tolist(), high[si].tolist(), low[si].tolist(), opn.tolist()
        lines = []
        for c in range(n):
            fetched = slot + timedelta(seconds=3 + (c // 30) / 18)  # 30 codes a call, 18 calls a second
            x, v, pr = px[c], vl[c], pv[c]
            row = dict.fromkeys(MULTPRICE_FIELDS, "")
            row.update(
                {
                    "kospi_kosdaq_cls_name": str(market[c]),
                    "mrkt_trtm_cls_name": "장중",
                    "hour_cls_code": "0",
                    "inter_shrn_iscd": codes[c],
                    "inter_kor_isnm": names[c],
                    "inter2_prpr": str(x),
                    "inter2_prdy_vrss": str(x - pr),
                    "prdy_vrss_sign": "2" if x > pr else "5" if x < pr else "3",
                    "prdy_ctrt": f"{(x - pr) / pr * 100:.2f}",
                    "acml_vol": str(v),
                    "inter2_oprc": str(op[c]),
                    "inter2_hgpr": str(hi_[c]),
                    "inter2_lwpr": str(lo_[c]),
                    "inter2_llam": str(lower[c]),
                    "inter2_mxpr": str(upper[c]),
                    "inter2_askp": str(x + tk[c]),
                    "inter2_bidp": str(x),
                    "seln_rsqn": str(v % 9973),
                    "shnu_rsqn": str(v % 7919),
                    "total_askp_rsqn": str(v % 999_983),
                    "total_bidp_rsqn": str(v % 999_979),
                    "acml_tr_pbmn": str(v * x),
                    "inter2_prdy_clpr": str(pr),
                    "oprc_vrss_hgpr_rate": f"{(hi_[c] - op[c]) / op[c] * 100:.2f}",
                    "intr_antc_cntg_vrss": "0",
                    "intr_antc_cntg_vrss_sign": "3",
                    "intr_antc_cntg_prdy_ctrt": "0.00",
                    "intr_antc_vol": "0",
                    "inter2_sdpr": str(pr),
                }
            )
            lines.append(raw_line(TR_MULTPRICE, codes[c], row, fetched))
        lake.write_bytes_atomic(slot_dir(root, slot, RAW) / "raw.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
        lake.write_table_atomic(
            slot_dir(root, slot, FAILURES) / "failures.parquet",
            pa.table({"code": [], "error": [], "at": pa.array([], TS)}, schema=FAILURE_SCHEMA),
        )
        lake.write_table_atomic(slot_dir(root, slot) / "snapshot.parquet", table_from_raw(lines, slot, name_of))
    return len(slots)


def build_universe(root: Path, rng: np.random.Generator, codes: list[str], names: list[str]) -> None:
    from observer_assets.universe.rules import UNIVERSE_SCHEMA
    from observer_resources.storage import lake
    from observer_resources.storage.layout import universe_path

    n = len(codes)
    prev = rng.lognormal(np.log(12_000), 1.2, n).astype(np.int64) + 4_000
    shares = rng.integers(2_000_000, 6_000_000_000, n)
    cols = {
        "code": codes,
        "name": names,
        "market": np.where(rng.random(n) < 0.35, "kospi", "kosdaq"),
        "isin": [f"KR7{c}00{i % 10}" for i, c in enumerate(codes)],
        "prev_close": prev,
        "base_price": prev,
        "preferred": np.zeros(n, bool),
        "administrative": np.zeros(n, bool),
        "market_warning": np.full(n, "00"),
        "listed_shares": shares,
        "market_cap_100m": prev * shares // 100_000_000,
    }
    lake.write_table_atomic(universe_path(root, DAY), pa.table(cols, schema=UNIVERSE_SCHEMA))


def build_events(root: Path, rng: np.random.Generator, codes: list[str], n: int = 400) -> None:
    """The day's event log (one fsynced line each, as the EventLog writes): slot changes, Track A slots, a gap."""
    from observer_resources.calendar import KST
    from observer_resources.events import EventLog

    ev = EventLog(root, source="bench")
    t0 = datetime(DAY.year, DAY.month, DAY.day, 8, 50, tzinfo=KST)
    for i in range(n):
        at = t0 + timedelta(seconds=int(i * 24_000 / n))
        if i % 10 == 0:
            ev.emit("track_a_slot", at=at, slot=at.strftime("%H%M"), rows=2500, failures=0, seconds=4.9)
        else:
            ev.emit(
                "slot_change",
                at=at,
                action="raise" if i % 2 else "lower",
                key=KEY_ID,
                index=int(i % 41),
                code=str(rng.choice(codes)),
                score=round(float(rng.random()), 4),
            )
    a = datetime(DAY.year, DAY.month, DAY.day, 11, 40, tzinfo=KST)
    for state, end in (("open", None), ("closed", a + timedelta(seconds=21))):
        ev.emit(
            "gap_marker",
            at=end or a,
            gap_id="g1",
            state=state,
            symbol=None,
            gap_start_ts=a,
            gap_end_ts=end,
            gap_seconds=21.0 if end else None,
            scope="scalp",
            reason="ws_disconnect",
            severity="major",
            session_id="s1",
            metadata={"key_id": KEY_ID},
        )


def build_lake(root: Path, n_ticks: int, symbols: int = 2500, streams: int = 41, seed: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    codes = _codes(rng, symbols)
    names = _names(rng, symbols)
    t0 = time.perf_counter()
    build_universe(root, rng, codes, names)
    tb = build_track_b(root, rng, codes[:: max(1, symbols // streams)][:streams], n_ticks)
    t1 = time.perf_counter()
    slots = build_track_a(root, rng, codes, names)
    t2 = time.perf_counter()
    build_events(root, rng, codes)
    return {
        "track_b": tb,
        "track_a_slots": slots,
        "symbols": symbols,
        "streams": streams,
        "seconds": {
            "track_b": round(t1 - t0, 1),
            "track_a": round(t2 - t1, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }


# --- the candidates --------------------------------------------------------------------------------------------


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed_sync() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def observer_once(root: Path, dest: Path, events_dir: Path) -> dict:
    """``backup.run`` to a fresh local directory; ``package.write`` and its verification pass (the re-read of every
    stored object, ``package._verify_entries``) timed apart (wrapped for the call, the originals run unchanged)."""
    from upath import UPath

    from observer_assets.backup import backup, package
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.events import EventLog

    spent = {"write": 0.0, "verify": 0.0}
    orig = {"write": package.write, "verify": package._verify_entries}

    def wrap(name: str) -> Callable:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig[name](*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0

        return timed

    package.write, package._verify_entries = wrap("write"), wrap("verify")
    try:
        cpu0, t0 = _self_cpu(), time.perf_counter()
        res = backup.run(root, UPath(str(dest)), MarketCalendar("krx"), DAY, events=EventLog(events_dir), environ={})
        wall = time.perf_counter() - t0
        cpu = _self_cpu() - cpu0
    finally:
        package.write, package._verify_entries = orig["write"], orig["verify"]
    if res.action != "written":
        raise AssertionError(f"expected a fresh package, got {res.action}")
    v = package.verify(UPath(str(dest)), DAY)
    if not v.ok:
        raise AssertionError(f"the package does not verify: {v.problems[:3]}")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "write_s": spent["write"] - spent["verify"],
        "verify_s": spent["verify"],
        "scan_s": wall - spent["write"],
        "out_bytes": _tree_bytes(dest / DAY.isoformat()),
        "files": res.files,
        "in_bytes": res.bytes,
    }


def shell_once(cmd: str, out: Path) -> dict:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "cpu_s": _children_cpu() - cpu0,
        "out_bytes": _tree_bytes(out) if out.is_dir() else out.stat().st_size,
    }


def floors_once(root: Path, rels: list[str], dest: Path) -> dict:
    """The package's parts alone, in-process: SHA-256 of every file, zstd-1 of the JSON/JSONL files (to a file, as
    the package does), and zstd decompression of that output."""
    from observer_assets.backup.stored import CHUNK, COMPRESSED_SUFFIXES, hash_file

    t0 = time.perf_counter()
    for r in rels:
        hash_file(root / r)
    t_hash = time.perf_counter() - t0
    text = [r for r in rels if r.endswith(COMPRESSED_SUFFIXES)]
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, r in enumerate(text):
        with open(root / r, "rb") as fin, open(dest / f"{i}.zst", "wb") as raw:
            out = pa.CompressedOutputStream(raw, "zstd")
            while chunk := fin.read(CHUNK):
                out.write(chunk)
            out.close()
    t_comp = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(len(text)):
        with open(dest / f"{i}.zst", "rb") as f:
            s = pa.CompressedInputStream(f, "zstd")
            while s.read(CHUNK):
                pass
    t_dec = time.perf_counter() - t0
    return {
        "sha256_s": t_hash,
        "zstd1_compress_s": t_comp,
        "zstd1_decompress_s": t_dec,
        "text_bytes": sum((root / r).stat().st_size for r in text),
    }


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _spread(rows: list[dict], key: str) -> str:
    v = [r[key] for r in rows]
    return f"{min(v):.2f}-{max(v):.2f}"


def _fs_of(path: Path) -> str:
    best, fs = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if str(path.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev}"
    except OSError:
        pass
    return fs


def _versions() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"

    return {
        "pyarrow": pa.__version__,
        "python": sys.version.split()[0],
        "tar": first(["tar", "--version"]),
        "zstd": first(["zstd", "--version"]),
        "sha256sum": first(["sha256sum", "--version"]),
    }


def _log(msg: str) -> None:
    print(f"[bench.backup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    ticks: int = 1_200_000, repeats: int = 3, symbols: int = 2500, streams: int = 41, seed: int = 6, t2: bool = True
) -> list[dict]:
    """Build the day, then time every candidate `repeats` times (interleaved) on fresh destinations."""
    from upath import UPath

    from observer_assets.backup import backup
    from observer_resources.calendar.market import MarketCalendar

    with tempfile.TemporaryDirectory(prefix="bench-backup-", dir=os.environ.get("BENCH_DIR")) as tmp:
        base = Path(tmp)
        root = base / "data"
        root.mkdir()
        _log(f"building the day: {ticks:,} Track B ticks, {symbols:,} symbols x 40 slots …")
        lake = build_lake(root, ticks, symbols, streams, seed)
        files = backup.day_files(root, UPath(str(base / "dest")), MarketCalendar("krx"), DAY)
        rels = [f.rel for f in files]
        in_bytes = sum(f.size for f in files)
        by_kind: dict[str, list[int]] = {}
        for f in files:
            kind = (
                "json/jsonl"
                if f.rel.endswith((".json", ".jsonl"))
                else "parquet"
                if f.rel.endswith(".parquet")
                else "other"
            )
            by_kind.setdefault(kind, [0, 0])
            by_kind[kind][0] += 1
            by_kind[kind][1] += f.size
        listing = base / "files.lst"
        listing.write_bytes(b"".join(r.encode() + b"\0" for r in rels))
        _log(f"built in {lake['seconds']} s: {len(rels)} files, {in_bytes / 1e6:,.1f} MB")

        tar_in = f"tar -C {root} --null -T {listing} -cf -"
        candidates: dict[str, Callable[[Path], dict]] = {
            "observer": lambda d: observer_once(root, d, base / "events"),
            "tar|zstd -3 -T1": lambda d: shell_once(f"{tar_in} | zstd -3 -T1 -q -o {d}.tar.zst", Path(f"{d}.tar.zst")),
            "tar|zstd -1 -T1": lambda d: shell_once(f"{tar_in} | zstd -1 -T1 -q -o {d}.tar.zst", Path(f"{d}.tar.zst")),
            "tar": lambda d: shell_once(f"tar -C {root} --null -T {listing} -cf {d}.tar", Path(f"{d}.tar")),
            "sha256sum": lambda d: shell_once(
                f"cd {root} && xargs -0 sha256sum < {listing} > {d}.sha256", Path(f"{d}.sha256")
            ),
            "floors": lambda d: floors_once(root, rels, d),
        }
        if t2:
            candidates["tar|zstd -3 -T2"] = lambda d: shell_once(
                f"{tar_in} | zstd -3 -T2 -q -o {d}.tar.zst", Path(f"{d}.tar.zst")
            )
        results: dict[str, list[dict]] = {k: [] for k in candidates}
        for rep in range(repeats):
            for name, fn in candidates.items():
                d = base / f"out-{rep}-{len(results[name])}-{abs(hash(name)) % 10_000}"
                _timed_sync()
                load = os.getloadavg()[0]
                row = fn(d)
                row["sync_s"] = _timed_sync()
                row["load1"] = load
                results[name].append(row)
                shutil.rmtree(d, ignore_errors=True)
                for p in base.glob(f"{d.name}.*"):
                    p.unlink()
                _log(
                    f"rep {rep + 1}/{repeats} {name}: "
                    + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                )

        out: list[dict] = [
            {
                "bench": "backup_lake",
                "day": DAY.isoformat(),
                "files": len(rels),
                "bytes": in_bytes,
                "by_kind": {k: {"files": v[0], "bytes": v[1]} for k, v in sorted(by_kind.items())},
                "track_b_ticks": lake["track_b"]["ticks"],
                "track_b_frames": lake["track_b"]["frames"],
                "track_b_streams": streams,
                "track_a_slots": lake["track_a_slots"],
                "track_a_symbols": symbols,
                "build_s": lake["seconds"],
                "fs": _fs_of(base),
                "versions": _versions(),
                "repeats": repeats,
            }
        ]
        mb = in_bytes / 1e6
        for name, rows in results.items():
            if name == "floors":
                continue
            wall = _med(rows, "wall_s")
            r = {
                "bench": "backup",
                "candidate": name,
                "median_s": round(wall, 3),
                "range_s": _spread(rows, "wall_s"),
                "input_MB_per_s": round(mb / wall, 1),
                "cpu_s": round(_med(rows, "cpu_s"), 2),
                "out_bytes": int(_med(rows, "out_bytes")),
                "ratio": round(in_bytes / _med(rows, "out_bytes"), 3) if name != "sha256sum" else None,
                "sync_after_s": round(_med(rows, "sync_s"), 2),
                "load1_max": round(max(x["load1"] for x in rows), 2),
            }
            if name == "observer":
                r.update(
                    {
                        "write_s": round(_med(rows, "write_s"), 3),
                        "verify_s": round(_med(rows, "verify_s"), 3),
                        "scan_etc_s": round(_med(rows, "scan_s"), 3),
                        "write_MB_per_s": round(mb / _med(rows, "write_s"), 1),
                        "verify_MB_per_s": round(mb / _med(rows, "verify_s"), 1),
                    }
                )
            out.append(r)
        fl = results["floors"]
        tb = fl[0]["text_bytes"] / 1e6
        out.append(
            {
                "bench": "backup_floors",
                "sha256_all_s": round(_med(fl, "sha256_s"), 3),
                "sha256_MB_per_s": round(mb / _med(fl, "sha256_s"), 1),
                "json_MB": round(tb, 1),
                "zstd1_compress_s": round(_med(fl, "zstd1_compress_s"), 3),
                "zstd1_compress_MB_per_s": round(tb / _med(fl, "zstd1_compress_s"), 1),
                "zstd1_decompress_s": round(_med(fl, "zstd1_decompress_s"), 3),
                "zstd1_decompress_MB_per_s": round(tb / _med(fl, "zstd1_decompress_s"), 1),
            }
        )
        obs = _med(results["observer"], "wall_s")
        out.append(
            {
                "bench": "backup_vs_tar",
                **{
                    f"observer_over_{k.replace(' ', '_')}": round(obs / _med(results[k], "wall_s"), 2)
                    for k in results
                    if k not in ("observer", "floors")
                },
            }
        )
        return out


def table(rows: list[dict]) -> str:
    """The candidates as a Markdown table (what docs/benchmarks.md shows)."""
    lines = [
        "| candidate | median s (range) | input MB/s | CPU s | output bytes | ratio | sync after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("bench") == "backup":
            ratio = f"{r['ratio']:.2f}" if r["ratio"] else "—"
            lines.append(
                f"| {r['candidate']} | {r['median_s']:.2f} ({r['range_s']}) | {r['input_MB_per_s']:,.0f} | "
                f"{r['cpu_s']:.2f} | {r['out_bytes']:,} | {ratio} | {r['sync_after_s']:.2f} s |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ticks",
        type=int,
        default=1_200_000,
        help="Track B trades of the day (default: a ≈ 0.55 GB lake; 2,700,000 ≈ 1.1 GB)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--symbols", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--no-t2", action="store_true", help="skip zstd -T2")
    a = ap.parse_args(argv)
    rows = run(ticks=a.ticks, repeats=a.repeats, symbols=a.symbols, seed=a.seed, t2=not a.no_t2)
    for r in rows:
        print(json.dumps(r, ensure_ascii=False))
    print(table(rows))


if __name__ == "__main__":
    main()
