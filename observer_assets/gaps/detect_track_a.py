"""Track A gap rules: missing and late slots, symbols a slot lacks, rate-limited symbols (pure).

Track A is judged slot by slot against the universe and shares nothing with Track B's tick continuity, so its
rules live apart; ``detect`` runs both and builds the verdict.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.gaps.detect_common import DayInputs, Thresholds, as_kst, make_id, make_row


def _classify_error(err: str | None) -> tuple[str, str | None]:
    """(reason code, error code) of a Track A per-symbol failure text."""
    e = err or ""
    if "EGW00201" in e or "RateLimited" in e:
        return "rate_limit", "EGW00201"
    code = next((w for w in e.replace("(", " ").replace(")", " ").split() if w[:3] in ("EGW", "OPS")), None)
    if e.startswith("deadline"):
        return "system_error", None
    return "api_error", code


def track_a_rows(inp: DayInputs, th: Thresholds) -> tuple[list[dict], dict[str, Any]]:
    """Gap rows of every slot up to the as-of time, plus each slot's coverage (keyed ``HHMM``)."""
    rows: list[dict] = []
    coverage: dict[str, dict] = {}
    as_of = as_kst(inp.as_of)
    universe = sorted(set(inp.universe or ()))
    uni_arr = pa.array(universe, pa.string())
    how = "minute_bars_today" if inp.today else "minute_bars_past"
    for slot in sorted(as_kst(s) for s in inp.slots):
        if slot > as_of:
            break  # a future slot is never a gap
        label = slot.strftime("%H%M")
        files = list(inp.files.get(f"slot:{label}", ()))
        snap = inp.snapshots.get(slot)
        fails = inp.failures.get(slot)
        overdue = (as_of - slot).total_seconds()
        if snap is None or snap.num_rows == 0:
            live = restored = pa.table({"code": pa.array([], pa.string())})
        else:
            is_live = pc.equal(snap["source"].fill_null("live"), "live")
            live = snap.filter(is_live)
            restored = snap.filter(pc.invert(is_live))
        if live.num_rows == 0:
            if restored.num_rows == 0 and overdue <= th.grace_s:
                coverage[label] = {"slot_ts": slot.isoformat(), "state": "pending", "universe": len(universe)}
                continue  # still inside its grace: not yet a gap
            rest_codes = set(restored["code"].to_pylist()) & set(universe) if restored.num_rows else set()
            src = sorted({x for x in restored["restored_from"].to_pylist() if x}) if restored.num_rows else []
            late = overdue if not rest_codes else None
            sev = "critical" if (late is None or late >= th.critical_late_s) else "major"
            reason, err = "system_error", None  # no answer recorded at all: the run did not happen or died
            if fails is not None and fails.num_rows:
                reasons = Counter(_classify_error(e)[0] for e in fails["error"].to_pylist())
                reason = reasons.most_common(1)[0][0]
                err = "EGW00201" if reason == "rate_limit" else None
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
                        "failures": 0 if fails is None else fails.num_rows,
                        "overdue_seconds": round(overdue, 1),
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
            coverage[label] = {
                "slot_ts": slot.isoformat(),
                "state": "restored" if rest_codes else "missing",
                "universe": len(universe),
                "live": 0,
                "restored": len(rest_codes),
                "coverage_pct": round(100 * len(rest_codes) / len(universe), 3) if universe else None,
            }
            continue
        # a live snapshot exists: lateness, then the symbols it lacks
        first = pc.min(live["fetched_at"]).as_py()
        late_s = (first - slot).total_seconds() if first is not None else None
        if late_s is not None and late_s > th.grace_s:
            rows.append(
                make_row(
                    gap_id=make_id("track_a_late", slot.isoformat()),
                    kind="track_a_late",
                    scope="swing",
                    slot_ts=slot,
                    start=slot + timedelta(seconds=th.grace_s),
                    end=as_kst(first),
                    seconds=round(late_s, 3),
                    severity="critical" if late_s >= th.critical_late_s else "major",
                    reason="api_error",
                    data_lost=False,
                    evidence={
                        "fetched_at": as_kst(first).isoformat(),
                        "lateness_seconds": round(late_s, 3),
                        "grace_seconds": th.grace_s,
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
            reason, err = _classify_error(err_text) if err_text is not None else ("no_data_received", None)
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
                    else {"error": None, "note": "absent, no failure recorded"},
                    restorable=True,
                    restore_how=how,
                    status="restored" if rst else "open",
                    restored_from=rest_by.get(code) if rst else None,
                    source_files=files,
                )
            )
        rl_all = [c for c, e in fail_by.items() if _classify_error(e)[0] == "rate_limit"]
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
        n_live = len(universe) - len(absent)
        coverage[label] = {
            "slot_ts": slot.isoformat(),
            "state": "live",
            "universe": len(universe),
            "live": n_live,
            "restored": sum(1 for c in absent if c in rest_by),
            "missing": len(absent),
            "coverage_pct": round(100 * n_live / len(universe), 3) if universe else None,
            "lateness_seconds": round(late_s, 1) if late_s is not None else None,
        }
    return rows, coverage
