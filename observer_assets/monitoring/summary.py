"""A day's system events told as a story (pure: no files, no Dagster) — what the ``system_events`` asset shows.

:func:`summarize` turns events into counts by type plus what an operator asks first, one helper per section: how
often and how long the WebSocket was down, slot changes and overflows, mitigation changes, gaps opened/closed/still
open (merged by ``observer_resources.events.merge_gaps``, the one merge of gap markers), token issues and failures,
rate-limit rejections and waits, ETL, backup and retention results. :func:`key_numbers` and :func:`markdown` render
a summary for the Dagster UI.

Events may come straight from the log or from a DataFrame's rows (:func:`observer_assets.monitoring.events.read_day`),
where a field an event lacks is NaN: every read goes through :func:`_v`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import pandas as pd

from observer_resources.calendar import KST
from observer_resources.events import MarkedGap, merge_gaps

MAX_LISTED = 20  # items kept in the summary's lists (history, open gaps, bad lines); counts are always complete

WS_TYPES = ("ws_connected", "ws_disconnect", "ws_connect_failed")
TOKEN_ISSUE_TYPES = ("token_issued", "token_refreshed")
#: events the Track B capture writes while it runs: an open disconnect is measured up to the last of them
CAPTURE_PREFIXES = ("ws_", "capture_", "gap_", "slot_", "mitigation_", "journal_")
BACKUP_TYPES = ("backup_succeeded", "backup_failed", "backup_verified", "backup_verify_failed")
RETENTION_TYPES = ("retention_deleted", "retention_kept", "retention_blocked")

Event = Mapping[str, Any]


# --- reading one field ------------------------------------------------------------------------------------------


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


def _as_logged(e: Event) -> dict[str, Any]:
    """A DataFrame row back in the log's shape (a NaN is a field the event lacked), for the seam's gap merge."""
    return {k: x for k, x in e.items() if not (isinstance(x, float) and math.isnan(x))}


# --- the day ----------------------------------------------------------------------------------------------------


class _Day:
    """The day's events in time order (events without a readable timestamp last), with what every section asks."""

    def __init__(self, events: Iterable[Event]):
        never = datetime.min.replace(tzinfo=KST)
        self.evs = sorted(
            (e for e in events if isinstance(_v(e.get("event_type")), str)),
            key=lambda e: (_ts(e.get("timestamp")) is None, _ts(e.get("timestamp")) or never),
        )
        self.by_type = Counter(e["event_type"] for e in self.evs)
        self.stamps = [t for t in (_ts(e.get("timestamp")) for e in self.evs) if t is not None]
        self.last_at = max(self.stamps) if self.stamps else None
        capture = [
            t
            for t in (_ts(e.get("timestamp")) for e in self.evs if e["event_type"].startswith(CAPTURE_PREFIXES))
            if t is not None
        ]
        self.capture_last = max(capture) if capture else self.last_at
        self.gaps = merge_gaps(_as_logged(e) for e in self.of("gap_marker"))

    def of(self, *types: str) -> list[Event]:
        return [e for e in self.evs if e["event_type"] in types]

    def count(self, event_type: str) -> int:
        return self.by_type.get(event_type, 0)


def _closed(g: MarkedGap) -> bool:
    return g.gap.end is not None


# --- the sections -----------------------------------------------------------------------------------------------


def gaps_section(day: _Day) -> dict[str, Any]:
    """Opened / closed / still open; a later open marker (an escalation) has re-marked the severity."""
    gs = day.gaps
    still_open = [m for m in gs if not _closed(m)]
    closed = [m for m in gs if _closed(m)]
    return {
        "markers": len(day.of("gap_marker")),
        "opened": sum(m.opened for m in gs),
        "closed": len(closed),
        "still_open": len(still_open),
        "closed_without_open_marker": sum(1 for m in closed if not m.opened),  # opened on an earlier day
        "closed_seconds": _r(sum(_num(m.seconds) for m in closed)),
        "by_reason": dict(Counter(m.gap.reason or "?" for m in gs)),
        "by_severity": dict(Counter(m.gap.severity or "?" for m in gs)),
        "critical": sum(m.gap.severity == "critical" for m in gs),
        "major_or_worse": sum(m.gap.severity in ("major", "critical") for m in gs),
        "open_gaps": [
            {
                "gap_id": str(m.gap.gap_id),
                "reason": m.gap.reason,
                "severity": m.gap.severity,
                "scope": m.gap.scope,
                "symbol": _v(m.gap.symbol),
                "key_id": _key(m.gap.metadata),
                "start": _iso(_ts(m.gap.start)),
            }
            for m in still_open
        ][:MAX_LISTED],
    }


def websocket_section(day: _Day) -> dict[str, Any]:
    """Connects/disconnects from the client's events; down time from the ws_disconnect gaps (they start at the last
    frame received, so they measure what was not recorded), else from ws_connected outages."""
    ws_keys: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"connects": 0, "reconnects": 0, "disconnects": 0, "connect_failures": 0, "disconnected_seconds": 0.0}
    )
    outage = 0.0
    for e in day.of(*WS_TYPES):
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
    ws_gaps = [m for m in day.gaps if m.gap.reason == "ws_disconnect"]
    still_down = []
    if ws_gaps:
        basis = "ws_disconnect gap markers"
        for m in ws_gaps:
            start, key = _ts(m.gap.start), _key(m.gap.metadata)
            if _closed(m):
                secs = _num(m.seconds)
            else:
                last = day.capture_last
                secs = max((last - start).total_seconds(), 0.0) if (last and start) else 0.0
                still_down.append(
                    {
                        "key_id": key,
                        "since": _iso(start),
                        "gap_id": str(m.gap.gap_id),
                        "seconds_until_last_capture_event": _r(secs),
                    }
                )
            ws_keys[key]["disconnected_seconds"] += secs
        down = sum(k["disconnected_seconds"] for k in ws_keys.values())
    else:
        basis = "ws_connected outages" if outage else "none"
        down = outage
    for k in ws_keys.values():
        k["disconnected_seconds"] = _r(k["disconnected_seconds"])

    def tot(name: str) -> int:
        return sum(k[name] for k in ws_keys.values())

    return {
        "connects": tot("connects"),
        "reconnects": tot("reconnects"),
        "disconnects": tot("disconnects"),
        "connect_failures": tot("connect_failures"),
        "reconnect_attempts": tot("reconnects") + tot("connect_failures"),
        "disconnected_seconds": _r(down),
        "disconnected_basis": basis,
        "still_disconnected": still_down[:MAX_LISTED],
        "outage_seconds_reported": _r(outage),
        "max_over": day.count("ws_max_over"),
        "failure_critical": day.count("ws_failure_critical"),
        "by_key": {k: v for k, v in sorted(ws_keys.items())},
    }


def slots_section(day: _Day) -> dict[str, Any]:
    actions = Counter(str(_v(e.get("action")) or "?") for e in day.of("slot_change"))
    return {
        "changes": sum(actions.values()),
        "by_action": dict(actions),
        "replacements": actions.get("replace", 0),
        "overflows": day.count("ws_max_over"),
    }


def mitigation_section(day: _Day) -> dict[str, Any]:
    mit = day.of("mitigation_level_change")
    levels = [int(_num(e.get("new"))) for e in mit]
    return {
        "changes": len(mit),
        "max_level": max(levels, default=0),
        "last_level": levels[-1] if levels else None,
        "history": [
            {
                "at": _iso(_ts(e.get("timestamp"))),
                "old": _v(e.get("old")),
                "new": _v(e.get("new")),
                "cause": _v(e.get("cause")),
            }
            for e in mit
        ][:MAX_LISTED],
    }


def tokens_section(day: _Day) -> dict[str, Any]:
    issued = day.of(*TOKEN_ISSUE_TYPES)
    here = [e for e in issued if _v(e.get("issued_by")) == "this_process"]
    failures = day.of("token_issue_failed", "approval_key_failed")
    return {
        "issued_by_kis": len(here),  # issuances this system asked KIS for (KIS allows one a minute per key)
        "adopted_from_store": len(issued) - len(here),
        "refreshes": day.count("token_refreshed"),
        "refused_egw00133": day.count("token_issue_refused"),
        "refresh_deferred": day.count("token_refresh_deferred"),
        "failures": day.count("token_issue_failed"),
        "approval_keys": day.count("approval_key_issued"),
        "approval_key_failures": day.count("approval_key_failed"),
        "latest_expiry": {k: v for k, v in sorted({_key(e): _v(e.get("expires_at")) for e in issued}.items())},
        "failure_list": [
            {
                "at": _iso(_ts(e.get("timestamp"))),
                "event": e["event_type"],
                "key_id": _key(e),
                "error": _v(e.get("error")),
                "code": _v(e.get("code")),
                "message": _v(e.get("message")),
            }
            for e in failures
        ][:MAX_LISTED],
    }


def rate_limit_section(day: _Day) -> dict[str, Any]:
    rej, waits = day.of("rate_limit_rejected"), day.of("rate_limit_waits")
    out = {
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
    out["total_wait_seconds"] = _r(out["retry_wait_seconds"] + out["limiter_wait_seconds"])
    return out


def etl_section(day: _Day) -> dict[str, Any]:
    uni, uni_failed = day.of("universe_built"), day.of("universe_build_failed")
    ta, ta_failed = day.of("track_a_slot"), day.of("track_a_slot_failed")
    out = {
        "universe_built": len(uni),
        "universe_failed": len(uni_failed),
        "universe_fallbacks": sum(bool(_v(e.get("fallback"))) for e in uni),
        "universe_count": _v(uni[-1].get("count")) if uni else None,
        "track_a_slots": len(ta),
        "track_a_slots_failed": len(ta_failed),
        "track_a_symbols_ok": int(sum(_num(e.get("ok")) for e in ta)),
        "track_a_symbols_failed": int(sum(_num(e.get("failed")) for e in ta)),
        "track_a_by_mode": dict(Counter(str(_v(e.get("mode")) or "?") for e in ta)),
        "failure_list": [
            {
                "at": _iso(_ts(e.get("timestamp"))),
                "event": e["event_type"],
                "what": _v(e.get("slot")) or _v(e.get("day")),
                "error": _v(e.get("error")),
            }
            for e in (uni_failed + ta_failed)
        ][:MAX_LISTED],
    }
    out["failures"] = out["universe_failed"] + out["track_a_slots_failed"]
    return out


def _days(es: list[Event]) -> list[Any]:
    return sorted({str(_v(e.get("day"))) for e in es if _v(e.get("day")) is not None})[:MAX_LISTED]


def backup_section(day: _Day) -> dict[str, Any]:
    out: dict[str, Any] = {name.removeprefix("backup_"): day.count(name) for name in BACKUP_TYPES}
    out["days"] = {name.removeprefix("backup_"): _days(day.of(name)) for name in BACKUP_TYPES}
    return out


def retention_section(day: _Day) -> dict[str, Any]:
    out: dict[str, Any] = {name.removeprefix("retention_"): day.count(name) for name in RETENTION_TYPES}
    deleted = day.of("retention_deleted")
    out["deleted_files"] = int(sum(_num(e.get("files")) for e in deleted))
    out["deleted_bytes"] = int(sum(_num(e.get("bytes")) for e in deleted))
    out["days"] = {name.removeprefix("retention_"): _days(day.of(name)) for name in RETENTION_TYPES}
    return out


def summarize(events: Iterable[Event]) -> dict[str, Any]:
    """Counts by event type plus the day's story (module docstring). Order of ``events`` does not matter."""
    day = _Day(events)
    return {
        "events": len(day.evs),
        "first_at": _iso(min(day.stamps)) if day.stamps else None,
        "last_at": _iso(day.last_at),
        "by_type": dict(sorted(day.by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "websocket": websocket_section(day),
        "slots": slots_section(day),
        "mitigation": mitigation_section(day),
        "gaps": gaps_section(day),
        "tokens": tokens_section(day),
        "rate_limit": rate_limit_section(day),
        "etl": etl_section(day),
        "backup": backup_section(day),
        "retention": retention_section(day),
        "anomalies": sorted({str(_v(e.get("rule"))) for e in day.of("anomaly_day")}),
        "capture": {
            "started": day.count("capture_started"),
            "stopped": day.count("capture_stopped"),
            "recovered": day.count("capture_recovered"),
            "supervisor_restarts": day.count("capture_supervisor_restart"),
        },
    }


# --- the UI --------------------------------------------------------------------------------------


def key_numbers(s: Mapping[str, Any]) -> dict[str, int | float]:
    """The numbers the UI plots across partitions (one metadata entry each)."""
    ws, g, t, rl, etl = s["websocket"], s["gaps"], s["tokens"], s["rate_limit"], s["etl"]
    return {
        "events": s["events"],
        "ws_connects": ws["connects"],
        "ws_disconnects": ws["disconnects"],
        "ws_reconnect_attempts": ws["reconnect_attempts"],
        "ws_disconnected_seconds": float(ws["disconnected_seconds"]),
        "slot_changes": s["slots"]["changes"],
        "slot_overflows": s["slots"]["overflows"],
        "mitigation_changes": s["mitigation"]["changes"],
        "mitigation_max_level": s["mitigation"]["max_level"],
        "gaps_opened": g["opened"],
        "gaps_closed": g["closed"],
        "gaps_still_open": g["still_open"],
        "gap_seconds_closed": float(g["closed_seconds"]),
        "gaps_critical": g["critical"],
        "tokens_issued_by_kis": t["issued_by_kis"],
        "token_refreshes": t["refreshes"],
        "token_failures": t["failures"] + t["approval_key_failures"],
        "rate_limit_rejections": rl["rejections"],
        "rate_limit_wait_seconds": float(rl["total_wait_seconds"]),
        "etl_failures": etl["failures"],
        "backups_succeeded": s["backup"]["succeeded"],
        "backups_failed": s["backup"]["failed"],
        "backups_verify_failed": s["backup"]["verify_failed"],
        "retention_deleted": s["retention"]["deleted"],
        "retention_blocked": s["retention"]["blocked"],
    }


def _rows(s: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """The summary table's (area, what, value) rows."""
    ws, g, t, rl, etl, m = s["websocket"], s["gaps"], s["tokens"], s["rate_limit"], s["etl"], s["mitigation"]
    b, r = s["backup"], s["retention"]
    return [
        (
            "WebSocket",
            "connects / reconnects / disconnects",
            f"{ws['connects']} / {ws['reconnects']} / {ws['disconnects']}",
        ),
        ("WebSocket", "failed connect attempts", ws["connect_failures"]),
        ("WebSocket", "disconnected (s)", f"{ws['disconnected_seconds']} ({ws['disconnected_basis']})"),
        (
            "WebSocket",
            "still disconnected",
            ", ".join(f"{d['key_id']} since {d['since']}" for d in ws["still_disconnected"]) or "no",
        ),
        ("Slots", "changes (replacements)", f"{s['slots']['changes']} ({s['slots']['replacements']})"),
        ("Slots", "subscription overflows (MAX SUBSCRIBE OVER)", s["slots"]["overflows"]),
        ("Slots", "overflow ledger (rejected candidates)", s["slots"].get("overflow_ledger_rejected", "—")),
        ("Mitigation", "level changes (max level)", f"{m['changes']} ({m['max_level']})"),
        ("Gaps", "opened / closed / still open", f"{g['opened']} / {g['closed']} / {g['still_open']}"),
        ("Gaps", "closed gap time (s)", g["closed_seconds"]),
        ("Gaps", "critical / major or worse", f"{g['critical']} / {g['major_or_worse']}"),
        ("Tokens", "issued by KIS / adopted from store", f"{t['issued_by_kis']} / {t['adopted_from_store']}"),
        (
            "Tokens",
            "refreshes / EGW00133 refusals / deferred",
            f"{t['refreshes']} / {t['refused_egw00133']} / {t['refresh_deferred']}",
        ),
        ("Tokens", "failures (token / approval key)", f"{t['failures']} / {t['approval_key_failures']}"),
        ("Tokens", "approval keys", t["approval_keys"]),
        ("Rate limit", "EGW00201 rejections (gave up)", f"{rl['rejections']} ({rl['gave_up']})"),
        ("Rate limit", "wait: retries / limiter (s)", f"{rl['retry_wait_seconds']} / {rl['limiter_wait_seconds']}"),
        (
            "ETL",
            "universe built / failed / fallback",
            f"{etl['universe_built']} / {etl['universe_failed']} / {etl['universe_fallbacks']}",
        ),
        ("ETL", "Track A slots ok / failed", f"{etl['track_a_slots']} / {etl['track_a_slots_failed']}"),
        (
            "Backup",
            "succeeded / failed / verified / verify failed",
            f"{b['succeeded']} / {b['failed']} / {b['verified']} / {b['verify_failed']}",
        ),
        ("Backup", "failed days", ", ".join(sorted({*b["days"]["failed"], *b["days"]["verify_failed"]})) or "none"),
        ("Retention", "deleted / kept / blocked", f"{r['deleted']} / {r['kept']} / {r['blocked']}"),
        ("Retention", "files / bytes deleted", f"{r['deleted_files']} / {r['deleted_bytes']}"),
        ("Retention", "blocked days", ", ".join(r["days"]["blocked"]) or "none"),
        ("Anomaly", "rules fired", ", ".join(s["anomalies"]) or "none"),
    ]


def markdown(s: Mapping[str, Any], day: date, *, note: str | None = None) -> str:
    """The summary as the Dagster UI shows it: the table, the counts by type, failures and open gaps."""
    g, t, etl = s["gaps"], s["tokens"], s["etl"]
    lines = [f"### System events of {day.isoformat()}", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += [
        f"{s['events']} events, {s['first_at'] or '—'} .. {s['last_at'] or '—'}",
        "",
        "| area | what | value |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {w} | {str(v).replace('|', '/')} |" for a, w, v in _rows(s)]
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
        lines += [
            f"| {x['gap_id']} | {x['reason']} | {x['severity']} | {x['key_id']} | {x['start']} |"
            for x in g["open_gaps"]
        ]
    return "\n".join(lines)
