"""Check results belong to the partition they judged: two partitions materialized with their checks in real runs,
and the instance's check records (what the UI's per-partition view and the alert sensor read) carry each one."""

import logging
from datetime import timedelta

import dagster as dg
import pyarrow as pa
from track_b.test_track_b_assets import lake_env, scenario  # noqa: F401 - fixtures: a real journal of two hours

from gaps.test_checks_alerts import CODES, SLOT, snapshot, write_universe
from local_exchange.accounts import demo_credentials
from observer_assets.gaps import checks
from observer_assets.monitoring import alerts, sensors
from observer_assets.orchestration.partitions import slot_key
from observer_assets.orchestration.runs import BACKFILL_TAGS
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_b.assets import track_b_sampled, track_b_ticks
from observer_assets.track_b.checks import track_b_losses_are_explained
from observer_assets.universe.assets import universe
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import slot_dir


def history(inst: dg.DagsterInstance, key: dg.AssetCheckKey) -> dict[str, str]:
    """{partition: status} of every recorded evaluation of a check."""
    return {
        r.partition: r.status.value for r in inst.event_log_storage.get_asset_check_execution_history(key, limit=50)
    }


def test_track_a_check_results_carry_their_slot(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    for k in (alerts.WEBHOOK_ENV, alerts.CHAT_ID_ENV):
        monkeypatch.delenv(k, raising=False)
    write_universe()
    good, bad = SLOT, SLOT + timedelta(minutes=10)
    lake.write_table_atomic(slot_dir(lake.data_dir(), good) / "snapshot.parquet", snapshot(CODES, slot=good))
    wrong = snapshot(CODES, slot=bad)  # complete, but with a source value the schema check refuses
    wrong = wrong.set_column(wrong.schema.get_field_index("source"), "source", pa.array(["guess"] * len(CODES)))
    lake.write_table_atomic(slot_dir(lake.data_dir(), bad) / "snapshot.parquet", wrong)
    # complete slots ask KIS nothing (the backfill restores only what is missing): a key that reaches no exchange
    key, secret = demo_credentials(81)
    kis = KisResource(
        app_key=key,
        app_secret=secret,
        rest_url="http://127.0.0.1:9",
        ws_url="ws://127.0.0.1:9",
        state_dir=str(tmp_path / "state"),
    )
    with dg.instance_for_test() as inst, caplog.at_level(logging.ERROR, logger="observer.alerts"):
        c0 = sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst)).cursor
        for slot in (good, bad):
            inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])
            res = dg.materialize(
                [track_a_snapshot, universe, *checks.TRACK_A_CHECKS],
                instance=inst,
                selection=dg.AssetSelection.assets(track_a_snapshot),
                partition_key=slot_key(slot),
                tags=BACKFILL_TAGS,
                resources={"kis": kis},
            )
            assert {e.check_name: e.partition for e in res.get_asset_check_evaluations()} == {
                "track_a_coverage": slot_key(slot),
                "track_a_schema": slot_key(slot),
            }
            assert res.asset_materializations_for_node("track_a_snapshot")[0].partition == slot_key(slot)
        cov, sch = (c.check_key for c in checks.TRACK_A_CHECKS)
        assert history(inst, cov) == {slot_key(good): "SUCCEEDED", slot_key(bad): "SUCCEEDED"}
        assert history(inst, sch) == {slot_key(good): "SUCCEEDED", slot_key(bad): "FAILED"}
        # the alert names the partition from the check record itself
        sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=c0))
        (alert,) = [r.getMessage() for r in caplog.records if "check FAILED" in r.getMessage()]
        assert f"track_a_schema, partition {slot_key(bad)}" in alert


def test_track_b_check_results_carry_their_hour(scenario, lake_env):  # noqa: F811 - fixtures
    with dg.instance_for_test() as inst:
        for hour in ("2026-03-10T10", "2026-03-10T11"):
            inst.add_dynamic_partitions("track_b_hour", [hour])
            res = dg.materialize(
                [track_b_ticks, track_b_sampled, track_b_losses_are_explained, *checks.TRACK_B_CHECKS],
                partition_key=hour,
                instance=inst,
            )
            assert {e.partition for e in res.get_asset_check_evaluations()} == {hour}
        losses = track_b_losses_are_explained.check_key
        (rate,) = (c.check_key for c in checks.TRACK_B_CHECKS)
        # hour 10's loss is inside the disconnect's gap marker; hour 11 loses a trade on a live session
        assert history(inst, losses) == {"2026-03-10T10": "SUCCEEDED", "2026-03-10T11": "FAILED"}
        assert set(history(inst, rate)) == {"2026-03-10T10", "2026-03-10T11"}
        # a checks-only run (the UI's "execute check" on a partition) records its partition the same way
        res = dg.materialize(
            [track_b_ticks, track_b_losses_are_explained],
            instance=inst,
            selection=dg.AssetSelection.checks(track_b_losses_are_explained),
            tags={"dagster/partition": "2026-03-10T11"},
        )
        (ev,) = res.get_asset_check_evaluations()
        assert ev.partition == "2026-03-10T11" and not ev.passed
