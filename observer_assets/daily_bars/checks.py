"""The year's table is judged after it is written: unique (code, day), and raw = adjusted x one factor per span
between corporate actions (bars.problems). The corporate actions it shows are listed in the result."""

import warnings

import dagster as dg

from observer_assets.daily_bars import bars
from observer_assets.daily_bars.assets import bar_year_partitions
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_bars_path

warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)


@dg.asset_check(
    asset=dg.AssetKey("daily_bars"),
    partitions_def=bar_year_partitions,
    description="One row per (code, day); raw = adjusted x one factor per span between corporate actions; high/low "
    "bound open/close. Lists the corporate actions the year shows (a step in raw/adjusted).",
)
def daily_bars_consistent(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    if not context.has_partition_key:
        return dg.AssetCheckResult(passed=False, metadata={"error": "run has no partition"})
    key = context.partition_key
    if not (len(key) == 4 and key.isdigit()):
        return dg.AssetCheckResult(passed=False, description=f"bar_year key {key!r} must be a year, YYYY")
    path = daily_bars_path(lake.data_dir(), int(key))
    if not path.exists():
        return dg.AssetCheckResult(passed=False, description=f"{path} is missing")
    t = lake.read_table(path)
    found = bars.problems(t)
    events = bars.events_in(t)
    return dg.AssetCheckResult(
        passed=not found,
        description=f"{len(found)} problems" if found else f"consistent; {len(events)} corporate actions",
        metadata={
            "rows": t.num_rows,
            "problems": dg.MetadataValue.json(found[:20]),
            "corporate_actions": dg.MetadataValue.json([{**e, "ex_date": str(e["ex_date"])} for e in events[:50]]),
        },
    )
