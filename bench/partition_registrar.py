"""The partition registrar's cost on a year of KRX history (docs/architecture.md, "Every elapsed key exists"):
a steady tick, the first registration, a reorder of a few hundred keys and one of thousands, on a real SQLite
Dagster instance; and `trading_day` as a time window, to show the future key dagster#33551 gives on a holiday."""

from __future__ import annotations

import time
from datetime import date, datetime

import dagster as dg

from observer_assets.orchestration.partitions import MAX_REORDER, register_elapsed, reorder_plan
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar

START = date(2025, 12, 1)
NOW = datetime(2026, 12, 2, 15, 35, tzinfo=KST)


def _timed(fn):  # noqa: ANN001, ANN202
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 3)


def run() -> list[dict]:
    cal = MarketCalendar("krx")
    rows = []
    with dg.instance_for_test() as inst:
        _, first = _timed(lambda: register_elapsed(inst, cal, START, NOW, None))
        _, steady = _timed(lambda: register_elapsed(inst, cal, START, NOW, None))
        keys = list(inst.get_dynamic_partitions("track_a_slot"))
        rows.append({"bench": "partition_registrar", "slot_keys": len(keys), "first_s": first, "steady_tick_s": steady})
        hole = keys[-MAX_REORDER]  # a hole with MAX_REORDER - 1 later keys: reordered in one tick
        inst.delete_dynamic_partition("track_a_slot", hole)
        done, s = _timed(lambda: register_elapsed(inst, cal, START, NOW, None))
        rows.append(
            {
                "bench": "partition_registrar_reorder",
                "moved": done["track_a_slot"]["reordered"],
                "s": s,
                "ms_per_key": round(1000 * s / max(1, done["track_a_slot"]["reordered"]), 1),
            }
        )
        delete, _ = reorder_plan(keys, keys + ["2025-11-01T0900"])
        rows.append(
            {
                "bench": "partition_registrar_far_hole",
                "would_move": len(keys),
                "moved": len(delete),
                "note": "appended instead: more than MAX_REORDER later keys",
            }
        )
    p = dg.DailyPartitionsDefinition(
        start_date="2026-11-01",
        timezone="Asia/Seoul",
        end_offset=1,
        exclusions=["0 0 * * 6,0", datetime(2026, 11, 20, tzinfo=KST)],
    )
    rows.append(
        {
            "bench": "trading_day_time_window_end_offset_1",
            "holiday_2026_11_20_last_key": p.get_partition_keys(current_time=datetime(2026, 11, 20, 10, tzinfo=KST))[
                -1
            ],
            "saturday_2026_12_05_last_key": p.get_partition_keys(current_time=datetime(2026, 12, 5, 10, tzinfo=KST))[
                -1
            ],
        }
    )
    return rows
