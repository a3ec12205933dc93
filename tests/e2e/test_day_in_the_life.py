"""A day in the life: one trading day of the local exchange, driven only by Observer's schedules and sensors.

The day runs in its own process (``day_in_the_life.py``) on a fresh SQLite instance and lake, the exchange and
every Observer process on one simulated clock. Faults are injected as they happen in production — a slot whose
REST calls all fail, the daemon down for 20 minutes, the WebSocket dropped and refused — and no test code calls an
asset. The assertions read what an operator reads in the UI the next morning: the runs and who launched them, the
partitions, the checks, the gap report, the backup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from local_exchange.server import run_sim_process
from observer_resources.calendar import KST
from observer_resources.clock import write_sim
from observer_resources.storage.layout import events_summary_path, verdict_path

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 26)  # a Thursday: a normal KRX day, 09:00-15:30
SCRIPT = Path(__file__).with_name("day_in_the_life.py")

# its own timeout: the day shares two cores with the other end-to-end runs, which can double its time
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def play_the_day(base: Path) -> dict:
    home, data, backup, out = (base / n for n in ("home", "data", "backup", "out"))
    for p in (home, data, backup, out):
        p.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")  # the embedded profile `make run` installs
    clock_file = base / "clock.json"
    start = datetime.combine(DAY, time(4, 50), KST)
    write_sim(clock_file, start)
    sim = run_sim_process(
        "--mode",
        "real",
        "--clock",
        "krx",
        "--speed",
        "0",
        "--start",
        start.isoformat(),
        "--seed",
        "5",
        "--listings",
        "300",
        # A tenth of KRX's activity: the day checks the automation, not the capture's throughput (bench/). Measured
        # alone, its session took 390 s at full activity (416 s in all), 145 s at 0.25 (163-187 s) and 135 s at 0.1
        # (151 s): the rest is the runs themselves. Beside the other end-to-end tests on two cores it takes about
        # twice as long.
        "--activity",
        "0.1",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        OBSERVER_DATA_DIR=str(data),
        OBSERVER_BACKUP_URL=str(backup),
        OBSERVER_CLOCK_FILE=str(clock_file),
        KIS_REST_URL=sim.rest_url,
        KIS_WS_URL=sim.ws_url,
        OBSERVER_UNIVERSE_MIN_COUNT="50",
        OBSERVER_UNIVERSE_MIN_MASTER_CODES="100",
        OBSERVER_METRICS_DIR=str(base / "metrics"),
        PYTHONUNBUFFERED="1",
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--day", DAY.isoformat(), "--admin", sim.rest_url, "--out", str(out)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=570,
        )
    finally:
        sim.stop()
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    instance = dg.DagsterInstance.from_config(str(home))
    return {"summary": summary, "instance": instance, "data": data, "backup": backup, "out": out}


def runs(inst: dg.DagsterInstance, **flt) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in inst.get_run_records(dg.RunsFilter(**flt))]


def launched_by(run: dg.DagsterRun) -> str:
    return run.tags.get("dagster/schedule_name") or run.tags.get("dagster/sensor_name") or "a person"


def check_every_run_was_launched_by_the_automation_and_none_failed(day):
    inst = day["instance"]
    everything = runs(inst)
    assert len(everything) > 100
    assert {launched_by(r) for r in everything} >= {
        "universe_before_open",
        "track_a_every_10_minutes",
        "gap_report_through_the_day",
        "system_events_daily",
        "backup_daily",
        "retention_daily",
        "track_b_capture_sensor",
        "track_b_compaction_sensor",
        "gap_backfill_sensor",
        "track_b_restore_sensor",
        "gap_report_after_repair",
        "track_a_freshness_sensor",
    }
    assert "a person" not in {launched_by(r) for r in everything}
    failed = [
        (r.job_name, r.tags.get("dagster/partition"), r.run_id[:8])
        for r in everything
        if r.status != dg.DagsterRunStatus.SUCCESS
    ]
    assert not failed, failed
    assert not day["summary"]["threads_alive"]


def check_every_slot_of_the_day_is_a_partition_in_time_order_and_materialized(day):
    inst = day["instance"]
    keys = [f"{DAY.isoformat()}T{h:02d}{m:02d}" for h in range(9, 16) for m in range(0, 60, 10) if (h, m) <= (15, 30)]
    registered = [k for k in inst.get_dynamic_partitions("track_a_slot") if k.startswith(DAY.isoformat())]
    assert registered == keys  # 40, none in the future, in time order
    done = inst.get_materialized_partitions(dg.AssetKey("track_a_snapshot"))
    assert set(keys) <= done
    assert DAY.isoformat() in inst.get_materialized_partitions(dg.AssetKey("universe"))
    assert DAY.isoformat() in inst.get_materialized_partitions(dg.AssetKey("gap_report"))


def check_the_lost_slots_were_backfilled_by_the_gap_sensor_with_no_operator(day):
    inst = day["instance"]
    d = DAY.isoformat()
    backfills = runs(inst, tags={"dagster/sensor_name": "gap_backfill_sensor"})
    # 10:20: every REST call failed; 11:10: the daemon was down and its scheduler relaunched only 11:20
    assert sorted(r.tags["dagster/partition"] for r in backfills) == [f"{d}T1020", f"{d}T1110"]
    assert all(r.tags["observer/kind"] == "backfill" and r.tags["observer/kis"] == "rest" for r in backfills)
    scheduled = [
        r.tags.get("dagster/partition") for r in runs(inst, tags={"dagster/schedule_name": "track_a_every_10_minutes"})
    ]
    assert f"{d}T1120" in scheduled and f"{d}T1110" not in scheduled


def check_the_final_gap_report_shows_every_loss_restored(day):
    gaps = day["data"] / "gaps" / f"date={DAY.isoformat()}"
    report = pq.read_table(gaps / "gap_report.parquet").to_pylist()
    losses = [r for r in report if r["status"] != "info"]
    by_kind = {}
    for r in losses:
        by_kind.setdefault(r["kind"], []).append(r)
    slots = {r["slot_ts"].strftime("%H%M"): r for r in by_kind.get("track_a_missing_slot", [])}
    assert set(slots) == {"1020", "1110"}
    assert all(
        r["status"] == "restored" and r["restored_from"] == "inquire-time-itemchartprice" for r in slots.values()
    )
    drop = by_kind.get("ws_disconnect", [])
    assert len(drop) == 1 and drop[0]["start"] == datetime.combine(DAY, time(13, 0), KST)
    assert drop[0]["data_lost"] and drop[0]["missing_volume"] > 0
    assert drop[0]["status"] == "restored" and drop[0]["restored_from"] == "inquire-time-itemconclusion"
    still_open = [(r["kind"], r["symbol"], r["start"]) for r in losses if r["status"] == "open"]
    assert not still_open, still_open
    verdict = json.loads(verdict_path(day["data"], DAY).read_text())
    # the final report (20:40), or a later one a repair asked for
    assert datetime.fromisoformat(verdict["as_of"]) >= datetime.combine(DAY, time(20, 40), KST)
    assert verdict["measured"]["reconnects"] >= 1


def check_track_b_was_captured_compacted_and_restored(day):
    inst = day["instance"]
    capture = runs(inst, job_name="track_b_capture_job")
    assert len(capture) == 1  # one run for the whole window, never a duplicate
    hours = inst.get_materialized_partitions(dg.AssetKey("track_b_ticks"))
    assert {f"{DAY.isoformat()}T{h:02d}" for h in range(9, 15)} <= hours
    restored = pq.read_table(day["data"] / "track_b_restored" / f"date={DAY.isoformat()}" / "restored.parquet")
    assert restored.num_rows > 0 and set(restored["source"].to_pylist()) == {"restored"}
    repairs = runs(inst, tags={"dagster/sensor_name": "gap_report_after_repair"})
    assert len(repairs) >= 2  # after the Track A backfill and after the Track B restore


def check_the_evening_events_backup_and_retention(day):
    inst = day["instance"]
    assert events_summary_path(day["data"], DAY).is_file()
    pkg = day["backup"] / DAY.isoformat()
    assert (pkg / "SUCCESS.marker").is_file()
    backup_runs = runs(inst, job_name="backup_job")
    assert backup_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in backup_runs)
    retention = runs(inst, job_name="retention_job")
    assert len(retention) == 1 and retention[0].status == dg.DagsterRunStatus.SUCCESS
    assert (day["data"] / "track_b" / f"date={DAY.isoformat()}").is_dir()  # today's data is kept


def check_checks_were_evaluated_per_partition_and_the_current_slot_was_always_fresh(day):
    inst = day["instance"]
    history = inst.event_log_storage.get_asset_check_execution_history
    schema = history(dg.AssetCheckKey(dg.AssetKey("track_a_snapshot"), "track_a_schema"), limit=500)
    assert {r.partition for r in schema} >= {f"{DAY.isoformat()}T0900", f"{DAY.isoformat()}T1530"}
    fresh = history(dg.AssetCheckKey(dg.AssetKey("track_a_snapshot"), "track_a_current_slot_fresh"), limit=500)
    assert len(fresh) >= 30  # every 5 simulated minutes while the daemon ran
    verdicts = [r.event.dagster_event.asset_check_evaluation_data for r in fresh if r.event]
    assert verdicts and all(v.passed for v in verdicts), [v.description for v in verdicts if not v.passed]


def check_the_lake_reads_in_every_tool_and_the_docs_recipes_run(day):
    """The lake the automation wrote, read as docs/data.md says, with no Observer code: every dataset in the four
    tools (same rows, the documented key types), the documented filters, and every recipe."""
    import lake_reading as rd

    root, d = day["data"], DAY.isoformat()
    with rd.as_data(root, day["out"]):
        found = rd.datasets(root)
        assert {"universe", "track_a", "track_a_daily", "track_b", "gaps", "gap_coverage", "gap_verdict"} <= set(found)
        for ds in found:
            got = rd.read_all(ds)
            assert len({n for n, _ in got.values()}) == 1, (ds, got)
            for tool, (_, types) in got.items():
                assert types == {k: rd.KEY_TYPES[tool][k] for k in types}, (ds, tool, types)
            counts = rd.filtered_counts(ds, d, "T1000" if ds in ("track_a", "track_a_failures") else None)
            assert len(set(counts.values())) == 1, (ds, counts)
        ticks = pq.read_table(root / "track_b", columns=["code", "qty"], partitioning=None)
        per_code = (
            ticks.group_by("code").aggregate([("qty", "sum"), ("qty", "count")]).sort_by([("qty_count", "descending")])
        )
        code, qty, n = (per_code[c][0].as_py() for c in ("code", "qty_sum", "qty_count"))  # the busiest streamed code
        results = {name: rd.run_recipe(src, d, code, "T1000") for name, src in rd.recipes().items()}
    assert set(results) == {"path", "top_value", "bars", "join", "gaps"}
    assert len(results["path"]) >= 30 and results["path"]["slot_ts"].is_monotonic_increasing
    assert 0 < len(results["top_value"]) <= 10
    bars = results["bars"]
    assert (int(bars["volume"].sum()), int(bars["trades"].sum())) == (qty, n) and (bars["high"] >= bars["low"]).all()
    assert len(results["join"]) > 0 and len(results["gaps"]) >= 30


CHECKS = [v for k, v in dict(globals()).items() if k.startswith("check_")]


def test_a_day_in_the_life(tmp_path):
    """One played day, every check read from it; all failing checks are reported, not only the first (the day costs
    three minutes, and xdist would play it once per worker if each check were its own test)."""
    day = play_the_day(tmp_path)
    failures = []
    try:
        for check in CHECKS:
            try:
                check(day)
            except AssertionError as e:
                failures.append(f"{check.__name__}: {e}")
    finally:
        day["instance"].dispose()
    assert not failures, "\n\n".join(failures)
