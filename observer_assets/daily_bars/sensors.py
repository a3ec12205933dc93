"""Every year of daily history exists as a ``bar_year`` partition, from OBSERVER_DAILY_BARS_FROM_YEAR through the
current one: the UI's backfill dialog picks from them, and the new year appears on 1 January by itself."""

import dagster as dg

from observer_assets.daily_bars import bars
from observer_assets.daily_bars.assets import FROM_YEAR_ENV, bar_year_partitions, first_year
from observer_resources import clock, settings


def now():  # noqa: ANN201 - a module function, so a test can drive the date
    return clock.now()


@dg.sensor(
    name="daily_bars_years",
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every year from OBSERVER_DAILY_BARS_FROM_YEAR through the current one as a bar_year "
    "partition of daily_bars (in order), so years can be backfilled from the UI.",
)
def daily_bars_years(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    try:
        want = bars.year_keys(first_year(), now().date())
    except (settings.SettingsError, dg.Failure) as e:
        return dg.SkipReason(f"years not registered: {e}")
    if not want:  # the history starts after this year: nothing to register yet
        return dg.SkipReason(f"the daily history starts in {first_year()} ({FROM_YEAR_ENV}): no year yet")
    name = bar_year_partitions.name
    have = set(context.instance.get_dynamic_partitions(name))
    missing = [k for k in want if k not in have]
    if missing and have and min(missing) < max(have):
        # an older year added later (the first year moved back): re-add the later keys so the keys stay in time
        # order (Dagster lists dynamic keys by insertion; materializations are kept by key, so nothing is lost)
        later = sorted(k for k in have if k > min(missing))
        for k in later:
            context.instance.delete_dynamic_partition(name, k)
        missing = sorted(set(missing) | set(later))
    if missing:
        context.instance.add_dynamic_partitions(name, missing)
        context.log.info(f"bar_year partitions added: {missing}")
        return dg.SkipReason(f"added {missing}")
    return dg.SkipReason(f"every year {want[0]}..{want[-1]} is a partition")
