"""The gap report for a full trading day, against its 2-second budget (docs/benchmarks.md).

The day on disk: a 2,500-symbol universe, all 40 Track A slots (09:00..15:30) as full-schema snapshot files
(one missing, one partial with rate-limit failures, one late), the 41 busiest symbols of the local exchange's
market model as Track B tick files per hour (09:30..15:00, the model's own trade counts, all TICK_SCHEMA
columns, two ticks removed), an event log with disconnect markers and slot changes. Only `build_report`
(read + detect) is timed: best and median of `repeats` runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

BUDGET_S = 2.0
DAY = date(2026, 3, 10)  # a Tuesday, a normal KRX session


def _snapshot(codes: list[str], slot: datetime, late_s: float, schema: pa.Schema) -> pa.Table:
    n = len(codes)
    cols = {}
    for f in schema:
        if f.name == "slot_ts":
            cols[f.name] = pa.array([slot] * n, f.type)
        elif f.name == "fetched_at":
            cols[f.name] = pa.array([slot + timedelta(seconds=late_s)] * n, f.type)
        elif f.name == "code":
            cols[f.name] = pa.array(codes, f.type)
        elif f.name == "source":
            cols[f.name] = pa.array(["live"] * n, f.type)
        elif f.name in ("restored_from", "name"):
            cols[f.name] = pa.nulls(n, f.type)
        elif f.name == "tr_id":
            cols[f.name] = pa.array(["FHKST11300006"] * n, f.type)
        elif pa.types.is_floating(f.type):
            cols[f.name] = pa.array(np.random.default_rng(len(cols)).random(n), f.type)
        elif pa.types.is_int64(f.type):
            cols[f.name] = pa.array(np.random.default_rng(len(cols)).integers(1_000, 100_000, n), f.type)
        else:  # codes, flags and small enums the report never reads
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=schema)


def _ticks(m, codes: list[str], schema: pa.Schema) -> tuple[dict[int, pa.Table], int]:
    """Per KST hour, the tick table of the codes' model trades received 09:30..15:00 (rx = exchange time + 80 ms)."""
    from observer_resources.calendar import KST

    lo, hi = 9 * 3600 + 1800, 15 * 3600
    midnight = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=KST).timestamp())
    parts = []
    for c in codes:
        t = m.day_ticks(c, DAY)
        sel = (t.sec >= lo) & (t.sec < hi)
        n = int(sel.sum())
        rx = (midnight + t.sec[sel].astype(np.int64)) * 1_000_000 + 80_000 + np.arange(n) % 1000
        parts.append(
            {
                "code": np.full(n, c, dtype=object),
                "rx": rx,
                "sec": t.sec[sel].astype(np.int64),
                "price": t.price[sel],
                "qty": t.qty[sel],
                "acml_vol": t.acml_vol[sel],
                "acml_value": t.acml_value[sel],
                "buy_cnt": t.buy_cnt[sel].astype(np.int64),
                "sell_cnt": t.sell_cnt[sel].astype(np.int64),
            }
        )
    allp = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = np.ones(len(allp["rx"]), dtype=bool)
    keep[[len(allp["rx"]) // 3, len(allp["rx"]) // 2]] = False  # two lost ticks
    allp = {k: v[keep] for k, v in allp.items()}
    total = len(allp["rx"])
    hours = ((allp["sec"]) // 3600).astype(np.int64)
    out = {}
    for h in np.unique(hours):
        s = hours == h
        n = int(s.sum())
        cols = {}
        for f in schema:
            name = f.name
            if name == "code":
                cols[name] = pa.array(allp["code"][s], f.type)
            elif name == "receive_ts":
                cols[name] = pa.array(allp["rx"][s], pa.int64()).cast(f.type)
            elif name == "exchange_ts":
                cols[name] = pa.array((midnight + allp["sec"][s]) * 1000, pa.int64()).cast(f.type)
            elif name in allp:
                cols[name] = pa.array(allp[name][s], f.type)
            elif name == "key_id":
                cols[name] = pa.array(["bench-key"] * n, f.type)
            elif name == "conn_id":
                cols[name] = pa.array(["r1/1"] * n, f.type)
            elif name == "quality_flag":
                cols[name] = pa.array(["ok"] * n, f.type)
            elif pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                cols[name] = pa.array(np.zeros(n), pa.float64()).cast(f.type)
            else:
                cols[name] = pa.nulls(n, f.type)
        out[int(h)] = pa.table(cols, schema=schema)
    return out, total


def run(repeats: int = 5, n_symbols: int = 2500, streams: int = 41) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OBSERVER_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["OBSERVER_CALENDAR"] = "krx"
        from local_exchange.market import Market
        from observer_assets.gaps.report import build_report
        from observer_assets.orchestration.partitions import calendar
        from observer_assets.track_a.snapshot import FAILURE_SCHEMA, SNAPSHOT_SCHEMA, TS
        from observer_assets.track_b.compaction import TICK_SCHEMA
        from observer_assets.universe.rules import UNIVERSE_SCHEMA
        from observer_resources.calendar import KST
        from observer_resources.events import EventLog
        from observer_resources.storage import lake
        from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
        from observer_resources.storage.layout import slot_dir, ticks_path, universe_path

        root = lake.data_dir()
        m = Market(seed=5, listings=2600, clock_mode="krx")
        codes = sorted(x.code for x in m.listings)[:n_symbols]
        uni = pa.table(
            {
                f.name: (
                    [c for c in codes]
                    if f.name == "code"
                    else pa.nulls(len(codes), f.type)
                    if f.name != "code"
                    else None
                )
                for f in UNIVERSE_SCHEMA
            },
            schema=UNIVERSE_SCHEMA,
        )
        lake.write_table_atomic(universe_path(root, DAY), uni)
        slots = calendar().track_a_slots(DAY)
        for i, s in enumerate(slots):
            if i == 7:
                continue  # one missing slot
            cs = codes[:-25] if i == 12 else codes  # one partial slot
            lake.write_table_atomic(
                slot_dir(root, s) / "snapshot.parquet", _snapshot(cs, s, 400.0 if i == 20 else 3.0, SNAPSHOT_SCHEMA)
            )
            fails = codes[-25:] if i == 12 else []
            lake.write_table_atomic(
                slot_dir(root, s, FAILURES) / "failures.parquet",
                pa.table(
                    {
                        "code": fails,
                        "error": ["RateLimitedError EGW00201"] * len(fails),
                        "at": pa.array([s] * len(fails), TS),
                    },
                    schema=FAILURE_SCHEMA,
                ),
            )
        busiest = [x.code for x in sorted(m.listings, key=lambda x: -x.activity)[:streams]]
        by_hour, n_ticks = _ticks(m, busiest, TICK_SCHEMA)
        for h, t in by_hour.items():
            lake.write_table_atomic(ticks_path(root, datetime(DAY.year, DAY.month, DAY.day, h, tzinfo=KST)), t)
        ev = EventLog(root, source="bench")
        for k, (h, mi) in enumerate([(10, 5), (11, 40), (14, 2)]):
            a = datetime(DAY.year, DAY.month, DAY.day, h, mi, tzinfo=KST)
            b = a + timedelta(seconds=20 + 10 * k)
            for state, end in (("open", None), ("closed", b)):  # written on the day (EventLog.gap_* stamp now)
                ev.emit(
                    "gap_marker",
                    at=end or a,
                    gap_id=f"g{k}",
                    state=state,
                    symbol=None,
                    gap_start_ts=a,
                    gap_end_ts=end,
                    gap_seconds=(b - a).total_seconds() if end else None,
                    scope="scalp",
                    reason="ws_disconnect",
                    severity="major",
                    session_id="s",
                    metadata={"key_id": "bench-key"},
                )
        for j in range(300):
            t0 = datetime(DAY.year, DAY.month, DAY.day, 9, 30, tzinfo=KST) + timedelta(seconds=60 * j)
            ev.emit("slot_change", at=t0, action="raise", key="bench-key", index=j % 41, code=busiest[j % 41])

        times, rep = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            rep = build_report(root, DAY)
            times.append(time.perf_counter() - t0)
        best, med = min(times), statistics.median(times)
        return [
            {
                "bench": "gap_report",
                "day": DAY.isoformat(),
                "universe": n_symbols,
                "slots": len(slots),
                "track_a_rows": sum(1 for _ in slots) * n_symbols,
                "streams": streams,
                "ticks": n_ticks,
                "gap_rows": rep.rows.num_rows,
                "by_kind": rep.summary["by_kind"],
                "volume_breaks_found": rep.summary["track_b"]["losses"],
                "volume_breaks_injected": 2,
                "best_s": round(best, 3),
                "median_s": round(med, 3),
                "budget_s": BUDGET_S,
                "ratio_to_budget": round(med / BUDGET_S, 3),
                "repeats": repeats,
            }
        ]


if __name__ == "__main__":
    import json

    for row in run():
        print(json.dumps(row))
