"""Has a partition already been asked for, and is it still being worked on? Shared by the schedules and the
catch-up sensors."""

from __future__ import annotations

import dagster as dg


def has_run(instance: dg.DagsterInstance, job_name: str, partition_key: str) -> bool:
    """True when any run (queued, running, done or failed) of `job_name` targets the partition: catch-up never
    doubles a schedule's run, and a failed slot is left to the gap report and backfill, not retried blindly."""
    return latest_run_status(instance, job_name, partition_key) is not None


#: a run that may still produce its partition
IN_FLIGHT = frozenset(
    {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    }
)


def latest_run_status(instance: dg.DagsterInstance, job_name: str, partition_key: str) -> dg.DagsterRunStatus | None:
    """The status of the newest run of `job_name` for the partition, None when there is none."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition_key}), limit=1
    )
    return records[0].dagster_run.status if records else None
