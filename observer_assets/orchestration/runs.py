"""Run tags, concurrency pools and run-time budgets: the limits every run is held to, in one place.

Two mechanisms hold them (docs/architecture.md, "Limits that hold for every launch"):

* **Pools** on the assets and ops that use a shared resource (KIS REST, the WebSocket keys, the backup
  destination, the compactor). Dagster counts a run in a pool whatever launched it — a schedule, a sensor, or
  the UI's Materialize and backfills, which run as the implicit asset job without our tags. dagster.yaml sets
  ``granularity: run``, so a run waits in the queue (visible in the UI) until each of its pools has room, and
  the limits below are written into the instance by ``ensure_pool_limits`` (Dagster keeps per-pool limits in
  the instance, not in dagster.yaml).
* **Run tags**: ``dagster/max_runtime`` on every job, so run monitoring frees the slot of a run whose worker
  died within its budget, and the ``observer/*`` tags dagster.yaml's tag limits still use (one backfill at a time).
"""

from collections.abc import Mapping

import dagster as dg

# Labels for the UI's run filters; the queue limits on them that still matter are about backfills (dagster.yaml).
KIS_REST_TAGS = {"observer/kis": "rest"}
BACKFILL_TAGS = {"observer/kind": "backfill"}
LATE_TAG = "observer/late"
MAX_RUNTIME_TAG = "dagster/max_runtime"

# --- pools ----------------------------------------------------------------------------------------------------
KIS_REST_POOL = "kis_rest"  # anything that spends an app key's REST request budget
KIS_WS_POOL = "kis_ws"  # the Track B capture: KIS allows one WebSocket session per app key
BACKUP_POOL = "backup"  # backups, restores, retention, verification: never two on the same packages
COMPACTION_POOL = "compaction"  # Track B journal -> ticks: memory-heavy, and hours depend on each other's state
#: history fetches (minute bars after the day, daily bars over years): their own pool, so a long fetch never holds
#: one of kis_rest's slots a live Track A slot or a restore needs; their permits yield too (BackgroundLimiter)
HISTORY_POOL = "kis_history"

#: Two REST runs at once: a live Track A slot always has a slot beside one backfill run (dagster.yaml lets one
#: backfill run at a time); inside the runs the shared rate limiter keeps each key under its per-second budget.
POOL_LIMITS: Mapping[str, int] = {
    KIS_REST_POOL: 2,
    KIS_WS_POOL: 1,
    BACKUP_POOL: 1,
    COMPACTION_POOL: 1,
    HISTORY_POOL: 1,
}

# --- run-time budgets (seconds) --------------------------------------------------------------------------------
#: Per job, as the ``dagster/max_runtime`` tag: past it, run monitoring terminates the run and frees its slots.
#: Runs without the tag (UI launches of the implicit asset job) get dagster.yaml's run_monitoring.max_runtime_seconds.
#: Track A: its live snapshot stops by itself 30 s before the next slot, so one slot interval is never reached by a
#: run that still works. The Track B capture job sets its own (the rest of its window, track_b/capture_job.py).
RUN_BUDGET_S: Mapping[str, int] = {
    "track_a_job": 600,
    "universe_job": 900,
    "gap_report_job": 600,
    "track_a_freshness_job": 300,
    "track_a_daily_job": 600,  # reads and writes one day (~100,000 rows) in seconds: frees a stuck run's slot
    "system_events_job": 600,
    "track_b_compaction_job": 900,
    "track_b_restore_job": 1800,
    # ~2,500 members x 4-7 calls at 18/s is about 11 min on one key; yielding to live collectors can stretch it
    "minute_bars_job": 3600,
    # not a job: the gap sensor's Track A backfill runs (track_a_job restoring a whole slot from minute bars long
    # after an outage takes longer than a live slot, and a run killed for time is never re-requested: same run key)
    "track_a_backfill": 1800,
    "backup_job": 3600,
    "restore_job": 3600,
    "verify_backups_job": 3600,
    "retention_job": 900,
    "daily_bars_job": 3600,  # a year of 2,500 symbols is ~14 min on one key at 18/s: room for a slow day
}


def max_runtime(job_name: str) -> dict[str, str]:
    """The ``dagster/max_runtime`` tag of a job (numeric: a non-numeric value would mean no limit at all)."""
    return {MAX_RUNTIME_TAG: str(RUN_BUDGET_S[job_name])}


def ensure_pool_limits(instance: dg.DagsterInstance, limits: Mapping[str, int] = POOL_LIMITS) -> dict[str, int]:
    """Write each pool's limit into ``instance`` unless someone already set one; returns what it set.

    A limit set by hand (``dagster instance concurrency set POOL N``, the UI) is never overridden; a limit Dagster
    filled in from ``pools.default_limit`` is not a choice, so it is replaced. To change a limit later, set it by
    hand: this function only fills gaps. Idempotent and cheap (one query when everything is in place)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    current = {p.name: p for p in storage.get_pool_limits()}
    done: dict[str, int] = {}
    for pool, limit in limits.items():
        have = current.get(pool)
        if have is not None and not have.from_default:
            continue
        storage.set_concurrency_slots(pool, limit)
        done[pool] = limit
    return done


@dg.sensor(
    name="pool_limits",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes the concurrency pools' limits (kis_rest 2, kis_ws 1, backup 1, compaction 1) into the "
    "instance where none is set, so every deployment has them; a limit set by hand is never changed.",
)
def pool_limits(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    done = ensure_pool_limits(context.instance)
    if done:
        context.log.info(f"pool limits set: {done}")
        return dg.SkipReason(f"pool limits set: {done}")
    return dg.SkipReason("every pool has a limit")
