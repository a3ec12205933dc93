"""The `observer` command: operator utilities that need no Dagster instance."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from observer_resources.calendar import CalendarRangeError
from observer_resources.calendar.market import MarketCalendar, calendar_from_env


def _calendar(args: argparse.Namespace) -> int:
    try:
        d = date.fromisoformat(args.day)
    except ValueError:
        print(f"observer calendar: {args.day!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    cal = MarketCalendar(args.calendar) if args.calendar else calendar_from_env()
    try:
        s = cal.session(d)
        slots = cal.track_a_slots(d)
    except CalendarRangeError as e:
        print(f"observer calendar: {e}", file=sys.stderr)
        return 2
    out = {
        "date": d.isoformat(),
        "calendar": cal.mode,
        "trading_day": s is not None,
        "open": s.open.isoformat() if s else None,
        "close": s.close.isoformat() if s else None,
        "note": s.note if s else None,
        "track_a_slots": [t.strftime("%H:%M") for t in slots],
    }
    print(json.dumps(out, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="observer", description="Observer operator commands")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calendar", help="the KRX session and Track A slots of a day, as JSON")
    c.add_argument("day", help="YYYY-MM-DD")
    c.add_argument("--calendar", choices=("krx", "open"), help="default: $OBSERVER_CALENDAR or krx")
    c.set_defaults(func=_calendar)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
