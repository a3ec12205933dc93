"""The local exchange's clock: simulated KST time that tests can pin, jump and accelerate.

Every time-dependent rule of the sim (token expiry, sessions, which ticks are "out" yet) reads this
clock, so a test can put the exchange at 09:00:05 on a chosen day, or run a whole session at 60x,
without waiting. Real time is the default so a sim started by hand behaves like the real exchange.

Speed 0 freezes the clock (a "fixed" clock in the protocol's words, §10.1).
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

from observer_resources.calendar import KST


def _require_aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"SimClock needs a timezone-aware datetime, got naive {at!r}")
    return at.astimezone(KST)


def _require_speed(speed: float) -> float:
    speed = float(speed)
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"SimClock speed must be a finite number >= 0, got {speed!r}")
    return speed


class SimClock:
    """Simulated KST clock: real time by default; may be pinned to a start instant and/or run at `speed`x."""

    def __init__(self, *, start: datetime | None = None, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._speed = _require_speed(speed)
        self._sim0 = _require_aware(start) if start is not None else datetime.now(KST)
        self._real0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def _now_locked(self) -> datetime:
        elapsed = (time.monotonic() - self._real0) * self._speed
        return self._sim0 + timedelta(seconds=elapsed)

    def now(self) -> datetime:
        """The simulated instant, tz-aware KST."""
        with self._lock:
            return self._now_locked()

    def set(self, *, at: datetime | None = None, speed: float | None = None) -> None:
        """Jump to `at` and/or change speed; time runs on continuously from this moment."""
        new_speed = _require_speed(speed) if speed is not None else None
        new_at = _require_aware(at) if at is not None else None
        with self._lock:
            base = new_at if new_at is not None else self._now_locked()
            self._sim0 = base
            self._real0 = time.monotonic()
            if new_speed is not None:
                self._speed = new_speed

    def real_seconds_until(self, t: datetime) -> float:
        """Real seconds until sim time `t` (>= 0); infinite when frozen and `t` is still ahead."""
        target = _require_aware(t)
        with self._lock:
            ahead = (target - self._now_locked()).total_seconds()
            speed = self._speed
        if ahead <= 0:
            return 0.0
        if speed == 0:
            return math.inf
        return ahead / speed

    def __repr__(self) -> str:
        return f"SimClock(now={self.now().isoformat()}, speed={self._speed})"
