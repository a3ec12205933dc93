"""The day's minute bars for a full universe: calls and wall time against the request bound.

A local exchange with 2,600 listings (about 2,500 members at the KRX-like activity), a two-venue day, the clock held
at 20:10 KST (the schedule's due time). The universe is built first (with each member's NXT status), then
``minute_bars`` is materialized as the schedule runs it. The bound: every (code, tape) needs ceil(bars / 120)
calls of ``inquire-time-dailychartprice`` at least, and one key sends 18 a second; the ratio is the measured wall
time over that.

    python -m bench minute_bars            # ~17 min on 2 cores (the universe's NXT lookup is ~2.5 of them)
    BENCH_LISTINGS=600 python -m bench minute_bars   # a quicker variant
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from bench.common import kis_resource, local_exchange
from observer_resources.calendar import KST

DAY = date(2026, 12, 22)


def run() -> list[dict]:
    listings = int(os.environ.get("BENCH_LISTINGS", "2600"))
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        clock_file = tmpd / "clock.json"
        os.environ.update(
            {
                "OBSERVER_DATA_DIR": str(tmpd / "data"),
                "OBSERVER_CALENDAR": "krx",
                "OBSERVER_TRACK_A_WINDOW": "08:00-20:00",
                "OBSERVER_CLOCK_FILE": str(clock_file),
                "OBSERVER_UNIVERSE_MIN_MASTER_CODES": "100",
            }
        )
        from observer_assets.minute_bars.assets import minute_bars
        from observer_assets.universe.assets import universe
        from observer_resources import clock
        from observer_resources.storage import lake
        from observer_resources.storage.layout import minute_bars_path

        def at(sim, t: datetime) -> None:
            clock.write_sim(clock_file, t)
            sim.admin("clock", {"at": t.isoformat(), "speed": 0})

        start = datetime(DAY.year, DAY.month, DAY.day, 5, 0, tzinfo=KST)
        with local_exchange(
            *("--mode", "real", "--clock", "krx", "--speed", "0", "--start", start.isoformat()),
            *("--listings", str(listings)),
        ) as sim:
            kis = kis_resource(sim, tmpd / "state")
            with dg.instance_for_test() as inst:
                inst.add_dynamic_partitions("trading_day", [DAY.isoformat()])
                at(sim, start)
                t0 = time.monotonic()
                assert dg.materialize(
                    [universe],
                    partition_key=DAY.isoformat(),
                    instance=inst,
                    resources={"kis": kis},
                    run_config={"ops": {"universe": {"config": {"accept_anyway": True}}}},
                ).success
                universe_s = time.monotonic() - t0
                at(sim, datetime(DAY.year, DAY.month, DAY.day, 20, 10, tzinfo=KST))
                before = sim.admin("stats")["requests_total"]
                t0 = time.monotonic()
                res = dg.materialize(
                    [minute_bars, universe.to_source_asset()],
                    partition_key=DAY.isoformat(),
                    instance=inst,
                    resources={"kis": kis},
                )
                seconds = time.monotonic() - t0
                assert res.success
                calls = sim.admin("stats")["requests_total"] - before
                md = res.asset_materializations_for_node("minute_bars")[0].metadata
                table = pq.read_table(minute_bars_path(lake.data_dir(), DAY), columns=["code", "market"])
        per_ask = Counter(zip(table["code"].to_pylist(), table["market"].to_pylist(), strict=True))
        minimum = sum(math.ceil(n / 120) for n in per_ask.values())
        asks = md["asks"].value
        minimum += asks - len(per_ask)  # an ask with no bars still costs its one call
        rate = kis.effective_rate_per_s()
        bound_s = minimum / rate
        return [
            {
                "bench": "minute_bars",
                "listings": listings,
                "asks": asks,
                "codes": md["codes"].value,
                "by_venue": md["by_venue"].value,
                "rows": table.num_rows,
                "calls": calls,
                "calls_minimum": minimum,
                "calls_ratio": round(calls / minimum, 3),
                "seconds": round(seconds, 1),
                "bound_seconds": round(bound_s, 1),
                "ratio": round(seconds / bound_s, 3),
                "universe_seconds": round(universe_s, 1),
            }
        ]
