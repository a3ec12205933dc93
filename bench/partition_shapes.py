"""Key enumeration for the three Track A partition shapes over five years (docs/architecture.md):
a 10-minute time window with holiday exclusions, date x static-slot multi-partitions, and the dynamic slot keys
Observer uses."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from datetime import time as dtime

import dagster as dg

from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar


def run(start: date = date(2021, 11, 1), years: int = 5) -> list[dict]:
    cal = MarketCalendar("krx")
    end = start + timedelta(days=365 * years)
    days = cal.trading_days(start, end)
    holidays = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    holidays = [d for d in holidays if d.weekday() < 5 and not cal.is_trading_day(d)]
    out = []

    window = dg.TimeWindowPartitionsDefinition(
        start=datetime.combine(start, dtime(9, 0)),
        end=datetime.combine(end, dtime(16, 0)),
        fmt="%Y-%m-%dT%H%M",
        cron_schedule="*/10 9-15 * * 1-5",
        timezone="Asia/Seoul",
        exclusions=[
            "40,50 15 * * *",
            *[datetime.combine(d, dtime(9, 0), KST) + timedelta(minutes=10 * i) for d in holidays for i in range(40)],
        ],
    )
    t = time.perf_counter()
    n = len(window.get_partition_keys())
    out.append(
        {
            "bench": "partition_shapes",
            "shape": "time_window_10min",
            "keys": n,
            "seconds": round(time.perf_counter() - t, 3),
        }
    )

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [d.isoformat() for d in days])
        multi = dg.MultiPartitionsDefinition(
            {
                "date": dg.DynamicPartitionsDefinition(name="trading_day"),
                "slot": dg.StaticPartitionsDefinition(
                    [f"{h:02d}{m:02d}" for h in range(9, 17) for m in range(0, 60, 10)][:46]
                ),
            }
        )
        t = time.perf_counter()
        n = len(multi.get_partition_keys(dynamic_partitions_store=inst))
        out.append(
            {
                "bench": "partition_shapes",
                "shape": "multi_date_x_static_slot",
                "keys": n,
                "seconds": round(time.perf_counter() - t, 3),
            }
        )
        inst.add_dynamic_partitions(
            "track_a_slot", [s.strftime("%Y-%m-%dT%H%M") for d in days for s in cal.track_a_slots(d)]
        )
        t = time.perf_counter()
        n = len(dg.DynamicPartitionsDefinition(name="track_a_slot").get_partition_keys(dynamic_partitions_store=inst))
        out.append(
            {
                "bench": "partition_shapes",
                "shape": "dynamic_slot_keys (chosen)",
                "keys": n,
                "seconds": round(time.perf_counter() - t, 3),
            }
        )
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
