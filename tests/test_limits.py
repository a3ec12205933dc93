"""Limits that hold for every launch: concurrency pools on whatever uses a shared resource, a run-time budget on every
job, the pool limits written into every instance, and — end to end — a backfill and Materialize runs launched the way
the UI launches them (no tags) held to the kis_rest pool while a live Track A run still gets its slot.

Checked against the real Definitions, the project's dagster.yaml on real instances, the `dagster` CLI, and
`dagster dev` (webserver + daemon) driving real runs against the local exchange over loopback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster._core.instance.ref import InstanceRef
from support import LAUNCH as LAUNCH_BACKFILL  # the UI's own mutation, written once
from support import build_universe, kis_for, start_dagster_dev, stop_dagster_dev

from observer_assets import run_local
from observer_assets.definitions import defs
from observer_assets.orchestration.partitions import calendar, slot_key
from observer_assets.orchestration.runs import (
    BACKUP_POOL,
    COMPACTION_POOL,
    HISTORY_POOL,
    KIS_REST_POOL,
    KIS_REST_TAGS,
    KIS_WS_POOL,
    MAX_RUNTIME_TAG,
    POOL_LIMITS,
    RUN_BUDGET_S,
    ensure_pool_limits,
    pool_limits,
)
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import universe_path

ROOT = Path(__file__).resolve().parent.parent
ROOT_YAML = ROOT / "dagster.yaml"

#: Modules whose ops and assets all use one shared resource (anything new added there joins the pool).
POOL_BY_MODULE = {
    "observer_assets.track_b.capture_job": KIS_WS_POOL,  # the capture: the app keys' WebSocket sessions
    "observer_assets.backup.assets": BACKUP_POOL,  # backup, restore, retention, verification
    "observer_assets.track_b.assets": COMPACTION_POOL,  # journal -> ticks -> sampled
    # history fetches: the kis resource, but their own pool (docs/collector-rules.md §7, "Background priority")
    "observer_assets.minute_bars.assets": HISTORY_POOL,
    "observer_assets.daily_bars.assets": HISTORY_POOL,
}
#: Jobs without their own dagster/max_runtime tag, and why.
NO_BUDGET = {"__ASSET_JOB": "the implicit asset job of UI launches: run_monitoring.max_runtime_seconds applies"}


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "50"}  # the trimmed universe (tests/support.py) is smaller


def all_op_defs() -> dict[str, dg.OpDefinition]:
    """Every op of every job (the implicit asset job holds every asset and check op)."""
    ops: dict[str, dg.OpDefinition] = {}
    for job in defs.get_repository_def().get_all_jobs():
        for op in job.graph.iterate_op_defs():
            ops[op.name] = op
    return ops


def expected_pool(op: dg.OpDefinition) -> str | None:
    """The pool an op must declare: its module's pool, else KIS REST for whatever requires the `kis` resource."""
    fn = getattr(op.compute_fn, "decorated_fn", None)
    pool = POOL_BY_MODULE.get(getattr(fn, "__module__", ""))
    if pool is None and "kis" in op.required_resource_keys:
        return KIS_REST_POOL
    return pool


def project_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT_YAML, home / "dagster.yaml")
    return home


def limits_of(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


# --- declarations -------------------------------------------------------------------------------------------------


def test_every_user_of_a_shared_resource_declares_its_pool_and_nothing_else_does():
    ops = all_op_defs()
    got = {name: op.pool for name, op in ops.items()}
    want = {name: expected_pool(op) for name, op in ops.items()}
    assert got == want
    # the ones this rule must find today (a rule that matches nothing would pass vacuously)
    assert {
        n: got[n]
        for n in (
            "universe",
            "track_a_snapshot",
            "track_b_restored",
            "track_b_capture",
            "daily_backup",
            "restore_day",
            "apply_retention",
            "verify_backups",
            "track_b_ticks",
            "track_b_sampled",
            "minute_bars",
            "daily_bars",
        )
    } == {
        "universe": KIS_REST_POOL,
        "track_a_snapshot": KIS_REST_POOL,
        "track_b_restored": KIS_REST_POOL,
        "track_b_capture": KIS_WS_POOL,
        "daily_backup": BACKUP_POOL,
        "restore_day": BACKUP_POOL,
        "apply_retention": BACKUP_POOL,
        "verify_backups": BACKUP_POOL,
        "track_b_ticks": COMPACTION_POOL,
        "track_b_sampled": COMPACTION_POOL,
        "minute_bars": HISTORY_POOL,
        "daily_bars": HISTORY_POOL,
    }
    # every pool in use has a limit of ours (a misspelt pool would silently get default_limit)
    assert {p for p in got.values() if p} == set(POOL_LIMITS)
    # the asset graph says the same for every executable asset
    for ad in defs.resolve_asset_graph().assets_defs:
        if ad.is_executable and ad.keys:
            assert ad.op.pool == want[ad.op.name], ad.keys


def test_every_job_has_a_run_time_budget_and_the_global_one_fits_the_ui_launches():
    jobs = {j.name: j for j in defs.get_repository_def().get_all_jobs()}
    budgets: dict[str, int] = {}
    for name, job in jobs.items():
        if name in NO_BUDGET:
            assert MAX_RUNTIME_TAG not in job.run_tags
            continue
        assert MAX_RUNTIME_TAG in job.run_tags, f"{name} has no {MAX_RUNTIME_TAG} run tag"
        budgets[name] = int(job.run_tags[MAX_RUNTIME_TAG])  # numeric: anything else would mean no limit at all
        assert budgets[name] > 0
    for name, seconds in RUN_BUDGET_S.items():  # the tags are the budgets of runs.py
        if name in jobs:
            assert budgets[name] == seconds, name
    monitoring = yaml.safe_load(ROOT_YAML.read_text())["run_monitoring"]
    global_s = monitoring["max_runtime_seconds"]
    # The global cap is what a UI launch gets: it fits every non-capture job's work, and the capture overrides it.
    assert max(s for n, s in budgets.items() if n != "track_b_capture_job") <= global_s
    assert budgets["track_b_capture_job"] > global_s
    assert monitoring["enabled"] and monitoring["max_resume_run_attempts"] == 0


def test_the_project_instance_enforces_pools_per_run_and_one_backfill_run_at_a_time(tmp_path):
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project_home(tmp_path)))) as instance:
        cfg = instance.get_concurrency_config()
        assert cfg.pool_config.pool_granularity == PoolGranularity.RUN
        assert cfg.pool_config.default_pool_limit == 1
        limits = cfg.run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/backfill", "limit": 1} in limits
        assert {"key": "observer/kind", "value": "backfill", "limit": 1} in limits
        assert instance.run_monitoring_max_runtime_seconds == 3600


# --- limits written into the instance -------------------------------------------------------------------------------


def test_ensure_pool_limits_fills_gaps_and_never_overrides_an_operator(tmp_path):
    home = project_home(tmp_path)
    # An operator's own limit, set the documented way.
    r = subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "concurrency", "set", KIS_REST_POOL, "5"],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        # A pool Dagster filled from pools.default_limit (what the run queue does on first sight) is no choice.
        instance.event_log_storage.initialize_concurrency_limit_to_default(COMPACTION_POOL)
        assert limits_of(instance)[COMPACTION_POOL] == (1, True)

        assert ensure_pool_limits(instance) == {KIS_WS_POOL: 1, BACKUP_POOL: 1, COMPACTION_POOL: 1, HISTORY_POOL: 1}
        assert limits_of(instance) == {
            KIS_REST_POOL: (5, False),
            KIS_WS_POOL: (1, False),
            BACKUP_POOL: (1, False),
            COMPACTION_POOL: (1, False),
            HISTORY_POOL: (1, False),
        }
        assert ensure_pool_limits(instance) == {}  # idempotent


def test_the_sensor_writes_the_limits_into_a_fresh_instance(tmp_path):
    """What Docker and Helm deployments rely on: the pool_limits sensor's tick sets every limit."""
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(project_home(tmp_path)))) as instance:
        assert limits_of(instance) == {}
        result = pool_limits.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert "pool limits set" in (result.skip_message or "")
        assert limits_of(instance) == {p: (n, False) for p, n in POOL_LIMITS.items()}
        assert POOL_LIMITS[KIS_REST_POOL] == 2
        again = pool_limits.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert again.skip_message == "every pool has a limit"


def test_make_run_writes_the_limits_before_dagster_starts(tmp_path, monkeypatch):
    home = project_home(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert run_local.apply_pool_limits(home, {"DAGSTER_HOME": str(home)}) == dict(POOL_LIMITS)
    assert "DAGSTER_HOME" not in os.environ  # the launcher's environment is left as it was
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert limits_of(instance) == {p: (n, False) for p, n in POOL_LIMITS.items()}


# --- end to end: the UI path ------------------------------------------------------------------------------------------

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
  }
}
"""
REPOS = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def max_overlap(windows: list[tuple[float, float]]) -> int:
    """Most windows open at one instant (an end before a start at a tie)."""
    edges = sorted([(a, 1) for a, _ in windows] + [(b, -1) for _, b in windows])
    now = peak = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


def executing(records: list) -> list[tuple[float, float]]:
    """When each run executed: from its worker's start to its end."""
    return [(r.start_time, r.end_time) for r in records]


def held(instance: dg.DagsterInstance, records: list) -> list[tuple[float, float]]:
    """When each run held its pool slot, as the run queue counts it: from leaving the queue (RUN_STARTING) to its end."""
    out = []
    for r in records:
        (ev,) = instance.get_records_for_run(r.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING).records
        out.append((ev.timestamp, r.end_time))
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ui_launches_without_tags_are_held_to_the_pool_and_a_live_run_still_gets_a_slot(
    env, small_sim, tmp_path, monkeypatch
):
    """`dagster dev` on the project's dagster.yaml; the pool_limits sensor writes the limits. Then, as the UI does it,
    with no tags: a backfill of three Track A partitions and three single-partition Materialize runs; once the backfill
    runs, a live run of track_a_job as the schedule launches it. From the run records: never more than two kis_rest
    runs at once (and two did share), never two backfill runs at once, and the live run started before the
    backfill's last run — it did not wait behind the backfill."""
    import httpx

    now = datetime.now(KST)
    slots = [s for s in calendar().track_a_slots(now.date()) if s <= now - timedelta(minutes=15)]
    if len(slots) < 7:
        pytest.skip("too early in the (open-calendar) day for seven past slots")
    keys = [slot_key(s) for s in slots[-7:]]  # the most recent: a restore reads the fewest minute bars
    backfill_keys, ui_keys, live_key = keys[:3], keys[3:6], keys[6]

    home = project_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.instance_for_test() as scratch:  # the (trimmed) universe, built with a throwaway instance
        build_universe(scratch, kis_for(small_sim, env, 41), now.date())
    path = universe_path(lake.data_dir(), now.date())
    lake.write_table_atomic(path, pq.read_table(path).slice(0, 10))  # ten symbols: each run takes seconds
    with dg.DagsterInstance.get() as inst:
        inst.add_dynamic_partitions("track_a_slot", keys)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key, secret = __import__("local_exchange.accounts", fromlist=["x"]).demo_credentials(42)
    penv = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "DAGSTER_"))}
    penv |= {
        "DAGSTER_HOME": str(home),
        "KIS_APP_KEY": key,
        "KIS_APP_SECRET": secret,
        "KIS_REST_URL": small_sim.rest_url,
        "KIS_WS_URL": small_sim.ws_url,
        "PYTHONPATH": str(ROOT),
    }
    proc = start_dagster_dev(Path(__file__).with_name("_limits_defs.py"), port, penv, ROOT, tmp_path / "dev.log")
    url = f"http://127.0.0.1:{port}/graphql"

    def gql(query: str, variables: dict | None = None) -> dict:
        out = httpx.post(url, json={"query": query, "variables": variables or {}}, timeout=20).json()
        assert "errors" not in out, out
        return out["data"]

    def dev_log() -> str:
        return (tmp_path / "dev.log").read_text()[-3000:]

    try:
        with dg.DagsterInstance.get() as inst:
            deadline = time.monotonic() + 90
            repo = None
            while repo is None:  # the webserver is up and the code location loaded
                assert proc.poll() is None and time.monotonic() < deadline, dev_log()
                try:
                    nodes = gql(REPOS)["repositoriesOrError"].get("nodes") or []
                    repo = nodes[0] if nodes else None
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            while limits_of(inst).get(KIS_REST_POOL) != (2, False):  # the daemon ran the pool_limits sensor
                assert time.monotonic() < deadline, (limits_of(inst), dev_log())
                time.sleep(1)

            def launch(job: str, partition: str, tags: dict[str, str] | None = None, assets: bool = False) -> str:
                selector = {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "pipelineName": job,
                }
                if assets:
                    selector |= {"assetSelection": [{"path": ["track_a_snapshot"]}], "assetCheckSelection": []}
                tag_list = [{"key": k, "value": v} for k, v in {"dagster/partition": partition, **(tags or {})}.items()]
                out = gql(
                    LAUNCH_RUN,
                    {
                        "params": {
                            "selector": selector,
                            "mode": "default",
                            "runConfigData": {},
                            "executionMetadata": {"tags": tag_list},
                        }
                    },
                )["launchRun"]
                assert out["__typename"] == "LaunchRunSuccess", out
                return out["run"]["runId"]

            # "Materialize selected" over three partitions: a backfill, no tags.
            out = gql(
                LAUNCH_BACKFILL,
                {"params": {"assetSelection": [{"path": ["track_a_snapshot"]}], "partitionNames": backfill_keys}},
            )["launchPartitionBackfill"]
            assert out["__typename"] == "LaunchBackfillSuccess", out
            bid = out["backfillId"]
            # "Materialize" of one partition, three times in a row: runs of the implicit asset job, only the
            # partition tag. Without the pool all three would run at once.
            ui_runs = [launch("__ASSET_JOB", k, assets=True) for k in ui_keys]

            def backfill_runs() -> list:
                return inst.get_run_records(dg.RunsFilter(tags={"dagster/backfill": bid}))

            deadline = time.monotonic() + 150
            while not any(r.start_time for r in backfill_runs()):
                assert time.monotonic() < deadline, dev_log()
                time.sleep(0.5)
            assert len(backfill_runs()) == 3  # the others are queued: one backfill run at a time
            live = launch("track_a_job", live_key, KIS_REST_TAGS)  # as the schedule launches a slot

            ids = ui_runs + [live]
            while True:
                records = inst.get_run_records(dg.RunsFilter(run_ids=ids)) + backfill_runs()
                if len(records) == 7 and all(r.dagster_run.status in FINISHED for r in records):
                    break
                assert time.monotonic() < deadline, (
                    [(r.dagster_run.job_name, r.dagster_run.status) for r in records],
                    dev_log(),
                )
                time.sleep(1)
    finally:
        stop_dagster_dev(proc)

    with dg.DagsterInstance.get() as inst:
        slots = held(inst, records)
        bf_slots = held(inst, [r for r in records if r.dagster_run.tags.get("dagster/backfill") == bid])
    by_id = {r.dagster_run.run_id: r for r in records}
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records), dev_log()
    for r in records:  # every run, tags or not, was counted in the pool when it was created
        assert r.dagster_run.run_op_concurrency.all_pools == {KIS_REST_POOL}
    bf = [r for r in records if r.dagster_run.tags.get("dagster/backfill") == bid]
    ui = [by_id[i] for i in ui_runs]
    assert all(MAX_RUNTIME_TAG not in r.dagster_run.tags for r in bf + ui)  # UI launches: the global cap
    assert by_id[live].dagster_run.tags[MAX_RUNTIME_TAG] == str(RUN_BUDGET_S["track_a_job"])  # the job's own

    timeline = sorted(
        (
            round(a - slots[0][0], 1),
            round(b - slots[0][0], 1),
            r.dagster_run.job_name,
            r.dagster_run.tags.get("dagster/backfill", "")[:4],
        )
        for (a, b), r in zip(slots, records)
    )
    # never more runs of the pool at once than its limit, counted as the queue counts them and as they executed
    assert max_overlap(executing(records)) <= max_overlap(slots) == POOL_LIMITS[KIS_REST_POOL], timeline
    assert max_overlap(executing(bf)) <= max_overlap(bf_slots) == 1, timeline  # one backfill run at a time
    assert by_id[live].start_time < max(r.start_time for r in bf), timeline  # it did not wait behind the backfill
