"""Has a partition already been asked for? Shared by the catch-up sensors."""

from __future__ import annotations

import dagster as dg


def has_run(instance: dg.DagsterInstance, job_name: str, partition_key: str) -> bool:
    """True when any run (queued, running, done or failed) of `job_name` targets the partition: catch-up never
    doubles a schedule's run, and a failed slot is left to the gap report and backfill, not retried blindly."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, tags={"dagster/partition": partition_key}), limit=1
    )
    return bool(records)
