"""The KRX calendar: generated table agrees with exchange_calendars + overrides, special days hold."""

import hashlib
import json
import subprocess
import sys
from datetime import date, time

import pytest

from observer_resources import calendar as cal
from observer_resources.calendar import build


def test_generated_sessions_match_exchange_calendars_plus_overrides():
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
        assert (
            s is not None and (s.open.timetz().replace(tzinfo=None), s.close.timetz().replace(tzinfo=None)) == expected
        )
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


# --- `make calendar` refuses a bad override file, and the loader a bad sessions file ------------------------

GOOD_CLOSED = '[[closed]]\ndate = 2026-06-03\nreason = "local election"\n'
GOOD_SESSION = '[[session]]\ndate = 2026-11-19\nopen = "10:00"\nclose = "16:30"\nreason = "CSAT day"\n'


def run_build(tmp_path, overrides: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "overrides.toml").write_text(overrides, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "observer_resources.calendar.build",
            "--overrides",
            str(tmp_path / "overrides.toml"),
            "--out",
            str(tmp_path / "sessions.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (GOOD_SESSION.replace('"10:00"', '"9am"'), ['[[session]] #1 (2026-11-19): open must be a quoted time "HH:MM"']),
        (GOOD_SESSION.replace('"16:30"', '"24:00"'), ["[[session]] #1 (2026-11-19): close must be a quoted time"]),
        (GOOD_SESSION.replace('"10:00"', "10:00:00"), ["[[session]] #1 (2026-11-19): open must be a quoted time"]),
        (
            GOOD_CLOSED.replace("2026-06-03", '"2026-06-03"'),
            ["[[closed]] #1 (2026-06-03): date must be a TOML date, got str '2026-06-03' (write it unquoted"],
        ),
        (
            GOOD_CLOSED.replace("2026-06-03", "2026-06-03T09:00:00+09:00"),
            ["[[closed]] #1 (2026-06-03 09:00:00+09:00): date must be a TOML date"],
        ),
        (GOOD_CLOSED.replace("2026-06-03", "2036-06-03"), ["date 2036-06-03 is outside the calendar's range"]),
        ("[[closed]]\ndate = 2026-06-03\n", ["[[closed]] #1 (2026-06-03): missing 'reason'"]),
        (
            GOOD_CLOSED.replace('"local election"', '"  "'),
            ["[[closed]] #1 (2026-06-03): reason must be a non-empty string"],
        ),
        (
            GOOD_SESSION.replace('"10:00"', '"17:00"'),
            ["[[session]] #1 (2026-11-19): open 17:00 is not before close 16:30"],
        ),
        (
            GOOD_SESSION.replace("2026-11-19", "2026-06-03") + GOOD_CLOSED,
            ["[[session]] #1 (2026-06-03): 2026-06-03 is listed both closed and specially opened (also in [[closed]])"],
        ),
        (GOOD_CLOSED + GOOD_CLOSED, ["[[closed]] #2 (2026-06-03): 2026-06-03 is listed twice"]),
        (
            GOOD_SESSION + 'note = "x"\n',
            ["[[session]] #1 (2026-11-19): unknown key 'note' (allowed: date, open, close, reason)"],
        ),
        (GOOD_CLOSED + '[[holiday]]\ndate = 2026-06-04\nreason = "x"\n', ["unknown top-level key 'holiday'"]),
        (
            '[[session]]\ndate = 2026-11-19\nreason = "x"\n',
            ["[[session]] #1 (2026-11-19): missing 'open'", "[[session]] #1 (2026-11-19): missing 'close'"],
        ),
        ("[[closed]\ndate = 2026-06-03\n", ["not valid TOML"]),
    ],
)
def test_a_bad_override_file_is_refused_whole_and_nothing_is_written(tmp_path, overrides, expected):
    out = tmp_path / "sessions.json"
    out.write_bytes(cal.krx.SESSIONS_FILE.read_bytes())  # the build targets this copy, never the checkout's file
    before = hashlib.sha256(out.read_bytes()).digest()
    real = hashlib.sha256(cal.krx.SESSIONS_FILE.read_bytes()).digest()
    r = run_build(tmp_path, overrides + GOOD_CLOSED.replace("2026-06-03", "2026-06-10"))  # + a good entry
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    for want in expected:  # one line per problem, naming the file and the entry
        assert sum(want in line and line.startswith(str(tmp_path / "overrides.toml")) for line in lines) == 1, lines
    assert len(lines) == len(expected) + 1 and "left unchanged" in lines[-1]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert hashlib.sha256(out.read_bytes()).digest() == before
    assert hashlib.sha256(cal.krx.SESSIONS_FILE.read_bytes()).digest() == real
    assert not list(tmp_path.glob(".*.tmp"))


def test_several_problems_are_all_reported_at_once():
    data = {
        "closed": [{"date": "2026-06-03", "reason": ""}],
        "session": [{"date": date(2026, 6, 4), "open": "9am", "close": "08:00", "reason": "x", "why": 1}],
    }
    problems = build.validate(data)
    assert len(problems) == 4 and all(p.startswith(("[[closed]] #1", "[[session]] #1")) for p in problems)


def test_the_shipped_override_file_builds_to_the_shipped_sessions(tmp_path):
    r = run_build(tmp_path, cal.krx.SESSIONS_FILE.with_name("overrides.toml").read_text(encoding="utf-8"))
    assert r.returncode == 0, r.stderr
    fresh, stored = (
        json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "sessions.json", cal.krx.SESSIONS_FILE)
    )
    assert fresh == stored
    assert run_build(tmp_path, cal.krx.SESSIONS_FILE.with_name("overrides.toml").read_text(), "--check").returncode == 0


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda d: "{not json", "is invalid"),
        (
            lambda d: json.dumps(
                {**d, "special_sessions": {"2026-11-19": {"open": "9am", "close": "16:30", "note": ""}}}
            ),
            "'9am' is not an HH:MM time",
        ),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "trading_days"}), "missing key 'trading_days'"),
        (lambda d: json.dumps({**d, "trading_days": d["trading_days"][::-1]}), "not in strictly increasing order"),
        (
            lambda d: json.dumps(
                {**d, "special_sessions": {"2026-11-19": {"open": "16:30", "close": "10:00", "note": ""}}}
            ),
            "open 16:30 is not before close 10:00",
        ),
    ],
)
def test_a_bad_sessions_file_fails_with_its_name_and_the_fix(tmp_path, damage, expected):
    good = json.loads(cal.krx.SESSIONS_FILE.read_text(encoding="utf-8"))
    bad = tmp_path / "sessions.json"
    bad.write_text(damage(good), encoding="utf-8")
    with pytest.raises(cal.CalendarDataError) as e:
        cal.krx.load_sessions(bad)
    assert str(bad) in str(e.value) and expected in str(e.value) and "make calendar" in str(e.value)
    with pytest.raises(cal.CalendarDataError, match="cannot be read"):
        cal.krx.load_sessions(tmp_path / "missing.json")
