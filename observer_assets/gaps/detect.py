"""Gap detection for one trading day (pure: tables in, gap rows out; no I/O, no Dagster).

What counts (docs/collector-rules.md §8, §9):

* **Track A**: every valid slot up to the report's as-of time without a live snapshot is a missing slot once
  the 2-minute grace has passed (major < 10 min late, critical >= 10 min); a snapshot taken more than the grace
  after its slot is late; universe symbols absent from a slot's live rows are missing symbols. Rows written later
  by a backfill (``source = restored``) close those gaps as ``restored``, with what they came from.
* **Track B**: per code, ticks ordered by cumulative volume; ``previous ACML_VOL + CNTG_VOL != ACML_VOL`` proves
  lost trades (missing volume, missing trade count from the cumulative buy/sell counts). A silence between two
  ticks is *not* a loss (a quiet symbol); silences >= 10/60/300 s are reported separately, only for time the
  connection was up and the code held a slot. Session-wide gap markers become ``ws_disconnect`` /
  ``capture_restart`` / ``manual_stop`` windows; a loss inside one is attributed to it (its evidence), not
  listed twice.
* **Rate limits**: EGW00201 / RateLimitedError in a slot's failures, rate-limit events and markers.
* **Anomaly verdict**: the §9 rules the stored data can decide.

Rows that are not data losses (silences, late snapshots, rate-limit notices) carry ``data_lost = False`` and
status ``info``; backfill targets are rows with ``restorable`` and status ``open``.

Each track's rules are their own module (``detect_track_a``, ``detect_track_b``): they share only the inputs and
row schema (``detect_common``). This module keeps what spans both: rate-limit events, the verdict and ``detect``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from observer_assets.gaps.detect_common import (
    GAP_SCHEMA,
    LOSS_KINDS,
    TS,
    DayInputs,
    Thresholds,
    as_kst,
    make_id,
    make_row,
)
from observer_assets.gaps.detect_track_a import track_a_rows
from observer_assets.gaps.detect_track_b import Window, connection_windows, track_b_rows
from observer_resources.calendar import KST
from observer_resources.intervals import union_length

__all__ = ["GAP_SCHEMA", "LOSS_KINDS", "TS", "DayInputs", "Report", "Thresholds", "detect"]


@dataclass
class Report:
    rows: pa.Table
    verdict: dict[str, Any]
    summary: dict[str, Any]


def _rate_limit_events(inp: DayInputs) -> list[dict]:
    rows = []
    files = list(inp.files.get("events", ()))
    as_of = as_kst(inp.as_of)
    for e in inp.events:
        et = str(e.get("event_type", ""))
        if et == "gap_marker":
            continue
        if "rate_limit" not in et and e.get("reason") != "rate_limit" and e.get("code") != "EGW00201":
            continue
        if et == "rate_limit_waits":  # a client's summary of its own limiter waits, not a rejection
            continue
        at = datetime.fromisoformat(e["timestamp"]).astimezone(KST)
        if at > as_of:
            continue
        ev = {k: v for k, v in e.items() if k not in ("timestamp",)}
        rows.append(
            make_row(
                gap_id=make_id("rate_limit", et, e["timestamp"]),
                kind="rate_limit",
                scope=e.get("scope") or "all",
                symbol=e.get("symbol"),
                start=at,
                severity="minor",
                reason="rate_limit",
                data_lost=False,
                error_code="EGW00201",
                evidence=ev,
                restorable=False,
                status="info",
                source_files=files,
            )
        )
    return rows


# --- verdict ------------------------------------------------------------------------------------------------------


def _verdict(inp: DayInputs, rows: list[dict], wins: list[Window], th: Thresholds) -> dict[str, Any]:
    fired: list[dict] = []
    disc = [w for w in wins if w.row["kind"] == "ws_disconnect"]
    reconnect_events = sum(1 for e in inp.events if e.get("event_type") == "ws_connected" and e.get("reconnect"))
    reconnects = max(reconnect_events, len(disc))
    if reconnects >= th.anomaly_reconnects:
        fired.append({"rule": "ws_reconnects", "value": reconnects, "threshold": th.anomaly_reconnects})
    down = union_length([(w.a, w.b) for w in wins], 0) / 1e6
    if down >= th.anomaly_disconnect_s:
        fired.append(
            {"rule": "ws_disconnection_seconds", "value": round(down, 3), "threshold": th.anomaly_disconnect_s}
        )
    long_gaps = [
        r["gap_id"]
        for r in rows
        if r["data_lost"] and (r["seconds"] or 0) >= th.anomaly_long_gap_s and r["kind"] != "track_a_missing_symbol"
    ]
    if len(long_gaps) >= th.anomaly_long_gaps:
        fired.append({"rule": "gaps_of_60s", "value": len(long_gaps), "threshold": th.anomaly_long_gaps})
    crit = [r["gap_id"] for r in rows if r["severity"] == "critical" and r["kind"] != "track_b_silence"]
    if crit:
        fired.append({"rule": "critical_gap", "value": len(crit), "threshold": 1, "gap_ids": crit[:20]})
    if inp.anomaly:
        fired.append(
            {
                "rule": "anomaly_marker",
                "value": [r.get("rule") for r in inp.anomaly.get("rules", [])]
                if isinstance(inp.anomaly.get("rules"), list)
                else True,
                "threshold": "present",
            }
        )
    return {
        "day": inp.day.isoformat(),
        "as_of": as_kst(inp.as_of).isoformat(),
        "anomaly_day": bool(fired),
        "rules_fired": fired,
        "measured": {
            "reconnects": reconnects,
            "disconnected_seconds": round(down, 3),
            "gaps_of_60s": len(long_gaps),
            "critical_gaps": len(crit),
        },
        "not_decided_here": ["track_b_record_rate", "cpu", "disk_usage", "etl_failure", "backup_failure"],
    }


# --- entry point ----------------------------------------------------------------------------------------------


def detect(inp: DayInputs, th: Thresholds = Thresholds()) -> Report:
    """Every gap of the day up to ``inp.as_of``, one row each (``GAP_SCHEMA``), plus verdict and summary."""
    a_rows, coverage = track_a_rows(inp, th)
    wins, marker_rows, ignored = connection_windows(inp, th)
    b_rows, b_stats = track_b_rows(inp, wins, th)
    for w in wins:
        if w.row["status"] is None:
            w.row["status"] = "open" if inp.today else "unrecoverable"
    rows = a_rows + marker_rows + [w.row for w in wins] + b_rows + _rate_limit_events(inp)
    rows.sort(key=lambda r: (r["start"] or r["slot_ts"], r["kind"], r["symbol"] or ""))
    table = pa.Table.from_pylist(rows, schema=GAP_SCHEMA)
    verdict = _verdict(inp, rows, wins, th)
    kinds = Counter(r["kind"] for r in rows)
    summary = {
        "rows": len(rows),
        "by_kind": dict(sorted(kinds.items())),
        "by_severity": dict(Counter(r["severity"] for r in rows if r["kind"] != "track_b_silence")),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "data_lost_rows": sum(1 for r in rows if r["data_lost"]),
        "backfill_targets": sum(1 for r in rows if r["restorable"] and r["status"] == "open"),
        "coverage": coverage,
        "track_b": b_stats,
        "markers_ignored": dict(ignored),
        "universe_size": len(set(inp.universe or ())),
        # the report is built without these lines: say so, so a gap they held is not silently missing
        "events_bad_lines": int(inp.events_unreadable.get("bad_lines", 0)),
        "events_torn_lines": int(inp.events_unreadable.get("torn_lines", 0)),
        "events_unreadable_where": list(inp.events_unreadable.get("where", ())),
    }
    return Report(table, verdict, summary)
