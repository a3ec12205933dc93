"""Universe checks: a universe that collapsed or jumped stops the downstream work of its run."""


import os

import dagster as dg

from observer_assets import lake
from observer_assets.partitions import calendar, parse_day_key
from observer_assets.universe import rules
from observer_assets.universe.assets import read_universe, universe



def thresholds() -> tuple[int, float]:
    """(minimum count, maximum day-on-day change); observer-intent §2.5 safe choices, overridable by env."""
    return (int(os.environ.get("OBSERVER_UNIVERSE_MIN_COUNT", "1000")),
            float(os.environ.get("OBSERVER_UNIVERSE_MAX_CHANGE", "0.30")))


@dg.asset_check(
    asset=universe,
    blocking=True,
    description="Count >= the minimum (1,000; OBSERVER_UNIVERSE_MIN_COUNT) and within 30 % "
    "(OBSERVER_UNIVERSE_MAX_CHANGE) of the previous trading day's universe (the stored file of that day, never "
    "the one just written).",
)
def universe_count(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    key = context.run.tags.get("dagster/partition")
    if key is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "run has no partition tag"})
    min_count, max_change = thresholds()
    cal = calendar()
    day = parse_day_key(key, cal)
    root = lake.data_dir()
    today = read_universe(root, day)
    if today is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"no universe file for {day}"})
    prev_day = cal.previous_trading_day(day)
    prev = read_universe(root, prev_day)
    count = today.num_rows
    ratio = rules.change_ratio(count, prev.num_rows) if prev is not None else 0.0
    problems = []
    if count < min_count:
        problems.append(f"count {count} < minimum {min_count}")
    if prev is not None and ratio > max_change:
        problems.append(f"count changed {ratio:.1%} against {prev_day} ({prev.num_rows} -> {count})")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or "count within bounds",
        metadata={
            "count": count,
            "minimum": min_count,
            "max_change": max_change,
            "previous_count": prev.num_rows if prev is not None else -1,
            "change": round(ratio, 4),
        },
    )
