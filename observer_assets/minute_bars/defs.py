"""KIS's minute bars of the whole universe, fetched after the day: this domain's definitions."""

import dagster as dg

from observer_assets.minute_bars.assets import minute_bars
from observer_assets.minute_bars.schedules import minute_bars_after_the_day, minute_bars_job

defs = dg.Definitions(assets=[minute_bars], jobs=[minute_bars_job], schedules=[minute_bars_after_the_day])
