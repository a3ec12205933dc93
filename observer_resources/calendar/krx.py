"""Trading days and session hours, read from the generated ``sessions.json``."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

KST = ZoneInfo("Asia/Seoul")
SESSIONS_FILE = Path(__file__).with_name("sessions.json")
NORMAL_OPEN = time(9, 0)
NORMAL_CLOSE = time(15, 30)


class CalendarRangeError(ValueError):
    """A date outside the generated calendar: refuse rather than guess a holiday."""


@dataclass(frozen=True)
class Session:
    day: date
    open: datetime  # KST, tz-aware
    close: datetime  # KST, tz-aware
    note: str = ""  # why the hours differ from 09:00-15:30, if they do

    @property
    def is_special(self) -> bool:
        return self.open.time() != NORMAL_OPEN or self.close.time() != NORMAL_CLOSE


@dataclass(frozen=True)
class _Table:
    first: date
    last: date
    days: tuple[date, ...]
    special: dict[date, tuple[time, time, str]]


@cache
def _table() -> _Table:
    raw = json.loads(SESSIONS_FILE.read_text(encoding="utf-8"))
    days = tuple(date.fromisoformat(d) for d in raw["trading_days"])
    special = {
        date.fromisoformat(d): (time.fromisoformat(v["open"]), time.fromisoformat(v["close"]), v["note"])
        for d, v in raw["special_sessions"].items()
    }
    return _Table(date.fromisoformat(raw["first"]), date.fromisoformat(raw["last"]), days, special)


def calendar_range() -> tuple[date, date]:
    t = _table()
    return t.first, t.last


def _check(d: date) -> _Table:
    t = _table()
    if not (t.first <= d <= t.last):
        raise CalendarRangeError(
            f"{d.isoformat()} is outside the KRX calendar ({t.first}..{t.last}); "
            "update exchange_calendars and run `make calendar`"
        )
    return t


def is_trading_day(d: date) -> bool:
    t = _check(d)
    i = bisect.bisect_left(t.days, d)
    return i < len(t.days) and t.days[i] == d


def session(d: date) -> Session | None:
    """The day's continuous-trading session, or None when KRX is closed."""
    if not is_trading_day(d):
        return None
    o, c, note = _table().special.get(d, (NORMAL_OPEN, NORMAL_CLOSE, ""))
    return Session(d, datetime.combine(d, o, KST), datetime.combine(d, c, KST), note)


def previous_trading_day(d: date) -> date:
    t = _check(d)
    i = bisect.bisect_left(t.days, d)
    if i == 0:
        raise CalendarRangeError(f"no trading day before {d} in the calendar")
    return t.days[i - 1]


def next_trading_day(d: date) -> date:
    t = _check(d)
    i = bisect.bisect_right(t.days, d)
    if i >= len(t.days):
        raise CalendarRangeError(f"no trading day after {d} in the calendar")
    return t.days[i]


def trading_days(start: date, end: date) -> list[date]:
    """Trading days in [start, end]."""
    t = _table()
    lo = bisect.bisect_left(t.days, max(start, t.first))
    hi = bisect.bisect_right(t.days, min(end, t.last))
    if start < t.first or end > t.last:
        _check(start if start < t.first else end)
    return list(t.days[lo:hi])


def today_kst(now: datetime | None = None) -> date:
    return (now or datetime.now(KST)).astimezone(KST).date()
