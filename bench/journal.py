"""Track B durable record on one core: sustained ticks/s into the journal, receive->durable latency (append ->
fdatasync done) at a steady 2,000 ticks/s and at the maximum, recovery scan speed, and bytes per tick of the
raw JSON lines against the compacted Parquet (zstd) for the same ticks.

Workload: real H0STCNT0 records of the local exchange's five busiest codes (``Market(seed=3, listings=400)``),
merged in time order and sent in multi-record frames whose sizes follow a busy stream (1 record most of the
time, bursts of 2-19)."""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from local_exchange.market import Market
from observer_assets.track_b.compaction import compact, sample
from observer_assets.track_b.journal import Journal
from observer_assets.track_b.journal_format import segments
from observer_assets.track_b.journal_read import read_journal
from observer_assets.track_b.journal_recovery import recover
from observer_resources.calendar import KST
from observer_resources.storage.lake import write_table_atomic

DAY = date(2026, 3, 10)
FRAME_SIZES = [1] * 60 + [2] * 15 + [3] * 10 + [5] * 8 + [10] * 5 + [19] * 2  # records per frame (mean 2.6)


def receive_times(frames: list[tuple[str, int]]) -> list[datetime]:
    """Realistic receive times: the exchange second of the frame's last record, frames spread evenly within it."""
    secs = []
    for text, k in frames:
        hhmmss = text.split("^")[46 * (k - 1) + 1]
        secs.append(int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:]))
    midnight = datetime(2026, 3, 10, tzinfo=KST)
    out, i = [], 0
    while i < len(secs):
        j = i
        while j < len(secs) and secs[j] == secs[i]:
            j += 1
        for k in range(i, j):
            out.append(midnight + timedelta(seconds=secs[i] + (k - i) / (j - i) + 0.05 / (j - i)))
        i = j
    return out


def build_records(n_records: int = 60_000, codes: int = 5) -> list[list[str]]:
    m = Market(seed=3, listings=400, clock_mode="krx")
    busiest = sorted(m.listings, key=lambda l: -l.activity)[:codes]
    recs: list[tuple[int, int, list[str]]] = []
    for lst in busiest:
        t = m.day_ticks(lst.code, DAY)
        i0 = len(t) // 3  # mid-morning, a realistic price/volume state
        for i in range(i0, min(len(t), i0 + n_records // codes)):
            recs.append((int(t.sec[i]), len(recs), m.trade_record(t, i)))
    recs.sort()
    return [r for _, _, r in recs]


def build_frames(recs: list[list[str]], *, per_record: bool = False, seed: int = 7) -> list[tuple[str, int]]:
    """(frame text, records) in arrival order; ``per_record`` = every record its own 1-record frame."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(recs):
        k = 1 if per_record else min(rng.choice(FRAME_SIZES), len(recs) - i)
        chunk = recs[i : i + k]
        out.append((f"0|H0STCNT0|{k:03d}|" + "^".join(f for r in chunk for f in r), k))
        i += k
    return out


def _fs_of(path: Path) -> str:
    best, fs = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if str(path).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev}"
    except OSError:
        pass
    return fs


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def max_rate(frames: list[tuple[str, int]], layout: str, min_ticks: int = 400_000, fsync_interval: float = 0.2) -> dict:
    """Append as fast as one core allows (the flusher shares the core), then close: ticks/s made durable."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = datetime(2026, 3, 10, 10, tzinfo=KST)
        j = Journal(tmp, "key-bench", fsync_interval=fsync_interval, clock=lambda: base + timedelta(minutes=30))
        ticks = n = 0
        cpu0, t0 = _cpu(), time.perf_counter()
        while ticks < min_ticks:
            text, k = frames[n % len(frames)]
            j.append(base + timedelta(microseconds=n), text, conn=1, mitigation_level=0)
            ticks += k
            n += 1
        t_app = time.perf_counter() - t0
        j.close()
        dt = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        st = j.stats()
        size = sum(p.stat().st_size for p in segments(tmp, DAY))
        return {
            "bench": "journal_max",
            "layout": layout,
            "fsync_interval_s": fsync_interval,
            "ticks": ticks,
            "frames": n,
            "ticks_per_s": round(ticks / dt),
            "frames_per_s": round(n / dt),
            "append_us_per_frame": round(t_app / n * 1e6, 2),
            "cpu_s": round(cpu, 2),
            "bytes_per_tick_raw": round(size / ticks, 1),
            "MB_per_s": round(size / dt / 1e6, 1),
            "fsyncs": st["fsyncs"],
            "durable_p50_ms": st["durable_latency"]["p50_ms"],
            "durable_p99_ms": st["durable_latency"]["p99_ms"],
            "durable_max_ms": st["durable_latency"]["max_ms"],
            "commit_p50_ms": st["commit_latency"]["p50_ms"],
            "commit_p99_ms": st["commit_latency"]["p99_ms"],
            "errors": st["write_errors"],
            "fs": _fs_of(Path(tmp)),
        }


def steady(
    frames: list[tuple[str, int]], rate: float = 2000.0, seconds: float = 8.0, fsync_interval: float = 0.2
) -> dict:
    """Append at a paced ``rate`` ticks/s (a busy Track B session) and measure append -> durable."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        base = datetime(2026, 3, 10, 10, tzinfo=KST)
        j = Journal(tmp, "key-bench", fsync_interval=fsync_interval, clock=lambda: base + timedelta(minutes=30))
        ticks = n = 0
        worst_pending = 0.0
        cpu0, t0 = _cpu(), time.perf_counter()
        while True:
            now = time.perf_counter() - t0
            if now >= seconds:
                break
            due = ticks / rate
            if due > now:
                time.sleep(due - now)
            text, k = frames[n % len(frames)]
            j.append(base + timedelta(seconds=time.perf_counter() - t0), text, conn=1, mitigation_level=0)
            ticks += k
            n += 1
            if n % 500 == 0:
                worst_pending = max(worst_pending, j.oldest_pending_s)
        dt = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        j.close()
        st = j.stats()
        return {
            "bench": "journal_steady",
            "target_ticks_per_s": rate,
            "fsync_interval_s": fsync_interval,
            "ticks_per_s": round(ticks / dt),
            "frames_per_s": round(n / dt),
            "seconds": round(dt, 1),
            "cpu_pct_of_core": round(100 * cpu / dt, 1),
            "fsyncs_per_s": round(st["fsyncs"] / dt, 1),
            "durable_p50_ms": st["durable_latency"]["p50_ms"],
            "durable_p99_ms": st["durable_latency"]["p99_ms"],
            "durable_max_ms": st["durable_latency"]["max_ms"],
            "commit_p50_ms": st["commit_latency"]["p50_ms"],
            "commit_p99_ms": st["commit_latency"]["p99_ms"],
            "commit_max_ms": st["commit_latency"]["max_ms"],
            "oldest_pending_max_s": round(worst_pending, 3),
            "errors": st["write_errors"],
        }


def sizes(recs: list[list[str]]) -> list[dict]:
    """Bytes per tick, raw JSONL vs Parquet zstd, for the same distinct ticks; compaction and recovery speed."""
    out = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for layout, frames in (("frame", build_frames(recs)), ("record", build_frames(recs, per_record=True))):
            key = f"key-{layout}"
            rxs = receive_times(frames)
            with Journal(tmp, key, clock=lambda: rxs[-1]) as j:
                for rx, (text, _) in zip(rxs, frames):
                    j.append(rx, text, conn=1, mitigation_level=0)
            seg = segments(tmp, DAY, None, key)  # the records span the 10:00 and 11:00 segments
            raw = sum(p.stat().st_size for p in seg)
            t0 = time.perf_counter()
            lines = list(read_journal(seg))
            t_read = time.perf_counter() - t0
            t0 = time.perf_counter()
            ticks, stats = compact(lines, day=DAY, hour=10)
            t_compact = time.perf_counter() - t0
            assert ticks.num_rows == len(recs) and stats["duplicates_dropped"] == 0
            pq_path = write_table_atomic(Path(tmp) / "lake" / layout / "ticks.parquet", ticks)
            t0 = time.perf_counter()
            sampled = sample(ticks)
            t_sample = time.perf_counter() - t0
            sp_path = write_table_atomic(Path(tmp) / "lake" / layout / "sampled.parquet", sampled)
            t0 = time.perf_counter()
            recs_ = [recover(p) for p in seg]
            t_rec = time.perf_counter() - t0
            row = {
                "bench": "journal_bytes",
                "layout": layout,
                "ticks": len(recs),
                "frames": len(frames),
                "raw_jsonl_bytes_per_tick": round(raw / len(recs), 1),
                "parquet_zstd_bytes_per_tick": round(pq_path.stat().st_size / len(recs), 1),
                "raw_over_parquet": round(raw / pq_path.stat().st_size, 1),
                "sampled_rows_2hz": sampled.num_rows,
                "sampled_parquet_bytes_per_tick": round(sp_path.stat().st_size / len(recs), 2),
                "read_journal_lines_per_s": round(len(lines) / t_read),
                "compact_ticks_per_s": round(len(recs) / t_compact),
                "sample_ticks_per_s": round(len(recs) / t_sample),
                "recover_MB_per_s": round(raw / t_rec / 1e6, 1),
                "recover_valid_lines": sum(r.valid_lines for r in recs_),
                "segments": len(seg),
                "span_s": round((rxs[-1] - rxs[0]).total_seconds()),
            }
            out.append(row)
    return out


def run() -> list[dict]:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the appender and the flusher share one core
    except (AttributeError, OSError):
        pass
    recs = build_records()
    frames = build_frames(recs)
    out = [max_rate(frames, "frame"), max_rate(build_frames(recs, per_record=True), "record")]
    for interval in (0.2, 0.05, 0.0):
        out.append(steady(frames, 2000.0, fsync_interval=interval))
    out.append(steady(frames, 20_000.0, seconds=5.0))
    out += sizes(recs)
    return out


if __name__ == "__main__":
    import json

    for r in run():
        print(json.dumps(r))
