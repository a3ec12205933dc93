"""The market-status feed as the run-time check of the phase table (docs/collector-rules.md §4.8). Pure.

Each venue's status feed says which phase the exchange is running. The capture compares every status record with
the phase the calendar's table gives for that venue at the record's receive time. A record near a phase boundary
may name the phase on either side: the exchange announces a change when it happens and the record takes time to
arrive, so within ``tolerance`` of a boundary both phases agree. Anything else — the exchange in a phase the table
does not have then (a late open, a changed schedule), or a code we do not know — is a disagreement: the capture
records it as an event and raises an alert, and keeps collecting on the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from observer_resources.calendar.market import MarketCalendar
from observer_resources.kis import protocol as p

DEFAULT_TOLERANCE = timedelta(seconds=90)
_VENUE_OF_EXCH = {v: k for k, v in p.STATUS_EXCH_CODES.items()}
_STATUS_VENUE = {p.TR_WS_STATUS: "KRX", p.TR_WS_STATUS_NXT: "NXT", p.TR_WS_STATUS_UN: None}


@dataclass(frozen=True)
class StatusReading:
    """One status record, as the phase check needs it."""

    tr_id: str
    venue: str  # whose phase it reports
    phase_code: str  # MKOP_CLS_CODE
    halted: bool
    code: str | None  # the anchor code; None on the unified feed, which carries none


@dataclass(frozen=True)
class Verdict:
    agrees: bool
    expected: tuple[str, ...]  # the phase codes the table allows at that instant
    expected_phases: tuple[str, ...]  # their names ("none" between phases)
    received: str
    note: str = ""


def reading(tr_id: str, record: tuple[str, ...]) -> StatusReading:
    """A status record's fields by name (the unified layout drops the code field)."""
    f = dict(zip(p.WS_FEED_FIELDS[tr_id], record, strict=False))
    venue = _STATUS_VENUE.get(tr_id) or _VENUE_OF_EXCH.get(f.get("EXCH_CLS_CODE", ""), "KRX")
    return StatusReading(
        tr_id=tr_id,
        venue=venue,
        phase_code=f.get("MKOP_CLS_CODE", ""),
        halted=f.get("TRHT_YN") == "Y",
        code=f.get("MKSC_SHRN_ISCD"),
    )


def check(
    calendar: MarketCalendar, r: StatusReading, at: datetime, tolerance: timedelta = DEFAULT_TOLERANCE
) -> Verdict:
    """Whether the table allows ``r``'s phase at ``at`` (the receive time) for ``r.venue``."""
    lo, hi = at - tolerance, at + tolerance
    names: list[str] = []
    covered = lo
    for ph in sorted(
        (ph for ph in calendar.phases(at.date()) if ph.venue == r.venue and ph.start < hi and ph.end > lo),
        key=lambda ph: ph.start,
    ):
        if ph.start > covered and "none" not in names:
            names.append("none")  # a break (or the venue's closed hours) inside the window
        if ph.name not in names:
            names.append(ph.name)
        covered = max(covered, ph.end)
    if covered < hi and "none" not in names:
        names.append("none")
    allowed = tuple(p.STATUS_PHASE_CODES.get(None if n == "none" else n, "?") for n in names)
    if r.phase_code not in p.STATUS_PHASE_CODES.values():
        return Verdict(False, allowed, tuple(names), r.phase_code, "a phase code the documentation does not list")
    return Verdict(r.phase_code in allowed, allowed, tuple(names), r.phase_code)
