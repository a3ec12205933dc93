"""Regenerate sessions.json from exchange_calendars' XKRX plus overrides.toml, and check phases.toml.

Run through ``make calendar``. Kept out of the import path: XKRX takes ~3 s to build.

The override file is validated whole before anything is built or written, because a bad entry written into
sessions.json makes every process fail at import: each problem is one line on stderr naming the entry, the exit
code is 2, and the output file is left untouched. The venues' phases file (phases.toml, read as it is, nothing
generated from it) is checked the same way here, so an edit to it is checked where the calendar is rebuilt.
``--overrides`` / ``--phases`` / ``--out`` point at other files (tests run the build on copies).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from observer_resources.calendar.phases import PHASES_FILE, PhaseDataError, load_phases

HERE = Path(__file__).parent
OVERRIDES = HERE / "overrides.toml"
SESSIONS = HERE / "sessions.json"
FIRST = date(2018, 1, 1)
LAST = date(2030, 12, 31)
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
#: the keys each kind of entry must have, and may have: nothing else
FIELDS = {"closed": ("date", "reason"), "session": ("date", "open", "close", "reason")}


class OverridesError(ValueError):
    """An override file that must not be built into sessions.json; ``problems`` holds one line each."""

    def __init__(self, path: Path, problems: list[str]):
        self.path, self.problems = path, problems
        super().__init__("\n".join(problems))


def _entry(kind: str, i: int, e: Any) -> str:
    d = e.get("date") if isinstance(e, dict) else None
    return f"[[{kind}]] #{i}" + (f" ({d})" if isinstance(d, (date, str)) else "")


def validate(data: dict[str, Any], first: date = FIRST, last: date = LAST) -> list[str]:
    """Every problem of a parsed override file, one line each (empty: usable). Pure."""
    problems: list[str] = []
    for k in data:
        if k not in FIELDS:
            problems.append(f"unknown top-level key {k!r} (only [[closed]] and [[session]] entries)")
    seen: dict[date, str] = {}
    for kind, fields in FIELDS.items():
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            problems.append(f"{kind!r} must be an array of tables ([[{kind}]]), got {type(entries).__name__}")
            continue
        for i, e in enumerate(entries, start=1):
            where = _entry(kind, i, e)
            if not isinstance(e, dict):
                problems.append(f"{where}: must be a table, got {type(e).__name__}")
                continue
            for k in e:
                if k not in fields:
                    problems.append(f"{where}: unknown key {k!r} (allowed: {', '.join(fields)})")
            for k in fields:
                if k not in e:
                    problems.append(f"{where}: missing {k!r}")
            d = e.get("date")
            if isinstance(d, datetime) or ("date" in e and not isinstance(d, date)):
                hint = " (write it unquoted: date = 2026-06-03)" if isinstance(d, str) else ""
                problems.append(f"{where}: date must be a TOML date, got {type(d).__name__} {d!r}{hint}")
                d = None
            elif isinstance(d, date) and not first <= d <= last:
                problems.append(f"{where}: date {d} is outside the calendar's range {first}..{last}")
                d = None
            reason = e.get("reason")
            if "reason" in e and (not isinstance(reason, str) or not reason.strip()):
                problems.append(f"{where}: reason must be a non-empty string saying why and where it comes from")
            if kind == "session":
                times = {}
                for k in ("open", "close"):
                    v = e.get(k)
                    if k in e and not (isinstance(v, str) and _HHMM.match(v)):
                        problems.append(
                            f'{where}: {k} must be a quoted time "HH:MM" within the day (00:00..23:59), got {v!r}'
                        )
                    elif k in e:
                        times[k] = v
                if len(times) == 2 and times["open"] >= times["close"]:
                    problems.append(f"{where}: open {times['open']} is not before close {times['close']}")
            if isinstance(d, date):
                if d in seen:
                    what = "twice" if seen[d] == kind else "both closed and specially opened"
                    problems.append(f"{where}: {d} is listed {what} (also in [[{seen[d]}]])")
                else:
                    seen[d] = kind
    return problems


def load_overrides(path: Path = OVERRIDES) -> dict[str, Any]:
    """The parsed, validated override file; raises :class:`OverridesError` with every problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise OverridesError(path, [f"cannot read it: {e.strerror or e}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise OverridesError(path, [f"not valid TOML: {e}"]) from None
    problems = validate(data)
    if problems:
        raise OverridesError(path, problems)
    return data


def build(first: date = FIRST, last: date = LAST, overrides: Path = OVERRIDES) -> dict:
    data = load_overrides(overrides)  # before XKRX: a bad file fails in milliseconds
    import exchange_calendars as xc

    cal = xc.get_calendar("XKRX", start=first.isoformat(), end=last.isoformat())
    sched = cal.schedule
    opens = sched["open"].dt.tz_convert("Asia/Seoul")
    closes = sched["close"].dt.tz_convert("Asia/Seoul")
    days: dict[str, dict] = {}
    for ts, o, c in zip(sched.index, opens, closes):
        days[ts.date().isoformat()] = {"open": o.strftime("%H:%M"), "close": c.strftime("%H:%M"), "note": ""}
    for d, v in days.items():
        if (v["open"], v["close"]) != ("09:00", "15:30"):
            v["note"] = (
                "first trading day of the year"
                if v["open"] == "10:00" and d[5:7] == "01"
                else "exchange_calendars special session"
            )
    for c in data.get("closed", []):
        days.pop(c["date"].isoformat(), None)
    for s in data.get("session", []):
        days[s["date"].isoformat()] = {"open": s["open"], "close": s["close"], "note": s["reason"]}
    ordered = sorted(days)
    return {
        "generated_by": "observer_resources/calendar/build.py",
        "source": f"exchange_calendars {xc.__version__} XKRX + overrides.toml",
        "first": first.isoformat(),
        "last": last.isoformat(),
        "trading_days": ordered,
        "special_sessions": {d: days[d] for d in ordered if (days[d]["open"], days[d]["close"]) != ("09:00", "15:30")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the output file is stale")
    ap.add_argument("--overrides", type=Path, default=OVERRIDES, help="override file (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=SESSIONS, help="sessions file to write (default: %(default)s)")
    ap.add_argument("--phases", type=Path, default=PHASES_FILE, help="venues' phases file (default: %(default)s)")
    args = ap.parse_args(argv)
    refused: list[OverridesError | PhaseDataError] = []
    for check in (lambda: load_overrides(args.overrides), lambda: load_phases(args.phases)):
        try:  # both files, before XKRX: every problem of both in milliseconds
            check()
        except (OverridesError, PhaseDataError) as e:
            refused.append(e)
    for e in refused:
        for p in e.problems:
            print(f"{e.path}: {p}", file=sys.stderr)
        print(f"{e.path}: {len(e.problems)} problem(s); {args.out} left unchanged", file=sys.stderr)
    if refused:
        return 2
    data = build(overrides=args.overrides)
    text = json.dumps(data, indent=0, ensure_ascii=False) + "\n"
    target = args.out
    if args.check:
        try:
            current = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 1
        current.pop("source", None)
        fresh = dict(data)
        fresh.pop("source", None)
        return 0 if current == fresh else 1
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target}: {len(data['trading_days'])} trading days, {len(data['special_sessions'])} special")
    print(f"checked {args.phases}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
