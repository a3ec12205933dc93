"""Track A gap rules: missing and late slots, symbols a slot lacks, rate-limited symbols, per-slot coverage (pure).

Track A is judged slot by slot against the universe and shares nothing with Track B's tick continuity, so its
rules live apart; ``detect`` runs both and builds the verdict.

A late or missing slot's ``reason`` comes from its evidence only, in this order: the slot's failures (what KIS
answered), a failed run's event, the slot's runs in the Dagster instance (created or begun after the grace, or none
at all), rate-limit rejections recorded while its run fetched; with none of these it is ``unknown``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.gaps.detect_common import DayInputs, SlotRun, Thresholds, as_kst, make_id, make_row
from observer_resources.calendar import KST
from observer_resources.kis.errors import KisError
from observer_resources.storage.layout import slot_label

IN_FLIGHT = frozenset({"QUEUED", "NOT_STARTED", "STARTING"})  # created, not begun


def _subclasses(c: type) -> set[type]:
    return {c} | {x for s in c.__subclasses__() for x in _subclasses(s)}


KIS_ERROR_NAMES = frozenset(c.__name__ for c in _subclasses(KisError))


def classify_error(err: str | None, default: str) -> tuple[str, str | None]:
    """(reason, KIS error code) of a failure's text (a failures file's ``error``, a failed run's ``error``);
    ``default`` when the text names no cause this module knows."""
    e = err or ""
    if "EGW00201" in e or "RateLimited" in e:
        return "rate_limit", "EGW00201"
    if e.startswith("deadline"):
        return "deadline", None
    if e.startswith("missing from"):
        return "no_data_received", None
    code = next((w for w in e.replace("(", " ").replace(")", " ").split() if w[:3] in ("EGW", "OPS")), None)
    if code or any(n in e for n in KIS_ERROR_NAMES):
        return "api_error", code
    return default, None


def _iso(t: datetime | None) -> str | None:
    return as_kst(t).isoformat() if t is not None else None


def _run_evidence(r: SlotRun) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "launched_by": r.launched_by,
        "status": r.status,
        "created": _iso(r.created),
        "started": _iso(r.started),
        "ended": _iso(r.ended),
    }


def _live_runs(inp: DayInputs, slot: datetime) -> list[SlotRun] | None:
    """The slot's runs that collect live (a backfill restores, it never explains lateness), oldest first; None when
    the runs were not looked up."""
    if inp.runs is None:
        return None
    runs = next((v for k, v in inp.runs.items() if as_kst(k) == slot), ())
    return sorted((r for r in runs if r.launched_by != "backfill"), key=lambda r: r.created)


def _timing(run: SlotRun | None, slot: datetime, th: Thresholds) -> str | None:
    """``launched_late`` / ``started_late`` when the run's record shows it, else None."""
    if run is None:
        return None
    due = slot + timedelta(seconds=th.grace_s)
    if as_kst(run.created) > due:
        return "launched_late"
    if (run.started is not None and as_kst(run.started) > due) or (run.started is None and run.status in IN_FLIGHT):
        return "started_late"
    return None


def _slot_failed_events(inp: DayInputs, slot: datetime) -> list[dict]:
    key = as_kst(slot).date().isoformat() + slot_label(slot)  # the Dagster partition key the asset records
    return [dict(e) for e in inp.events if e.get("event_type") == "track_a_slot_failed" and e.get("slot") == key]


def _rate_limited(inp: DayInputs, a: datetime, b: datetime) -> int:
    """Rate-limit rejections recorded in [a, b] (any client: the budget of a key is shared by every run on it)."""
    n = 0
    for e in inp.events:
        if e.get("event_type") != "rate_limit_rejected":
            continue
        try:
            t = datetime.fromisoformat(str(e["timestamp"])).astimezone(KST)
        except (KeyError, ValueError):
            continue
        n += a <= t <= b
    return n


def _missing_slot_reason(
    inp: DayInputs, slot: datetime, fails: pa.Table | None, th: Thresholds
) -> tuple[str, str | None, dict[str, Any]]:
    """(reason, error code, evidence) of a slot without live rows past its grace."""
    runs = _live_runs(inp, slot)
    timing = _timing(runs[0], slot, th) if runs else None
    ev: dict[str, Any] = {"runs": None if runs is None else [_run_evidence(r) for r in runs[:5]]}
    if fails is not None and fails.num_rows:
        classes = [classify_error(e, "unknown") for e in fails["error"].to_pylist()]
        by_reason = Counter(r for r, _ in classes)
        reason = by_reason.most_common(1)[0][0]
        err = next((c for r, c in classes if r == reason and c), None)
        ev["failures_by_reason"] = dict(by_reason)
        if reason == "deadline" and timing:  # time ran out because the run began late: that is the cause
            reason = timing
        return reason, err, ev
    failed = _slot_failed_events(inp, slot)
    if failed:
        ev["run_failed"] = {"at": failed[-1].get("timestamp"), "error": failed[-1].get("error")}
        reason, err = classify_error(str(failed[-1].get("error") or ""), "system_error")
        return reason, err, ev
    if runs is None:
        return "unknown", None, ev
    if not runs:
        return "not_run", None, ev
    if timing:
        return timing, None, ev
    if any(r.status == "FAILURE" for r in runs):
        return "system_error", None, ev
    return "unknown", None, ev


def _late_reason(inp: DayInputs, slot: datetime, first: datetime, th: Thresholds) -> tuple[str, dict[str, Any]]:
    """(reason, evidence) of a live snapshot whose first row came after the grace."""
    runs = _live_runs(inp, slot)
    run = next((r for r in reversed(runs or []) if as_kst(r.created) <= first), None)
    ev: dict[str, Any] = {"run": _run_evidence(run) if run else None, "runs_known": runs is not None}
    timing = _timing(run, slot, th)
    if timing:
        return timing, ev
    begin = as_kst(run.started) if run is not None and run.started is not None else slot
    n = _rate_limited(inp, begin, first)
    ev["rate_limit_rejections"] = n
    return ("rate_limit" if n else "unknown"), ev


def _coverage_row(slot: datetime, state: str, expected: int, **kw: Any) -> dict[str, Any]:
    live, restored = kw.pop("live", 0), kw.pop("restored", 0)
    row = {
        "slot": slot_label(slot),
        "slot_ts": slot,
        "state": state,
        "expected": expected,
        "live": live,
        "restored": restored,
        "missing": max(expected - live - restored, 0) if state != "pending" else None,
        "coverage_ratio": round((live + restored) / expected, 6) if expected and state != "pending" else None,
        "live_ratio": round(live / expected, 6) if expected and state != "pending" else None,
        "failures": None,
        "first_fetched_at": None,
        "late_seconds": None,
        "reason": None,
        "restored_from": None,
    }
    row.update(kw)
    return row


def track_a_rows(inp: DayInputs, th: Thresholds) -> tuple[list[dict], list[dict]]:
    """Gap rows of every slot up to the as-of time, plus one coverage row per slot (``COVERAGE_SCHEMA``)."""
    rows: list[dict] = []
    coverage: list[dict] = []
    as_of = as_kst(inp.as_of)
    how = "minute_bars_today" if inp.today else "minute_bars_past"
    for slot in sorted(as_kst(s) for s in inp.slots):
        if slot > as_of:
            break  # a future slot is never a gap
        universe = sorted(set(inp.universe_at(slot)))
        uni_arr = pa.array(universe, pa.string())
        files = list(inp.files.get(f"slot:{slot_label(slot)}", ()))
        snap = inp.snapshots.get(slot)
        fails = inp.failures.get(slot)  # no file: no failures
        n_fail = 0 if fails is None else fails.num_rows
        overdue = (as_of - slot).total_seconds()
        if snap is None or snap.num_rows == 0:
            live = restored = pa.table({"code": pa.array([], pa.string())})
        else:
            is_live = pc.equal(snap["source"].fill_null("live"), "live")
            live = snap.filter(is_live)
            restored = snap.filter(pc.invert(is_live))
        if live.num_rows == 0:
            if restored.num_rows == 0 and overdue <= th.grace_s:
                coverage.append(_coverage_row(slot, "pending", len(universe), failures=n_fail))
                continue  # still inside its grace: not yet a gap
            rest_codes = set(restored["code"].to_pylist()) & set(universe) if restored.num_rows else set()
            src = sorted({x for x in restored["restored_from"].to_pylist() if x}) if restored.num_rows else []
            late = overdue if not rest_codes else None
            sev = "critical" if (late is None or late >= th.critical_late_s) else "major"
            reason, err, why = _missing_slot_reason(inp, slot, fails, th)
            rows.append(
                make_row(
                    gap_id=make_id("track_a_missing_slot", slot.isoformat()),
                    kind="track_a_missing_slot",
                    scope="swing",
                    slot_ts=slot,
                    start=slot,
                    end=slot + timedelta(minutes=10),
                    seconds=600.0,
                    severity=sev,
                    reason=reason,
                    data_lost=True,
                    error_code=err,
                    evidence={
                        "universe": len(universe),
                        "live_rows": 0,
                        "restored_rows": len(rest_codes),
                        "still_missing": len(universe) - len(rest_codes),
                        "still_missing_symbols": sorted(set(universe) - rest_codes)[:100] if rest_codes else [],
                        "failures": n_fail,
                        "overdue_seconds": round(overdue, 1),
                        **why,
                    },
                    restorable=True,
                    restore_how=how,
                    # restored = the backfill ran and gave what history has; symbols it could not give stay on record
                    # in the evidence (``still_missing_symbols``)
                    status="restored" if rest_codes else "open",
                    restored_from=",".join(src) if src else None,
                    source_files=files,
                )
            )
            coverage.append(
                _coverage_row(
                    slot,
                    "restored" if rest_codes else "missing",
                    len(universe),
                    restored=len(rest_codes),
                    failures=n_fail,
                    reason=reason,
                    restored_from=",".join(src) if src else None,
                )
            )
            continue
        # a live snapshot exists: lateness, then the symbols it lacks
        first = pc.min(live["fetched_at"]).as_py()
        first = as_kst(first) if first is not None else None
        late_s = (first - slot).total_seconds() if first is not None else None
        late_reason = None
        if first is not None and late_s is not None and late_s > th.grace_s:
            late_reason, why = _late_reason(inp, slot, first, th)
            rows.append(
                make_row(
                    gap_id=make_id("track_a_late", slot.isoformat()),
                    kind="track_a_late",
                    scope="swing",
                    slot_ts=slot,
                    start=slot + timedelta(seconds=th.grace_s),
                    end=first,
                    seconds=round(late_s, 3),
                    severity="critical" if late_s >= th.critical_late_s else "major",
                    reason=late_reason,
                    data_lost=False,
                    error_code="EGW00201" if late_reason == "rate_limit" else None,
                    evidence={
                        "fetched_at": first.isoformat(),
                        "lateness_seconds": round(late_s, 3),
                        "grace_seconds": th.grace_s,
                        "failures": n_fail,
                        **why,
                    },
                    restorable=False,
                    status="info",
                    source_files=files,
                )
            )
        have = pc.is_in(uni_arr, value_set=live["code"])
        absent = uni_arr.filter(pc.invert(have)).to_pylist()
        fail_by = dict(zip(fails["code"].to_pylist(), fails["error"].to_pylist())) if fails is not None else {}
        rest_by: dict[str, str | None] = {}
        if restored.num_rows:
            rest_by = dict(zip(restored["code"].to_pylist(), restored["restored_from"].to_pylist()))
        rl_codes = []
        for code in absent:
            err_text = fail_by.get(code)
            reason, err = classify_error(err_text, "unknown") if err_text is not None else ("unknown", None)
            if reason == "rate_limit":
                rl_codes.append(code)
            rst = code in rest_by
            rows.append(
                make_row(
                    gap_id=make_id("track_a_missing_symbol", slot.isoformat(), code),
                    kind="track_a_missing_symbol",
                    scope="swing",
                    symbol=code,
                    slot_ts=slot,
                    start=slot,
                    end=slot + timedelta(minutes=10),
                    severity="major",
                    reason=reason,
                    data_lost=True,
                    error_code=err,
                    evidence={"error": err_text}
                    if err_text
                    else {"error": None, "note": "absent from the live rows, and no failure recorded for it"},
                    restorable=True,
                    restore_how=how,
                    status="restored" if rst else "open",
                    restored_from=rest_by.get(code) if rst else None,
                    source_files=files,
                )
            )
        rl_all = [c for c, e in fail_by.items() if classify_error(e, "unknown")[0] == "rate_limit"]
        if rl_all:
            rows.append(
                make_row(
                    gap_id=make_id("rate_limit", "swing", slot.isoformat()),
                    kind="rate_limit",
                    scope="swing",
                    slot_ts=slot,
                    start=slot,
                    severity="major" if rl_codes else "minor",
                    reason="rate_limit",
                    data_lost=False,
                    error_code="EGW00201",
                    evidence={"rejected_symbols": len(rl_all), "symbols": sorted(rl_all)[:50]},
                    restorable=False,
                    status="info",
                    source_files=files,
                )
            )
        n_rest = sum(1 for c in absent if c in rest_by)
        src = sorted({rest_by[c] for c in absent if rest_by.get(c)})
        coverage.append(
            _coverage_row(
                slot,
                "live",
                len(universe),
                live=len(universe) - len(absent),
                restored=n_rest,
                failures=n_fail,
                first_fetched_at=first,
                late_seconds=round(late_s, 3) if late_s is not None else None,
                reason=late_reason,
                restored_from=",".join(src) if src else None,
            )
        )
    return rows, coverage
