"""The universe's count rules: a universe that collapsed or jumped is never published.

The rules are judged inside the universe asset, before the file is written where readers look
(``universe/date=D/universe.parquet``): a blocking check that ran after the file was written would stop nothing,
since Track A reads the file in other runs. The check's result is reported by the asset itself
(``check_specs``), so it belongs to the partition it judged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dagster as dg

from observer_assets.orchestration.partitions import trading_day_partitions
from observer_assets.universe import rules
from observer_resources import settings

CHECK_NAME = "universe_count"

# partitioned checks are a preview API in the pinned Dagster; the per-partition results are tested
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


def thresholds() -> tuple[int, float]:
    """(minimum count, maximum day-on-day change); docs/collector-rules.md §2.5 safe choices, overridable by env."""
    return settings.get("OBSERVER_UNIVERSE_MIN_COUNT"), settings.get("OBSERVER_UNIVERSE_MAX_CHANGE")


@dataclass(frozen=True)
class CountVerdict:
    """The count rules applied to one day's universe; ``problems`` is empty when it may be published."""

    count: int
    previous_count: int | None
    previous_day: str
    minimum: int
    max_change: float
    change: float
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def metadata(self) -> dict[str, int | float | str]:
        return {
            "count": self.count,
            "minimum": self.minimum,
            "max_change": self.max_change,
            "previous_count": self.previous_count if self.previous_count is not None else -1,
            "previous_trading_day": self.previous_day,
            "change": round(self.change, 4),
        }


def judge(
    count: int,
    previous_count: int | None,
    previous_day: str,
    min_count: int | None = None,
    max_change: float | None = None,
) -> CountVerdict:
    """Count >= the minimum, and within the maximum change of the previous trading day's published universe
    (no previous universe: the change rule does not apply). Pure."""
    env_min, env_change = thresholds()
    min_count = env_min if min_count is None else min_count
    max_change = env_change if max_change is None else max_change
    ratio = rules.change_ratio(count, previous_count) if previous_count is not None else 0.0
    problems = []
    if count < min_count:
        problems.append(f"count {count} < minimum {min_count}")
    if previous_count is not None and ratio > max_change:
        problems.append(
            f"count changed {ratio:.1%} (> {max_change:.0%}) against {previous_day} ({previous_count} -> {count})"
        )
    return CountVerdict(count, previous_count, previous_day, min_count, max_change, ratio, tuple(problems))


universe_count = dg.AssetCheckSpec(
    CHECK_NAME,
    asset="universe",
    blocking=True,
    partitions_def=trading_day_partitions,
    description="Count >= the minimum (1,000; OBSERVER_UNIVERSE_MIN_COUNT) and within 30 % "
    "(OBSERVER_UNIVERSE_MAX_CHANGE) of the previous trading day's published universe. Judged by the universe "
    "asset before it publishes the file: a failing universe is written aside to universe_rejected/date=D/ and "
    "never read (the run fails), unless an operator re-runs it with accept_anyway (then WARN).",
)
