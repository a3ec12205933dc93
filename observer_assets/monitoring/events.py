"""The day's system events, read back and told as a story (docs/collector-rules.md §13, §8.2).

Every component appends JSON lines to ``system/events/YYYYMMDD.<host>.jsonl`` (``observer_resources.events``,
one file per host and day). Here:

* :func:`load_day` / :func:`read_day` read one day's files, merged in time order — as records, or as a pandas
  DataFrame — through the one tolerant reader of ``observer_resources.events``: a torn last line (a writer died
  mid-write) and any line that is not a JSON event are counted per file and reported, never fatal: one bad line
  must not hide the rest of the day.
* :func:`summarize` (pure, in ``observer_assets.monitoring.summary``) turns events into counts by type plus what an
  operator asks first: how often and how long the WebSocket was down, slot changes and overflows, mitigation
  changes, gaps opened/closed/still open, token issues and failures, rate-limit rejections and waits, ETL, backup
  and retention results.
* the ``system_events`` asset (partitioned by trading day) materializes the summary as UI metadata — a Markdown
  table and numeric values Dagster can plot — and writes ``_meta/system_events/date=YYYY-MM-DD/summary.json`` atomically.
* ``observer_resources.events.record`` is how assets emit their own result events without letting a full disk
  hide the real error.
"""

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from observer_assets import catalog

# the pure summary lives in summary.py; importable from here as before
from observer_assets.monitoring.summary import (  # noqa: F401
    BACKUP_TYPES,
    CAPTURE_PREFIXES,
    MAX_LISTED,
    RETENTION_TYPES,
    TOKEN_ISSUE_TYPES,
    WS_TYPES,
    key_numbers,
    markdown,
    summarize,
)
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_resources import clock
from observer_resources.calendar import KST

# DayEvents and load_day live with the writer (one reader for every caller); importable from here as before
from observer_resources.events import DayEvents, EventLog, load_day  # noqa: F401
from observer_resources.storage import lake
from observer_resources.storage.layout import events_summary_path as summary_path

log = logging.getLogger("observer.events")

# --- reading ------------------------------------------------------------------------------------


def read_day(data_dir: Path | str, day: date) -> pd.DataFrame:
    """The day's events as a DataFrame (one row per event, nested fields as dicts, ``timestamp`` tz-aware KST).

    ``df.attrs`` carries ``files``, ``exists``, ``torn_lines`` / ``bad_lines`` (per file name) and their totals
    ``torn_count`` / ``bad_count``; a day without files gives an empty frame.
    """
    d = load_day(data_dir, day)
    df = (
        pd.DataFrame.from_records(d.records)
        if d.records
        else pd.DataFrame(columns=["event_type", "timestamp", "source"])
    )
    if len(df):
        df["timestamp"] = pd.to_datetime(df["timestamp"], format="ISO8601", utc=True).dt.tz_convert(KST)
    df.attrs.update(
        files=[str(p) for p in d.files],
        exists=d.exists,
        torn_lines=dict(d.torn_lines),
        bad_lines={k: list(v) for k, v in d.bad_lines.items()},
        torn_count=d.torn_count,
        bad_count=d.bad_count,
    )
    return df


# --- the asset -------------------------------------------------------------------------------------


def _overflow_ledger(root: Path, day: date) -> dict[str, int]:
    """Evaluations that turned candidates away, and how many, from the day's overflow ledger (docs/collector-rules.md §4.4)."""
    from observer_resources.storage.layout import overflow_path  # the capture module is heavy; import on use

    path = overflow_path(root, day)
    out = {"overflow_ledger_evaluations": 0, "overflow_ledger_rejected": 0, "overflow_ledger_unreadable_lines": 0}
    if not path.exists():
        return out
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n") or not raw.strip():
                out["overflow_ledger_unreadable_lines"] += bool(raw.strip())
                continue
            try:
                rec = json.loads(raw)
                n = len(rec.get("rejected") or [])
            except (ValueError, AttributeError, TypeError):
                out["overflow_ledger_unreadable_lines"] += 1
                continue
            out["overflow_ledger_evaluations"] += 1
            out["overflow_ledger_rejected"] += n
    return out


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="ops",
    kinds={"python", "json"},
    description=(
        "The trading day's system events told as a story: WebSocket connects, disconnects and disconnected time, "
        "slot changes and overflows, mitigation changes, gaps opened/closed/still open, token issues and failures, "
        "rate-limit rejections and waits, universe/Track A results, backup and retention results. Read from "
        "system/events/YYYYMMDD.<host>.jsonl (every host's file); a day without events is an empty summary."
    ),
    # one JSON document per day: its column schema is the document's top-level members, its row count 1
    metadata=catalog.definition_metadata(
        catalog.SYSTEM_EVENTS_SCHEMA,
        catalog.SYSTEM_EVENTS_COLUMNS,
        "_meta/system_events/date=YYYY-MM-DD/summary.json",
        source="system/events/YYYYMMDD.<host>.jsonl",
    ),
    owners=catalog.OWNERS,
)
def system_events(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    day = parse_day_key(context.partition_key, calendar())
    root, local = lake.data_dir(), lake.local_dir()  # events and the ledger are local; the summary goes to the lake
    d = load_day(local, day)
    s = summarize(d.records)
    s["slots"].update(_overflow_ledger(local, day))
    note = None
    if not d.exists:
        note = (
            f"No events file for {day.isoformat()} in {d.directory}: nothing was recorded that day; an empty summary."
        )
    elif d.torn_count or d.bad_count:
        note = (
            f"{d.torn_count} torn last line(s) and {d.bad_count} unreadable line(s) were not counted "
            f"({', '.join(d.problems(MAX_LISTED))})."
        )
        context.log.warning(f"system_events {day}: {note}")
    doc = {
        "day": day.isoformat(),
        "generated_at": clock.now().isoformat(),
        "events_files": [str(p) for p in d.files],
        "events_file_exists": d.exists,
        "torn_lines": d.torn_count,
        "bad_lines": d.bad_count,
        "bad_line_numbers": {k: v[:MAX_LISTED] for k, v in d.bad_lines.items()},
        "note": note,
        **s,
    }
    path = lake.write_bytes_atomic(
        summary_path(root, day), json.dumps(doc, ensure_ascii=False, indent=1, default=str).encode("utf-8")
    )
    md: dict[str, Any] = {
        **key_numbers(s),
        "slot_overflow_candidates": s["slots"]["overflow_ledger_rejected"],
        "torn_lines": d.torn_count,
        "bad_lines": d.bad_count,
        "events_files": (
            dg.MetadataValue.json([str(p) for p in d.files]) if d.exists else "none: no events recorded this day"
        ),
        "summary": dg.MetadataValue.md(markdown(s, day, note=note)),
        "by_type": dg.MetadataValue.json(s["by_type"]),
        **catalog.materialized(1, path),
        "generated_at": doc["generated_at"],
    }
    if note:
        md["note"] = note
    return dg.MaterializeResult(metadata=md)
