"""Gap sensors: the automatic Track A backfill, the Track B restore, and the gap report after every repair.

Backfill: each tick reads the newest gap reports (`gaps/date=D/gap_report.parquet`, only files changed since the last
tick: the cursor keeps each report's mtime and size) and asks for one run per Track A slot that has restorable,
still-open gaps (the whole slot missing, or symbols missing from its snapshot). The run key is
`backfill:{slot}:{fingerprint}`, the fingerprint hashing that slot's open gap rows: a re-computed report with the
same gaps asks for nothing new, a slot whose gaps changed asks again, a slot the backfill closed drops out. A slot
younger than 10 minutes waits (its live run may still be collecting) and its report is re-read on the next tick. Runs
carry BACKFILL_TAGS and KIS_REST_TAGS, so dagster.yaml's queue limits (one backfill at a time, two KIS REST runs)
keep them inside the app key's budget. The run itself restores from minute bars (track_a/restore.py).

Alerts for failed runs and checks live in monitoring/sensors.py.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa

from observer_assets.gaps.schedules import GAP_REPORT_TAGS, gap_report_job
from observer_assets.orchestration.partitions import calendar, parse_slot_key, slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import BACKFILL_TAGS, KIS_REST_TAGS, max_runtime
from observer_assets.track_a.schedules import track_a_job
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import GAP_REPORT_NAME as REPORT_NAME
from observer_resources.storage.layout import GAPS as REPORT_DATASET
from observer_resources.storage.layout import report_path

REPORT_DAYS = 5  # the newest reports read per tick; older gaps are the UI path's business
TRACK_A_PREFIX = "track_a"  # report kinds of Track A gaps start with this
LIVE_WINDOW = timedelta(minutes=10)  # a slot's live run collects until the next slot: never race it
OPEN_STATUS = "open"  # detect.py: backfill targets are rows with restorable and status open


# --- backfill ------------------------------------------------------------------------------------------------------
def report_paths(root: Path, days: int = REPORT_DAYS) -> list[Path]:
    """The newest `days` gap reports, oldest first (the hive directory names sort by date)."""
    return sorted((root / REPORT_DATASET).glob(f"date=*/{REPORT_NAME}"))[-days:]


def _slot_of(row: dict) -> datetime | None:
    t = row.get("slot_ts") or row.get("start")
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.astimezone(KST)


def restorable_slots(report: pa.Table) -> dict[str, str]:
    """{slot key: fingerprint} of the Track A slots with restorable, still-open gaps in one report (pure)."""
    cols = [c for c in ("kind", "symbol", "slot_ts", "start", "restorable", "status") if c in report.column_names]
    by_slot: dict[str, list[str]] = {}
    for row in report.select(cols).to_pylist():
        if not str(row.get("kind") or "").startswith(TRACK_A_PREFIX) or row.get("restorable") is not True:
            continue
        if (row.get("status") or OPEN_STATUS) != OPEN_STATUS:
            continue
        t = _slot_of(row)
        if t is None:
            continue
        by_slot.setdefault(slot_key(t), []).append(f"{row.get('kind')}|{row.get('symbol') or ''}")
    return {k: hashlib.sha1("\n".join(sorted(v)).encode()).hexdigest()[:12] for k, v in sorted(by_slot.items())}


def _signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mtime_ns}:{st.st_size}"


@dg.sensor(
    name="gap_backfill_sensor",
    job=track_a_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns the newest gap reports into one Track A backfill run per slot with restorable open gaps "
    "(run key backfill:{slot}:{fingerprint}; tags observer/kind=backfill, observer/kis=rest).",
)
def gap_backfill_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    root = lake.data_dir()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    existing = set(context.instance.get_dynamic_partitions(track_a_slot_partitions.name))
    paths = report_paths(root)
    cal = calendar()
    for path in paths:
        day = path.parent.name.removeprefix("date=")
        sig = _signature(path)
        if seen.get(day) == sig:
            continue
        try:
            slots = restorable_slots(lake.read_table(path))
        except (OSError, pa.ArrowInvalid) as e:  # a broken report: say so, retry on the next tick
            context.log.error(f"gap report {path} unreadable: {e}")
            continue
        now = clock.now()
        young = [k for k in slots if parse_slot_key(k, cal) + LIVE_WINDOW > now]
        for key, fp in slots.items():
            if key in young:
                continue  # its live run may still be collecting: restoring now would race it
            if key not in existing:
                new_keys.append(key)
                existing.add(key)
            requests.append(
                dg.RunRequest(
                    partition_key=key,
                    run_key=f"backfill:{key}:{fp}",
                    tags={
                        **BACKFILL_TAGS,
                        **KIS_REST_TAGS,
                        **max_runtime("track_a_backfill"),
                        "observer/gap_report": day,
                    },
                )
            )
        if young:
            context.log.info(f"backfill: {len(young)} slot(s) of {day} still inside the live window; next tick")
        else:
            seen[day] = sig  # re-read next tick while a slot waits
    keep = {p.parent.name.removeprefix("date=") for p in paths}
    cursor = json.dumps({d: s for d, s in sorted(seen.items()) if d in keep})
    if requests:
        context.log.info(f"backfill: {len(requests)} Track A slot(s): " + ", ".join(r.partition_key for r in requests))
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor,
        dynamic_partitions_requests=[track_a_slot_partitions.build_add_request(new_keys)] if new_keys else None,
        skip_reason=None if requests else dg.SkipReason("no new restorable Track A gaps in the gap reports"),
    )


# --- Track B restore -----------------------------------------------------------------------------------------------
TRACK_B_KINDS = frozenset({"track_b_loss", "ws_disconnect", "capture_restart", "manual_stop"})

track_b_restore_job = dg.define_asset_job(
    "track_b_restore_job",
    selection=dg.AssetSelection.assets("track_b_restored"),
    tags={**BACKFILL_TAGS, **KIS_REST_TAGS, **max_runtime("track_b_restore_job")},
    description="Restore the day's lost Track B trades from today's conclusions (track_b_restored).",
)


def restorable_track_b(report: pa.Table) -> str | None:
    """Fingerprint of a report's open, restorable Track B losses, or None when there are none (pure).

    A loss's measured size, and the number of codes a disconnect's row counts losses for, are part of it: a
    disconnect's losses become measurable only once its hour is compacted (and an edge loss only once its code's
    ticks are), so the same gap reported again with more losses is new work for the restore (which reads the
    compacted ticks), not a repeat."""
    cols = [
        c
        for c in ("gap_id", "kind", "symbol", "restorable", "status", "missing_volume", "evidence")
        if c in report.column_names
    ]
    ids = sorted(
        f"{r.get('kind')}|{r.get('symbol') or ''}|{r.get('gap_id') or ''}|{r.get('missing_volume')}|{_losses(r)}"
        for r in report.select(cols).to_pylist()
        if r.get("kind") in TRACK_B_KINDS
        and r.get("restorable") is True
        and (r.get("status") or OPEN_STATUS) == OPEN_STATUS
    )
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12] if ids else None


def _losses(row: dict) -> int:
    """How many codes' losses a disconnect's row counts: an edge loss (known only by its code until restored)
    changes this and not the volume."""
    try:
        return len(json.loads(row.get("evidence") or "{}").get("losses") or {})
    except (TypeError, ValueError, AttributeError):
        return 0


@dg.sensor(
    name="track_b_restore_sensor",
    job=track_b_restore_job,
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When today's gap report lists open, restorable Track B losses, runs track_b_restored for today "
    "(KIS serves conclusions for the current day only). Run key track_b_restore:{day}:{fingerprint}.",
)
def track_b_restore_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    today = clock.now().date()
    path = report_path(lake.data_dir(), today)
    if not path.exists():
        return dg.SkipReason(f"no gap report for {today}")
    sig = _signature(path)
    if context.cursor == sig:
        return dg.SkipReason("gap report unchanged")
    try:
        fp = restorable_track_b(lake.read_table(path))
    except (OSError, pa.ArrowInvalid) as e:
        context.log.error(f"gap report {path} unreadable: {e}")
        return dg.SkipReason(f"gap report unreadable: {e}")
    if fp is None:
        return dg.SensorResult(cursor=sig, skip_reason=dg.SkipReason("no open restorable Track B losses"))
    key = today.isoformat()
    return dg.SensorResult(
        cursor=sig, run_requests=[dg.RunRequest(partition_key=key, run_key=f"track_b_restore:{key}:{fp}")]
    )


# --- the gap report after a repair -----------------------------------------------------------------------------------
REPAIR_ASSETS = ("track_a_snapshot", "track_b_restored", "minute_bars")  # minute bars: the proof's source


def repaired_days(run: dg.DagsterRun, materialized: list[tuple[str, str | None]]) -> list[str]:
    """Trading days whose gap report a successful run changed (pure): a Track A backfill (by our sensor or a UI
    backfill) or a Track B restore that materialized something. A live Track A slot is not a repair: the
    schedule's next report sees it."""
    live = (
        run.tags.get("observer/kind") != "backfill"
        and "dagster/backfill" not in run.tags
        and run.job_name != track_b_restore_job.name
    )
    days = set()
    for asset, key in materialized:
        if asset not in REPAIR_ASSETS or key is None or (live and asset == "track_a_snapshot"):
            continue
        days.add(key[:10])
    return sorted(days)


@dg.run_status_sensor(
    name="gap_report_after_repair",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=gap_report_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="After a Track A backfill or a Track B restore succeeds, recompute that day's gap report so the UI "
    "shows the gaps it closed as restored.",
)
def gap_report_after_repair(context: dg.RunStatusSensorContext):  # noqa: ANN201 - RunRequest | SkipReason
    run = context.dagster_run
    records = context.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    materialized = [
        (
            r.event_log_entry.asset_materialization.asset_key.to_user_string(),
            r.event_log_entry.asset_materialization.partition,
        )
        for r in records
        if r.event_log_entry.asset_materialization is not None
    ]
    days = repaired_days(run, materialized)
    if not days:
        return dg.SkipReason(f"run {run.run_id[:8]} ({run.job_name}) repaired nothing")
    return [
        dg.RunRequest(
            partition_key=d,
            run_key=f"gap_report-after:{run.run_id}:{d}",
            tags={**GAP_REPORT_TAGS, "observer/gap_report": "after_repair", "observer/after_run": run.run_id},
        )
        for d in days
    ]
