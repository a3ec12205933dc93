"""Definitions load in a fresh process: import + partition-key enumeration with five years of history
(1,250 trading days, 50,000 Track A slots in the instance), the work the webserver, daemon and every run
repeat. Target <= 3 s on a 2-core machine."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import date, timedelta

CHILD = r"""
import time, sys
t0 = time.perf_counter()
import dagster as dg
from observer_assets.definitions import defs
from observer_assets.orchestration.partitions import track_a_slot_partitions, trading_day_partitions
t_import = time.perf_counter() - t0
inst = dg.DagsterInstance.get()
t1 = time.perf_counter()
dg.Definitions.validate_loadable(defs)
days = trading_day_partitions.get_partition_keys(dynamic_partitions_store=inst)
slots = track_a_slot_partitions.get_partition_keys(dynamic_partitions_store=inst)
t_enum = time.perf_counter() - t1
print(f"{t_import:.3f} {t_enum:.3f} {time.perf_counter() - t0:.3f} {len(days)} {len(slots)}")
"""


def run(years: int = 5, repeat: int = 3) -> list[dict]:
    import os

    import dagster as dg

    from observer_resources.calendar.market import MarketCalendar

    cal = MarketCalendar("krx")
    start = date(2021, 11, 1)
    days = cal.trading_days(start, start + timedelta(days=365 * years))
    slots = [t.strftime("%Y-%m-%dT%H%M") for d in days for t in cal.track_a_slots(d)]
    out = []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, DAGSTER_HOME=home)
        with dg.instance_for_test(temp_dir=home) as inst:
            inst.add_dynamic_partitions("trading_day", [d.isoformat() for d in days])
            inst.add_dynamic_partitions("track_a_slot", slots)
        open(f"{home}/dagster.yaml", "w").write("telemetry:\n  enabled: false\n")
        times = []
        for _ in range(repeat):
            r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            times.append(r.stdout.split())
        best = min(times, key=lambda t: float(t[2]))
    out.append(
        {
            "bench": "definitions_load",
            "trading_days": int(best[3]),
            "track_a_slots": int(best[4]),
            "import_s": float(best[0]),
            "enumerate_s": float(best[1]),
            "total_s": float(best[2]),
            "target_s": 3.0,
            "ratio_to_target": round(float(best[2]) / 3.0, 3),
        }
    )
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
