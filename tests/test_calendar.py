"""The KRX calendar: generated table agrees with exchange_calendars + overrides, special days hold."""

from datetime import date, datetime, time

import pytest

from observer_resources import calendar as cal
from observer_resources.calendar import build


def test_generated_sessions_match_exchange_calendars_plus_overrides():
    import json

    fresh = build.build()
    stored = json.loads(cal.krx.SESSIONS_FILE.read_text(encoding="utf-8"))
    for k in ("source", "generated_by"):
        fresh.pop(k), stored.pop(k)
    assert stored == fresh, "sessions.json is stale: run `make calendar`"


@pytest.mark.parametrize(
    "day, expected",
    [
        (date(2026, 11, 26), (time(9, 0), time(15, 30))),  # ordinary Thursday
        (date(2026, 1, 2), (time(10, 0), time(15, 30))),  # first trading day of the year
        (date(2026, 11, 19), (time(10, 0), time(16, 30))),  # CSAT day (override)
        (date(2025, 11, 13), (time(10, 0), time(16, 30))),  # CSAT day known to exchange_calendars
        (date(2026, 6, 3), None),  # local election (override)
        (date(2026, 12, 31), None),  # year-end closure
        (date(2026, 5, 1), None),  # Labour Day
        (date(2026, 10, 5), None),  # Chuseok substitute holiday
        (date(2026, 11, 28), None),  # Saturday
        (date(2026, 2, 17), None),  # Seollal
    ],
)
def test_sessions(day, expected):
    s = cal.session(day)
    if expected is None:
        assert s is None and not cal.is_trading_day(day)
    else:
        assert s is not None and (s.open.timetz().replace(tzinfo=None), s.close.timetz().replace(tzinfo=None)) == expected
        assert s.open.utcoffset().total_seconds() == 9 * 3600


def test_neighbours_skip_closures():
    assert cal.previous_trading_day(date(2026, 6, 4)) == date(2026, 6, 2)
    assert cal.next_trading_day(date(2026, 12, 30)) == date(2027, 1, 4)
    assert cal.trading_days(date(2026, 11, 23), date(2026, 11, 29)) == [date(2026, 11, d) for d in range(23, 28)]


def test_outside_the_table_is_an_error_not_a_guess():
    with pytest.raises(cal.CalendarRangeError, match="make calendar"):
        cal.is_trading_day(date(2031, 1, 2))
    with pytest.raises(cal.CalendarRangeError):
        cal.trading_days(date(2030, 12, 1), date(2031, 1, 31))
