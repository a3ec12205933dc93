"""Regenerate sessions.json from exchange_calendars' XKRX plus overrides.toml.

Run through ``make calendar``. Kept out of the import path: XKRX takes ~3 s to build.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
FIRST = date(2018, 1, 1)
LAST = date(2030, 12, 31)


def build(first: date = FIRST, last: date = LAST) -> dict:
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
            v["note"] = "first trading day of the year" if v["open"] == "10:00" and d[5:7] == "01" else "exchange_calendars special session"
    overrides = tomllib.loads((HERE / "overrides.toml").read_text(encoding="utf-8"))
    for c in overrides.get("closed", []):
        days.pop(c["date"].isoformat(), None)
    for s in overrides.get("session", []):
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if sessions.json is stale")
    args = ap.parse_args()
    data = build()
    text = json.dumps(data, indent=0, ensure_ascii=False) + "\n"
    target = HERE / "sessions.json"
    if args.check:
        current = json.loads(target.read_text(encoding="utf-8"))
        current.pop("source", None)
        fresh = dict(data)
        fresh.pop("source", None)
        raise SystemExit(0 if current == fresh else 1)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target}: {len(data['trading_days'])} trading days, {len(data['special_sessions'])} special")


if __name__ == "__main__":
    main()
