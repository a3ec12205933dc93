"""The `observer` and `observer-sim` commands run as a user would: the installed console scripts, JSON on stdout,
and bad input or configuration as one line on stderr with exit code 2."""

import json
import shutil
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest


def calendar(day: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict | str]:
    exe = shutil.which("observer") or None
    cmd = (
        [exe, "calendar", day, *extra]
        if exe
        else [sys.executable, "-m", "observer_assets.cli", "calendar", day, *extra]
    )
    r = subprocess.run(
        cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OBSERVER_CALENDAR": "krx", **(env or {})}
    )
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)


def test_ordinary_day():
    rc, out = calendar("2026-11-26")
    assert rc == 0 and out["trading_day"] is True
    assert (out["open"], out["close"]) == ("2026-11-26T09:00:00+09:00", "2026-11-26T15:30:00+09:00")
    # the default two-venue day: every 10 minutes at which KRX or NXT is in a phase, 08:00..20:00
    slots = out["track_a_slots"]
    assert (len(slots), slots[0], slots[-1]) == (73, "08:00", "20:00") and {"09:00", "15:30"} <= set(slots)
    rc, krx_only = calendar("2026-11-26", env={"OBSERVER_TRACK_A_WINDOW": "session"})
    slots = krx_only["track_a_slots"]
    assert (len(slots), slots[0], slots[-1]) == (40, "09:00", "15:30")


@pytest.mark.parametrize("day", ["2026-11-28", "2026-02-17", "2026-10-05", "2026-06-03", "2026-12-31"])
def test_closed_days(day):  # Saturday, Seollal, Chuseok substitute holiday, local election, year-end closure
    rc, out = calendar(day)
    assert rc == 0 and out == {**out, "trading_day": False, "open": None, "close": None, "track_a_slots": []}


def test_special_days():
    rc, first = calendar("2026-01-02")
    # the phases open late, so the slots do: the venues' first phase starts at 09:30 (docs/sessions.md)
    assert first["open"] == "2026-01-02T10:00:00+09:00" and first["track_a_slots"][0] == "09:30"
    assert len(first["track_a_slots"]) == 64 and "10:00" in first["track_a_slots"]
    rc, csat = calendar("2026-11-19")
    assert (csat["open"], csat["close"]) == ("2026-11-19T10:00:00+09:00", "2026-11-19T16:30:00+09:00")
    assert (
        csat["track_a_slots"][-1] == "20:00" and len(csat["track_a_slots"]) == 64 and "16:30" in csat["track_a_slots"]
    )
    rc, csat = calendar("2026-11-19", env={"OBSERVER_TRACK_A_WINDOW": "session"})
    assert csat["track_a_slots"][-1] == "16:30" and len(csat["track_a_slots"]) == 40


def test_bad_input_is_a_clear_error():
    rc, err = calendar("2026-13-01")
    assert rc == 2 and "not a date" in err
    rc, err = calendar("2031-01-02")
    assert rc == 2 and "outside the KRX calendar" in err


# --- bad configuration and typed dates: one line on stderr, exit 2, never a traceback ----------------------

BIN = Path(sys.executable).parent  # the venv's console scripts, as installed


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / script), *args], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env}
    )


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in words), (words, lines[0])
    return lines[0]


@pytest.fixture
def good_env(tmp_path) -> dict[str, str]:
    (tmp_path / "data").mkdir()
    return {
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "OBSERVER_BACKUP_URL": str(tmp_path / "backups"),
        "OBSERVER_CALENDAR": "krx",
    }


LAKE_COMMANDS = [
    ("backup",),
    ("verify", "2026-03-10"),
    ("restore", "2026-03-10"),
    ("retention", "--dry-run"),
    ("metrics", "--port", "0"),
]


@pytest.mark.parametrize("cmd", [("calendar", "2026-03-10"), *LAKE_COMMANDS])
def test_an_unknown_calendar_is_one_line(good_env, cmd):
    one_line_error(
        run("observer", *cmd, env={**good_env, "OBSERVER_CALENDAR": "foo"}),
        f"observer {cmd[0]}:",
        "OBSERVER_CALENDAR",
        "'foo'",
    )


@pytest.mark.parametrize(
    "var, value, words",
    [
        ("OBSERVER_DEMO_KEYS", "x", ["OBSERVER_DEMO_KEYS must be a whole number", "'x'"]),
        ("OBSERVER_DEMO_KEYS", "0", ["OBSERVER_DEMO_KEYS must be a whole number >= 1", "'0'"]),
        ("KIS_REST_URL", "http://127.0.0.1:99999", ["KIS_REST_URL has an invalid port", "out of range"]),
        ("KIS_REST_URL", "http://127.0.0.1:0", ["KIS_REST_URL port must be 1..65535"]),
        ("KIS_WS_URL", "ws://127.0.0.1:18x01", ["KIS_WS_URL has an invalid port", "18x01"]),
    ],
)
def test_bad_kis_settings_stop_the_exporter_before_it_serves(good_env, var, value, words):
    one_line_error(run("observer", "metrics", "--port", "0", env={**good_env, var: value}), "observer metrics:", *words)


@pytest.mark.parametrize("cmd", LAKE_COMMANDS)
def test_a_missing_or_non_directory_data_dir_is_refused_not_read_as_empty(tmp_path, good_env, cmd):
    missing = tmp_path / "not-mounted" / "data"
    line = one_line_error(
        run("observer", *cmd, env={**good_env, "OBSERVER_DATA_DIR": str(missing)}),
        "OBSERVER_DATA_DIR",
        str(missing),
        "does not exist",
    )
    assert line.startswith(f"observer {cmd[0]}:")
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a directory")
    one_line_error(
        run("observer", *cmd, env={**good_env, "OBSERVER_DATA_DIR": str(a_file)}),
        "OBSERVER_DATA_DIR",
        str(a_file),
        "is not a directory",
    )
    assert not (tmp_path / "not-mounted").exists() and not (tmp_path / "backups").exists()  # nothing made


@pytest.mark.parametrize(
    "cmd",
    [
        ("calendar", "20261203"),
        ("calendar", "2026W011"),
        ("calendar", "2026-W01-1"),
        ("calendar", "2026-12-3"),
        ("backup", "20261203"),
        ("verify", "2026W011"),
        ("restore", "2026-02-30"),
        ("retention", "--today", "20261203"),
    ],
)
def test_dates_are_strictly_yyyy_mm_dd(good_env, cmd):
    one_line_error(
        run("observer", *cmd, env=good_env), f"observer {cmd[0]}:", repr(cmd[-1]), "is not a date (YYYY-MM-DD)"
    )


def test_argument_errors_are_one_line_too(good_env):
    one_line_error(run("observer", "calendar", env=good_env), "observer calendar:", "day", "see --help")
    one_line_error(run("observer", "metrics", "--port", "http", env=good_env), "observer metrics:", "--port")


@pytest.mark.parametrize(
    "args, words",
    [
        (("--start", "20260303"), ["--start", "'20260303'"]),
        (("--start", "2026-W01-1T09:00"), ["--start", "'2026-W01-1T09:00'"]),
        (("--rest-port", "70000"), ["--rest-port", "0..65535"]),
        (("--log-level", "loud"), ["--log-level", "'loud'"]),
        (("--activity", "0"), ["--activity", "must be > 0"]),
        (("--activity", "busy"), ["--activity", "'busy'"]),
        (("--accounts", "/nonexistent/accounts.json"), ["accounts file", "/nonexistent/accounts.json"]),
    ],
)
def test_the_local_exchange_refuses_bad_arguments_in_one_line(args, words):
    one_line_error(
        run("observer-sim", "--rest-port", "0", "--ws-port", "0", "--listings", "20", *args, env={}),
        "observer-sim",
        *words,
    )


def test_strict_date_parser():
    from datetime import date, datetime

    from observer_resources.dates import DateFormatError, parse_aware_datetime, parse_iso_date, parse_iso_datetime

    assert parse_iso_date("2026-12-03") == date(2026, 12, 3)
    for bad in (
        "20261203",
        "2026W011",
        "2026-W01-1",
        "2026-12-03\n",
        " 2026-12-03",
        "２０２６-12-03",
        "2026-12-3",
        "2026-12-03T00:00",
        "2026-02-29",
        None,
    ):
        with pytest.raises(DateFormatError, match="is not a date"):
            parse_iso_date(bad)  # type: ignore[arg-type]
    assert parse_iso_datetime("2026-12-03T09:00Z") == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    assert parse_iso_datetime("2026-12-03 09:00:01.5").tzinfo is None
    for bad in ("2026-12-03", "20261203T0900", "2026-W01-1T09:00", "2026-12-03T9:00", "2026-12-03T09:00+0900"):
        with pytest.raises(DateFormatError, match="is not an ISO 8601 time"):
            parse_iso_datetime(bad)
    # an instant a job is configured with must say its zone (the freshness check's `at`, the capture's `until`)
    assert parse_aware_datetime("2026-12-03T09:00+09:00", "until").utcoffset().total_seconds() == 9 * 3600
    with pytest.raises(DateFormatError, match="until '2026-12-03T09:00' needs an explicit UTC offset"):
        parse_aware_datetime("2026-12-03T09:00", "until")
