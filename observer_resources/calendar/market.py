"""The market calendar Observer runs on: KRX, or an always-open demo market.

``krx`` is the real one. ``open`` matches the local exchange's ``--clock open`` mode: every calendar day is a
trading day with one continuous session 00:00-23:59:59 KST, so `make run` shows data at any hour through the same
code paths (schedules, partitions, assets) that run live. Chosen by ``OBSERVER_CALENDAR`` (default ``krx``).

Besides KRX's regular session (:meth:`MarketCalendar.session`, what Track A's slots follow), a day has the phases
of both venues, KRX and NXT (:meth:`MarketCalendar.phases`), from ``phases.toml``; docs/sessions.md describes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

from observer_resources import settings
from observer_resources.calendar import krx
from observer_resources.calendar import phases as phase_data
from observer_resources.calendar.phases import Break, Phase, VenueDay

Mode = Literal["krx", "open"]
TRACK_A_INTERVAL_MIN = 10


class CalendarConfigError(ValueError):
    """``OBSERVER_CALENDAR`` names no calendar."""


@dataclass(frozen=True)
class MarketCalendar:
    mode: Mode = "krx"
    #: the phases file (default: the shipped ``phases.toml``); read once per process, on first use
    phases_file: Path | None = None
    #: the part of the day Track A snapshots (``OBSERVER_TRACK_A_WINDOW``): None, KRX's regular session only; else
    #: (start, end) KST, in which every slot instant where some venue is in a phase is a slot (docs/sessions.md)
    track_a_window: tuple[time, time] | None = None

    @property
    def two_venue_day(self) -> bool:
        """Whether Track A runs the two-venue day: a window on the KRX calendar (the demo calendar keeps its
        always-open session whatever the window)."""
        return self.track_a_window is not None and self.mode == "krx"

    def session(self, d: date) -> krx.Session | None:
        if self.mode == "krx":
            return krx.session(d)
        return krx.Session(
            d,
            datetime.combine(d, time(0, 0), krx.KST),
            datetime.combine(d, time(23, 59, 59), krx.KST),
            "demo: always open",
        )

    def is_trading_day(self, d: date) -> bool:
        return krx.is_trading_day(d) if self.mode == "krx" else True

    def previous_trading_day(self, d: date) -> date:
        return krx.previous_trading_day(d) if self.mode == "krx" else d - timedelta(days=1)

    def next_trading_day(self, d: date) -> date:
        return krx.next_trading_day(d) if self.mode == "krx" else d + timedelta(days=1)

    def trading_days(self, start: date, end: date) -> list[date]:
        if self.mode == "krx":
            return krx.trading_days(start, end)
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]

    def track_a_slots(self, d: date, interval_min: int = TRACK_A_INTERVAL_MIN) -> list[datetime]:
        """Snapshot instants of the day: every `interval_min` from the open through the close, inclusive
        (09:00..15:30 = 40 on a normal day; 10:00..15:30 on the year's first day; 10:00..16:30 on CSAT day).

        With a ``track_a_window`` (KRX calendar), also every `interval_min` instant of the window at which some venue
        is in a phase, its end included (the instant a phase ends shows how it ended, as 15:30 shows the close):
        08:00..20:00 = 73 on a normal day. The session's instants stay slots whatever the window, so every key a
        day had before stays valid."""
        s = self.session(d)
        if s is None:
            return []
        step = timedelta(minutes=interval_min)
        out, t = [], s.open
        while t <= s.close:
            out.append(t)
            t += step
        if not self.two_venue_day:
            return out
        assert self.track_a_window is not None
        start, end = (datetime.combine(d, w, krx.KST) for w in self.track_a_window)
        phases = self.phases(d)
        t = start
        while t <= end:
            if any(p.start <= t <= p.end for p in phases):
                out.append(t)
            t += step
        return sorted(set(out))

    def venues_at_slot(self, t: datetime) -> tuple[str, ...]:
        """The venues a Track A slot at ``t`` quotes: with no ``track_a_window``, KRX (its session's slots); else each
        venue with a phase running at ``t`` or ending at it, in venue order."""
        t = t.astimezone(krx.KST)
        if not self.two_venue_day:
            return ("KRX",) if self.slot_at(t) == t else ()
        found = {p.venue for p in self.phases(t.date()) if p.start <= t <= p.end}
        return tuple(v for v in phase_data.VENUES if v in found)

    def slot_at(self, now: datetime, interval_min: int = TRACK_A_INTERVAL_MIN) -> datetime | None:
        """The latest slot instant <= now on now's day, or None outside the day's slots."""
        now = now.astimezone(krx.KST)
        slots = [t for t in self.track_a_slots(now.date(), interval_min) if t <= now]
        return slots[-1] if slots else None

    def venues(self, d: date) -> dict[str, VenueDay]:
        """Each venue trading on ``d``: its phases, the schedule they come from, whether it is confirmed.

        ``krx``: empty on the KRX calendar's closed days (NXT closes with KRX); on its special days KRX's phases
        follow the day's session and the file's special-day rules apply. ``open``: the day's ordinary two-venue
        pattern stretched over 00:00-23:59:59, so the demo shows every phase at some hour of any day."""
        book = phase_data.book(self.phases_file or phase_data.PHASES_FILE)
        if self.mode != "krx":
            return book.demo_venue_days(d)
        s = krx.session(d)
        return book.venue_days(d, (s.open.time(), s.close.time()) if s else None)

    def phases(self, d: date) -> list[Phase]:
        """Every venue's phases on ``d``, by start (KRX before NXT at the same instant); empty on a closed day."""
        out = [p for v in self.venues(d).values() for p in v.phases]
        return sorted(out, key=lambda p: (p.start, phase_data.VENUES.index(p.venue), p.end))

    def breaks(self, d: date) -> list[Break]:
        """The pauses between consecutive phases of each venue on ``d``, by start."""
        out = [b for v in self.venues(d).values() for b in v.breaks()]
        return sorted(out, key=lambda b: (b.start, phase_data.VENUES.index(b.venue)))

    def venue_window(self, d: date, venue: str) -> tuple[datetime, datetime] | None:
        """From the venue's first phase start to its last phase end on ``d``; None when it does not trade."""
        v = self.venues(d).get(venue)
        return v.window if v else None

    def phase_at(self, t: datetime, venue: str) -> Phase | None:
        """The venue's phase running at ``t`` (tz-aware), or None: closed, or in a break."""
        t = t.astimezone(krx.KST)
        v = self.venues(t.date()).get(venue)
        return next((p for p in v.phases if p.contains(t)), None) if v else None


def calendar_from_env(environ: Mapping[str, str] | None = None) -> MarketCalendar:
    window = settings.get("OBSERVER_TRACK_A_WINDOW", environ, error=CalendarConfigError)
    phases_file = settings.get("OBSERVER_CALENDAR_PHASES", environ, error=CalendarConfigError)
    if phases_file is not None:
        try:
            phase_data.book(Path(phases_file))
        except (OSError, phase_data.PhaseDataError) as exc:
            raise CalendarConfigError(f"OBSERVER_CALENDAR_PHASES={phases_file}: {exc}") from None
    return MarketCalendar(
        settings.get("OBSERVER_CALENDAR", environ, error=CalendarConfigError),
        phases_file=Path(phases_file) if phases_file is not None else None,
        track_a_window=None if window in (None, "session") else window,
    )
