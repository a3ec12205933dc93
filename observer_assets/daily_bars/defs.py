"""Daily history (raw and adjusted daily bars per year): this domain's Dagster definitions."""

import dagster as dg

from observer_assets.daily_bars.assets import daily_bars
from observer_assets.daily_bars.checks import daily_bars_consistent
from observer_assets.daily_bars.schedules import daily_bars_after_close, daily_bars_job
from observer_assets.daily_bars.sensors import daily_bars_years

defs = dg.Definitions(
    assets=[daily_bars],
    asset_checks=[daily_bars_consistent],
    jobs=[daily_bars_job],
    schedules=[daily_bars_after_close],
    sensors=[daily_bars_years],
)
