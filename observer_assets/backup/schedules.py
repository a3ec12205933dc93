"""Backups at 21:00 KST (each run also takes every earlier day still without a verified package), retention after."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from observer_assets.backup import backup
from observer_assets.backup.assets import BACKUP_TAGS, backup_job, retention_job, verify_backups_job
from observer_assets.backup.daysets import Tree
from observer_assets.backup.settings import SettingsError, backup_dest
from observer_assets.orchestration.partitions import calendar, day_key, trading_day_partitions
from observer_resources.calendar import KST
from observer_resources.storage.lake import LakeConfigError

FINGERPRINT_TAG = "observer/backup_fingerprint"


def backup_requests(
    instance: dg.DagsterInstance, now: datetime, prefix: str, *, today_if_changed: bool = True
) -> tuple[list[dg.RunRequest], list[str], list[str]]:
    """(run requests, partition keys to register, why each day is pending) for every day that needs a package.
    A day whose local files are in the same state as a queued, running or successful run is not asked again."""
    pend = backup.pending(Tree.from_env(), backup_dest(), calendar(), now, today_if_changed=today_if_changed)
    have = set(instance.get_dynamic_partitions(trading_day_partitions.name))
    reqs, new, why = [], [], []
    for p in pend:
        key = day_key(p.day)
        why.append(f"{key}: {p.reason}")
        done = instance.get_run_records(
            dg.RunsFilter(
                job_name=backup_job.name,
                tags={"dagster/partition": key, FINGERPRINT_TAG: p.fingerprint},
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                    dg.DagsterRunStatus.SUCCESS,
                ],
            ),
            limit=1,
        )
        if done:
            continue
        if key not in have:
            new.append(key)
        reqs.append(
            dg.RunRequest(
                partition_key=key,
                run_key=f"{prefix}:{key}:{p.fingerprint}",
                tags={**BACKUP_TAGS, FINGERPRINT_TAG: p.fingerprint},
            )
        )
    return reqs, new, why


@dg.schedule(
    cron_schedule="0 21 * * *",
    execution_timezone="Asia/Seoul",
    job=backup_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="21:00 KST: back up today and every earlier day without a verified, current package.",
)
def backup_daily(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
    now = context.scheduled_execution_time.astimezone(KST)
    try:
        reqs, new, why = backup_requests(context.instance, now, f"backup@{now:%Y%m%d}")
    except (SettingsError, LakeConfigError) as e:
        return dg.SkipReason(f"backup not configured: {e}")
    if new:
        context.instance.add_dynamic_partitions(trading_day_partitions.name, new)
    if not reqs:
        return dg.SkipReason("every day with local data has a verified, current backup")
    context.log.info("pending: " + "; ".join(why))
    return reqs


@dg.schedule(
    cron_schedule="30 21 * * *",
    execution_timezone="Asia/Seoul",
    job=retention_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="21:30 KST, after the backup window: delete local days past retention whose backup verifies.",
)
def retention_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    today = context.scheduled_execution_time.astimezone(KST).date()
    return dg.RunRequest(
        run_key=f"retention:{today}",
        tags=BACKUP_TAGS,
        run_config={"ops": {"apply_retention": {"config": {"today": today.isoformat()}}}},
    )


@dg.schedule(
    cron_schedule="0 4 * * 0",
    execution_timezone="Asia/Seoul",
    job=verify_backups_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sundays 04:00 KST: re-read every committed backup package; a bad one is withdrawn and alerted.",
)
def verify_backups_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    at = context.scheduled_execution_time.astimezone(KST)
    return dg.RunRequest(run_key=f"verify-backups:{at:%Y%m%d}", tags=BACKUP_TAGS)
