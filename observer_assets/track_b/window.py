"""Today's Track B window (docs/collector-rules.md §4.1). Pure: calendar and configuration in, instants out.

The default window is 09:30-15:00 KST (``OBSERVER_TRACK_B_WINDOW``), starting half an hour after the open so
Track A has snapshots (09:00, 09:10, 09:20) for the triggers. On a special day the whole window moves with the
session: the open's offset from 09:00 is added to both ends (CSAT day 10:00 open -> 10:30-16:00; the year's first
trading day, 10:00-15:30 -> 10:30-15:30, because the window never runs past the session's close). A closed day
has no window. The always-open demo calendar (``--clock open`` exchange) makes the whole day the window, so the
capture runs at any hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from observer_resources import settings
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.dates import parse_day_window

DEFAULT_WINDOW = "09:30-15:00"
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


def parse_window(text: str) -> tuple[time, time]:
    """``"HH:MM-HH:MM"`` -> (start, end); a clear ValueError for anything else."""
    return parse_day_window(text, "Track B window")


def window_text_from_env(environ: Mapping[str, str]) -> str:
    return settings.get(ENV_WINDOW, environ)


def track_b_window(day: date, calendar: MarketCalendar, window: str = DEFAULT_WINDOW) -> Window | None:
    """The day's window, or None when the market is closed (or a shifted window would be empty)."""
    start_t, end_t = parse_window(window)
    s = calendar.session(day)
    if s is None:
        return None
    if calendar.mode == "open":
        return Window(day, s.open, s.close, "open calendar: the whole day")
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


def window_at(now: datetime, calendar: MarketCalendar, window: str = DEFAULT_WINDOW) -> Window | None:
    """The window of ``now``'s KST day."""
    return track_b_window(now.astimezone(KST).date(), calendar, window)


def seconds_until(target: datetime, now: datetime) -> float:
    return max(0.0, (target - now) / timedelta(seconds=1))
