"""Trading days and session hours, read from the generated ``sessions.json``."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from pathlib import Path

from observer_resources import clock
from observer_resources.clock import KST

SESSIONS_FILE = Path(__file__).with_name("sessions.json")
NORMAL_OPEN = time(9, 0)
NORMAL_CLOSE = time(15, 30)


class CalendarRangeError(ValueError):
    """A date outside the generated calendar: refuse rather than guess a holiday."""


class CalendarDataError(ValueError):
    """``sessions.json`` missing or malformed: every schedule depends on it, so say which file and what, once."""


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


def _day(s: object) -> date:
    if not isinstance(s, str) or len(s) != 10:
        raise ValueError(f"{s!r} is not a YYYY-MM-DD date")
    return date.fromisoformat(s)


def _hhmm(s: object) -> time:
    if not isinstance(s, str) or len(s) != 5 or s[2] != ":":
        raise ValueError(f"{s!r} is not an HH:MM time")
    return time.fromisoformat(s)


def load_sessions(path: Path) -> _Table:
    """Read and check a generated sessions file; :class:`CalendarDataError` names the file and the problem."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        first, last = _day(raw["first"]), _day(raw["last"])
        days = tuple(_day(d) for d in raw["trading_days"])
        special = {}
        for d, v in raw["special_sessions"].items():
            o, c = _hhmm(v["open"]), _hhmm(v["close"])
            if o >= c:
                raise ValueError(f"special session {d}: open {v['open']} is not before close {v['close']}")
            special[_day(d)] = (o, c, str(v.get("note", "")))
    except OSError as e:
        raise CalendarDataError(
            f"KRX calendar {path} cannot be read ({e.strerror or e}); regenerate it with `make calendar`"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise CalendarDataError(f"KRX calendar {path} is invalid: {what}; regenerate it with `make calendar`") from None
    problem = None
    if first > last:
        problem = f"first {first} is after last {last}"
    elif any(a >= b for a, b in zip(days, days[1:])):
        problem = "trading_days are not in strictly increasing order"
    elif days and not (first <= days[0] and days[-1] <= last):
        problem = f"trading_days leave the range {first}..{last}"
    elif not set(special) <= set(days):
        problem = f"special sessions on days that are not trading days: {sorted(set(special) - set(days))[:5]}"
    if problem:
        raise CalendarDataError(f"KRX calendar {path} is invalid: {problem}; regenerate it with `make calendar`")
    return _Table(first, last, days, special)


@cache
def _table() -> _Table:
    return load_sessions(SESSIONS_FILE)


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
    return (now or clock.now()).astimezone(KST).date()
