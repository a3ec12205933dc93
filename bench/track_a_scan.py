"""One symbol's Track A history: per-slot files against the daily table (docs/benchmarks.md, "Track A scan").

The lake: ``DAYS`` trading days x 40 slots x ``CODES`` symbols of synthetic rows in the real SNAPSHOT_SCHEMA (prices,
sizes, key ids and lateness filled, the expected auction and the inquire-price-only columns null as the multi-quote
leaves them), written as the asset writes them (``lake.write_table_atomic``), and the daily files built from them
by ``daily.compact_day`` + ``daily.parquet_bytes`` as the ``track_a_daily`` asset does. Timed: every row of one
symbol over all the days (a new reader each time: dataset discovery included), with pyarrow, pandas and DuckDB, from
the per-slot files (median of ``slot_repeats`` symbols) and from the daily files (of ``repeats``); and the daily
file's row-group size: one symbol, every row, and a per-code aggregate of two columns with DuckDB.
The files were just written, so the page cache is warm: this measures the reading work, not the disk.
"""

import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

DAYS = 20
CODES = 2_000
FIRST_DAY = date(2026, 3, 3)
ROW_GROUPS = (10_000, 50_000)  # besides daily.ROW_GROUP_ROWS, for its choice


def _slot_table(
    codes: list[str], base: np.ndarray, slot, i: int, rng: np.random.Generator, day_totals: list[np.ndarray]
) -> pa.Table:
    """One slot's rows with the real schema, built column-wise (numpy), as a multi-quote slot would give them.
    ``day_totals`` ([volume, value], zero at the day's first slot) carries the cumulative totals across slots."""
    from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA, TS, late_seconds

    n = len(codes)
    prev = base
    price = (prev * (1 + rng.normal(0, 0.01 + 0.001 * i, n))).astype(np.int64)
    traded = rng.integers(0, 50_000, n).astype(np.int64)
    day_totals[0] = day_totals[0] + traded
    day_totals[1] = day_totals[1] + traded * price
    fetched = [slot + timedelta(seconds=1.5 + 4.0 * k / n) for k in range(n)]
    change = price - prev
    sign = np.where(change > 0, 2, np.where(change < 0, 5, 3)).astype(np.int8)
    cols = {
        "slot_ts": pa.array([slot] * n, TS),
        "code": pa.array(codes),
        "name": pa.array([f"종목{c}" for c in codes]),
        "price": price,
        "change": change,
        "change_rate": np.round(100 * change / prev, 2),
        "open": prev,
        "high": np.maximum(price, prev),
        "low": np.minimum(price, prev),
        "prev_close": prev,
        "volume": day_totals[0],
        "trade_value": day_totals[1],
        "bid": price - 5,
        "ask": price + 5,
        "bid_size": rng.integers(1, 5_000, n),
        "ask_size": rng.integers(1, 5_000, n),
        "upper_limit": (prev * 1.3).astype(np.int64),
        "lower_limit": (prev * 0.7).astype(np.int64),
        "source": pa.array(["live"] * n),
        "restored_from": pa.nulls(n, pa.string()),
        "tr_id": pa.array(["FHKST11300006"] * n),
        "fetched_at": pa.array(fetched, TS),
        "total_ask_size": rng.integers(10_000, 900_000, n),
        "total_bid_size": rng.integers(10_000, 900_000, n),
        "change_sign": sign,
        "session_phase": pa.array(["장중"] * n),
        "hour_cls_code": pa.array(["0"] * n),
        "expected_price": pa.nulls(n, pa.int64()),
        "expected_volume": pa.nulls(n, pa.int64()),
        "halted": pa.nulls(n, pa.bool_()),
        "vi_code": pa.nulls(n, pa.string()),
        "status_code": pa.nulls(n, pa.string()),
        "key_id": pa.array([f"key-{k * 3 // n:012d}" for k in range(n)]),
    }
    cols["late_s"] = late_seconds(cols["slot_ts"], cols["fetched_at"])
    return pa.Table.from_arrays(
        [
            pa.array(cols[f.name], f.type) if isinstance(cols[f.name], np.ndarray) else cols[f.name]
            for f in SNAPSHOT_SCHEMA
        ],
        schema=SNAPSHOT_SCHEMA,
    )


def _median_time(fn, args) -> tuple[float, int]:
    times, rows = [], 0
    for a in args:
        t0 = time.perf_counter()
        rows = fn(a)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def run(days: int = DAYS, n_codes: int = CODES, repeats: int = 9, slot_repeats: int = 3) -> list[dict]:
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    from observer_assets.track_a import daily
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.storage import lake
    from observer_resources.storage.layout import TRACK_A, TRACK_A_DAILY, daily_path, slot_dir

    cal = MarketCalendar("krx")
    day_list = [d for d in cal.trading_days(FIRST_DAY, FIRST_DAY + timedelta(days=60))][:days]
    rng = np.random.default_rng(7)
    codes = sorted(f"{20 + 5 * i:06d}" for i in range(n_codes))
    base = rng.integers(4_000, 300_000, n_codes).astype(np.int64)
    probe = [codes[int(k)] for k in np.linspace(0, n_codes - 1, repeats)]
    slot_probe = probe[1 :: max(1, repeats // slot_repeats)][:slot_repeats]

    with tempfile.TemporaryDirectory(prefix="track_a_scan-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_s = []
        for d in day_list:
            tables = {}
            totals = [np.zeros(n_codes, np.int64), np.zeros(n_codes, np.int64)]
            for i, slot in enumerate(cal.track_a_slots(d)):
                t = _slot_table(codes, base, slot, i, rng, totals)
                lake.write_table_atomic(slot_dir(root, slot) / "snapshot.parquet", t)
                tables[slot] = t
            b0 = time.perf_counter()
            day_table = daily.compact_day({s: lake.read_table(slot_dir(root, s) / "snapshot.parquet") for s in tables})
            lake.write_bytes_atomic(daily_path(root, d), daily.parquet_bytes(day_table))
            build_s.append(time.perf_counter() - b0)
            for rg in ROW_GROUPS:  # the same table at other row-group sizes, for the choice of ROW_GROUP_ROWS
                if rg == daily.ROW_GROUP_ROWS:
                    continue
                out = daily_path(root / f"rg{rg}", d)
                lake.write_bytes_atomic(out, daily.parquet_bytes(day_table, rg))
        write_s = time.perf_counter() - t0
        n_slots = sum(1 for _ in (root / TRACK_A).glob("date=*/slot=T*/snapshot.parquet"))
        slot_glob = str(root / TRACK_A / "*" / "*" / "snapshot.parquet")
        daily_glob = str(root / TRACK_A_DAILY / "*" / "track_a.parquet")

        def pa_slots(c: str) -> int:
            return (
                ds.dataset(root / TRACK_A, format="parquet", partitioning="hive")
                .to_table(filter=ds.field("code") == c)
                .num_rows
            )

        def pa_daily(c: str, where: Path = root / TRACK_A_DAILY) -> int:
            return (
                ds.dataset(where, format="parquet", partitioning="hive").to_table(filter=ds.field("code") == c).num_rows
            )

        def pd_slots(c: str) -> int:
            return len(pd.read_parquet(root / TRACK_A, filters=[("code", "==", c)]))

        def pd_daily(c: str) -> int:
            return len(pd.read_parquet(root / TRACK_A_DAILY, filters=[("code", "==", c)]))

        def duck(glob: str):
            def q(c: str) -> int:
                con = duckdb.connect()
                try:
                    sql = f"select * from read_parquet('{glob}', hive_partitioning=true) where code = ?"
                    return len(con.execute(sql, [c]).fetchall())
                finally:
                    con.close()

            return q

        rows = []
        expect = days * 40
        for reader, f_slots, f_daily in (
            ("pyarrow.dataset", pa_slots, pa_daily),
            ("pandas.read_parquet", pd_slots, pd_daily),
            ("duckdb", duck(slot_glob), duck(daily_glob)),
        ):
            s_t, s_rows = _median_time(f_slots, slot_probe)
            d_t, d_rows = _median_time(f_daily, probe)
            assert s_rows == d_rows == expect, (reader, s_rows, d_rows, expect)
            rows.append(
                {
                    "bench": "track_a_scan",
                    "reader": reader,
                    "days": days,
                    "codes": n_codes,
                    "rows_of_symbol": expect,
                    "per_slot_files_s": round(s_t, 4),
                    "daily_files_s": round(d_t, 4),
                    "speed_up": round(s_t / d_t, 1),
                }
            )
        for rg in sorted({*ROW_GROUPS, daily.ROW_GROUP_ROWS}):
            where = root / TRACK_A_DAILY if rg == daily.ROW_GROUP_ROWS else root / f"rg{rg}" / TRACK_A_DAILY
            one, n = _median_time(lambda c, w=where: pa_daily(c, w), probe)
            assert n == expect
            full, _ = _median_time(lambda _, w=where: ds.dataset(w, format="parquet").to_table().num_rows, range(3))
            agg_sql = f"select code, avg(late_s), max(price) from read_parquet('{where}/*/*.parquet') group by code"
            agg, _ = _median_time(lambda _, q=agg_sql: len(duckdb.sql(q).fetchall()), range(3))
            rows.append(
                {
                    "bench": "track_a_scan",
                    "daily_row_group_rows": rg,
                    "one_symbol_s": round(one, 4),
                    "all_rows_s": round(full, 4),
                    "duckdb_aggregate_s": round(agg, 4),
                    "daily_bytes_total": sum(p.stat().st_size for p in where.rglob("*.parquet")),
                }
            )
        slot_bytes = sum(p.stat().st_size for p in (root / TRACK_A).rglob("*.parquet"))
        rows.append(
            {
                "bench": "track_a_scan",
                "lake": f"{days} days x 40 slots x {n_codes} codes",
                "slot_files": n_slots,
                "rows": n_slots * n_codes,
                "slot_files_bytes": slot_bytes,
                "daily_bytes": sum(p.stat().st_size for p in (root / TRACK_A_DAILY).rglob("*.parquet")),
                "compact_day_median_s": round(statistics.median(build_s), 3),
                "build_lake_s": round(write_s, 1),
            }
        )
        return rows


if __name__ == "__main__":
    import json

    for row in run():
        print(json.dumps(row, ensure_ascii=False))
