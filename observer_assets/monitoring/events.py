"""The day's system events, read back and told as a story (docs/collector-rules.md §13, §8.2).

Every component appends JSON lines to ``system/events/YYYYMMDD.<host>.jsonl`` (``observer_resources.events``,
one file per host and day). Here:

* :func:`load_day` / :func:`read_day` read one day's files, merged in time order — as records, or as a pandas
  DataFrame — through the one tolerant reader of ``observer_resources.events``: a torn last line (a writer died
  mid-write) and any line that is not a JSON event are counted per file and reported, never fatal: one bad line
  must not hide the rest of the day.
* :func:`summarize` (pure) turns events into counts by type plus what an operator asks first: how often and how
  long the WebSocket was down, slot changes and overflows, mitigation changes, gaps opened/closed/still open, token
  issues and failures, rate-limit rejections and waits, ETL, backup and retention results.
* the ``system_events`` asset (partitioned by trading day) materializes the summary as UI metadata — a Markdown
  table and numeric values Dagster can plot — and writes ``system_events/date=YYYY-MM-DD/summary.json`` atomically.
* :func:`record` is how assets emit their own result events without letting a full disk hide the real error.
"""

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from observer_assets import catalog

from observer_resources.storage import lake
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_resources.calendar import KST
# DayEvents and load_day live with the writer (one reader for every caller); importable from here as before
from observer_resources.events import DayEvents, EventLog, load_day  # noqa: F401
from observer_resources import clock
from observer_resources.storage.layout import events_summary_path as summary_path

log = logging.getLogger("observer.events")

MAX_LISTED = 20  # items kept in the summary's lists (history, open gaps, bad lines); counts are always complete

WS_TYPES = ("ws_connected", "ws_disconnect", "ws_connect_failed")
TOKEN_ISSUE_TYPES = ("token_issued", "token_refreshed")
#: events the Track B capture writes while it runs: an open disconnect is measured up to the last of them
CAPTURE_PREFIXES = ("ws_", "capture_", "gap_", "slot_", "mitigation_", "journal_")
BACKUP_TYPES = ("backup_succeeded", "backup_failed", "backup_verified", "backup_verify_failed")
RETENTION_TYPES = ("retention_deleted", "retention_kept", "retention_blocked")


# --- reading ------------------------------------------------------------------------------------


def read_day(data_dir: Path | str, day: date) -> pd.DataFrame:
    """The day's events as a DataFrame (one row per event, nested fields as dicts, ``timestamp`` tz-aware KST).

    ``df.attrs`` carries ``files``, ``exists``, ``torn_lines`` / ``bad_lines`` (per file name) and their totals
    ``torn_count`` / ``bad_count``; a day without files gives an empty frame.
    """
    d = load_day(data_dir, day)
    df = pd.DataFrame.from_records(d.records) if d.records else pd.DataFrame(columns=["event_type", "timestamp",
                                                                                       "source"])
    if len(df):
        df["timestamp"] = pd.to_datetime(df["timestamp"], format="ISO8601", utc=True).dt.tz_convert(KST)
    df.attrs.update(files=[str(p) for p in d.files], exists=d.exists, torn_lines=dict(d.torn_lines),
                    bad_lines={k: list(v) for k, v in d.bad_lines.items()}, torn_count=d.torn_count,
                    bad_count=d.bad_count)
    return df


# --- summarizing (pure) ----------------------------------------------------------------------------


def _v(x: Any) -> Any:
    """None for missing values, including the NaN a DataFrame puts in columns an event lacks."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return x


def _num(x: Any) -> float:
    x = _v(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return 0.0
    return float(x)


def _ts(x: Any) -> datetime | None:
    x = _v(x)
    if isinstance(x, datetime):
        return x.astimezone(KST) if x.tzinfo else None
    if isinstance(x, pd.Timestamp):
        return x.to_pydatetime().astimezone(KST) if x.tzinfo else None
    if isinstance(x, str):
        try:
            t = datetime.fromisoformat(x)
        except ValueError:
            return None
        return t.astimezone(KST) if t.tzinfo else None
    return None


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _key(e: Mapping[str, Any]) -> str:
    k = _v(e.get("key_id"))
    if k is None:
        md = _v(e.get("metadata"))
        k = md.get("key_id") if isinstance(md, Mapping) else None
    return str(k) if k is not None else "?"


def _r(x: float) -> float:
    return round(x, 3)


@dataclass
class _Gap:
    gap_id: str
    reason: str | None = None
    severity: str | None = None
    scope: str | None = None
    symbol: str | None = None
    key_id: str = "?"
    start: datetime | None = None
    opened: bool = False
    closed: bool = False
    seconds: float | None = None


def summarize(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by event type plus the day's story (module docstring). Order of ``events`` does not matter."""
    never = datetime.min.replace(tzinfo=KST)
    evs = sorted((e for e in events if isinstance(_v(e.get("event_type")), str)),
                 key=lambda e: (_ts(e.get("timestamp")) is None, _ts(e.get("timestamp")) or never))
    by_type = Counter(e["event_type"] for e in evs)
    stamps = [t for t in (_ts(e.get("timestamp")) for e in evs) if t is not None]
    last_at = max(stamps) if stamps else None
    capture_stamps = [t for t in (_ts(e.get("timestamp")) for e in evs if e["event_type"].startswith(CAPTURE_PREFIXES))
                      if t is not None]
    capture_last = max(capture_stamps) if capture_stamps else last_at

    def of(*types: str) -> list[Mapping[str, Any]]:
        return [e for e in evs if e["event_type"] in types]

    # gaps: open and close markers merged by gap_id; a later open marker (escalation) re-marks the severity
    gaps: dict[str, _Gap] = {}
    for e in of("gap_marker"):
        gid = str(_v(e.get("gap_id")) or f"?{len(gaps)}")
        g = gaps.setdefault(gid, _Gap(gid))
        closed = _v(e.get("state")) == "closed" or _v(e.get("gap_end_ts")) is not None
        if g.closed and not closed:
            continue  # a stale re-mark after the close changes nothing
        g.reason, g.scope = _v(e.get("reason")) or g.reason, _v(e.get("scope")) or g.scope
        g.severity = _v(e.get("severity")) or g.severity
        g.symbol = _v(e.get("symbol"))
        g.key_id = _key(e) if _key(e) != "?" else g.key_id
        g.start = _ts(e.get("gap_start_ts")) or g.start
        if closed:
            g.closed = True
            g.seconds = _num(e.get("gap_seconds"))
        else:
            g.opened = True
    still_open = [g for g in gaps.values() if not g.closed]
    closed = [g for g in gaps.values() if g.closed]
    gap_summary = {
        "markers": len(of("gap_marker")),
        "opened": sum(g.opened for g in gaps.values()),
        "closed": len(closed),
        "still_open": len(still_open),
        "closed_without_open_marker": sum(1 for g in closed if not g.opened),  # opened on an earlier day
        "closed_seconds": _r(sum(g.seconds or 0.0 for g in closed)),
        "by_reason": dict(Counter(g.reason or "?" for g in gaps.values())),
        "by_severity": dict(Counter(g.severity or "?" for g in gaps.values())),
        "critical": sum(g.severity == "critical" for g in gaps.values()),
        "major_or_worse": sum(g.severity in ("major", "critical") for g in gaps.values()),
        "open_gaps": [{"gap_id": g.gap_id, "reason": g.reason, "severity": g.severity, "scope": g.scope,
                       "symbol": g.symbol, "key_id": g.key_id, "start": _iso(g.start)} for g in still_open][:MAX_LISTED],
    }

    # WebSocket: connects/disconnects from the client's events; down time from the ws_disconnect gaps (they start at
    # the last frame received, so they measure what was not recorded), else from ws_connected outages
    ws_keys: dict[str, dict[str, Any]] = defaultdict(lambda: {"connects": 0, "reconnects": 0, "disconnects": 0,
                                                               "connect_failures": 0, "disconnected_seconds": 0.0})
    outage = 0.0
    for e in of(*WS_TYPES):
        k = ws_keys[_key(e)]
        if e["event_type"] == "ws_connected":
            k["connects"] += 1
            if _v(e.get("reconnect")):
                k["reconnects"] += 1
                outage += _num(e.get("outage_seconds"))
        elif e["event_type"] == "ws_disconnect":
            k["disconnects"] += 1
        else:
            k["connect_failures"] += 1
    ws_gaps = [g for g in gaps.values() if g.reason == "ws_disconnect"]
    still_down = []
    if ws_gaps:
        basis = "ws_disconnect gap markers"
        for g in ws_gaps:
            if g.closed:
                secs = g.seconds or 0.0
            else:
                secs = max((capture_last - g.start).total_seconds(), 0.0) if (capture_last and g.start) else 0.0
                still_down.append({"key_id": g.key_id, "since": _iso(g.start), "gap_id": g.gap_id,
                                   "seconds_until_last_capture_event": _r(secs)})
            ws_keys[g.key_id]["disconnected_seconds"] += secs
        down = sum(k["disconnected_seconds"] for k in ws_keys.values())
    else:
        basis = "ws_connected outages" if outage else "none"
        down = outage
    for k in ws_keys.values():
        k["disconnected_seconds"] = _r(k["disconnected_seconds"])

    def tot(name: str) -> int:
        return sum(k[name] for k in ws_keys.values())

    websocket = {
        "connects": tot("connects"), "reconnects": tot("reconnects"), "disconnects": tot("disconnects"),
        "connect_failures": tot("connect_failures"),
        "reconnect_attempts": tot("reconnects") + tot("connect_failures"),
        "disconnected_seconds": _r(down), "disconnected_basis": basis, "still_disconnected": still_down[:MAX_LISTED],
        "outage_seconds_reported": _r(outage), "max_over": by_type.get("ws_max_over", 0),
        "failure_critical": by_type.get("ws_failure_critical", 0),
        "by_key": {k: v for k, v in sorted(ws_keys.items())},
    }

    slot_actions = Counter(str(_v(e.get("action")) or "?") for e in of("slot_change"))
    slots = {"changes": sum(slot_actions.values()), "by_action": dict(slot_actions),
             "replacements": slot_actions.get("replace", 0), "overflows": by_type.get("ws_max_over", 0)}

    mit = of("mitigation_level_change")
    levels = [int(_num(e.get("new"))) for e in mit]
    mitigation = {
        "changes": len(mit), "max_level": max(levels, default=0), "last_level": levels[-1] if levels else None,
        "history": [{"at": _iso(_ts(e.get("timestamp"))), "old": _v(e.get("old")), "new": _v(e.get("new")),
                     "cause": _v(e.get("cause"))} for e in mit][:MAX_LISTED],
    }

    issued = of(*TOKEN_ISSUE_TYPES)
    here = [e for e in issued if _v(e.get("issued_by")) == "this_process"]
    failures = of("token_issue_failed", "approval_key_failed")
    tokens = {
        "issued_by_kis": len(here),  # issuances this system asked KIS for (KIS allows one a minute per key)
        "adopted_from_store": len(issued) - len(here),
        "refreshes": by_type.get("token_refreshed", 0),
        "refused_egw00133": by_type.get("token_issue_refused", 0),
        "refresh_deferred": by_type.get("token_refresh_deferred", 0),
        "failures": by_type.get("token_issue_failed", 0),
        "approval_keys": by_type.get("approval_key_issued", 0),
        "approval_key_failures": by_type.get("approval_key_failed", 0),
        "latest_expiry": {k: v for k, v in sorted(
            {_key(e): _v(e.get("expires_at")) for e in issued}.items())},
        "failure_list": [{"at": _iso(_ts(e.get("timestamp"))), "event": e["event_type"], "key_id": _key(e),
                          "error": _v(e.get("error")), "code": _v(e.get("code")), "message": _v(e.get("message"))}
                         for e in failures][:MAX_LISTED],
    }

    rej = of("rate_limit_rejected")
    waits = of("rate_limit_waits")
    rate_limit = {
        "rejections": len(rej),
        "gave_up": sum(bool(_v(e.get("gave_up"))) for e in rej),
        "retry_wait_seconds": _r(sum(_num(e.get("wait_seconds")) for e in rej)),
        "by_tr_id": dict(Counter(str(_v(e.get("tr_id")) or "?") for e in rej)),
        "limiter_reports": len(waits),
        "limiter_requests": int(sum(_num(e.get("requests")) for e in waits)),
        "limiter_waited_requests": int(sum(_num(e.get("waited_requests")) for e in waits)),
        "limiter_wait_seconds": _r(sum(_num(e.get("wait_seconds")) for e in waits)),
        "limiter_max_wait_seconds": _r(max((_num(e.get("max_wait_seconds")) for e in waits), default=0.0)),
    }
    rate_limit["total_wait_seconds"] = _r(rate_limit["retry_wait_seconds"] + rate_limit["limiter_wait_seconds"])

    uni, uni_failed = of("universe_built"), of("universe_build_failed")
    ta, ta_failed = of("track_a_slot"), of("track_a_slot_failed")
    etl = {
        "universe_built": len(uni), "universe_failed": len(uni_failed),
        "universe_fallbacks": sum(bool(_v(e.get("fallback"))) for e in uni),
        "universe_count": _v(uni[-1].get("count")) if uni else None,
        "track_a_slots": len(ta), "track_a_slots_failed": len(ta_failed),
        "track_a_symbols_ok": int(sum(_num(e.get("ok")) for e in ta)),
        "track_a_symbols_failed": int(sum(_num(e.get("failed")) for e in ta)),
        "track_a_by_mode": dict(Counter(str(_v(e.get("mode")) or "?") for e in ta)),
        "failure_list": [{"at": _iso(_ts(e.get("timestamp"))), "event": e["event_type"],
                          "what": _v(e.get("slot")) or _v(e.get("day")), "error": _v(e.get("error"))}
                         for e in (uni_failed + ta_failed)][:MAX_LISTED],
    }
    etl["failures"] = etl["universe_failed"] + etl["track_a_slots_failed"]

    def days(es: list[Mapping[str, Any]]) -> list[Any]:
        return sorted({str(_v(e.get("day"))) for e in es if _v(e.get("day")) is not None})[:MAX_LISTED]

    backup = {name.removeprefix("backup_"): by_type.get(name, 0) for name in BACKUP_TYPES}
    backup["days"] = {name.removeprefix("backup_"): days(of(name)) for name in BACKUP_TYPES}
    retention = {name.removeprefix("retention_"): by_type.get(name, 0) for name in RETENTION_TYPES}
    deleted = of("retention_deleted")
    retention["deleted_files"] = int(sum(_num(e.get("files")) for e in deleted))
    retention["deleted_bytes"] = int(sum(_num(e.get("bytes")) for e in deleted))
    retention["days"] = {name.removeprefix("retention_"): days(of(name)) for name in RETENTION_TYPES}

    return {
        "events": len(evs),
        "first_at": _iso(min(stamps)) if stamps else None,
        "last_at": _iso(last_at),
        "by_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "websocket": websocket,
        "slots": slots,
        "mitigation": mitigation,
        "gaps": gap_summary,
        "tokens": tokens,
        "rate_limit": rate_limit,
        "etl": etl,
        "backup": backup,
        "retention": retention,
        "anomalies": sorted({str(_v(e.get("rule"))) for e in of("anomaly_day")}),
        "capture": {"started": by_type.get("capture_started", 0), "stopped": by_type.get("capture_stopped", 0),
                    "recovered": by_type.get("capture_recovered", 0),
                    "supervisor_restarts": by_type.get("capture_supervisor_restart", 0)},
    }


# --- the UI --------------------------------------------------------------------------------------


def key_numbers(s: Mapping[str, Any]) -> dict[str, int | float]:
    """The numbers the UI plots across partitions (one metadata entry each)."""
    ws, g, t, rl, etl = s["websocket"], s["gaps"], s["tokens"], s["rate_limit"], s["etl"]
    return {
        "events": s["events"],
        "ws_connects": ws["connects"], "ws_disconnects": ws["disconnects"],
        "ws_reconnect_attempts": ws["reconnect_attempts"], "ws_disconnected_seconds": float(ws["disconnected_seconds"]),
        "slot_changes": s["slots"]["changes"], "slot_overflows": s["slots"]["overflows"],
        "mitigation_changes": s["mitigation"]["changes"], "mitigation_max_level": s["mitigation"]["max_level"],
        "gaps_opened": g["opened"], "gaps_closed": g["closed"], "gaps_still_open": g["still_open"],
        "gap_seconds_closed": float(g["closed_seconds"]), "gaps_critical": g["critical"],
        "tokens_issued_by_kis": t["issued_by_kis"], "token_refreshes": t["refreshes"],
        "token_failures": t["failures"] + t["approval_key_failures"],
        "rate_limit_rejections": rl["rejections"], "rate_limit_wait_seconds": float(rl["total_wait_seconds"]),
        "etl_failures": etl["failures"],
        "backups_succeeded": s["backup"]["succeeded"], "backups_failed": s["backup"]["failed"],
        "backups_verify_failed": s["backup"]["verify_failed"],
        "retention_deleted": s["retention"]["deleted"], "retention_blocked": s["retention"]["blocked"],
    }


def markdown(s: Mapping[str, Any], day: date, *, note: str | None = None) -> str:
    ws, g, t, rl, etl, m = s["websocket"], s["gaps"], s["tokens"], s["rate_limit"], s["etl"], s["mitigation"]
    rows = [
        ("WebSocket", "connects / reconnects / disconnects", f"{ws['connects']} / {ws['reconnects']} / {ws['disconnects']}"),
        ("WebSocket", "failed connect attempts", ws["connect_failures"]),
        ("WebSocket", "disconnected (s)", f"{ws['disconnected_seconds']} ({ws['disconnected_basis']})"),
        ("WebSocket", "still disconnected", ", ".join(f"{d['key_id']} since {d['since']}" for d in ws["still_disconnected"]) or "no"),
        ("Slots", "changes (replacements)", f"{s['slots']['changes']} ({s['slots']['replacements']})"),
        ("Slots", "subscription overflows (MAX SUBSCRIBE OVER)", s["slots"]["overflows"]),
        ("Slots", "overflow ledger (rejected candidates)", s["slots"].get("overflow_ledger_rejected", "—")),
        ("Mitigation", "level changes (max level)", f"{m['changes']} ({m['max_level']})"),
        ("Gaps", "opened / closed / still open", f"{g['opened']} / {g['closed']} / {g['still_open']}"),
        ("Gaps", "closed gap time (s)", g["closed_seconds"]),
        ("Gaps", "critical / major or worse", f"{g['critical']} / {g['major_or_worse']}"),
        ("Tokens", "issued by KIS / adopted from store", f"{t['issued_by_kis']} / {t['adopted_from_store']}"),
        ("Tokens", "refreshes / EGW00133 refusals / deferred", f"{t['refreshes']} / {t['refused_egw00133']} / {t['refresh_deferred']}"),
        ("Tokens", "failures (token / approval key)", f"{t['failures']} / {t['approval_key_failures']}"),
        ("Tokens", "approval keys", t["approval_keys"]),
        ("Rate limit", "EGW00201 rejections (gave up)", f"{rl['rejections']} ({rl['gave_up']})"),
        ("Rate limit", "wait: retries / limiter (s)", f"{rl['retry_wait_seconds']} / {rl['limiter_wait_seconds']}"),
        ("ETL", "universe built / failed / fallback", f"{etl['universe_built']} / {etl['universe_failed']} / {etl['universe_fallbacks']}"),
        ("ETL", "Track A slots ok / failed", f"{etl['track_a_slots']} / {etl['track_a_slots_failed']}"),
        ("Backup", "succeeded / failed / verified / verify failed",
         f"{s['backup']['succeeded']} / {s['backup']['failed']} / {s['backup']['verified']} / {s['backup']['verify_failed']}"),
        ("Backup", "failed days",
         ", ".join(sorted({*s["backup"]["days"]["failed"], *s["backup"]["days"]["verify_failed"]})) or "none"),
        ("Retention", "deleted / kept / blocked", f"{s['retention']['deleted']} / {s['retention']['kept']} / {s['retention']['blocked']}"),
        ("Retention", "files / bytes deleted", f"{s['retention']['deleted_files']} / {s['retention']['deleted_bytes']}"),
        ("Retention", "blocked days", ", ".join(s["retention"]["days"]["blocked"]) or "none"),
        ("Anomaly", "rules fired", ", ".join(s["anomalies"]) or "none"),
    ]
    lines = [f"### System events of {day.isoformat()}", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += [f"{s['events']} events, {s['first_at'] or '—'} .. {s['last_at'] or '—'}", "",
              "| area | what | value |", "|---|---|---|"]
    lines += [f"| {a} | {w} | {str(v).replace('|', '/')} |" for a, w, v in rows]
    if s["by_type"]:
        lines += ["", "| event type | count |", "|---|---|"] + [f"| {k} | {n} |" for k, n in s["by_type"].items()]
    problems = t["failure_list"] + etl["failure_list"]
    if problems:
        lines += ["", "| at | event | detail |", "|---|---|---|"]
        for p in problems:
            detail = ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("at", "event") and v is not None)
            lines.append(f"| {p['at']} | {p['event']} | {detail.replace('|', '/')} |")
    if g["open_gaps"]:
        lines += ["", "| open gap | reason | severity | key | since |", "|---|---|---|---|---|"]
        lines += [f"| {x['gap_id']} | {x['reason']} | {x['severity']} | {x['key_id']} | {x['start']} |"
                  for x in g["open_gaps"]]
    return "\n".join(lines)


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
    metadata=catalog.definition_metadata(catalog.SYSTEM_EVENTS_SCHEMA, catalog.SYSTEM_EVENTS_COLUMNS,
                                         "system_events/date=YYYY-MM-DD/summary.json",
                                         source="system/events/YYYYMMDD.<host>.jsonl"),
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
        note = (f"No events file for {day.isoformat()} in {d.directory}: nothing was recorded that day; "
                "an empty summary.")
    elif d.torn_count or d.bad_count:
        note = (f"{d.torn_count} torn last line(s) and {d.bad_count} unreadable line(s) were not counted "
                f"({', '.join(d.problems(MAX_LISTED))}).")
        context.log.warning(f"system_events {day}: {note}")
    doc = {"day": day.isoformat(), "generated_at": clock.now().isoformat(),
           "events_files": [str(p) for p in d.files], "events_file_exists": d.exists,
           "torn_lines": d.torn_count, "bad_lines": d.bad_count,
           "bad_line_numbers": {k: v[:MAX_LISTED] for k, v in d.bad_lines.items()}, "note": note, **s}
    path = lake.write_bytes_atomic(summary_path(root, day),
                                   json.dumps(doc, ensure_ascii=False, indent=1, default=str).encode("utf-8"))
    md: dict[str, Any] = {
        **key_numbers(s),
        "slot_overflow_candidates": s["slots"]["overflow_ledger_rejected"],
        "torn_lines": d.torn_count,
        "bad_lines": d.bad_count,
        "events_files": (dg.MetadataValue.json([str(p) for p in d.files]) if d.exists
                         else "none: no events recorded this day"),
        "summary": dg.MetadataValue.md(markdown(s, day, note=note)),
        "by_type": dg.MetadataValue.json(s["by_type"]),
        **catalog.materialized(1, path),
        "generated_at": doc["generated_at"],
    }
    if note:
        md["note"] = note
    return dg.MaterializeResult(metadata=md)
