"""Alerts: every failed run and every failed asset-check evaluation, logged and posted (monitoring/alerts.py).

Run failures come through a ``run_failure_sensor``; failed asset-check evaluations through a cursor over the
check-execution table. The check sensor computes its new cursor from what it read before posting anything, and
what the budget leaves unposted is still logged and counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import dagster as dg

from observer_assets.monitoring import alerts
from observer_resources import clock, settings

PROCESS_LIMIT_ENV = "DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT"


def run_failure_text(run: dg.DagsterRun, message: str) -> str:
    part = run.tags.get("dagster/partition", "-")
    return (
        f"[Observer] run FAILED: job {run.job_name}, partition {part}, run {run.run_id[:8]}"
        f" at {clock.now().isoformat(timespec='seconds')}: {message}"
    )


@dg.run_failure_sensor(
    name="observer_run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every failed run: an error log line, and a post to OBSERVER_ALERT_WEBHOOK when set.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    msg = context.failure_event.message or "failed"
    alerts.send(run_failure_text(context.dagster_run, msg), timeout_s=run_failure_post_deadline())


def run_failure_post_deadline(environ: Mapping[str, str] | None = None) -> float:
    """Each run's post gets the tick budget divided by the runs Dagster hands one tick of a run-status sensor
    (``DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT``, default 5): the function is called once per run, so the split
    is what bounds the whole tick."""
    try:
        per_tick = max(1, settings.get(PROCESS_LIMIT_ENV, environ))
    except settings.SettingsError:  # Dagster refuses it itself; the alert must still go out
        per_tick = settings.setting(PROCESS_LIMIT_ENV).default
    return max(alerts.MIN_POST_S, min(alerts.POST_DEADLINE_S, alerts.TICK_BUDGET_S / per_tick))


def check_failure_text(ev, partition: str | None) -> str:
    md = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
    brief = ", ".join(f"{k}={v}" for k, v in md.items() if isinstance(v, (int, float, str)) and len(str(v)) < 80)
    sev = getattr(getattr(ev, "severity", None), "value", "ERROR")
    return (
        f"[Observer] check FAILED ({sev}): {ev.asset_key.to_user_string()} / {ev.check_name}, partition "
        f"{partition or '-'}: {ev.description or ''} {('(' + brief + ')') if brief else ''}"
    ).strip()


def _check_keys(context: dg.SensorEvaluationContext) -> list[dg.AssetCheckKey]:
    """Every asset check of the code location (the sensor's repository), else every one this project defines."""
    repo = context.repository_def
    if repo is not None:
        return sorted(repo.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())
    import importlib  # noqa: PLC0415 - the domains' defs import this module; read them only when asked

    keys = set()
    for domain in ("universe", "track_a", "track_b", "gaps", "backup", "monitoring", "orchestration"):
        d = importlib.import_module(f"observer_assets.{domain}.defs").defs
        for c in (*(d.asset_checks or ()), *(d.assets or ())):
            keys.update(getattr(c, "check_keys", ()))  # checks, and assets that carry their own
    return sorted(keys, key=lambda k: k.to_user_string())


@dg.sensor(
    name="observer_check_failure_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every failed (or crashed) asset-check evaluation since the last tick: an error log line, and a post "
    "to OBSERVER_ALERT_WEBHOOK when set. The first tick starts from now (no alerts for old history).",
)
def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    # The check-execution table, not get_event_records: the default SQLite storage is run-sharded and refuses a
    # cross-run cursor for check events. The cursor keeps the last execution id seen per check.
    storage = context.instance.event_log_storage
    first = context.cursor is None
    last: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    seen = 0
    texts: list[str] = []
    for key in _check_keys(context):
        name = key.to_user_string()
        hist = storage.get_asset_check_execution_history(key, limit=500)  # newest first
        if first or name not in last:
            last[name] = hist[0].id if hist else 0
            if first:
                continue
        for rec in sorted((r for r in hist if r.id > last[name]), key=lambda r: r.id):
            seen += 1
            last[name] = rec.id
            status = rec.status.value
            ev = rec.event.dagster_event.event_specific_data if rec.event and rec.event.dagster_event else None
            if status == "SUCCEEDED" or (ev is not None and getattr(ev, "passed", False)):
                continue
            if ev is not None and hasattr(ev, "passed"):
                text = check_failure_text(ev, rec.partition or _run_partition(context, rec.run_id))
            else:
                text = (
                    f"[Observer] check {status}: {name}, partition "
                    f"{rec.partition or _run_partition(context, rec.run_id) or '-'} (run {rec.run_id[:8]})"
                )
            texts.append(text)
    # the cursor moves past everything read before any post: a slow webhook can cost alerts' delivery (they are
    # logged), never the sensor's progress
    context.update_cursor(json.dumps(last, sort_keys=True))
    if first:
        return dg.SkipReason("first tick: alerting from now on")
    out = alerts.send_all(texts)
    posted = sum(d.posted for d in out)
    if len(out) - posted and settings.is_set(alerts.WEBHOOK_ENV):
        context.log.warning(
            f"{len(out) - posted} of {len(out)} check alert(s) not delivered to the webhook "
            "(all are in the observer.alerts log)"
        )
    return dg.SkipReason(f"{seen} check evaluations, {len(texts)} failed (alerted; {posted} posted)")


def _run_partition(context: dg.SensorEvaluationContext, run_id: str | None) -> str | None:
    run = context.instance.get_run_by_id(run_id) if run_id else None
    return run.tags.get("dagster/partition") if run else None
