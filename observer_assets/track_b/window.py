"""Today's Track B window (docs/collector-rules.md §4.1). Pure: calendar and configuration in, instants out.

The default window is 09:30-15:00 KST (``OBSERVER_TRACK_B_WINDOW``), starting half an hour after the open so
Track A has snapshots (09:00, 09:10, 09:20) for the triggers. On a special day the whole window moves with the
session: the open's offset from 09:00 is added to both ends (CSAT day 10:00 open -> 10:30-16:00; the year's first
trading day, 10:00-15:30 -> 10:30-15:30, because the window never runs past the session's close). A closed day
has no window. The always-open demo calendar (``--clock open`` exchange) makes the whole day the window, so the
capture runs at any hour.

``phases`` (or ``phases HH:MM-HH:MM``, default 08:00-20:00) is the two-venue day instead: the window runs from the
first phase of any venue to the last one's end (docs/sessions.md), cut to those clock times, so it follows a late
open or a changed schedule through the phase table; the breaks between phases are inside the window (a quiet
break is not a gap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from observer_resources import settings
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.dates import parse_day_window

DEFAULT_WINDOW = "phases"  # the setting's default: the two-venue day
SESSION_WINDOW = "09:30-15:00"  # the KRX-only day's window, before the two-venue day became the default
PHASES = "phases"
PHASES_DEFAULT_SPAN = (time(8, 0), time(20, 0))
ENV_WINDOW = "OBSERVER_TRACK_B_WINDOW"
REFERENCE_OPEN = time(9, 0)


@dataclass(frozen=True)
class Window:
    day: date
    start: datetime  # KST, tz-aware
    end: datetime  # KST, tz-aware, > start
    note: str = ""

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def as_dict(self) -> dict[str, str]:
        return {
            "day": self.day.isoformat(),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "note": self.note,
        }


@dataclass(frozen=True)
class WindowSpec:
    """``session``: start and end relative to KRX's regular session; ``phases``: clock times that cut the phases."""

    kind: str
    start: time
    end: time


def parse_spec(text: str) -> WindowSpec:
    """``"HH:MM-HH:MM"``, ``"phases"`` or ``"phases HH:MM-HH:MM"``; a clear ValueError for anything else."""
    t = text.strip()
    if t.lower().startswith(PHASES):
        rest = t[len(PHASES) :].strip()
        start, end = parse_day_window(rest, "Track B window") if rest else PHASES_DEFAULT_SPAN
        return WindowSpec(PHASES, start, end)
    start, end = parse_day_window(t, "Track B window")
    return WindowSpec("session", start, end)


def parse_window(text: str) -> tuple[time, time]:
    """The window's clock span (start, end), either form; a clear ValueError for anything else."""
    spec = parse_spec(text)
    return spec.start, spec.end


def window_text_from_env(environ: Mapping[str, str]) -> str:
    return settings.get(ENV_WINDOW, environ)


def track_b_window(day: date, calendar: MarketCalendar, window: str = DEFAULT_WINDOW) -> Window | None:
    """The day's window, or None when the market is closed (or a shifted window would be empty)."""
    spec = parse_spec(window)
    start_t, end_t = spec.start, spec.end
    s = calendar.session(day)
    if s is None:
        return None
    if calendar.mode == "open":
        return Window(day, s.open, s.close, "open calendar: the whole day")
    if spec.kind == PHASES:
        return _phases_window(day, calendar, spec)
    offset = s.open - datetime.combine(day, REFERENCE_OPEN, KST)
    start = datetime.combine(day, start_t, KST) + offset
    end = datetime.combine(day, end_t, KST) + offset
    note = ""
    if offset:
        note = f"shifted {offset.total_seconds() / 3600:+g} h with the session ({s.note or 'special session'})"
    if end > s.close:
        end = s.close
        note += "; ends at the close"
    if start < s.open:
        start = s.open
    if end <= start:
        return None
    return Window(day, start, end, note.lstrip("; "))


def _phases_window(day: date, calendar: MarketCalendar, spec: WindowSpec) -> Window | None:
    phases = calendar.phases(day)
    if not phases:
        return None
    first, last = min(p.start for p in phases), max(p.end for p in phases)
    start = max(first, datetime.combine(day, spec.start, KST))
    end = min(last, datetime.combine(day, spec.end, KST))
    if end <= start:
        return None
    venues = "+".join(sorted({p.venue for p in phases if p.start < end and p.end > start}))
    note = f"{venues} phases {first:%H:%M}-{last:%H:%M}, cut to {spec.start:%H:%M}-{spec.end:%H:%M}"
    return Window(day, start, end, note)


def window_at(now: datetime, calendar: MarketCalendar, window: str = DEFAULT_WINDOW) -> Window | None:
    """The window of ``now``'s KST day."""
    return track_b_window(now.astimezone(KST).date(), calendar, window)


def seconds_until(target: datetime, now: datetime) -> float:
    return max(0.0, (target - now) / timedelta(seconds=1))
