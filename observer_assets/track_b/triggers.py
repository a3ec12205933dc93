"""Track B triggers: which symbols deserve one of the stream slots (docs/collector-rules.md §4.2). Pure.

Two sources feed the slot manager:

* **Track A snapshots** (every 10 minutes, the whole universe): volume surge and volatility spike,
  each judged on *consecutive* snapshots (window = one snapshot interval), because a 1-minute window
  never holds two 10-minute snapshots. Bootstrap fills empty slots at the window start by traded value.
* **The live stream** (ticks, only for symbols already streamed): trade velocity, 1-minute volatility
  and per-minute volume surge. These mostly raise the priority of symbols that hold a slot.

Rules that must not be broken again (§17 #12): volume is always the *interval* volume (difference of
cumulative figures), never the cumulative day volume; a baseline never contains the point being
judged; a baseline needs at least ``surge_min_history`` points; every window is measured on the
data's own timestamps (snapshot time, exchange time), never on the wall clock, so replaying recorded
data selects the same symbols.

Priority of a candidate is ``(RANK[trigger], score)``: the design order volume surge > velocity >
volatility is the first key, the trigger's own score only orders candidates of one class. Scores:

* ``volume_surge``: interval volume ÷ mean interval volume of the baseline (a ratio, e.g. 6.3);
* ``velocity``: trades per second over ``velocity_window``;
* ``volatility``: absolute price move in percent (e.g. 5.4 for 5.4 %);
* ``bootstrap``: cumulative traded value in KRW;
* ``manual``: whatever the operator configured (pins use 1.0; pins are never compared anyway).
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from observer_resources.calendar import KST
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS

TriggerKind = Literal["manual", "volume_surge", "velocity", "volatility", "bootstrap"]
RANK: dict[str, int] = {"manual": 4, "volume_surge": 3, "velocity": 2, "volatility": 1, "bootstrap": 0}


def _require_aware(dt: datetime, what: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (KST), got {dt!r}")


@dataclass(frozen=True)
class Candidate:
    """A symbol proposed for a stream slot, with why (trigger), how strongly (score) and when."""

    code: str
    trigger: TriggerKind
    score: float
    detected_at: datetime
    detail: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code or not self.code.isascii() or not self.code.isalnum():
            raise ValueError(f"candidate code must be a non-empty alphanumeric symbol code, got {self.code!r}")
        if self.trigger not in RANK:
            raise ValueError(f"unknown trigger {self.trigger!r} for {self.code}; expected one of {sorted(RANK)}")
        if isinstance(self.score, bool) or not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
            raise ValueError(f"candidate score must be a finite number, got {self.score!r} for {self.code}")
        _require_aware(self.detected_at, f"detected_at of candidate {self.code}")

    @property
    def priority(self) -> tuple[int, float]:
        return (RANK[self.trigger], float(self.score))

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "trigger": self.trigger,
            "score": float(self.score),
            "detected_at": self.detected_at.astimezone(KST).isoformat(),
            "detail": dict(self.detail),
        }


def sort_candidates(cands: Iterable[Candidate]) -> list[Candidate]:
    """Highest priority first; ties by earlier detection, then code, so the order is deterministic."""
    return sorted(cands, key=lambda c: (-c.priority[0], -c.priority[1], c.detected_at, c.code))


@dataclass(frozen=True)
class TriggerConfig:
    """Thresholds (production values from docs/collector-rules.md §4.2 where it gives them)."""

    surge_ratio: float = 5.0
    surge_min_history: int = 2
    surge_window: timedelta = timedelta(minutes=30)  # snapshot baseline: intervals starting inside it
    stream_surge_window: timedelta = timedelta(minutes=10)  # stream baseline: the 10 minutes before
    velocity_tps: float = 10.0
    velocity_window: timedelta = timedelta(seconds=10)
    volatility_pct: float = 5.0
    volatility_window: timedelta = timedelta(minutes=1)
    min_score: float = 0.2
    max_candidates: int = 100
    bootstrap_top_n: int = WS_MAX_REGISTRATIONS

    def __post_init__(self) -> None:
        for name in ("surge_ratio", "velocity_tps", "volatility_pct"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TriggerConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("surge_window", "stream_surge_window", "velocity_window", "volatility_window"):
            if not getattr(self, name) > timedelta(0):
                raise ValueError(f"TriggerConfig.{name} must be a positive duration, got {getattr(self, name)!r}")
        if self.surge_min_history < 1:
            raise ValueError(f"TriggerConfig.surge_min_history must be >= 1, got {self.surge_min_history}")
        if self.max_candidates < 1 or self.bootstrap_top_n < 0:
            raise ValueError("TriggerConfig.max_candidates must be >= 1 and bootstrap_top_n >= 0")
        if self.min_score < 0:
            raise ValueError(f"TriggerConfig.min_score must be >= 0, got {self.min_score}")


def finalize(cands: Iterable[Candidate], cfg: TriggerConfig) -> list[Candidate]:
    """One candidate per symbol (its highest priority), scores below ``min_score`` dropped, sorted,
    capped at ``max_candidates``."""
    best: dict[str, Candidate] = {}
    for c in cands:
        if c.score < cfg.min_score:
            continue
        cur = best.get(c.code)
        if cur is None or c.priority > cur.priority:
            best[c.code] = c
    return sort_candidates(best.values())[: cfg.max_candidates]


# --- Track A snapshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapRow:
    """One symbol in one Track A snapshot. ``volume`` and ``trade_value`` are cumulative day figures."""

    price: int | None
    volume: int | None
    trade_value: int | None = None


@dataclass(frozen=True)
class Snapshot:
    ts: datetime  # the snapshot's own time (slot time), KST
    rows: Mapping[str, SnapRow]

    def __post_init__(self) -> None:
        _require_aware(self.ts, "Snapshot.ts")


def snapshot_from_rows(ts: datetime, rows: Iterable[Mapping[str, Any]]) -> Snapshot:
    """Build a Snapshot from Track A table rows (dicts with ``code``, ``price``, ``volume``,
    ``trade_value``; missing or null values stay None)."""
    out: dict[str, SnapRow] = {}
    for r in rows:
        code = r.get("code")
        if not code:
            raise ValueError(f"Track A row without a code: {dict(r)!r}")

        def num(k: str) -> int | None:  # called within this iteration only
            v = r.get(k)  # noqa: B023
            if v is None or type(v).__name__ in ("NAType", "NaTType"):  # pandas' missing values
                return None
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"Track A row {code}: {k}={v!r} is not a number") from None  # noqa: B023
            return None if math.isnan(f) else int(f)

        out[str(code)] = SnapRow(price=num("price"), volume=num("volume"), trade_value=num("trade_value"))
    return Snapshot(ts=ts, rows=out)


def _check_history(history: Sequence[Snapshot]) -> None:
    for a, b in zip(history, history[1:]):
        if not b.ts > a.ts:
            raise ValueError(f"snapshot history must be in strictly increasing time order: {a.ts} then {b.ts}")


def _intervals(history: Sequence[Snapshot], code: str) -> list[tuple[datetime, datetime, int]]:
    """(start, end, volume) of every consecutive snapshot pair where the symbol has both cumulative
    figures, on the same KST day, and the cumulative did not go down (a drop is a new day or bad data,
    not an interval)."""
    out = []
    for a, b in zip(history, history[1:]):
        ra, rb = a.rows.get(code), b.rows.get(code)
        if ra is None or rb is None or ra.volume is None or rb.volume is None:
            continue
        if a.ts.astimezone(KST).date() != b.ts.astimezone(KST).date() or rb.volume < ra.volume:
            continue
        out.append((a.ts, b.ts, rb.volume - ra.volume))
    return out


def _surge_from_snapshots(history: Sequence[Snapshot], code: str, cfg: TriggerConfig) -> Candidate | None:
    latest, prev = history[-1], history[-2]
    ivs = _intervals(history, code)
    if not ivs or ivs[-1][0] != prev.ts or ivs[-1][1] != latest.ts:
        return None  # no current interval for this symbol
    start, end, vol = ivs[-1]
    cur_s = (end - start).total_seconds()
    # Baseline: earlier intervals that start inside the window ending at the current snapshot. Rates
    # (volume per second) so that a missed cycle (a 20-minute interval) does not look like a doubling.
    base = [v / (e - s).total_seconds() for s, e, v in ivs[:-1] if s >= end - cfg.surge_window]
    if len(base) < cfg.surge_min_history:
        return None
    mean_rate = sum(base) / len(base)
    if mean_rate <= 0:
        return None  # a zero baseline has no ratio; an idle symbol waking up shows as volatility instead
    ratio = (vol / cur_s) / mean_rate
    if ratio < cfg.surge_ratio:
        return None
    return Candidate(
        code,
        "volume_surge",
        ratio,
        latest.ts,
        {
            "interval_volume": float(vol),
            "baseline_volume": mean_rate * cur_s,
            "ratio": ratio,
            "history": float(len(base)),
            "interval_s": cur_s,
        },
    )


def _volatility_from_snapshots(history: Sequence[Snapshot], code: str, cfg: TriggerConfig) -> Candidate | None:
    latest, prev = history[-1], history[-2]
    ra, rb = prev.rows.get(code), latest.rows.get(code)
    if ra is None or rb is None or not ra.price or not rb.price or ra.price <= 0 or rb.price <= 0:
        return None
    if prev.ts.astimezone(KST).date() != latest.ts.astimezone(KST).date():
        return None
    pct = abs(rb.price - ra.price) / ra.price * 100.0
    if pct < cfg.volatility_pct:
        return None
    return Candidate(
        code,
        "volatility",
        pct,
        latest.ts,
        {
            "pct": pct,
            "price": float(rb.price),
            "ref_price": float(ra.price),
            "window_s": (latest.ts - prev.ts).total_seconds(),
        },
    )


def snapshot_candidates(history: Sequence[Snapshot], cfg: TriggerConfig = TriggerConfig()) -> list[Candidate]:
    """Candidates at the latest snapshot of ``history`` (consecutive Track A snapshots, oldest first).

    * Volume surge: the latest interval's volume ``cum(t) - cum(t-1)`` against the mean of the symbol's
      earlier intervals that start within ``surge_window`` before ``t`` (the current interval excluded),
      needing ``surge_min_history`` of them; compared as volume per second so uneven spacing (a missed
      cycle) does not distort it. Score = ratio.
    * Volatility: ``|p_t - p_{t-1}| / p_{t-1}`` in percent over the last two snapshots. Score = percent.

    One candidate per symbol (the higher priority of the two), sorted by priority, below ``min_score``
    dropped, at most ``max_candidates``. ``detected_at`` is the latest snapshot's time.
    """
    _check_history(history)
    if len(history) < 2:
        return []
    found: list[Candidate] = []
    for code in sorted(history[-1].rows):
        for c in (_surge_from_snapshots(history, code, cfg), _volatility_from_snapshots(history, code, cfg)):
            if c is not None:
                found.append(c)
    return finalize(found, cfg)


def bootstrap_candidates(latest: Snapshot, n: int = WS_MAX_REGISTRATIONS) -> list[Candidate]:
    """Fill empty slots at the window start: the ``n`` symbols with the highest cumulative traded value
    in the latest snapshot (ties by code). Score = traded value in KRW. Symbols that have not traded
    (no or zero traded value) are not candidates. No hard-coded symbols (§17 #12)."""
    if n < 0:
        raise ValueError(f"bootstrap n must be >= 0, got {n}")
    rows = [(code, r.trade_value) for code, r in latest.rows.items() if r.trade_value and r.trade_value > 0]
    rows.sort(key=lambda x: (-x[1], x[0]))
    return [Candidate(code, "bootstrap", float(v), latest.ts, {"trade_value": float(v)}) for code, v in rows[:n]]


# --- live stream -----------------------------------------------------------------------------------


def _minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


_MINUTE = timedelta(minutes=1)


class _SymbolStream:
    """One symbol's recent trades (sorted by exchange time) and its highest cumulative volume per minute."""

    __slots__ = ("day", "times", "prices", "acmls", "minute_acml", "latest")

    def __init__(self, day: Any) -> None:
        self.day = day
        self.times: list[datetime] = []
        self.prices: list[int] = []
        self.acmls: list[int] = []
        self.minute_acml: dict[datetime, int] = {}  # minute start -> highest cumulative volume seen in it
        self.latest: datetime | None = None


class StreamTriggers:
    """Triggers on the live trade stream, per symbol, timed by exchange time only.

    Feed every parsed trade with :meth:`observe` (before any 2 Hz sampling); ask :meth:`candidates`
    with the evaluation time. The result depends only on the trades and that time, never on the wall
    clock, so replaying the same trades and times gives the same candidates. Trades later than ``now``
    are ignored; ``now`` should not lag the newest trade by more than a minute (older detail is pruned).

    * velocity: trades in ``(now - velocity_window, now]`` / window seconds, >= ``velocity_tps``;
    * volatility: ``|last - earliest|`` price in ``(now - volatility_window, now]`` / earliest, in %;
    * volume surge: a minute's volume, taken from cumulative volumes (a tick lost on the wire does not
      hide volume), against the mean volume of the ``stream_surge_window`` minutes before it. The judged
      minute is excluded from its baseline; minutes without trades count as 0; the first minute a symbol
      was seen in is only partly observed and is never used. The minute containing ``now`` (so far) and
      the minute before it are judged (a burst at the end of a minute is not missed); the larger counts.
    """

    def __init__(self, cfg: TriggerConfig = TriggerConfig()) -> None:
        self.cfg = cfg
        self._sym: dict[str, _SymbolStream] = {}
        self._keep = max(cfg.velocity_window, cfg.volatility_window, _MINUTE) + _MINUTE
        self._base_minutes = max(1, int(cfg.stream_surge_window / _MINUTE))
        self.stale_ignored = 0

    def observe(self, code: str, exchange_dt: datetime, price: int, qty: int, acml_vol: int) -> None:
        """Record one trade (``qty`` this trade, ``acml_vol`` the day's cumulative volume after it)."""
        if not isinstance(code, str) or not code:
            raise ValueError(f"trade without a symbol code: {code!r}")
        _require_aware(exchange_dt, f"exchange_dt of {code}")
        for name, v, lo in (("price", price, 1), ("qty", qty, 0), ("acml_vol", acml_vol, 0)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
                raise ValueError(f"bad trade for {code} at {exchange_dt}: {name}={v!r}")
        dt = exchange_dt.astimezone(KST)
        st = self._sym.get(code)
        if st is None or st.day != dt.date():
            st = self._sym[code] = _SymbolStream(dt.date())  # a new day starts a new history
        if st.latest is not None and dt < st.latest - self._keep:
            self.stale_ignored += 1  # older than every window still evaluated; the tick itself is recorded
            return  # by the capture, only the trigger state skips it
        i = bisect.bisect_right(st.times, dt)
        st.times.insert(i, dt)
        st.prices.insert(i, int(price))
        st.acmls.insert(i, int(acml_vol))
        m = _minute(dt)
        if acml_vol > st.minute_acml.get(m, -1):
            st.minute_acml[m] = int(acml_vol)
        if st.latest is None or dt > st.latest:
            st.latest = dt
            self._prune(st)

    def _prune(self, st: _SymbolStream) -> None:
        assert st.latest is not None
        cut = bisect.bisect_left(st.times, st.latest - self._keep)
        if cut:
            del st.times[:cut], st.prices[:cut], st.acmls[:cut]
        oldest = _minute(st.latest) - (self._base_minutes + 3) * _MINUTE
        old = sorted(m for m in st.minute_acml if m < oldest)
        # keep the newest pruned minute: it is the starting figure of the next minute's volume
        for m in old[:-1]:
            del st.minute_acml[m]

    def forget(self, code: str) -> None:
        """Drop a symbol's history (e.g. after it lost its slot)."""
        self._sym.pop(code, None)

    def codes(self) -> list[str]:
        return sorted(self._sym)

    @staticmethod
    def _acml_at_minute_end(st: _SymbolStream, minute: datetime) -> int | None:
        vals = [v for m, v in st.minute_acml.items() if m <= minute]
        return max(vals) if vals else None

    def _minute_volume(self, st: _SymbolStream, minute: datetime, now: datetime) -> int | None:
        """Volume traded in ``minute`` up to ``now``; None where it is not fully known."""
        first = min(st.minute_acml) if st.minute_acml else None
        if first is None or minute <= first or minute > _minute(now):
            return None
        start = self._acml_at_minute_end(st, minute - _MINUTE)
        if start is None:
            return None
        if minute == _minute(now):  # the running minute: only trades at or before now
            hi = bisect.bisect_right(st.times, now)
            lo = bisect.bisect_left(st.times, minute)
            end = max([start, *st.acmls[lo:hi]])
        else:
            end = self._acml_at_minute_end(st, minute)
            assert end is not None
        return max(end - start, 0)

    def _surge(self, code: str, st: _SymbolStream, now: datetime) -> Candidate | None:
        cfg = self.cfg
        best: Candidate | None = None
        for judged in (_minute(now), _minute(now) - _MINUTE):
            vol = self._minute_volume(st, judged, now)
            if vol is None or vol == 0:
                continue
            base = [
                v
                for k in range(1, self._base_minutes + 1)
                if (v := self._minute_volume(st, judged - k * _MINUTE, now)) is not None
            ]
            if len(base) < cfg.surge_min_history:
                continue
            mean = sum(base) / len(base)
            if mean <= 0:
                continue  # no ratio against a silent baseline
            ratio = vol / mean
            if ratio < cfg.surge_ratio:
                continue
            c = Candidate(
                code,
                "volume_surge",
                ratio,
                now,
                {
                    "interval_volume": float(vol),
                    "baseline_volume": mean,
                    "ratio": ratio,
                    "history": float(len(base)),
                    "minute_offset": (judged - _minute(now)) / _MINUTE,
                },
            )
            if best is None or c.priority > best.priority:
                best = c
        return best

    def candidates(self, now: datetime) -> list[Candidate]:
        """Candidates at ``now`` (exchange time): one per symbol, its strongest trigger; sorted by
        priority, below ``min_score`` dropped, at most ``max_candidates``."""
        _require_aware(now, "now")
        now = now.astimezone(KST)
        cfg = self.cfg
        found: list[Candidate] = []
        for code in sorted(self._sym):
            st = self._sym[code]
            if st.day != now.date():
                continue
            hi = bisect.bisect_right(st.times, now)
            lo_v = bisect.bisect_right(st.times, now - cfg.velocity_window)
            n = hi - lo_v
            tps = n / cfg.velocity_window.total_seconds()
            if n and tps >= cfg.velocity_tps:
                found.append(
                    Candidate(
                        code,
                        "velocity",
                        tps,
                        now,
                        {"trades": float(n), "window_s": cfg.velocity_window.total_seconds()},
                    )
                )
            lo_p = bisect.bisect_right(st.times, now - cfg.volatility_window)
            if hi - lo_p >= 2:
                first, last = st.prices[lo_p], st.prices[hi - 1]
                pct = abs(last - first) / first * 100.0
                if pct >= cfg.volatility_pct:
                    found.append(
                        Candidate(
                            code,
                            "volatility",
                            pct,
                            now,
                            {
                                "pct": pct,
                                "price": float(last),
                                "ref_price": float(first),
                                "window_s": cfg.volatility_window.total_seconds(),
                            },
                        )
                    )
            s = self._surge(code, st, now)
            if s is not None:
                found.append(s)
        return finalize(found, cfg)
