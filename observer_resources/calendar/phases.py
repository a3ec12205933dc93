"""The trading phases of the two venues (KRX, NXT) on a day, from ``phases.toml``.

Since 2025-03-04 a Korean stock trades on KRX and on NXT (Nextrade) from 08:00 to 20:00 in phases that differ by
venue, and the hours change by announcement (KRX's own pre- and after-market, announced for 2026-06-29 and not
confirmed). So the phases are data with effective dates, checked whole when loaded (``make calendar`` loads them
too), and a day's phases are computed from that data and the KRX calendar's session of the day: closed days and
special days (first trading day of the year, CSAT) come from the calendar, never from here. Pure: no Dagster, no
I/O beyond reading the file once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from observer_resources.calendar.krx import KST, NORMAL_CLOSE, NORMAL_OPEN, CalendarDataError

PHASES_FILE = Path(__file__).with_name("phases.toml")
VENUES = ("KRX", "NXT")
#: the phase names each venue may use: a fixed vocabulary, so consumers can branch on them
PHASE_NAMES = {
    "KRX": tuple(
        "pre_market opening_auction regular closing_auction closing_price after_hours_single after_market".split()
    ),
    "NXT": ("pre_market", "main", "after_market_orders", "after_market"),
}
KINDS = ("continuous", "auction", "periodic_auction", "closing_price")
DAY = 86400
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_SHIFT = re.compile(r"^([+-])([01]\d|2[0-3]):([0-5]\d)$")
_SCHEDULE_KEYS = ("venue", "effective", "until", "confirmed", "source", "phases", "adjust")
_PHASE_KEYS = ("name", "kind", "start", "end")
_ADJUST_KEYS = ("drop", "shift", "times", "confirmed", "source")
_SPECIAL_KEYS = ("krx_session", "description")


def _secs(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


_OPEN, _CLOSE = _secs(NORMAL_OPEN), _secs(NORMAL_CLOSE)


def hms(s: int) -> str:
    """Seconds of the day as ``HH:MM``, or ``HH:MM:SS`` when the seconds matter (NXT's main opens at 09:00:30)."""
    h, m, sec = s // 3600, s // 60 % 60, s % 60
    return f"{h:02d}:{m:02d}" + (f":{sec:02d}" if sec else "")


def _clock(s: int) -> str:
    """Like :func:`hms`, for a time an adjustment pushed out of the day (-01:00, 24:30)."""
    return f"-{hms(-s)}" if s < 0 else hms(s)


class PhaseDataError(CalendarDataError):
    """A phases file that must not be used; ``problems`` holds one line each, the message names the file."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class Phase:
    """One phase of one venue on one day; ``start`` inclusive, ``end`` exclusive, both tz-aware KST."""

    venue: str
    name: str
    kind: str
    start: datetime
    end: datetime
    confirmed: bool = True  # False: from an announced, unconfirmed schedule or special-day rule

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Break:
    """A pause between two consecutive phases of one venue (no phase of that venue runs)."""

    venue: str
    start: datetime
    end: datetime
    after: str
    before: str


@dataclass(frozen=True)
class VenueDay:
    """A venue's phases on a day and where they come from (the schedule, the special-day rule, if any)."""

    venue: str
    phases: tuple[Phase, ...]
    effective: date  # of the schedule in force
    confirmed: bool
    special: str | None = None  # the special day's name when one applied
    sources: tuple[str, ...] = ()

    @property
    def window(self) -> tuple[datetime, datetime]:
        return self.phases[0].start, self.phases[-1].end

    def breaks(self) -> list[Break]:
        return [
            Break(self.venue, a.end, b.start, a.name, b.name)
            for a, b in zip(self.phases, self.phases[1:])
            if a.end < b.start
        ]


# --- the validated file -----------------------------------------------------------------------------------------

Times = tuple[tuple[str, str, int, int], ...]  # (name, kind, start, end) in seconds of the day, in time order


@dataclass(frozen=True)
class Adjustment:
    drop: tuple[str, ...] = ()
    shift: int = 0
    times: dict[str, tuple[int, int]] = field(default_factory=dict)
    confirmed: bool = True
    source: str = ""


@dataclass(frozen=True)
class Schedule:
    venue: str
    effective: date
    until: date | None
    confirmed: bool
    source: str
    phases: Times
    adjust: dict[str, Adjustment]

    def on(self, krx_session: tuple[int, int], special: str | None) -> Times:
        """The phases on a day whose KRX session is ``krx_session`` (seconds), for the named special day.

        KRX's times follow the day's KRX session: up to the ordinary open they move with its open, later ones
        with its close (the first trading day opens an hour late and closes as usual). Then the special day's
        adjustment: drop phases, shift the rest, replace single phases' times."""
        phases = self.phases
        if self.venue == "KRX" and krx_session != (_OPEN, _CLOSE):
            do, dc = krx_session[0] - _OPEN, krx_session[1] - _CLOSE

            def move(t: int) -> int:
                return t + (do if t <= _OPEN else dc)

            phases = tuple(sorted(((n, k, move(s), move(e)) for n, k, s, e in phases), key=lambda p: (p[2], p[3])))
        a = self.adjust.get(special) if special else None
        if a is None:
            return phases
        out = []
        for n, k, s, e in phases:
            if n in a.drop:
                continue
            s, e = a.times.get(n, (s + a.shift, e + a.shift))
            out.append((n, k, s, e))
        return tuple(sorted(out, key=lambda p: (p[2], p[3])))


@dataclass(frozen=True)
class PhaseBook:
    """The validated contents of a phases file."""

    path: Path
    special_days: dict[str, tuple[int, int]]  # name -> the KRX session (open, close) that marks it
    schedules: dict[str, tuple[Schedule, ...]]  # venue -> its schedules in date order

    def schedule(self, venue: str, d: date) -> Schedule | None:
        found = None
        for s in self.schedules.get(venue, ()):
            if s.effective <= d:
                found = s
        if found is not None and found.until is not None and d > found.until:
            return None
        return found

    def special_day(self, krx_session: tuple[int, int]) -> str | None:
        for name, hours in self.special_days.items():
            if hours == krx_session:
                return name
        return None

    def venue_days(self, d: date, krx_session: tuple[time, time] | None) -> dict[str, VenueDay]:
        """Each trading venue's phases on ``d``; empty when the KRX calendar says closed (``krx_session`` None).

        A special session the file does not name (no KRX session hours match) moves KRX's phases with it and
        leaves NXT's as on an ordinary day."""
        if krx_session is None:
            return {}
        hours = (_secs(krx_session[0]), _secs(krx_session[1]))
        special = self.special_day(hours) if hours != (_OPEN, _CLOSE) else None
        out = {}
        for venue in VENUES:
            sched = self.schedule(venue, d)
            if sched is None:
                continue
            times = sched.on(hours, special)
            problems = _check_times(times)
            if problems:  # only an unnamed special session can get here: named ones are checked on load
                where = f"[[schedule]] ({venue} {sched.effective}) on {d} ({hms(hours[0])}-{hms(hours[1])})"
                raise PhaseDataError(self.path, [f"{where}: {problems[0]}"])
            adj = sched.adjust.get(special) if special else None
            out[venue] = _venue_day(sched, d, times, special, adj)
        return out

    def demo_venue_days(self, d: date) -> dict[str, VenueDay]:
        """The demo calendar's phases: ``d``'s ordinary two-venue day stretched over the whole day.

        The window from the first venue's first start to the last end maps linearly onto 00:00-24:00 (rounded
        to the second, the last end to 23:59:59, the demo session's close), so every phase and break keeps its
        share of the day: at any hour some phase runs, and each lasts about twice as long as the real one, long
        enough for a 10-minute Track A slot to land in it."""
        scheds = {v: s for v in VENUES if (s := self.schedule(v, d)) is not None}
        if not scheds:
            return {}
        lo = min(s.phases[0][2] for s in scheds.values())
        hi = max(s.phases[-1][3] for s in scheds.values())

        def stretch(t: int) -> int:
            return min(round((t - lo) * DAY / (hi - lo)), DAY - 1)

        return {
            v: _venue_day(s, d, tuple((n, k, stretch(a), stretch(b)) for n, k, a, b in s.phases), None, None)
            for v, s in scheds.items()
        }


def _venue_day(sched: Schedule, d: date, times: Times, special: str | None, adj: Adjustment | None) -> VenueDay:
    confirmed = sched.confirmed and (adj is None or adj.confirmed)
    midnight = datetime.combine(d, time(0), KST)
    phases = tuple(
        Phase(sched.venue, n, k, midnight + timedelta(seconds=s), midnight + timedelta(seconds=e), confirmed)
        for n, k, s, e in times
    )
    sources = tuple(x for x in (sched.source, adj.source if adj else "") if x)
    return VenueDay(sched.venue, phases, sched.effective, confirmed, special, sources)


def _check_times(times: Times) -> list[str]:
    """What is wrong with a venue's phases of a day: outside the day, empty, or overlapping."""
    problems = []
    for n, _, s, e in times:
        if not (0 <= s < DAY and 0 < e <= DAY):
            problems.append(f"phase {n} ({_clock(s)}-{_clock(e)}) leaves the day (00:00-24:00)")
        elif e <= s:
            problems.append(f"phase {n}: end {hms(e)} is not after start {hms(s)}")
    for (n1, _, _, e1), (n2, _, s2, _) in zip(times, times[1:]):
        if s2 < e1:
            problems.append(f"phases {n1} and {n2} overlap ({n2} starts {hms(s2)}, before {n1} ends {hms(e1)})")
    return problems


# --- loading and validation ---------------------------------------------------------------------------------------


def _time(v: Any, what: str, problems: list[str]) -> int | None:
    m = _TIME.match(v) if isinstance(v, str) else None
    if m is None:
        hint = " (write it quoted)" if isinstance(v, time) else ""
        problems.append(f'{what} must be a quoted time "HH:MM" or "HH:MM:SS" (00:00..23:59:59), got {v!r}{hint}')
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3] or 0)


def _pair(v: Any, what: str, problems: list[str]) -> tuple[int, int] | None:
    if not (isinstance(v, list) and len(v) == 2):
        problems.append(f'{what} must be ["start", "end"], got {v!r}')
        return None
    n = len(problems)
    s, e = _time(v[0], f"{what} start", problems), _time(v[1], f"{what} end", problems)
    if len(problems) > n or s is None or e is None:
        return None
    if e <= s:
        problems.append(f"{what}: end {hms(e)} is not after start {hms(s)}")
        return None
    return s, e


def _keys(e: dict, allowed: tuple[str, ...], required: tuple[str, ...], where: str, problems: list[str]) -> None:
    problems += [f"{where}: unknown key {k!r} (allowed: {', '.join(allowed)})" for k in e if k not in allowed]
    problems += [f"{where}: missing {k!r}" for k in required if k not in e]


def _flag(e: dict, where: str, problems: list[str]) -> tuple[bool, str]:
    confirmed, source = e.get("confirmed", True), e.get("source", "")
    if not isinstance(confirmed, bool):
        problems.append(f"{where}: confirmed must be true or false, got {confirmed!r}")
    if not isinstance(source, str):
        problems.append(f"{where}: source must be a string naming where the hours come from, got {source!r}")
    return confirmed is True, source if isinstance(source, str) else ""


def _special_days(raw: Any, problems: list[str]) -> dict[str, tuple[int, int]]:
    """The valid special days and the KRX session hours that mark them."""
    days: dict[str, tuple[int, int]] = {}
    if not isinstance(raw, dict):
        problems.append(f"special_days must be a table of [special_days.<name>] tables, got {type(raw).__name__}")
        return days
    for name, e in raw.items():
        where = f"[special_days.{name}]"
        if not isinstance(e, dict):
            problems.append(f"{where}: must be a table, got {type(e).__name__}")
            continue
        _keys(e, _SPECIAL_KEYS, ("krx_session",), where, problems)
        hours = _pair(e["krx_session"], f"{where} krx_session", problems) if "krx_session" in e else None
        if hours == (_OPEN, _CLOSE):
            problems.append(f"{where}: krx_session {hms(_OPEN)}-{hms(_CLOSE)} is the ordinary session")
        elif hours in days.values():
            other = next(k for k, v in days.items() if v == hours)
            problems.append(f"{where}: krx_session {hms(hours[0])}-{hms(hours[1])} already marks {other!r}")
        elif hours is not None:
            days[name] = hours
    return days


def _phases(raw: Any, venue: str | None, where: str, problems: list[str]) -> Times | None:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: phases must be a non-empty array of {{ name, kind, start, end }} tables")
        return None
    out, n0 = [], len(problems)
    for i, p in enumerate(raw, start=1):
        pw = f"{where} phase #{i}" + (
            f" ({p['name']})" if isinstance(p, dict) and isinstance(p.get("name"), str) else ""
        )
        if not isinstance(p, dict):
            problems.append(f"{pw}: must be a table {{ name, kind, start, end }}, got {type(p).__name__}")
            continue
        _keys(p, _PHASE_KEYS, _PHASE_KEYS, pw, problems)
        name, kind = p.get("name"), p.get("kind")
        if venue is not None and "name" in p and name not in PHASE_NAMES[venue]:
            problems.append(f"{pw}: unknown phase name {name!r} for {venue} (allowed: {', '.join(PHASE_NAMES[venue])})")
        if "kind" in p and kind not in KINDS:
            problems.append(f"{pw}: unknown kind {kind!r} (allowed: {', '.join(KINDS)})")
        s = _time(p["start"], f"{pw}: start", problems) if "start" in p else None
        e = _time(p["end"], f"{pw}: end", problems) if "end" in p else None
        if s is not None and e is not None and e <= s:
            problems.append(f"{pw}: end {hms(e)} is not after start {hms(s)}")
        out.append((name, kind, s, e))
    names = [n for n, *_ in out]
    for n in sorted({n for n in names if names.count(n) > 1 and isinstance(n, str)}):
        problems.append(f"{where}: phase {n!r} is listed {names.count(n)} times")
    if len(problems) > n0:
        return None
    times = tuple(out)
    for (n1, _, s1, _), (n2, _, s2, _) in zip(times, times[1:]):
        if s2 < s1:
            problems.append(
                f"{where}: phase {n2} ({hms(s2)}) is listed after {n1} ({hms(s1)}): list phases in time order"
            )
            return None
    problems += [f"{where}: {p}" for p in _check_times(times)]
    return None if len(problems) > n0 else times


def _adjustments(
    raw: Any, sched_where: str, venue: str | None, times: Times | None, declared: list[str], problems: list[str]
) -> dict[str, Adjustment]:
    out: dict[str, Adjustment] = {}
    if not isinstance(raw, dict):
        problems.append(f"{sched_where}: adjust must be a table of [schedule.adjust.<special day>] tables")
        return out
    names = [n for n, *_ in times] if times else []
    for day, a in raw.items():
        where = f"{sched_where} adjust.{day}"
        if not isinstance(a, dict):
            problems.append(f"{where}: must be a table, got {type(a).__name__}")
            continue
        n0 = len(problems)
        if day not in declared:
            problems.append(
                f"{where}: no special day {day!r} in [special_days] (known: {', '.join(declared) or 'none'})"
            )
        _keys(a, _ADJUST_KEYS, (), where, problems)
        drop = a.get("drop", [])
        if not (isinstance(drop, list) and all(isinstance(x, str) for x in drop)):
            problems.append(f"{where}: drop must be an array of phase names, got {drop!r}")
            drop = []
        shift = 0
        if "shift" in a:
            m = _SHIFT.match(a["shift"]) if isinstance(a["shift"], str) else None
            if m is None:
                problems.append(f'{where}: shift must be a quoted "+HH:MM" or "-HH:MM", got {a["shift"]!r}')
            elif venue == "KRX":
                problems.append(
                    f"{where}: KRX takes no shift: its phases follow the KRX calendar's session of the day; "
                    "correct single phases with times"
                )
            else:
                shift = (1 if m[1] == "+" else -1) * (int(m[2]) * 3600 + int(m[3]) * 60)
        rtimes = a.get("times", {})
        new: dict[str, tuple[int, int]] = {}
        if not isinstance(rtimes, dict):
            problems.append(f'{where}: times must be a table {{ phase = ["start", "end"] }}, got {rtimes!r}')
            rtimes = {}
        for n, v in rtimes.items():
            pair = _pair(v, f"{where} times.{n}", problems)
            if pair is not None:
                new[n] = pair
        if times is not None:
            for n in [*drop, *rtimes]:
                if n not in names:
                    problems.append(f"{where}: no phase {n!r} in this schedule (it has {', '.join(names)})")
            problems += [f"{where}: {n} is both dropped and given times" for n in drop if n in rtimes]
        confirmed, source = _flag(a, where, problems)
        if len(problems) == n0:
            out[day] = Adjustment(tuple(drop), shift, new, confirmed, source)
    return out


def _schedules(
    raw: Any, specials: dict[str, tuple[int, int]], declared: list[str], problems: list[str]
) -> dict[str, tuple[Schedule, ...]]:
    if not isinstance(raw, list):
        problems.append(f"schedule must be an array of [[schedule]] tables, got {type(raw).__name__}")
        return {}
    by_venue: dict[str, list[Schedule]] = {v: [] for v in VENUES}
    last: dict[str, tuple[date, str]] = {}
    for i, e in enumerate(raw, start=1):
        if not isinstance(e, dict):
            problems.append(f"[[schedule]] #{i}: must be a table, got {type(e).__name__}")
            continue
        venue, eff = e.get("venue"), e.get("effective")
        where = f"[[schedule]] #{i}" + (f" ({venue} {eff})" if isinstance(venue, str) and isinstance(eff, date) else "")
        n0 = len(problems)
        _keys(e, _SCHEDULE_KEYS, ("venue", "effective", "phases"), where, problems)
        if "venue" in e and venue not in VENUES:
            problems.append(f"{where}: unknown venue {venue!r} (allowed: {', '.join(VENUES)})")
            venue = None
        for k in ("effective", "until"):
            v = e.get(k)
            if k in e and (isinstance(v, datetime) or not isinstance(v, date)):
                hint = f" (write it unquoted: {k} = {v})" if isinstance(v, str) else ""
                problems.append(f"{where}: {k} must be a TOML date, got {type(v).__name__} {v!r}{hint}")
        until = e.get("until")
        if isinstance(eff, date) and isinstance(until, date) and until < eff:
            problems.append(f"{where}: until {until} is before effective {eff}")
        if venue in VENUES and isinstance(eff, date) and not isinstance(eff, datetime):
            if venue in last and eff <= last[venue][0]:
                what = "the same as" if eff == last[venue][0] else "before"
                problems.append(
                    f"{where}: effective {eff} is {what} that of {last[venue][1]}: "
                    "list each venue's schedules once, in date order"
                )
            elif venue in last and by_venue[venue] and (u := by_venue[venue][-1].until) and u >= eff:
                problems.append(f"{where}: starts {eff}, but the previous {venue} schedule runs until {u}")
            last[venue] = (eff, where)
        times = _phases(e["phases"], venue if venue in VENUES else None, where, problems) if "phases" in e else None
        if venue == "KRX" and times is not None:
            if _OPEN not in {s for _, _, s, _ in times} or _CLOSE not in {x for *_, x in times}:
                problems.append(
                    f"{where}: KRX's phases must span the KRX calendar's ordinary session: one starting at "
                    f"{hms(_OPEN)} and one ending at {hms(_CLOSE)}"
                )
        adjust = _adjustments(e.get("adjust", {}), where, venue, times, declared, problems)
        confirmed, source = _flag(e, where, problems)
        if len(problems) > n0 or times is None or venue not in VENUES:
            continue
        sched = Schedule(venue, eff, until, confirmed, source, times, adjust)
        for name, hours in specials.items():  # every named special day, computed once here rather than on the day
            problems += [f"{where} on {name}: {p}" for p in _check_times(sched.on(hours, name))]
        by_venue[venue].append(sched)
    return {v: tuple(s) for v, s in by_venue.items() if s}


def validate(data: dict[str, Any], path: Path = PHASES_FILE) -> tuple[PhaseBook | None, list[str]]:
    """A parsed phases file as a :class:`PhaseBook`, or every problem, one line each. Pure."""
    problems = [
        f"unknown top-level key {k!r} (only [special_days.<name>] and [[schedule]])"
        for k in data
        if k not in ("special_days", "schedule")
    ]
    raw_specials = data.get("special_days", {})
    specials = _special_days(raw_specials, problems)
    declared = list(raw_specials) if isinstance(raw_specials, dict) else []  # named, if not valid: no cascade
    if "schedule" not in data:
        problems.append("no [[schedule]] entries")
    schedules = _schedules(data.get("schedule", []), specials, declared, problems)
    if problems:
        return None, problems
    return PhaseBook(path, specials, schedules), []


def load_phases(path: Path = PHASES_FILE) -> PhaseBook:
    """The validated phases file; raises :class:`PhaseDataError` listing every problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PhaseDataError(path, [f"cannot read it: {e.strerror or e}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PhaseDataError(path, [f"not valid TOML: {e}"]) from None
    book, problems = validate(data, path)
    if book is None:
        raise PhaseDataError(path, problems)
    return book


@cache
def book(path: Path = PHASES_FILE) -> PhaseBook:
    """The phases file, read once per process (on first use: a process that never asks never reads it)."""
    return load_phases(path)
