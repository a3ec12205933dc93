"""The one clock Observer reads: real KST time, or a simulated time shared by every process of a run.

Every rule that depends on "now" (which trading day it is, which slot is due, when a window ends, when a token
expires, what an event is stamped with) reads :func:`now`. In production that is the wall clock in KST. With
``OBSERVER_CLOCK_FILE`` set, it is the instant written in that file, so a test can play a whole trading day of the
local exchange in a minute and every process it starts — sensors, runs, the Track B capture and its supervisor —
agrees on the time (docs/architecture.md, "One clock").

The file holds ``{"at": ISO instant with offset, "wall": epoch seconds, "speed": float}``: the simulated time is
``at + (time.time() - wall) * speed``; speed 0 freezes it at ``at``. Whoever drives the simulation rewrites the
file (atomically, :func:`write_sim`); readers notice the change by its stat, so a frozen clock costs one ``stat``
per reading. A file that cannot be read or parsed is an error, never a silent fall-back to the wall clock: a
process on the wrong clock would file today's data under another day.

Durations that are physical — rate limits, timeouts, back-off, heartbeats — stay on ``time.monotonic``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from observer_resources import settings

KST = ZoneInfo("Asia/Seoul")
ENV = "OBSERVER_CLOCK_FILE"


class ClockError(RuntimeError):
    """The simulated clock named by OBSERVER_CLOCK_FILE cannot be read; the message says which file and why."""


@dataclass(frozen=True)
class _Sim:
    at: datetime
    wall: float
    speed: float

    def now(self) -> datetime:
        if self.speed == 0:
            return self.at
        return self.at + timedelta(seconds=(time.time() - self.wall) * self.speed)


_cache: tuple[tuple[str, int, int, int], _Sim] | None = None


def _load(path: str) -> _Sim:
    global _cache
    try:
        st = os.stat(path)
    except OSError as e:
        raise ClockError(f"{ENV}={path}: cannot read the simulated clock ({e.strerror})") from None
    stamp = (path, st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _cache
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        at = datetime.fromisoformat(doc["at"])
        sim = _Sim(at.astimezone(KST), float(doc["wall"]), float(doc.get("speed", 0.0)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClockError(
            f"{ENV}={path}: not a clock file ({type(e).__name__}: {e}); "
            'expected {"at": "<ISO instant with offset>", "wall": <epoch s>, "speed": <float>}'
        ) from None
    if at.tzinfo is None or not math.isfinite(sim.speed) or sim.speed < 0:
        raise ClockError(f"{ENV}={path}: 'at' needs a UTC offset and 'speed' must be a finite number >= 0")
    _cache = (stamp, sim)
    return sim


def now() -> datetime:
    """The current instant, tz-aware KST: the wall clock, or the simulated one when OBSERVER_CLOCK_FILE is set."""
    path = settings.get(ENV)
    if not path:
        return datetime.now(KST)
    return _load(path).now()


def write_sim(path: Path, at: datetime, speed: float = 0.0) -> None:
    """Set the simulated clock every reader of ``path`` follows: atomically, so no reader sees half a file."""
    if at.tzinfo is None:
        raise ValueError(f"the simulated clock needs a timezone-aware instant, got {at!r}")
    if not math.isfinite(speed) or speed < 0:
        raise ValueError(f"speed must be a finite number >= 0, got {speed!r}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"at": at.isoformat(), "wall": time.time(), "speed": speed}), encoding="utf-8")
    os.replace(tmp, path)
