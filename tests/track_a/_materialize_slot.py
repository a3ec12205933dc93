"""Materialize one Track A slot in this process (the kill -9 test runs it as a child and kills it)."""

import sys

import dagster as dg

from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe.assets import universe
from observer_resources.resources import KisResource

key, rest, ws, app_key, app_secret, state = sys.argv[1:7]
kis = KisResource(app_key=app_key, app_secret=app_secret, rest_url=rest, ws_url=ws, state_dir=state)
with dg.instance_for_test() as inst:
    inst.add_dynamic_partitions("track_a_slot", [key])
    res = dg.materialize(
        [track_a_snapshot, universe],
        selection=[track_a_snapshot],
        partition_key=key,
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"track_a_snapshot": {"config": {"refetch": True, "live_window_min": 1440}}}},
    )
    sys.exit(0 if res.success else 1)
