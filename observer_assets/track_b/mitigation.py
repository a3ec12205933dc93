"""Track B recording-rate mitigation levels (docs/collector-rules.md §4.6). Pure: samples in, level changes out.

Level 0 records at most 2 ticks per symbol per second (the last tick of each 0.5 s bucket), level 1 at
1 Hz, level 2 at 0.5 Hz. Under sustained pressure the *frequency* is reduced; slots are never dropped
to save resources ("coverage before frequency").

* Enter level 1 when any single level-1 condition (CPU >= 80 %, memory >= 85 %, mean write latency
  >= 500 ms, event-queue lag >= 2 s) has held at every sample for ``hold_enter`` (5 min).
* Enter level 2 (optional) likewise with CPU >= 90 %, memory >= 95 %, write >= 1,000 ms, lag >= 5 s
  (hold not specified by the design; 5 min, unverified). From level 0 a sustained level-2 condition goes
  straight to level 2.
* Recover one level when *all* recovery conditions held for ``hold_recover`` (10 min): level 1 -> 0 on
  CPU < 65 %, memory < 75 %, write < 200 ms, lag < 0.5 s; level 2 -> 1 when no level-1 entry condition
  is met (the intent's proposal). The recovery hold restarts at every level change, so recovering two
  levels takes two full holds.

Holds are measured on the samples' own times: a condition "held for 5 min" means it was true at every
sample from one at time t through one at t + 5 min; one sample without it (a blip) restarts the hold.
Every change is returned as a :class:`LevelChange` with its cause and the measured values, for the
system event log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from observer_resources.calendar import KST

RATE_HZ = {0: 2.0, 1: 1.0, 2: 0.5}
METRICS = ("cpu_pct", "mem_pct", "write_latency_ms", "queue_lag_s")


def sample_bucket_s(level: int) -> float:
    """Length of the sampling bucket at ``level``: keep the last tick per symbol per bucket."""
    try:
        return 1.0 / RATE_HZ[level]
    except KeyError:
        raise ValueError(f"mitigation level must be 0, 1 or 2, got {level!r}") from None


@dataclass(frozen=True)
class Thresholds:
    """``enter1``/``enter2``: a metric at or above its value is pressure; ``recover1``: every metric must be
    strictly below its value to leave level 1. Leaving level 2 needs every metric below ``enter1``."""

    enter1: Mapping[str, float] = field(
        default_factory=lambda: {"cpu_pct": 80.0, "mem_pct": 85.0, "write_latency_ms": 500.0, "queue_lag_s": 2.0}
    )
    enter2: Mapping[str, float] = field(
        default_factory=lambda: {"cpu_pct": 90.0, "mem_pct": 95.0, "write_latency_ms": 1000.0, "queue_lag_s": 5.0}
    )
    recover1: Mapping[str, float] = field(
        default_factory=lambda: {"cpu_pct": 65.0, "mem_pct": 75.0, "write_latency_ms": 200.0, "queue_lag_s": 0.5}
    )

    def __post_init__(self) -> None:
        for name in ("enter1", "enter2", "recover1"):
            m = getattr(self, name)
            if set(m) != set(METRICS):
                raise ValueError(f"Thresholds.{name} must give exactly {METRICS}, got {sorted(m)}")


@dataclass(frozen=True)
class Sample:
    at: datetime
    cpu_pct: float
    mem_pct: float
    write_latency_ms: float  # mean disk-write latency over the sampling period
    queue_lag_s: float  # event-queue lag

    def __post_init__(self) -> None:
        if not isinstance(self.at, datetime) or self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(f"Sample.at must be a timezone-aware datetime, got {self.at!r}")
        for m in METRICS:
            v = getattr(self, m)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Sample.{m} must be a finite number >= 0, got {v!r}")

    def values(self) -> dict[str, float]:
        return {m: float(getattr(self, m)) for m in METRICS}


@dataclass(frozen=True)
class LevelChange:
    at: datetime
    old: int
    new: int
    cause: str
    values: Mapping[str, float]

    def to_event(self) -> dict[str, Any]:
        """System event (docs/collector-rules.md §13: every mitigation level change with its cause)."""
        return {
            "event": "mitigation_level_change",
            "at": self.at.astimezone(KST).isoformat(),
            "old": self.old,
            "new": self.new,
            "rate_hz": RATE_HZ[self.new],
            "cause": self.cause,
            "values": dict(self.values),
        }


def _fmt(metric: str, v: float) -> str:
    return f"{metric}={v:g}"


class Mitigation:
    def __init__(
        self,
        hold_enter: timedelta = timedelta(minutes=5),
        hold_recover: timedelta = timedelta(minutes=10),
        level2: bool = True,
        thresholds: Thresholds | None = None,
    ) -> None:
        if hold_enter < timedelta(0) or hold_recover < timedelta(0):
            raise ValueError("hold times must not be negative")
        self.hold_enter = hold_enter
        self.hold_recover = hold_recover
        self.level2 = level2
        self.th = thresholds or Thresholds()
        self.level = 0
        self._last_at: datetime | None = None
        # since when each single entry condition has been true without interruption (None: not now)
        self._enter_since: dict[tuple[int, str], datetime | None] = {(lv, m): None for lv in (1, 2) for m in METRICS}
        self._recover_since: datetime | None = None
        self.changes = 0

    def rate_hz(self) -> float:
        return RATE_HZ[self.level]

    def bucket_s(self) -> float:
        return sample_bucket_s(self.level)

    def update(self, s: Sample) -> LevelChange | None:
        """Feed one sample (in time order); returns the level change it caused, if any."""
        if self._last_at is not None and s.at < self._last_at:
            raise ValueError(f"mitigation samples must come in time order: {s.at} after {self._last_at}")
        self._last_at = s.at
        vals = s.values()
        for lv, th in ((1, self.th.enter1), (2, self.th.enter2)):
            for m in METRICS:
                k = (lv, m)
                if vals[m] >= th[m]:
                    if self._enter_since[k] is None:
                        self._enter_since[k] = s.at
                else:
                    self._enter_since[k] = None
        recover_th = self.th.recover1 if self.level == 1 else self.th.enter1
        if self.level > 0 and all(vals[m] < recover_th[m] for m in METRICS):
            if self._recover_since is None:
                self._recover_since = s.at
        else:
            self._recover_since = None

        def held(lv: int) -> list[str]:
            th = self.th.enter1 if lv == 1 else self.th.enter2
            out = []
            for m in METRICS:
                since = self._enter_since[(lv, m)]
                if since is not None and s.at - since >= self.hold_enter:
                    out.append(f"{_fmt(m, vals[m])} >= {th[m]:g} for {(s.at - since).total_seconds():g}s")
            return out

        top = 2 if self.level2 else 1
        for lv in range(top, self.level, -1):  # the highest level whose entry held wins
            causes = held(lv)
            if causes:
                return self._change(s, lv, f"level {lv} entry: " + "; ".join(causes), vals)
        if self._recover_since is not None and s.at - self._recover_since >= self.hold_recover:
            conds = ", ".join(f"{m} < {recover_th[m]:g}" for m in METRICS)
            secs = (s.at - self._recover_since).total_seconds()
            return self._change(s, self.level - 1, f"recovery: all of {conds} for {secs:g}s", vals)
        return None

    def _change(self, s: Sample, new: int, cause: str, vals: Mapping[str, float]) -> LevelChange:
        old, self.level = self.level, new
        self._recover_since = None  # the next recovery (or a further one) needs its own full hold
        self.changes += 1
        return LevelChange(at=s.at, old=old, new=new, cause=cause, values=dict(vals))
