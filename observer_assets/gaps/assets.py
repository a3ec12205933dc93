"""The daily gap report asset: every gap of a trading day, each slot's coverage and the verdict as tables, with the
verdict and a summary as JSON.

Three tables, each in its own dataset so a directory read finds only its Parquet: ``gaps/date=D/gap_report.parquet``
(one row per gap, ``GAP_SCHEMA``), ``gap_coverage/date=D/coverage.parquet`` (one row per slot, ``COVERAGE_SCHEMA``)
and ``gap_verdict/date=D/verdict.parquet`` (one row per anomaly-day rule, ``VERDICT_SCHEMA``); the verdict as
written (JSON, read by the metrics exporter and the backup) and the summary under ``_meta/gaps/date=D/``. Paths come
from the storage layout; every file is written atomically and a re-run rewrites them all (idempotent).
Re-materializing a day after a backfill shows restored gaps as ``restored`` with their provenance; what history
could not give stays listed.
"""

import json
from datetime import date

import dagster as dg

from observer_assets import catalog
from observer_assets.gaps.detect import COVERAGE_SCHEMA, GAP_SCHEMA, VERDICT_SCHEMA, Report
from observer_assets.gaps.report import build_report
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_resources import clock
from observer_resources.dates import DateFormatError, parse_iso_datetime
from observer_resources.storage import lake
from observer_resources.storage.lake import LakePath
from observer_resources.storage.layout import (
    coverage_path,
    minute_bars_proof_path,
    report_path,
    report_summary_path,
    verdict_path,
    verdict_table_path,
)


class GapReportConfig(dg.Config):
    as_of: str | None = None  # ISO time with offset; default: now for today, the day's end for a past day


OPEN_TABLE_ROWS = 30


def open_gaps_markdown(rep: Report) -> str:
    """The gaps still open (not restored, not explained away), as the table the UI shows first."""
    rows = [r for r in rep.rows.to_pylist() if (r.get("status") or "open") == "open"]
    if not rows:
        return "No open gaps."
    out = [
        f"{len(rows)} open gap(s)",
        "",
        "| kind | symbol | slot / start | seconds | severity | restorable | reason |",
        "|---|---|---|---:|---|---|---|",
    ]
    for r in rows[:OPEN_TABLE_ROWS]:
        start = r.get("slot_ts") or r.get("start")
        out.append(
            f"| {r['kind']} | {r.get('symbol') or '—'} | {start.isoformat() if start else ''} | "
            f"{r['seconds'] if r.get('seconds') is not None else ''} | {r.get('severity') or ''} | "
            f"{'yes' if r.get('restorable') else 'no'} | {r.get('reason') or ''} |"
        )
    if len(rows) > OPEN_TABLE_ROWS:
        out.append(f"| … {len(rows) - OPEN_TABLE_ROWS} more in the Parquet file | | | | | | |")
    return "\n".join(out)


def markdown(rep: Report) -> str:
    s, v = rep.summary, rep.verdict
    lines = [f"### Gaps of {v['day']} (as of {v['as_of']})", ""]
    lines.append(
        f"**Anomaly day: {'YES' if v['anomaly_day'] else 'no'}**"
        + (" — " + ", ".join(f"{r['rule']} ({r['value']})" for r in v["rules_fired"]) if v["rules_fired"] else "")
    )
    lines += ["", "| kind | rows |", "|---|---|"] + [f"| {k} | {n} |" for k, n in s["by_kind"].items()]
    lines += [
        "",
        f"Status: {s['by_status']}; data-loss rows {s['data_lost_rows']}; backfill targets {s['backfill_targets']}.",
        "",
    ]
    lost = [r for r in rep.rows.to_pylist() if r["data_lost"]]
    if lost:
        lines += ["| kind | symbol | start | seconds | severity | reason | status |", "|---|---|---|---|---|---|---|"]
        for r in lost[:15]:
            start = r["start"] or r["slot_ts"]
            lines.append(
                f"| {r['kind']} | {r['symbol'] or '—'} | {start.isoformat() if start else ''} | "
                f"{r['seconds'] if r['seconds'] is not None else ''} | {r['severity']} | {r['reason']} | "
                f"{r['status']}{' (' + r['restored_from'] + ')' if r['restored_from'] else ''} |"
            )
        if len(lost) > 15:
            lines.append(f"| … {len(lost) - 15} more in the Parquet file | | | | | | |")
        lines.append("")
    cov = rep.coverage.to_pylist()
    if cov:
        lines += [
            "| slot | state | coverage | live | restored | missing | late s | reason |",
            "|---|---|---|---|---|---|---|---|",
        ]

        def cell(v: object) -> str:
            return "" if v is None else str(v)

        for c in cov:
            ratio = f"{100 * c['coverage_ratio']:.1f} %" if c["coverage_ratio"] is not None else ""
            lines.append(
                f"| {c['slot']} | {c['state']} | {ratio} | {c['live']} | {c['restored']} | {cell(c['missing'])} | "
                f"{cell(c['late_seconds'])} | {cell(c['reason'])} |"
            )
    tb = s["track_b"]
    lines += [
        "",
        f"Track B: {tb['ticks']} ticks, {tb['codes']} codes, {tb['losses']} volume breaks "
        f"({tb['missing_volume']} shares missing), {tb['silences']} silences (not losses).",
    ]
    if s.get("events_bad_lines") or s.get("events_torn_lines"):
        lines += [
            "",
            f"**Event log: {s['events_bad_lines']} unreadable and {s['events_torn_lines']} torn line(s) "
            f"skipped** ({', '.join(s.get('events_unreadable_where', []))}): a gap marker they held is "
            "not in this report.",
        ]
    return "\n".join(lines)


def write_report(root: LakePath, day: date, rep: Report) -> tuple[LakePath, LakePath, LakePath]:
    """Every file of the day's report, each atomically: the three tables, then the JSON verdict and summary (what
    the same report writes is byte for byte what it wrote before). Returns the tables' paths."""
    paths = (report_path(root, day), coverage_path(root, day), verdict_table_path(root, day))
    for p, t in zip(paths, (rep.rows, rep.coverage, rep.verdict_table), strict=True):
        lake.write_table_atomic(p, t)
    if rep.summary.get("proof", {}).get("minute_bars"):
        lake.write_table_atomic(minute_bars_proof_path(root, day), rep.proof)
    lake.write_bytes_atomic(verdict_path(root, day), json.dumps(rep.verdict, ensure_ascii=False, indent=1).encode())
    lake.write_bytes_atomic(
        report_summary_path(root, day),
        json.dumps(rep.summary, ensure_ascii=False, indent=1, default=str).encode(),
    )
    return paths


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="gaps",
    kinds={"python", "parquet"},
    # what the report reads, so the lineage view shows how data flows into it (a day reads all of its slots and
    # hours: the dynamic keys have no day mapping Dagster could serialize, so the whole upstream is named)
    deps=[
        dg.AssetKey("universe"),
        *(dg.AssetDep(k, partition_mapping=dg.AllPartitionMapping()) for k in ("track_a_snapshot", "track_b_ticks")),
        "track_b_restored",
        "minute_bars",
    ],
    description=(
        "Every gap of the trading day from the universe, Track A snapshots, Track B ticks and the event log: "
        "missing/late slots, missing symbols per slot, Track B volume-continuity losses, silences (not losses), "
        "WebSocket disconnects, rate limits, restored/unrecoverable status, and the anomaly-day verdict."
    ),
    metadata=catalog.definition_metadata(
        GAP_SCHEMA,
        catalog.GAP_COLUMNS,
        "gaps/date=YYYY-MM-DD/gap_report.parquet",
        coverage_path="gap_coverage/date=YYYY-MM-DD/coverage.parquet",
        coverage_schema=catalog.table_schema(COVERAGE_SCHEMA, catalog.COVERAGE_COLUMNS),
        verdict_path="gap_verdict/date=YYYY-MM-DD/verdict.parquet",
        verdict_schema=catalog.table_schema(VERDICT_SCHEMA, catalog.VERDICT_COLUMNS),
        json_paths="_meta/gaps/date=YYYY-MM-DD/verdict.json, _meta/gaps/date=YYYY-MM-DD/summary.json",
    ),
    owners=catalog.OWNERS,
)
def gap_report(context: dg.AssetExecutionContext, config: GapReportConfig) -> dg.MaterializeResult:
    day = parse_day_key(context.partition_key, calendar())
    root = lake.data_dir()
    try:
        as_of = parse_iso_datetime(config.as_of, "as_of") if config.as_of else None
    except DateFormatError as e:
        raise dg.Failure(str(e)) from None
    if as_of is not None and as_of.tzinfo is None:
        raise dg.Failure(f"as_of {config.as_of!r} needs an explicit offset (e.g. +09:00)")
    rep = build_report(root, day, as_of, instance=context.instance)
    path, cov_path, ver_path = write_report(root, day, rep)
    if rep.verdict["anomaly_day"]:
        context.log.warning(f"gap_report {day}: anomaly day: {[r['rule'] for r in rep.verdict['rules_fired']]}")
    s = rep.summary
    if s["events_bad_lines"] or s["events_torn_lines"]:
        context.log.warning(
            f"gap_report {day}: {s['events_bad_lines']} unreadable and {s['events_torn_lines']} torn "
            f"event line(s) skipped: {s['events_unreadable_where']}"
        )
    return dg.MaterializeResult(
        metadata={
            "rows": s["rows"],
            "open_gaps": dg.MetadataValue.md(open_gaps_markdown(rep)),
            "open_gap_count": sum(1 for st in rep.rows.column("status").to_pylist() if (st or "open") == "open")
            if "status" in rep.rows.column_names
            else s["rows"],
            "data_lost_rows": s["data_lost_rows"],
            "backfill_targets": s["backfill_targets"],
            "events_bad_lines": s["events_bad_lines"],
            "events_torn_lines": s["events_torn_lines"],
            "anomaly_day": rep.verdict["anomaly_day"],
            "as_of": rep.verdict["as_of"],
            "by_kind": dg.MetadataValue.json(s["by_kind"]),
            "by_reason": dg.MetadataValue.json(s["by_reason"]),
            "slots_by_state": dg.MetadataValue.json(s["slots_by_state"]),
            "coverage_rows": rep.coverage.num_rows,
            "coverage_path": dg.MetadataValue.path(str(cov_path)),
            "verdict_table_path": dg.MetadataValue.path(str(ver_path)),
            "verdict": dg.MetadataValue.json(rep.verdict),
            "summary": dg.MetadataValue.md(markdown(rep)),
            **catalog.materialized(rep.rows.num_rows, path),
            "generated_at": clock.now().isoformat(),
        }
    )
