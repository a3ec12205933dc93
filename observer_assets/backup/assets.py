"""The daily backup as a Dagster asset, and the restore and retention jobs the UI can launch.

`daily_backup` is partitioned by trading day: one partition = one verified package. Re-materializing a
partition re-verifies the package (re-reads every file) and rewrites it only when the local files changed or the
package no longer matches; so the schedule and the catch-up sensor can ask again safely.
"""

from collections import defaultdict

import dagster as dg

from observer_assets import catalog
from observer_assets.backup import backup, package, retention
from observer_assets.backup import restore as restoring
from observer_assets.backup.daysets import Tree
from observer_assets.backup.settings import RetentionPolicy, SettingsError, backup_dest, redact_url
from observer_assets.orchestration.partitions import PartitionKeyError, calendar, parse_day_key, trading_day_partitions
from observer_assets.orchestration.runs import BACKUP_POOL, max_runtime
from observer_resources import clock
from observer_resources.dates import DateFormatError, parse_iso_date
from observer_resources.events import EventLog
from observer_resources.storage import lake

BACKUP_TAGS = {"observer/kind": "backup"}


def _dest():
    try:
        return backup_dest()
    except (SettingsError, lake.LakeConfigError) as e:
        raise dg.Failure(description=str(e)) from None


def _local() -> Tree:
    """The lake's local directory and, for a lake on a URL, the object store beside it."""
    try:
        return Tree.from_env()
    except lake.LakeConfigError as e:
        raise dg.Failure(description=str(e)) from None


def _by_dataset(m: package.Manifest) -> str:
    agg: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in m.entries:
        a = agg[e.path.split("/", 1)[0]]
        a[0] += 1
        a[1] += e.size
        a[2] += e.stored_size
        a[3] += e.rows or 0
    rows = "\n".join(f"| {k} | {v[0]} | {v[1]:,} | {v[2]:,} | {v[3]:,} |" for k, v in sorted(agg.items()))
    return "| dataset | files | bytes | stored bytes | rows |\n|---|---:|---:|---:|---:|\n" + rows


@dg.asset(
    partitions_def=trading_day_partitions,
    deps=[dg.AssetKey("universe"), dg.AssetKey("gap_report"), dg.AssetKey("system_events")],
    group_name="ops",
    pool=BACKUP_POOL,
    kinds={"python", "file"},
    owners=catalog.OWNERS,
    op_tags=BACKUP_TAGS,
    description="The trading day's verified backup package (docs/collector-rules.md §12): every dated file of the day, "
    "SHA-256 per file in manifest.json, SUCCESS.marker only after re-reading them all. Destination: "
    "$OBSERVER_BACKUP_URL (any fsspec URL) or ./backups.",
)
def daily_backup(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    cal = calendar()
    try:
        day = parse_day_key(context.partition_key, cal)
    except PartitionKeyError as e:
        raise dg.Failure(description=str(e)) from None
    root, dest = _local(), _dest()
    try:
        res = backup.run(root, dest, cal, day, events=EventLog(root.local))
    except package.BackupError as e:
        raise dg.Failure(
            description=f"backup {day} failed: no SUCCESS.marker; the day is an anomaly day and is never deleted. {e}",
            metadata={
                "problems": dg.MetadataValue.md("\n".join(f"- `{p}`: {w}" for p, w in e.problems[:50]) or "-"),
                "destination": redact_url(str(dest)),
            },
        ) from None
    st = package.read_state(dest, day)
    md: dict = {
        "action": res.action,
        "files": res.files,
        "bytes": res.bytes,
        "stored_bytes": res.stored_bytes,
        "seconds": round(res.seconds, 3),
        "changed_files": len(res.changed),
        "carried_over": res.carried_over,
        "destination": redact_url(str(package.package_dir(dest, day))),
        "mb_per_s": round(res.bytes / 1e6 / res.seconds, 1) if res.seconds > 0 else 0.0,
    }
    if res.invalidated:
        md["repaired"] = dg.MetadataValue.md("\n".join(f"- `{p}`: {w}" for p, w in res.invalidated[:50]))
        context.log.error(f"backup {day}: the committed package failed re-verification and was rewritten")
    if st.manifest is not None:
        md["manifest_sha256"] = st.manifest_sha256
        md["anomaly_rules"] = ", ".join(st.manifest.anomaly_rules) or "none"
        md["datasets"] = dg.MetadataValue.md(_by_dataset(st.manifest))
    return dg.MaterializeResult(metadata=md)


backup_job = dg.define_asset_job(
    "backup_job", selection=dg.AssetSelection.assets(daily_backup), tags={**BACKUP_TAGS, **max_runtime("backup_job")}
)


class RestoreConfig(dg.Config):
    day: str  # YYYY-MM-DD
    overwrite: bool = False  # replace local files whose bytes differ from the backup
    version: int = 0  # 0: the newest version of each file; n >= 1: each file as it was at version n (1 = original)


@dg.op(
    pool=BACKUP_POOL,
    description="Restores a day's verified package into the data directory, byte for byte; refuses on any "
    "checksum mismatch and names the file.",
)
def restore_day(context: dg.OpExecutionContext, config: RestoreConfig) -> dict:
    try:
        day = parse_iso_date(config.day, "day")
    except DateFormatError as e:
        raise dg.Failure(description=f"restore: {e}") from None
    root, dest = _local(), _dest()
    try:
        out = restoring.restore(dest, day, root, overwrite=config.overwrite, version=config.version or None)
    except restoring.RestoreError as e:
        raise dg.Failure(
            description=str(e),
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- `{p}`: {w}" for p, w in e.problems[:50]))},
        ) from None
    EventLog(root.local).emit(
        "backup_restored",
        day=day.isoformat(),
        files=out["restored"],
        already_present=out["already_present"],
        bytes=out["bytes"],
        version=out["version"],
        destination=redact_url(str(dest)),
    )
    context.log.info(
        f"restored {out['restored']} file(s), {out['bytes']:,} bytes; {out['already_present']} already present"
    )
    return {k: v for k, v in out.items() if k != "files"}


@dg.job(
    tags={**BACKUP_TAGS, **max_runtime("restore_job")},
    description="Restore one day from its backup (launchpad config: day, overwrite).",
)
def restore_job():
    restore_day()


class RetentionConfig(dg.Config):
    dry_run: bool = False  # plan and report only
    today: str = ""  # YYYY-MM-DD; default: today in KST


@dg.op(
    pool=BACKUP_POOL, description="Deletes local days past retention whose backup verifies; never a day without one."
)
def apply_retention(context: dg.OpExecutionContext, config: RetentionConfig) -> dict:
    try:
        policy = RetentionPolicy.from_env()
        today = parse_iso_date(config.today, "today") if config.today else clock.now().date()
        retention.check_today(calendar(), today)
    except (SettingsError, ValueError) as e:
        raise dg.Failure(description=f"retention: {e}") from None
    root = _local()
    out = retention.apply(
        root, _dest(), calendar(), today, policy, events=EventLog(root.local), dry_run=config.dry_run, log=context.log
    )
    for d in out.decisions:
        context.log.info(f"{d.day}{' universe' if d.universe else ''}: {d.action} ({d.reason})")
    summary = out.summary()
    context.add_output_metadata(
        {
            "deleted_days": ", ".join(summary["deleted_days"]) or "none",
            "deleted_files": summary["deleted_files"],
            "deleted_bytes": summary["deleted_bytes"],
            "blocked": ", ".join(out.blocked) or "none",
            "dry_run": config.dry_run,
            "kept_after_checks": dg.MetadataValue.json(out.kept),
        }
    )
    if out.blocked:
        context.log.error(f"retention blocked (no verified backup past the cap): {out.blocked}")
    return summary


@dg.job(
    tags={**BACKUP_TAGS, **max_runtime("retention_job")},
    description="Retention: 3 days, 7 on anomaly days, never a day without a verified backup "
    "(launchpad config dry_run: true to see the plan only).",
)
def retention_job():
    apply_retention()


@dg.op(
    pool=BACKUP_POOL,
    description="Re-reads every committed backup package and checks every SHA-256; a package that no longer "
    "matches loses its marker, is recorded and alerted, and its day counts as unverified.",
)
def verify_backups(context: dg.OpExecutionContext) -> dict:
    root, dest = _local(), _dest()
    out = backup.verify_all(dest, root, events=EventLog(root.local), log=context.log)
    context.add_output_metadata(
        {
            "days": out["days"],
            "ok": len(out["ok"]),
            "bytes_read": out["bytes"],
            "failed": dg.MetadataValue.json(out["failed"]),
        }
    )
    if out["failed"]:
        raise dg.Failure(
            description=f"{len(out['failed'])} backup package(s) failed verification: "
            + ", ".join(sorted(out["failed"])),
            metadata={"failed": dg.MetadataValue.json(out["failed"])},
        )
    return {"days": out["days"], "ok": len(out["ok"])}


@dg.job(
    tags={**BACKUP_TAGS, **max_runtime("verify_backups_job")},
    description="Re-verify every committed backup package (the weekly sweep; any time from the launchpad).",
)
def verify_backups_job():
    verify_backups()
