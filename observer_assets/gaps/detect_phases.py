"""A phase Track B was due to collect but never ran through is a gap of its own (pure).

The capture's gap markers cover what goes wrong while it runs (a disconnect, a crash and its restart). Time in its
window when no capture ran at all leaves no marker: a capture started late, stopped early, or not restarted after
its stop. Here the day's capture runs (from each ``capture_started`` to its ``capture_stopped``, the next start, or
its planned stop) are laid over the configured window's phases; each phase piece with no run over it becomes a
``track_b_phase_missing`` row naming its venue and phase. A day without any capture run is not judged here (the
capture-down alert and the capture sensor own it), nor is the always-open demo calendar. Time a gap marker covers
(a stop, a restart) is that marker's row, not this one's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from observer_assets.gaps.detect_common import DayInputs, as_kst, cut, make_id, make_row

MIN_S = 60.0  # shorter uncovered pieces are a start-up's seconds, not a phase missed
CRITICAL_S = 300.0


def capture_runs(events: Sequence[Mapping[str, Any]], as_of: datetime) -> list[tuple[datetime, datetime]]:
    """(start, end) of every capture run of the day, in order: a run ends at its own stop, at the next run's start
    (a crash; its dead time is the restart marker's), at its planned stop, or at ``as_of`` while it runs."""
    starts: list[tuple[datetime, str, datetime | None]] = []
    stops: dict[str, datetime] = {}
    for e in events:
        et = e.get("event_type")
        if et not in ("capture_started", "capture_stopped"):
            continue
        try:
            at = as_kst(datetime.fromisoformat(str(e["timestamp"])))
        except (KeyError, ValueError):
            continue
        run = str(e.get("run_id") or "")
        if et == "capture_stopped":
            stops[run] = at
            continue
        planned = e.get("stop_at")
        try:
            stop_at = as_kst(datetime.fromisoformat(str(planned))) if planned else None
        except ValueError:
            stop_at = None
        starts.append((at, run, stop_at))
    starts.sort(key=lambda s: s[0])
    out = []
    for i, (at, run, stop_at) in enumerate(starts):
        ends = [x for x in (stops.get(run), stop_at, as_of) if x is not None]
        if i + 1 < len(starts):
            ends.append(starts[i + 1][0])
        end = min(ends)
        if end > at:
            out.append((at, end))
    return out


def missing_phase_rows(inp: DayInputs, marked: Sequence[tuple[datetime, datetime]] = ()) -> list[dict]:
    """Rows for the window's phase pieces no capture ran through; ``marked`` spans (the gap markers' windows) are
    reported by their own rows and left out here."""
    window = inp.track_b_window
    if window is None or not inp.phases:
        return []
    as_of = as_kst(inp.as_of)
    runs = capture_runs(inp.events, as_of)
    if not runs:
        return []
    covering = [*runs, *marked]
    lo, hi = as_kst(window[0]), min(as_kst(window[1]), as_of)
    rows = []
    for ph in inp.phases:
        a, b = max(ph.start, lo), min(ph.end, hi)
        if b <= a:
            continue
        pieces = [(a, b)]
        for ra, rb in covering:
            pieces = cut(pieces, ra, rb)
        for pa_, pb_ in pieces:
            secs = (pb_ - pa_).total_seconds()
            if secs < MIN_S:
                continue
            whole = (pa_, pb_) == (a, b)
            rows.append(
                make_row(
                    gap_id=make_id("track_b_phase_missing", ph.venue, ph.name, pa_.isoformat()),
                    kind="track_b_phase_missing",
                    scope="scalp",
                    start=pa_,
                    end=pb_,
                    seconds=round(secs, 3),
                    severity="critical" if whole or secs >= CRITICAL_S else "major",
                    reason="no_data_received",
                    data_lost=True,
                    evidence={
                        "venue": ph.venue,
                        "phase": ph.name,
                        "phase_in_window": {"from": a.isoformat(), "until": b.isoformat()},
                        "whole_phase": whole,
                        "capture_runs": [{"from": x.isoformat(), "until": y.isoformat()} for x, y in runs],
                        "note": "no capture ran: nothing was subscribed, so nothing of this phase was streamed; "
                        "which symbols slots would have held is unknown, so there is nothing to restore (Track A's "
                        "snapshots cover the universe then)",
                    },
                    restorable=False,  # nothing was subscribed, so there is no hole to fill and no symbol list
                    status="unrecoverable",
                    source_files=list(inp.files.get("events", ())),
                    venue=ph.venue,
                )
            )
    return rows
