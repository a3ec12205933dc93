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

Rows that are not data losses (silences, late snapshots, rate-limit notices, a window while nothing was
subscribed or across which every subscribed code's trades are complete) carry ``data_lost = False`` and status
``info``; backfill targets are rows with ``restorable`` and status ``open``. A row's ``reason`` is one of
``REASONS``, each given only on its evidence (``detect_track_a`` for slots, the markers for windows).

Besides the rows: one coverage row per slot (``COVERAGE_SCHEMA``) and one verdict row per rule
(``VERDICT_SCHEMA``), with the verdict and a summary as JSON.

Each track's rules are their own module (``detect_track_a``, ``detect_track_b``): they share only the inputs and
row schema (``detect_common``). This module keeps what spans both: rate-limit events, the verdict and ``detect``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pyarrow as pa

from observer_assets.gaps.detect_common import (
    COVERAGE_SCHEMA,
    GAP_SCHEMA,
    KINDS,
    LOSS_KINDS,
    REASONS,
    TS,
    VERDICT_SCHEMA,
    DayInputs,
    SlotRun,
    Thresholds,
    as_kst,
    make_id,
    make_row,
    phase_label,
)
from observer_assets.gaps.detect_phases import missing_phase_rows
from observer_assets.gaps.detect_proof import PROOF_SCHEMA, prove
from observer_assets.gaps.detect_track_a import track_a_rows
from observer_assets.gaps.detect_track_b import Window, connection_windows, judge_windows, track_b_rows
from observer_assets.track_a.snapshot import VENUE_OF_MARKET
from observer_resources.calendar import KST
from observer_resources.intervals import union_length

__all__ = [
    "COVERAGE_SCHEMA",
    "GAP_SCHEMA",
    "KINDS",
    "LOSS_KINDS",
    "REASONS",
    "TS",
    "VERDICT_SCHEMA",
    "DayInputs",
    "Report",
    "SlotRun",
    "Thresholds",
    "detect",
]


@dataclass
class Report:
    rows: pa.Table  # GAP_SCHEMA
    coverage: pa.Table  # COVERAGE_SCHEMA
    verdict: dict[str, Any]
    verdict_table: pa.Table  # VERDICT_SCHEMA
    summary: dict[str, Any]
    proof: pa.Table = field(default_factory=PROOF_SCHEMA.empty_table)  # PROOF_SCHEMA: the completeness proof


def _rate_limit_events(inp: DayInputs) -> list[dict]:
    """One notice per rejection on record: a ``rate_limit_rejected`` event, or any event carrying EGW00201 or the
    rate_limit reason. Events merely named after the limiter (its waits summary, its store recreated) are not."""
    rows = []
    files = list(inp.files.get("events", ()))
    as_of = as_kst(inp.as_of)
    for e in inp.events:
        et = str(e.get("event_type", ""))
        if et == "gap_marker":
            continue
        if et != "rate_limit_rejected" and e.get("reason") != "rate_limit" and e.get("code") != "EGW00201":
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
NOT_DECIDED_HERE = ("track_b_record_rate", "cpu", "disk_usage", "etl_failure", "backup_failure")


def _rules(inp: DayInputs, rows: list[dict], wins: list[Window], th: Thresholds) -> list[dict[str, Any]]:
    """Every anomaly-day rule the stored data decides, fired or not: rule, value, threshold, unit, fired, detail."""
    disc = [w for w in wins if w.row["kind"] == "ws_disconnect"]
    reconnect_events = sum(1 for e in inp.events if e.get("event_type") == "ws_connected" and e.get("reconnect"))
    reconnects = max(reconnect_events, len(disc))
    down = union_length([(w.a, w.b) for w in wins], 0) / 1e6
    long_gaps = [
        r["gap_id"]
        for r in rows
        if r["data_lost"] and (r["seconds"] or 0) >= th.anomaly_long_gap_s and r["kind"] != "track_a_missing_symbol"
    ]
    crit = [r["gap_id"] for r in rows if r["severity"] == "critical" and r["kind"] != "track_b_silence"]
    marker = inp.anomaly or {}
    marker_rules = [r.get("rule") for r in marker.get("rules", [])] if isinstance(marker.get("rules"), list) else []
    return [
        {"rule": "ws_reconnects", "value": reconnects, "threshold": th.anomaly_reconnects, "unit": "count"},
        {
            "rule": "ws_disconnection_seconds",
            "value": round(down, 3),
            "threshold": th.anomaly_disconnect_s,
            "unit": "seconds",
        },
        {
            "rule": "gaps_of_60s",
            "value": len(long_gaps),
            "threshold": th.anomaly_long_gaps,
            "unit": "count",
            "gap_ids": long_gaps[:20],
        },
        {"rule": "critical_gap", "value": len(crit), "threshold": 1, "unit": "count", "gap_ids": crit[:20]},
        {
            "rule": "anomaly_marker",
            "value": 1 if inp.anomaly else 0,
            "threshold": 1,
            "unit": "marker present",
            "marker_rules": marker_rules,
        },
    ]


def _verdict(inp: DayInputs, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict as JSON (what the metrics exporter and the backup read): the rules fired, the measured values."""
    fired = []
    for r in rules:
        if r["value"] < r["threshold"]:
            continue
        f = {k: r[k] for k in ("rule", "value", "threshold")}
        if r["rule"] == "anomaly_marker":
            f.update(value=r["marker_rules"] or True, threshold="present")
        elif r["rule"] == "critical_gap":
            f["gap_ids"] = r["gap_ids"]
        fired.append(f)
    m = {r["rule"]: r["value"] for r in rules}
    return {
        "day": inp.day.isoformat(),
        "as_of": as_kst(inp.as_of).isoformat(),
        "anomaly_day": bool(fired),
        "rules_fired": fired,
        "measured": {
            "reconnects": m["ws_reconnects"],
            "disconnected_seconds": m["ws_disconnection_seconds"],
            "gaps_of_60s": m["gaps_of_60s"],
            "critical_gaps": m["critical_gap"],
        },
        "not_decided_here": list(NOT_DECIDED_HERE),
    }


def _verdict_table(inp: DayInputs, rules: list[dict[str, Any]], anomaly_day: bool) -> pa.Table:
    as_of = as_kst(inp.as_of)
    rows = [
        {
            "rule": r["rule"],
            "decided": True,
            "fired": r["value"] >= r["threshold"],
            "value": float(r["value"]),
            "threshold": float(r["threshold"]),
            "unit": r["unit"],
            "detail": json.dumps({k: v for k, v in r.items() if k not in ("rule", "value", "threshold", "unit")})
            if len(r) > 4
            else None,
            "anomaly_day": anomaly_day,
            "as_of": as_of,
        }
        for r in rules
    ]
    rows += [
        {
            "rule": name,
            "decided": False,
            "fired": None,
            "value": None,
            "threshold": None,
            "unit": None,
            "detail": json.dumps({"note": "decided outside the gap report (a data check, monitoring, the backup)"}),
            "anomaly_day": anomaly_day,
            "as_of": as_of,
        }
        for name in NOT_DECIDED_HERE
    ]
    return pa.Table.from_pylist(rows, schema=VERDICT_SCHEMA)


# --- entry point ----------------------------------------------------------------------------------------------


def _captured_tapes(inp: DayInputs) -> str:
    """The tapes the capture recorded on the day, joined by +: a connection-wide row (a disconnect, a dead capture)
    is about each of them, and each tape's losses inside its window are counted in it."""
    held = {"KRX"} if inp.ticks is not None and inp.ticks.num_rows else set()
    held |= {v for v, t in inp.venue_ticks.items() if t is not None and t.num_rows}
    return "+".join(v for v in ("KRX", "NXT", "unified") if v in held) or "KRX"


def _place(row: dict[str, Any], inp: DayInputs) -> None:
    """The venue and phase a row is about. A Track A row: its symbol's quote at the slot (or every kind the slot
    quoted), at the slot instant. A Track B row of another tape names it; every other row is about the capture,
    every tape it recorded that day (KRX's when it recorded none), at the row's start."""
    if row["kind"].startswith("track_a"):
        at = row["slot_ts"]
        markets = inp.slot_universe.get(at) if at is not None else None
        if row["symbol"] is not None:
            venue = VENUE_OF_MARKET[(markets or {}).get(row["symbol"], "J")]
        else:
            kinds = {VENUE_OF_MARKET[m] for m in (markets or {"": "J"}).values()}
            venue = "+".join(v for v in ("KRX", "NXT", "unified") if v in kinds)
    else:
        at, venue = row["start"] or row["slot_ts"], row["venue"] or _captured_tapes(inp)
    row["venue"] = venue
    row["phase"] = phase_label(inp.phases, venue, as_kst(at)) if at is not None else None


def detect(inp: DayInputs, th: Thresholds = Thresholds()) -> Report:
    """Every gap of the day up to ``inp.as_of``, one row each (``GAP_SCHEMA``), plus coverage, verdict and summary."""
    a_rows, coverage = track_a_rows(inp, th)
    wins, marker_rows, ignored = connection_windows(inp, th)
    b_rows, b_stats, continuity = track_b_rows(inp, wins, th)
    if inp.venue_ticks:
        b_stats["venues"] = {}
    for venue, table in inp.venue_ticks.items():  # each tape judged by its own cumulative volume
        tape = replace(inp, ticks=table, restored_ticks=inp.venue_restored.get(venue))
        v_rows, v_stats, _ = track_b_rows(tape, wins, th, venue)
        b_rows += v_rows
        b_stats["venues"][venue] = v_stats
    judge_windows(wins, continuity, inp.today)
    for w in wins:
        if w.row["status"] is None:
            w.row["status"] = "open" if inp.today else "unrecoverable"
    marked = [(w.row["start"], w.row["end"] or as_kst(inp.as_of)) for w in wins]
    rows = a_rows + marker_rows + [w.row for w in wins] + b_rows + missing_phase_rows(inp, marked)
    rows += _rate_limit_events(inp)
    proof, proof_rows, proof_summary = prove(inp, rows)
    rows += proof_rows
    for r in rows:
        _place(r, inp)
    rows.sort(key=lambda r: (r["start"] or r["slot_ts"], r["kind"], r["symbol"] or ""))
    table = pa.Table.from_pylist(rows, schema=GAP_SCHEMA)
    rules = _rules(inp, rows, wins, th)
    verdict = _verdict(inp, rules)
    kinds = Counter(r["kind"] for r in rows)
    states = Counter(c["state"] for c in coverage)
    summary = {
        "rows": len(rows),
        "by_kind": dict(sorted(kinds.items())),
        "by_reason": dict(sorted(Counter(r["reason"] for r in rows).items())),
        "by_severity": dict(Counter(r["severity"] for r in rows if r["kind"] != "track_b_silence")),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "data_lost_rows": sum(1 for r in rows if r["data_lost"]),
        "backfill_targets": sum(1 for r in rows if r["restorable"] and r["status"] == "open"),
        "slots": len(coverage),
        "slots_by_state": dict(sorted(states.items())),
        "symbols_expected": sum(c["expected"] for c in coverage if c["state"] != "pending"),
        "symbols_live": sum(c["live"] for c in coverage),
        "symbols_restored": sum(c["restored"] for c in coverage),
        "symbols_missing": sum(c["missing"] or 0 for c in coverage),
        "track_b": b_stats,
        "markers_ignored": dict(ignored),
        "universe_size": len(set(inp.universe or ())),
        "runs_looked_up": inp.runs is not None,
        # the report is built without these lines: say so, so a gap they held is not silently missing
        "events_bad_lines": int(inp.events_unreadable.get("bad_lines", 0)),
        "events_torn_lines": int(inp.events_unreadable.get("torn_lines", 0)),
        "events_unreadable_where": list(inp.events_unreadable.get("where", ())),
        "proof": proof_summary,
    }
    return Report(
        table,
        pa.Table.from_pylist(coverage, schema=COVERAGE_SCHEMA),
        verdict,
        _verdict_table(inp, rules, verdict["anomaly_day"]),
        summary,
        proof,
    )
