"""H0STCNT0 frame parsing throughput on one core (records/s), on frames built from the local exchange's
market model (a busy symbol's real day of trades), with 1, 3 and 19 records per frame."""

from __future__ import annotations

import os
import time
from datetime import date

from local_exchange.market import Market
from observer_resources.kis.frames import ParseStats, parse_message


def build_frames(records_per_frame: int, n_records: int = 60_000) -> list[str]:
    m = Market(seed=3, listings=400, clock_mode="krx")
    day = date(2026, 3, 10)
    busiest = sorted(m.listings, key=lambda l: -l.activity)[:5]
    recs: list[list[str]] = []
    for lst in busiest:
        t = m.day_ticks(lst.code, day)
        recs += [m.trade_record(t, i) for i in range(min(len(t), n_records // 5))]
    frames = []
    for i in range(0, len(recs) - records_per_frame + 1, records_per_frame):
        chunk = recs[i : i + records_per_frame]
        frames.append(f"0|H0STCNT0|{len(chunk):03d}|" + "^".join(f for r in chunk for f in r))
    return frames


def run(repeat: int = 3) -> list[dict]:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    except (AttributeError, OSError):
        pass
    out = []
    for k in (1, 3, 19):
        frames = build_frames(k)
        best = 0.0
        for _ in range(repeat):
            stats = ParseStats()
            t0 = time.perf_counter()
            n = 0
            for f in frames:
                msg = parse_message(f, stats)
                n += len(msg.records)
            dt = time.perf_counter() - t0
            best = max(best, n / dt)
        out.append(
            {
                "bench": "frame_parse",
                "records_per_frame": k,
                "frames": len(frames),
                "records": n,
                "records_per_s": round(best),
            }
        )
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
