"""`observer calendar`, run as a user would: the installed console script, JSON on stdout."""

import json
import shutil
import subprocess
import sys

import pytest


def calendar(day: str, *extra: str) -> tuple[int, dict | str]:
    exe = shutil.which("observer") or None
    cmd = [exe, "calendar", day, *extra] if exe else [sys.executable, "-m", "observer_assets.cli", "calendar", day, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OBSERVER_CALENDAR": "krx"})
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)


def test_ordinary_day():
    rc, out = calendar("2026-11-26")
    assert rc == 0 and out["trading_day"] is True
    assert (out["open"], out["close"]) == ("2026-11-26T09:00:00+09:00", "2026-11-26T15:30:00+09:00")
    assert len(out["track_a_slots"]) == 40 and out["track_a_slots"][0] == "09:00" and out["track_a_slots"][-1] == "15:30"


@pytest.mark.parametrize("day", ["2026-11-28", "2026-02-17", "2026-10-05", "2026-06-03", "2026-12-31"])
def test_closed_days(day):  # Saturday, Seollal, Chuseok substitute holiday, local election, year-end closure
    rc, out = calendar(day)
    assert rc == 0 and out == {**out, "trading_day": False, "open": None, "close": None, "track_a_slots": []}


def test_special_days():
    rc, first = calendar("2026-01-02")
    assert first["open"] == "2026-01-02T10:00:00+09:00" and first["track_a_slots"][0] == "10:00"
    assert len(first["track_a_slots"]) == 34
    rc, csat = calendar("2026-11-19")
    assert (csat["open"], csat["close"]) == ("2026-11-19T10:00:00+09:00", "2026-11-19T16:30:00+09:00")
    assert csat["track_a_slots"][-1] == "16:30" and len(csat["track_a_slots"]) == 40


def test_bad_input_is_a_clear_error():
    rc, err = calendar("2026-13-01")
    assert rc == 2 and "not a date" in err
    rc, err = calendar("2031-01-02")
    assert rc == 2 and "outside the KRX calendar" in err
