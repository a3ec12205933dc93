"""Materialize one daily_bars year in this process with one symbol a part (the kill -9 test runs it as a child and
kills it once parts exist)."""

import sys

import dagster as dg

from observer_assets.daily_bars.assets import daily_bars
from observer_resources.resources import KisResource

year, rest, ws, app_key, app_secret, state = sys.argv[1:7]
kis = KisResource(app_key=app_key, app_secret=app_secret, rest_url=rest, ws_url=ws, state_dir=state)
with dg.instance_for_test() as inst:
    inst.add_dynamic_partitions("bar_year", [year])
    res = dg.materialize(
        [daily_bars],
        partition_key=year,
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"daily_bars": {"config": {"chunk": 1, "concurrency": 1}}}},
    )
    sys.exit(0 if res.success else 1)
