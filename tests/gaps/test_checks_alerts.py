"""Checks on real files through real Dagster runs, and alerts posted to a real local HTTP server."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa

from observer_assets.gaps import checks
from observer_assets.monitoring import alerts, sensors
from observer_assets.orchestration.partitions import slot_key, track_a_slot_partitions
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA
from observer_assets.track_b.compaction import TICK_SCHEMA
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import slot_dir, ticks_path, universe_path

DAY = datetime(2026, 11, 26, tzinfo=KST).date()  # a Thursday; the open calendar makes any day a session
SLOT = datetime(2026, 11, 26, 10, 20, tzinfo=KST)
CODES = [f"{i:06d}" for i in range(10, 410, 10)]  # 40 symbols


def write_universe(codes=CODES):
    n = len(codes)
    lake.write_table_atomic(
        universe_path(lake.data_dir(), DAY),
        pa.table({"code": codes, "name": [f"N{c}" for c in codes], "prev_close": pa.array([5000] * n, pa.int64())}),
    )


def snapshot(codes, slot=SLOT, source="live") -> pa.Table:
    n = len(codes)
    cols = {f.name: pa.nulls(n, f.type) for f in SNAPSHOT_SCHEMA}
    cols.update(
        slot_ts=pa.array([slot] * n, SNAPSHOT_SCHEMA.field("slot_ts").type),
        code=pa.array(codes),
        price=pa.array([5100] * n, pa.int64()),
        volume=pa.array([10] * n, pa.int64()),
        source=pa.array([source] * n),
        tr_id=pa.array(["FHKST11300006"] * n),
        restored_from=pa.array(["inquire-time-itemchartprice" if source == "restored" else None] * n),
        fetched_at=pa.array([slot + timedelta(seconds=3)] * n, SNAPSHOT_SCHEMA.field("fetched_at").type),
    )
    return pa.table(cols, schema=SNAPSHOT_SCHEMA)


def run_track_a_checks(inst, key=slot_key(SLOT)) -> dict[str, dg.AssetCheckEvaluation]:
    """Only the checks, in a real run of the partition (the data on disk is what they judge)."""
    inst.add_dynamic_partitions(track_a_slot_partitions.name, [key])
    # A checks-only selection has no partitions definition: the partition travels as the run tag the checks read
    # (in scheduled and backfill runs the checks run with the asset, in the partitioned run itself).
    res = dg.materialize(
        [track_a_snapshot, universe, *checks.TRACK_A_CHECKS],
        tags={"dagster/partition": key},
        instance=inst,
        selection=dg.AssetSelection.checks(*checks.TRACK_A_CHECKS),
        raise_on_error=False,
        resources={"kis": dg.ResourceDefinition.none_resource()},
    )  # checks never call KIS
    return {e.check_name: e for e in res.get_asset_check_evaluations()}


def test_track_a_checks_pass_on_clean_and_fail_on_bad_data(env):
    write_universe()
    path = slot_dir(lake.data_dir(), SLOT) / "snapshot.parquet"
    with dg.instance_for_test() as inst:
        # clean: 38 live + 2 restored rows = 100 %
        lake.write_table_atomic(
            path, pa.concat_tables([snapshot(CODES[:38]), snapshot(CODES[38:], source="restored")]).sort_by("code")
        )
        ev = run_track_a_checks(inst)
        assert ev["track_a_coverage"].passed and ev["track_a_coverage"].metadata["coverage_pct"].value == 100.0
        assert ev["track_a_coverage"].metadata["restored_rows"].value == 2
        assert ev["track_a_schema"].passed

        # 90 % coverage
        lake.write_table_atomic(path, snapshot(CODES[:36]))
        ev = run_track_a_checks(inst)
        cov = ev["track_a_coverage"]
        assert not cov.passed and cov.metadata["coverage_pct"].value == 90.0 and cov.metadata["missing"].value == 4
        assert "90.0 % < 99.5 %" in cov.description
        assert ev["track_a_schema"].passed

        # 99.5 % is the floor: 199 of 200 passes, 198 of 200 fails (pure rule)
        many = [f"{i:06d}" for i in range(200)]
        assert checks.coverage(many[:199], many)["coverage_pct"] == 99.5
        assert checks.coverage(many[:198], many)["coverage_pct"] < 99.5

        # wrong column type (price as float) and an unknown source value
        bad = snapshot(CODES)
        bad = bad.set_column(bad.schema.get_field_index("price"), "price", pa.array([5100.5] * 40, pa.float64()))
        lake.write_table_atomic(path, bad)
        ev = run_track_a_checks(inst)
        sch = ev["track_a_schema"]
        assert not sch.passed and "column price is double, expected int64" in sch.description
        assert ev["track_a_coverage"].passed
        wrong_src = snapshot(CODES)
        wrong_src = wrong_src.set_column(wrong_src.schema.get_field_index("source"), "source", pa.array(["guess"] * 40))
        lake.write_table_atomic(path, wrong_src)
        assert "source values ['guess']" in run_track_a_checks(inst)["track_a_schema"].description

        # a snapshot that does not exist fails, clearly
        ev = run_track_a_checks(inst, slot_key(SLOT + timedelta(minutes=10)))
        assert not ev["track_a_coverage"].passed and not ev["track_a_schema"].passed


def test_track_b_record_rate(env):
    hour = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
    rows = []
    # minute 10:00: 40 ticks, 0 lost; minute 10:01: 40 ticks, 2 breaks (2 trades lost -> 95.2 %)
    for m, breaks in ((0, set()), (1, {10, 20})):
        for i in range(40):
            ts = hour + timedelta(minutes=m, seconds=i)
            rows.append(
                {
                    "code": "000010",
                    "exchange_ts": ts,
                    "receive_ts": ts,
                    "qty": 1,
                    "acml_vol": m * 100 + i,
                    "missing_volume": 3 if i in breaks else 0,
                    "quality_flag": "ok",
                }
            )
    t = pa.Table.from_pylist(rows, schema=pa.schema([TICK_SCHEMA.field(n) for n in rows[0]]))
    rates = checks.minute_record_rates(t)
    assert [(r["recorded"], r["lost"], r["rate_pct"]) for r in rates] == [(40, 0, 100.0), (40, 2, 95.238)]
    path = ticks_path(lake.data_dir(), hour)
    lake.write_table_atomic(path, t)
    from observer_assets.track_b.assets import track_b_ticks

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("track_b_hour", ["2026-11-26T10"])
        res = dg.materialize(
            [track_b_ticks, *checks.TRACK_B_CHECKS],
            tags={"dagster/partition": "2026-11-26T10"},
            instance=inst,
            selection=dg.AssetSelection.checks(*checks.TRACK_B_CHECKS),
            raise_on_error=False,
        )
        (ev,) = res.get_asset_check_evaluations()
        assert not ev.passed and ev.metadata["minutes_below"].value == 1 and ev.metadata["worst_pct"].value == 95.238
        # a clean hour passes
        lake.write_table_atomic(
            path,
            t.set_column(
                t.schema.get_field_index("missing_volume"), "missing_volume", pa.array([0] * t.num_rows, pa.int64())
            ),
        )
        res = dg.materialize(
            [track_b_ticks, *checks.TRACK_B_CHECKS],
            tags={"dagster/partition": "2026-11-26T10"},
            instance=inst,
            selection=dg.AssetSelection.checks(*checks.TRACK_B_CHECKS),
            raise_on_error=False,
        )
        assert res.get_asset_check_evaluations()[0].passed


def _failed_run(inst):
    """A real failed run: a partition key that is not a slot."""
    inst.add_dynamic_partitions(track_a_slot_partitions.name, ["2026-11-26T1025"])
    res = dg.materialize(
        [track_a_snapshot, universe],
        selection=[track_a_snapshot],
        partition_key="2026-11-26T1025",
        instance=inst,
        raise_on_error=False,
        resources={"kis": dg.ResourceDefinition.none_resource()},
    )
    assert not res.success
    run = inst.get_run_by_id(res.run_id)
    (rec,) = inst.get_records_for_run(res.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return run, rec.event_log_entry.dagster_event


def test_alerts_post_on_failed_run_and_failed_check(env, webhook, monkeypatch, caplog):
    url, got = webhook.url, webhook
    monkeypatch.setenv(alerts.CHAT_ID_ENV, "-100123")
    monkeypatch.setenv("KIS_APP_SECRET", "S3cr3tValueNeverSent")
    write_universe()
    with dg.instance_for_test() as inst, caplog.at_level(logging.ERROR, logger="observer.alerts"):
        # failed run -> the run_failure_sensor posts
        run, event = _failed_run(inst)
        ctx = dg.build_run_status_sensor_context(
            sensor_name=sensors.run_failure_alerts.name, dagster_event=event, dagster_instance=inst, dagster_run=run
        ).for_run_failure()
        sensors.run_failure_alerts(ctx)
        assert len(got) == 1 and got[0]["chat_id"] == "-100123"
        assert got[0]["text"].startswith("[Observer] run FAILED") and "2026-11-26T1025" in got[0]["text"]
        assert run.run_id[:8] in got[0]["text"]

        # failed check -> the check sensor posts once; the baseline tick alerts nothing from history
        def tick(cursor):
            return sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=cursor))

        c0 = tick(None).cursor
        lake.write_table_atomic(slot_dir(lake.data_dir(), SLOT) / "snapshot.parquet", snapshot(CODES[:36]))
        run_track_a_checks(inst)
        c1 = tick(c0).cursor
        assert len(got) == 2
        text = got[1]["text"]
        assert "check FAILED (ERROR): track_a_snapshot / track_a_coverage" in text and slot_key(SLOT) in text
        assert "coverage_pct=90.0" in text
        assert len(tick(c1).run_requests) == 0 and len(got) == 2  # nothing twice

        # a secret in a message never leaves, nor does the webhook URL get logged
        d = alerts.send("token dump S3cr3tValueNeverSent here")
        assert d.posted and "S3cr3tValueNeverSent" not in got[2]["text"] and "***" in got[2]["text"]
        assert all(url not in r.getMessage() for r in caplog.records)
        assert sum("ALERT [Observer]" in r.getMessage() for r in caplog.records) == 2


def test_alerts_only_log_without_webhook(env, webhook, caplog, monkeypatch):
    got = webhook
    monkeypatch.delenv(alerts.WEBHOOK_ENV)
    with dg.instance_for_test() as inst, caplog.at_level(logging.ERROR, logger="observer.alerts"):
        run, event = _failed_run(inst)
        ctx = dg.build_run_status_sensor_context(
            sensor_name=sensors.run_failure_alerts.name, dagster_event=event, dagster_instance=inst, dagster_run=run
        ).for_run_failure()
        sensors.run_failure_alerts(ctx)
    assert got == []
    assert any(r.getMessage().startswith("ALERT [Observer] run FAILED") for r in caplog.records)


def test_a_dead_webhook_is_logged_not_raised(env, caplog, monkeypatch):
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "http://127.0.0.1:9/hook")
    with caplog.at_level(logging.ERROR, logger="observer.alerts"):
        d = alerts.send("[Observer] test")
    assert not d.posted and d.error.startswith("webhook post failed")
    assert any("alert not delivered" in r.getMessage() for r in caplog.records)
    assert all("127.0.0.1:9" not in r.getMessage() for r in caplog.records)
