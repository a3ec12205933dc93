"""The market calendar Observer runs on: KRX, or an always-open demo market.

``krx`` is the real one. ``open`` matches the local exchange's ``--clock open`` mode: every calendar day is a
trading day with one continuous session 00:00-23:59:59 KST, so `make run` shows data at any hour through the same
code paths (schedules, partitions, assets) that run live. Chosen by ``OBSERVER_CALENDAR`` (default ``krx``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from observer_resources import settings
from observer_resources.calendar import krx

Mode = Literal["krx", "open"]
TRACK_A_INTERVAL_MIN = 10


class CalendarConfigError(ValueError):
    """``OBSERVER_CALENDAR`` names no calendar."""


@dataclass(frozen=True)
class MarketCalendar:
    mode: Mode = "krx"

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
        (09:00..15:30 = 40 on a normal day; 10:00..15:30 on the year's first day; 10:00..16:30 on CSAT day)."""
        s = self.session(d)
        if s is None:
            return []
        step = timedelta(minutes=interval_min)
        out, t = [], s.open
        while t <= s.close:
            out.append(t)
            t += step
        return out

    def slot_at(self, now: datetime, interval_min: int = TRACK_A_INTERVAL_MIN) -> datetime | None:
        """The latest slot instant <= now on now's day, or None outside the day's slots."""
        now = now.astimezone(krx.KST)
        slots = [t for t in self.track_a_slots(now.date(), interval_min) if t <= now]
        return slots[-1] if slots else None


def calendar_from_env(environ: Mapping[str, str] | None = None) -> MarketCalendar:
    return MarketCalendar(settings.get("OBSERVER_CALENDAR", environ, error=CalendarConfigError))
