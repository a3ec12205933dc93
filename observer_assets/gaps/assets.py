"""The daily gap report asset: every gap of a trading day as Parquet, a verdict file, a readable summary.

``gaps/date=D/gap_report.parquet`` (one row per gap, ``detect.GAP_SCHEMA``), ``gaps/date=D/verdict.json``
(anomaly-day verdict, rules fired, measured values) and ``gaps/date=D/summary.json`` (counts, coverage per slot),
all written atomically. Re-materializing a day after a backfill shows restored gaps as ``restored`` with their
provenance; what history could not give stays listed.
"""

import json

import dagster as dg

from observer_assets import catalog
from observer_assets.gaps.detect import GAP_SCHEMA, Report
from observer_assets.gaps.report import build_report
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_resources import clock
from observer_resources.dates import DateFormatError, parse_iso_datetime
from observer_resources.storage import lake
from observer_resources.storage.layout import report_dir, report_path, verdict_path


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
    cov = s["coverage"]
    if cov:
        lines += ["| slot | state | coverage % | missing | restored | late s |", "|---|---|---|---|---|---|"]
        for label, c in cov.items():
            lines.append(
                f"| {label} | {c.get('state')} | {c.get('coverage_pct', '')} | {c.get('missing', '')} | "
                f"{c.get('restored', '')} | {c.get('lateness_seconds', '')} |"
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
    ],
    description=(
        "Every gap of the trading day from the universe, Track A snapshots, Track B ticks and the event log: "
        "missing/late slots, missing symbols per slot, Track B volume-continuity losses, silences (not losses), "
        "WebSocket disconnects, rate limits, restored/unrecoverable status, and the anomaly-day verdict."
    ),
    metadata=catalog.definition_metadata(GAP_SCHEMA, catalog.GAP_COLUMNS, "gaps/date=YYYY-MM-DD/gap_report.parquet"),
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
    rep = build_report(root, day, as_of)
    path = lake.write_table_atomic(report_path(root, day), rep.rows)
    lake.write_bytes_atomic(verdict_path(root, day), json.dumps(rep.verdict, ensure_ascii=False, indent=1).encode())
    lake.write_bytes_atomic(
        report_dir(root, day) / "summary.json",
        json.dumps(rep.summary, ensure_ascii=False, indent=1, default=str).encode(),
    )
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
            "verdict": dg.MetadataValue.json(rep.verdict),
            "summary": dg.MetadataValue.md(markdown(rep)),
            **catalog.materialized(rep.rows.num_rows, path),
            "generated_at": clock.now().isoformat(),
        }
    )
