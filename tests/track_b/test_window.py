"""Today's Track B window from the KRX calendar: normal day, the special days, a closed day, the demo calendar;
and the capture process exits at once (0) when there is nothing to record, 2 on bad configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta

import pytest

from observer_assets.track_b.capture.settings import ConfigError, load_settings
from observer_assets.track_b.window import DEFAULT_WINDOW, SESSION_WINDOW, parse_window, track_b_window, window_at
from observer_resources.calendar import KST, is_trading_day
from observer_resources.calendar.market import MarketCalendar
from observer_resources.kis import protocol as p

KRX = MarketCalendar("krx")
OPEN = MarketCalendar("open")


def kst(d: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=KST)


def test_normal_day_is_0930_to_1500():
    d = date(2025, 3, 12)  # a Wednesday, ordinary session 09:00-15:30
    w = track_b_window(d, KRX, SESSION_WINDOW)
    assert (w.start, w.end) == (kst(d, 9, 30), kst(d, 15, 0))
    assert w.start.utcoffset() == timedelta(hours=9) and w.note == ""
    assert w.contains(kst(d, 9, 30)) and not w.contains(kst(d, 15, 0)) and not w.contains(kst(d, 9, 29, 59))


def test_csat_day_shifts_the_whole_window_one_hour():
    d = date(2025, 11, 13)  # CSAT: 10:00-16:30
    w = track_b_window(d, KRX, SESSION_WINDOW)
    assert (w.start, w.end) == (kst(d, 10, 30), kst(d, 16, 0))
    assert "+1 h" in w.note


def test_first_trading_day_of_the_year_starts_at_1030_and_ends_at_the_close():
    d = date(2025, 1, 2)  # opens 10:00, closes 15:30 as usual
    w = track_b_window(d, KRX, SESSION_WINDOW)
    assert w.start == kst(d, 10, 30)
    assert w.end == kst(d, 15, 30)  # shifted 16:00 would run past the close
    assert "ends at the close" in w.note


def test_closed_days_have_no_window():
    assert track_b_window(date(2025, 3, 15), KRX) is None  # Saturday
    assert track_b_window(date(2025, 1, 1), KRX) is None  # New Year's Day
    assert not is_trading_day(date(2025, 10, 6))  # Chuseok
    assert track_b_window(date(2025, 10, 6), KRX) is None


def test_open_calendar_is_the_whole_day_every_day():
    for d in (date(2025, 3, 15), date(2025, 1, 1), date(2025, 3, 12)):
        w = track_b_window(d, OPEN, "09:30-15:00")
        assert (w.start, w.end) == (kst(d, 0), kst(d, 23, 59, 59))
    now = datetime(2025, 3, 15, 3, 7, tzinfo=KST)
    assert window_at(now, OPEN).contains(now)


def test_configured_window_and_bad_windows():
    d = date(2025, 3, 12)
    w = track_b_window(d, KRX, "09:05-15:20")
    assert (w.start, w.end) == (kst(d, 9, 5), kst(d, 15, 20))
    w = track_b_window(date(2025, 11, 13), KRX, "09:05-15:20")  # CSAT: shifted too
    assert (w.start, w.end) == (kst(date(2025, 11, 13), 10, 5), kst(date(2025, 11, 13), 16, 20))
    assert parse_window(SESSION_WINDOW) == (
        datetime.min.replace(hour=9, minute=30).time(),
        datetime.min.replace(hour=15).time(),
    )
    assert parse_window(DEFAULT_WINDOW) == (datetime.min.replace(hour=8).time(), datetime.min.replace(hour=20).time())
    for bad in ("", "9-15", "15:00-09:30", "09:30-09:30", "25:00-26:00", "09:61-10:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_phases_window_spans_the_venues_phases_cut_to_the_clock_span():
    """``phases``: from the first venue phase to the last, cut to 08:00-20:00 by default; it follows a late open
    through the phase table and is empty on a closed day."""
    d = date(2026, 12, 1)  # KRX's pre-market from 07:00, both venues' after-market to 20:00
    w = track_b_window(d, KRX, "phases")
    assert (w.start, w.end) == (kst(d, 8), kst(d, 20)) and "KRX+NXT" in w.note
    w = track_b_window(d, KRX, "phases 07:30-20:30")
    assert (w.start, w.end) == (kst(d, 7, 30), kst(d, 20))  # no phase runs after 20:00
    first = min(p.start for p in KRX.phases(date(2026, 11, 19)))  # CSAT day: the table moves KRX's morning
    w = track_b_window(date(2026, 11, 19), KRX, "phases")
    assert w.start == max(first, kst(date(2026, 11, 19), 8)) and w.start > kst(date(2026, 11, 19), 8)
    assert track_b_window(date(2026, 12, 5), KRX, "phases") is None  # Saturday
    assert track_b_window(date(2026, 12, 1), KRX, "phases 20:30-21:00") is None  # no phase in the span
    assert parse_window("phases") == (datetime.min.replace(hour=8).time(), datetime.min.replace(hour=20).time())
    for bad in ("phases 9-15", "phase", "phases 20:00-08:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def _run_capture(args: list[str], **env: str) -> tuple[int, str, float]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_"))}
    full.update(env)
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "observer_assets.track_b.capture", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stderr, time.monotonic() - t0


def test_until_in_the_past_exits_at_once_with_0(tmp_path):
    rc, err, took = _run_capture(
        ["--until", "2020-01-01T10:00:00+09:00"],
        OBSERVER_DATA_DIR=str(tmp_path),
        OBSERVER_CALENDAR="open",
        KIS_REST_URL="http://127.0.0.1:9",
        KIS_WS_URL="ws://127.0.0.1:9",
    )
    assert rc == 0, err
    assert '"event": "capture_not_started"' in err and "--until is in the past" in err
    assert took < 15
    assert not (tmp_path / "raw").exists()  # nothing was opened, nothing recorded


def test_bad_configuration_exits_2_with_a_clear_message(tmp_path):
    rc, err, _ = _run_capture(
        [], OBSERVER_DATA_DIR=str(tmp_path), OBSERVER_CALENDAR="open", OBSERVER_TRACK_B_WINDOW="15:00-09:00"
    )
    assert rc == 2, err
    assert '"event": "bad_config"' in err and "OBSERVER_TRACK_B_WINDOW" in err


@pytest.mark.parametrize(
    "env, args, what",
    [
        ({"OBSERVER_CALENDAR": "weekly"}, [], "OBSERVER_CALENDAR"),
        ({}, ["--until", "tomorrow"], "--until"),
        ({}, ["--pins", "005930,00-66"], "pins"),
        ({"OBSERVER_TRACK_B_PINS": ",".join(f"{i:06d}" for i in range(42))}, [], "42 pins"),
        ({"OBSERVER_TRACK_B_FAILURE_S": "-1"}, [], "OBSERVER_TRACK_B_FAILURE_S"),
        ({}, ["--eval-interval", "0"], "--eval-interval"),
        ({"OBSERVER_TRACK_B_BACKOFF": "1,x"}, [], "OBSERVER_TRACK_B_BACKOFF"),
        ({"OBSERVER_TRACK_B_MITIGATION": '{"enter1": {"disk": 1}}'}, [], "enter1"),
        ({"KIS_APP_KEY": "short", "KIS_APP_SECRET": "x"}, [], "KIS_APP_KEY"),
        ({"OBSERVER_TRACK_B_FEEDS": "trades:LSE"}, [], "OBSERVER_TRACK_B_FEEDS"),
        ({"OBSERVER_TRACK_B_FEEDS": "book:KRX,status:KRX"}, [], "at least one trades:VENUE"),
        ({"OBSERVER_TRACK_B_FEEDS": "trades:UN,trades:UN"}, [], "listed twice"),
        (
            {
                "OBSERVER_TRACK_B_FEEDS": "trades:UN,book:UN",
                "OBSERVER_TRACK_B_PINS": ",".join(f"{i:06d}" for i in range(21)),
            },
            [],
            "21 pins but 1 key(s) x 20 slots",
        ),
        ({"OBSERVER_TRACK_B_STATUS_CODE": "005930,000660"}, [], "OBSERVER_TRACK_B_STATUS_CODE"),
        ({"OBSERVER_TRACK_B_WINDOW": "phases 20:00-08:00"}, [], "OBSERVER_TRACK_B_WINDOW"),
        ({"OBSERVER_CALENDAR_PHASES": "/nonexistent/phases.toml"}, [], "OBSERVER_CALENDAR_PHASES"),
    ],
)
def test_bad_configuration_is_refused_by_name(tmp_path, env, args, what):
    with pytest.raises(ConfigError, match=re.escape(what)):
        load_settings(args, {"OBSERVER_DATA_DIR": str(tmp_path), "OBSERVER_CALENDAR": "open", **env})


def test_settings_defaults_follow_the_spec(tmp_path):
    s, configs = load_settings([], {"OBSERVER_DATA_DIR": str(tmp_path), "OBSERVER_DEMO_KEYS": "2"})
    assert len(configs) == 2 and configs[0].key_id != configs[1].key_id
    assert (s.eval_interval, s.sample_interval, s.failure_after, s.status_interval) == (30.0, 10.0, 300.0, 2.0)
    assert s.backoff == (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0) and s.window == DEFAULT_WINDOW
    assert (s.mitigation_hold_enter, s.mitigation_hold_recover) == (300.0, 600.0)
    assert s.calendar.mode == "krx" and s.until is None and s.pins == ()
    # the two-venue day: the unified tape per symbol, a status feed per venue on the anchor code
    assert s.feeds.per_code == ("H0UNCNT0",) and s.capacity == 39
    assert s.anchors == ((p.TR_WS_STATUS, "005930"), (p.TR_WS_STATUS_NXT, "005930"))
    s, _ = load_settings(
        [], {"OBSERVER_DATA_DIR": str(tmp_path), "OBSERVER_TRACK_B_FEEDS": "trades:UN, book:krx,status:KRX,status:NXT"}
    )
    assert s.feeds.per_code == ("H0UNCNT0", "H0STASP0") and s.capacity == 19
    assert s.anchors == (("H0STMKO0", "005930"), ("H0NXMKO0", "005930"))
    s, _ = load_settings(
        ["--pins", "005930, 000660,005930", "--until", "2026-03-10T15:00:00"],
        {"OBSERVER_DATA_DIR": str(tmp_path), "OBSERVER_TRACK_B_PINS": "035420"},
    )
    assert s.pins == ("005930", "000660")  # the command line wins over the environment; duplicates dropped
    assert s.until == datetime(2026, 3, 10, 15, 0, tzinfo=KST)  # no offset = KST
