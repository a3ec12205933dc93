"""The whole Definitions load, and the names users and stored data depend on are pinned.

Renaming an asset, a check, a job, a schedule, a sensor or a partitions definition orphans its history in the
instance and the lake: such a change must be deliberate, and this test makes it so.
"""

import dagster as dg

from observer_assets.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_are_pinned():
    keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == [
        "daily_backup",
        "daily_bars",
        "gap_report",
        "minute_bars",
        "system_events",
        "track_a_daily",
        "track_a_snapshot",
        "track_b_journal",
        "track_b_restored",
        "track_b_sampled",
        "track_b_ticks",
        "universe",
    ]


def test_partitions_are_pinned():
    graph = defs.resolve_asset_graph()
    parts = {k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()}
    assert isinstance(parts["universe"], dg.DynamicPartitionsDefinition) and parts["universe"].name == "trading_day"
    assert isinstance(parts["track_a_snapshot"], dg.DynamicPartitionsDefinition)
    assert parts["track_a_snapshot"].name == "track_a_slot"
    for k in ("gap_report", "track_b_restored", "daily_backup", "system_events", "track_a_daily", "minute_bars"):
        assert isinstance(parts[k], dg.DynamicPartitionsDefinition) and parts[k].name == "trading_day"
    for k in ("track_b_ticks", "track_b_sampled"):
        assert isinstance(parts[k], dg.DynamicPartitionsDefinition) and parts[k].name == "track_b_hour"
    assert isinstance(parts["daily_bars"], dg.DynamicPartitionsDefinition) and parts["daily_bars"].name == "bar_year"


def test_checks_jobs_schedules_sensors_are_pinned():
    graph = defs.resolve_asset_graph()
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    assert checks == [
        "daily_bars:daily_bars_consistent",
        "gap_report:track_b_proven",
        "track_a_snapshot:track_a_coverage",
        "track_a_snapshot:track_a_current_slot_fresh",
        "track_a_snapshot:track_a_schema",
        "track_b_ticks:track_b_losses_are_explained",
        "track_b_ticks:track_b_phases_agree",
        "track_b_ticks:track_b_record_rate",
        "universe:universe_count",
    ]
    repo = defs.get_repository_def()
    assert sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")) == [
        "backup_job",
        "daily_bars_job",
        "gap_report_job",
        "minute_bars_job",
        "restore_job",
        "retention_job",
        "system_events_job",
        "track_a_daily_job",
        "track_a_freshness_job",
        "track_a_job",
        "track_b_capture_job",
        "track_b_compaction_job",
        "track_b_restore_job",
        "universe_job",
        "verify_backups_job",
    ]
    assert sorted(s.name for s in repo.schedule_defs) == [
        "backup_daily",
        "daily_bars_after_close",
        "gap_report_through_the_day",
        "minute_bars_after_the_day",
        "retention_daily",
        "system_events_daily",
        "track_a_every_10_minutes",
        "universe_before_open",
        "verify_backups_weekly",
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "backup_catch_up",
        "daily_bars_years",
        "gap_backfill_sensor",
        "gap_report_after_repair",
        "observer_check_failure_alerts",
        "observer_run_failure_alerts",
        "partition_registrar",
        "pool_limits",
        "track_a_catch_up",
        "track_a_daily_sensor",
        "track_a_freshness_sensor",
        "track_b_capture_sensor",
        "track_b_compaction_sensor",
        "track_b_journal_sensor",
        "track_b_restore_sensor",
        "universe_catch_up",
    ]
    for s in repo.schedule_defs:
        assert s.execution_timezone == "Asia/Seoul"
        assert s.default_status == dg.DefaultScheduleStatus.RUNNING


def test_every_asset_has_description_group_and_kinds():
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, spec.key
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.kinds, spec.key


def test_the_module_exposes_exactly_one_definitions_object():
    """`dagster dev -m observer_assets.definitions` refuses a module with several Definitions at module scope."""
    import observer_assets.definitions as module

    assert [n for n, v in vars(module).items() if isinstance(v, dg.Definitions)] == ["defs"]


def test_track_a_freshness_is_a_calendar_aware_check_evaluated_by_a_sensor():
    """No cron FreshnessPolicy (it cannot read the KRX calendar); the judge is a check run by a 5-minute sensor.
    Its behaviour is tested in tests/monitoring/test_freshness.py."""
    graph = defs.resolve_asset_graph()
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == "track_a_snapshot")
    assert spec.freshness_policy is None
    key = dg.AssetCheckKey(dg.AssetKey("track_a_snapshot"), "track_a_current_slot_fresh")
    assert key in graph.asset_check_keys
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("track_a_freshness_sensor")
    assert sensor.minimum_interval_seconds == 300 and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == "track_a_freshness_job"
    job = repo.get_job("track_a_freshness_job")
    assert job.asset_layer.asset_graph.asset_check_keys >= {key}
    assert not job.asset_layer.selected_asset_keys  # the check only: the job never materializes Track A


def test_checks_of_partitioned_assets_report_per_partition():
    """Every check of a partitioned asset is partitioned like it, except the freshness judge (it judges "now")."""
    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:
        check = graph.get(key)
        asset_parts = graph.get(key.asset_key).partitions_def
        if key.name == "track_a_current_slot_fresh":
            assert check.partitions_def is None
        else:
            assert check.partitions_def == asset_parts, key


TABLE_ASSETS = (
    "universe",
    "track_a_snapshot",
    "track_a_daily",
    "track_b_ticks",
    "track_b_sampled",
    "track_b_restored",
    "gap_report",
    "system_events",
    "track_b_journal",
)


def test_the_catalog_says_what_each_table_holds_and_who_owns_it():
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    for name in TABLE_ASSETS:
        spec = specs[name]
        schema = spec.metadata.get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema) and schema.columns, name
        assert spec.owners == ["team:observer"], name
        assert spec.metadata.get("path"), name
    assert specs["daily_backup"].owners == ["team:observer"]
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("track_b_ticks")).parent_keys == {dg.AssetKey("track_b_journal")}
    assert not graph.get(dg.AssetKey("track_b_journal")).is_materializable  # only the capture writes it
