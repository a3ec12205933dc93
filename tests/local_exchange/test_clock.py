"""The sim's clock: real time by default, pinned and accelerated on demand, frozen at speed 0."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import pytest

from local_exchange.clock import SimClock
from observer_resources.calendar import KST

START = datetime(2026, 3, 10, 9, 0, tzinfo=KST)


def test_default_is_real_kst_time() -> None:
    c = SimClock()
    now = c.now()
    assert now.utcoffset() == timedelta(hours=9)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 2
    assert c.speed == 1.0


def test_pinned_start_runs_at_speed() -> None:
    c = SimClock(start=START, speed=600.0)
    assert c.speed == 600.0
    t0 = c.now()
    assert START <= t0 < START + timedelta(seconds=30)
    time.sleep(0.05)
    elapsed = (c.now() - t0).total_seconds()
    assert 0.05 * 600 * 0.9 <= elapsed < 30 + 0.05 * 600 * 3  # >= 27 sim seconds in 50 ms


def test_accepts_any_zone_and_reports_kst() -> None:
    c = SimClock(start=datetime(2026, 3, 10, 0, 0, tzinfo=UTC), speed=0)
    assert c.now() == datetime(2026, 3, 10, 9, 0, tzinfo=KST) and c.now().tzinfo == KST


def test_speed_zero_freezes_time() -> None:
    c = SimClock(start=START, speed=0)
    a = c.now()
    time.sleep(0.01)
    assert c.now() == a == START
    assert c.real_seconds_until(START + timedelta(seconds=1)) == math.inf
    assert c.real_seconds_until(START - timedelta(seconds=1)) == 0.0


def test_set_jumps_and_changes_speed_continuously() -> None:
    c = SimClock(start=START, speed=0)
    c.set(at=START + timedelta(hours=6))
    assert c.now() == START + timedelta(hours=6)
    c.set(speed=100.0)  # no jump when only the speed changes
    t = c.now()
    assert START + timedelta(hours=6) <= t < START + timedelta(hours=6, seconds=10)
    time.sleep(0.02)
    assert c.now() > t + timedelta(seconds=1)
    c.set(at=START, speed=0.0)
    assert c.now() == START and c.speed == 0.0


def test_real_seconds_until_accounts_for_speed() -> None:
    c = SimClock(start=START, speed=10.0)
    wait = c.real_seconds_until(START + timedelta(seconds=100))
    assert 9.0 < wait <= 10.0
    c.set(speed=1000.0)
    assert 0.05 < c.real_seconds_until(START + timedelta(seconds=100)) <= 0.1
    assert c.real_seconds_until(START - timedelta(days=1)) == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        SimClock(start=datetime(2026, 3, 10, 9, 0))  # naive
    with pytest.raises(ValueError):
        SimClock(speed=-1)
    c = SimClock(start=START, speed=0)
    with pytest.raises(ValueError):
        c.set(speed=float("nan"))
    with pytest.raises(ValueError):
        c.set(at=datetime(2026, 3, 10, 9, 0))
    with pytest.raises(ValueError):
        c.real_seconds_until(datetime(2026, 3, 10, 9, 0))
    assert c.now() == START  # a refused set changes nothing
