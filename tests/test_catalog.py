"""The catalog tells users what they get: every table asset's spec carries the column schema of the file it writes,
an owner and a path; every materialization the row count and where the data lives. Built from a real day (the local
exchange over loopback, a real instance) and a real Track B journal."""

import json
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from track_b.test_track_b_assets import at, lake_env, scenario  # noqa: F401 - fixtures: a real journal

from local_exchange.accounts import demo_credentials
from observer_assets import catalog
from observer_assets.definitions import defs
from observer_assets.gaps.assets import gap_report
from observer_assets.monitoring.events import system_events
from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_b.assets import track_b_sampled, track_b_ticks
from observer_assets.track_b.journal_sensor import build_journal_sensor
from observer_assets.track_b.restore import track_b_restored
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import events_summary_path as summary_path
from observer_resources.storage.layout import (
    report_path,
    restored_path,
    sampled_path,
    slot_dir,
    ticks_path,
    universe_path,
)

SPECS = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}


def columns(name: str) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in SPECS[name].metadata[catalog.COLUMN_SCHEMA].columns]


def of(schema: pa.Schema) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in schema]


def assert_catalogued(res: dg.ExecuteInProcessResult, name: str, path, rows: int) -> None:
    (mat,) = res.asset_materializations_for_node(name)
    assert mat.metadata[catalog.ROW_COUNT].value == rows, name
    assert mat.metadata[catalog.URI].value == path.resolve().as_uri(), name
    assert SPECS[name].owners == catalog.OWNERS and SPECS[name].metadata["path"], name


def test_a_real_day_is_catalogued(tmp_path, monkeypatch, sim):
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "100")
    key, secret = demo_credentials(91)
    kis = KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(tmp_path / "state")
    )
    root = lake.data_dir()
    now = datetime.now(KST)
    day, slot = now.date(), calendar().slot_at(now)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])
        res = dg.materialize(
            [universe],
            partition_key=day_key(day),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {"min_master_codes": 100, "nxt_status": False}}}},
        )
        uni = pq.read_table(universe_path(root, day))
        assert_catalogued(res, "universe", universe_path(root, day), uni.num_rows)
        assert columns("universe") == of(uni.schema)

        res = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=slot_key(slot),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"track_a_snapshot": {"config": {"live_window_min": 1440}}}},
        )
        snap_path = slot_dir(root, slot) / "snapshot.parquet"
        snap = pq.read_table(snap_path)
        assert_catalogued(res, "track_a_snapshot", snap_path, snap.num_rows)
        assert columns("track_a_snapshot") == of(snap.schema)

        res = dg.materialize([track_b_restored], partition_key=day_key(day), instance=inst, resources={"kis": kis})
        assert_catalogued(res, "track_b_restored", restored_path(root, day), 0)  # no ticks: nothing to restore
        from observer_assets.track_b.restore import RESTORED_SCHEMA

        assert columns("track_b_restored") == of(RESTORED_SCHEMA)

        res = dg.materialize([gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst)
        rep = pq.read_table(report_path(root, day))
        assert_catalogued(res, "gap_report", report_path(root, day), rep.num_rows)
        assert columns("gap_report") == of(rep.schema)

        res = dg.materialize([system_events], partition_key=day_key(day), instance=inst)
        assert_catalogued(res, "system_events", summary_path(root, day), 1)  # one summary document per day
        doc = json.loads(summary_path(root, day).read_text(encoding="utf-8"))
        assert [n for n, _ in columns("system_events")] == list(doc)


def test_track_b_tables_and_the_journal_are_catalogued(scenario, lake_env):  # noqa: F811 - fixtures
    hour = "2026-03-10T10"
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("track_b_hour", [hour])
        res = dg.materialize([track_b_ticks, track_b_sampled], partition_key=hour, instance=inst)
        ticks, sampled = pq.read_table(ticks_path(lake_env, at(10))), pq.read_table(sampled_path(lake_env, at(10)))
        assert_catalogued(res, "track_b_ticks", ticks_path(lake_env, at(10)), ticks.num_rows)
        assert_catalogued(res, "track_b_sampled", sampled_path(lake_env, at(10)), sampled.num_rows)
        assert columns("track_b_ticks") == of(ticks.schema) and columns("track_b_sampled") == of(sampled.schema)

        # the journal: an external asset, observed by its sensor (data version = the day's segment fingerprint)
        assert columns("track_b_journal") and SPECS["track_b_journal"].owners == catalog.OWNERS
        sensor = build_journal_sensor(lambda: at(12, 5))
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=inst))
        (obs,) = first.asset_events
        assert obs.asset_key == dg.AssetKey("track_b_journal") and obs.metadata["segments"].value == 2
        assert obs.metadata["hours"].value == ["10", "11"] and obs.tags["dagster/data_version"]
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=first.cursor))
        assert not again.asset_events and "unchanged" in again.skip_message
        empty = build_journal_sensor(lambda: at(12, 5).replace(day=11)).evaluate_tick(
            dg.build_sensor_context(instance=inst)
        )
        assert not empty.asset_events and "no Track B journal for 2026-03-11" in empty.skip_message


def test_column_descriptions_must_name_real_columns():
    with pytest.raises(ValueError, match="columns the schema does not have"):
        catalog.table_schema(pa.schema([("code", pa.string())]), {"cdoe": "typo"})
