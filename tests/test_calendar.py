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


# --- `observer calendar DATE`: the venues' phases and breaks beside the existing keys -------------------------


def observer_calendar(capsys, monkeypatch, day: str, *extra: str) -> dict:
    from observer_assets import cli

    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    assert cli.main(["calendar", day, *extra]) == 0
    return json.loads(capsys.readouterr().out)


EXISTING_KEYS = ["date", "calendar", "trading_day", "open", "close", "note", "track_a_slots"]


def test_cli_ordinary_day_lists_both_venues_phases_and_breaks(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2026-03-10")
    assert list(out) == [*EXISTING_KEYS, "venues", "breaks"]
    assert (out["open"], out["close"], len(out["track_a_slots"])) == (
        "2026-03-10T09:00:00+09:00",
        "2026-03-10T15:30:00+09:00",
        40,
    )
    krx, nxt = out["venues"]["KRX"], out["venues"]["NXT"]
    assert {k: krx[k] for k in ("schedule", "confirmed", "special_day", "window")} == {
        "schedule": "2016-08-01",
        "confirmed": True,
        "special_day": None,
        "window": {"start": "08:30", "end": "18:00"},
    }
    assert [(p["name"], p["kind"], p["start"], p["end"]) for p in krx["phases"]] == [
        ("opening_auction", "auction", "08:30", "09:00"),
        ("regular", "continuous", "09:00", "15:20"),
        ("closing_auction", "auction", "15:20", "15:30"),
        ("closing_price", "closing_price", "15:40", "16:00"),
        ("after_hours_single", "periodic_auction", "16:00", "18:00"),
    ]
    assert [(p["name"], p["kind"], p["start"], p["end"]) for p in nxt["phases"]] == [
        ("pre_market", "continuous", "08:00", "08:50"),
        ("main", "continuous", "09:00:30", "15:20"),
        ("after_market_orders", "auction", "15:30", "15:40"),
        ("after_market", "continuous", "15:40", "20:00"),
    ]
    assert nxt["window"] == {"start": "08:00", "end": "20:00"} and nxt["sources"]
    assert out["breaks"] == [
        {"venue": "NXT", "after": "pre_market", "before": "main", "start": "08:50", "end": "09:00:30"},
        {"venue": "NXT", "after": "main", "before": "after_market_orders", "start": "15:20", "end": "15:30"},
        {"venue": "KRX", "after": "closing_auction", "before": "closing_price", "start": "15:30", "end": "15:40"},
    ]


def test_cli_a_day_of_krx_unconfirmed_extended_hours(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2026-12-04")
    assert (out["open"], out["close"]) == ("2026-12-04T09:00:00+09:00", "2026-12-04T15:30:00+09:00")
    krx = out["venues"]["KRX"]
    assert (krx["schedule"], krx["confirmed"], krx["window"]) == (
        "2026-06-29",
        False,
        {"start": "07:00", "end": "20:00"},
    )
    assert [p["name"] for p in krx["phases"]] == [
        "pre_market",
        "opening_auction",
        "regular",
        "closing_auction",
        "closing_price",
        "after_market",
    ]
    assert out["venues"]["NXT"]["confirmed"] is True
    assert {
        "venue": "KRX",
        "after": "pre_market",
        "before": "opening_auction",
        "start": "08:00",
        "end": "08:30",
    } in out["breaks"]


def test_cli_first_trading_day_of_2027(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2027-01-04")
    assert out["open"] == "2027-01-04T10:00:00+09:00" and out["track_a_slots"][0] == "10:00"
    krx, nxt = out["venues"]["KRX"], out["venues"]["NXT"]
    assert krx["special_day"] == nxt["special_day"] == "first_day_of_year"
    assert krx["phases"][0] == {"name": "opening_auction", "kind": "auction", "start": "09:30", "end": "10:00"}
    assert [(p["name"], p["start"]) for p in nxt["phases"]] == [
        ("main", "10:00:30"),
        ("after_market_orders", "15:30"),
        ("after_market", "15:40"),
    ]
    assert krx["confirmed"] is False and nxt["confirmed"] is True  # KRX's 2026-06-29 schedule, not yet confirmed


def test_cli_csat_day(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2026-11-19")
    assert (out["open"], out["close"]) == ("2026-11-19T10:00:00+09:00", "2026-11-19T16:30:00+09:00")
    krx, nxt = out["venues"]["KRX"], out["venues"]["NXT"]
    assert (krx["window"], nxt["window"]) == ({"start": "09:30", "end": "20:00"}, {"start": "10:00:30", "end": "20:00"})
    assert [(p["name"], p["start"], p["end"]) for p in nxt["phases"]] == [
        ("main", "10:00:30", "16:20"),
        ("after_market_orders", "16:30", "16:40"),
        ("after_market", "16:40", "20:00"),
    ]
    regular = next(p for p in krx["phases"] if p["name"] == "regular")
    assert (regular["start"], regular["end"]) == ("10:00", "16:20")


def test_cli_closed_day(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2026-12-25")
    assert out == {**out, "trading_day": False, "open": None, "track_a_slots": [], "venues": {}, "breaks": []}


def test_cli_demo_calendar_has_phases_at_any_hour(capsys, monkeypatch):
    out = observer_calendar(capsys, monkeypatch, "2026-11-28", "--calendar", "open")  # a Saturday
    assert out["calendar"] == "open" and out["trading_day"] is True and set(out["venues"]) == {"KRX", "NXT"}
    assert out["venues"]["KRX"]["window"]["start"] == "00:00"
    assert max(v["window"]["end"] for v in out["venues"].values()) == "23:59:59"


def test_cli_refuses_a_bad_phases_file_naming_it(capsys, monkeypatch, tmp_path):
    from observer_assets import cli
    from observer_resources.calendar import phases

    bad = tmp_path / "phases.toml"
    bad.write_text(
        phases.PHASES_FILE.read_text(encoding="utf-8").replace(
            'kind = "continuous", start = "15:40"', 'kind = "x", start = "15:40"'
        ),
        encoding="utf-8",
    )
    monkeypatch.setattr(phases, "PHASES_FILE", bad)  # the shipped file's path, pointed at a bad copy
    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    assert cli.main(["calendar", "2026-12-04"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"observer calendar: {bad}: [[schedule]] #3 (NXT 2025-03-04) phase #4 (after_market): unknown kind 'x' "
        "(allowed: continuous, auction, periodic_auction, closing_price)"
    ]
