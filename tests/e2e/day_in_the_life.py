"""One trading day of the local exchange, driven only by Observer's own schedules and sensors.

Run by ``test_day_in_the_life.py`` as its own process (a deployment: its environment names the instance, the lake,
the exchange and the shared clock before the definitions load). The script only moves time and injects the two
faults an operator fears; every run is one a schedule or a sensor asked for (see ``sim_daemon``):

- 05:00 the universe; from 09:00 a Track A slot every 10 minutes; the Track B capture for its window, compacted
  hour by hour; the gap report every 30 minutes;
- 10:20 every REST call fails (the exchange answers 503): the slot's snapshot is lost live;
- 11:05-11:25 the daemon is down (no tick at all): back at 11:25, the scheduler launches only its newest missed
  tick (11:20, late); 11:10 is never collected live;
- 13:00 the exchange drops the WebSocket and refuses new sessions for a few seconds: Track B loses trades;
- after the close the final gap report, the day's system events, the backup and retention.

At the end it writes ``summary.json``: every run launched, by whom, and whether it succeeded. The test asserts on
the instance and the lake, as an operator would read them in the UI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import dagster as dg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_daemon import SimDaemon  # noqa: E402 - run as a script beside its helper

from observer_resources.clock import KST  # noqa: E402

MIN = timedelta(minutes=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--day", required=True, type=date.fromisoformat)
    ap.add_argument("--admin", required=True, help="the local exchange's REST base URL (its /__sim__ routes)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    d: date = args.day
    at = lambda h, m: datetime.combine(d, dtime(h, m), KST)  # noqa: E731

    http = httpx.Client(base_url=args.admin.rstrip("/") + "/__sim__", timeout=10)

    def exchange_clock(t: datetime) -> None:
        http.post("/clock", json={"at": t.isoformat(), "speed": 0}).raise_for_status()

    def fault(kind: str, **params: object) -> None:
        http.post("/faults", json={"kind": kind, **params}).raise_for_status()

    from observer_assets.definitions import defs  # after the environment is in place: resources read it

    instance = dg.DagsterInstance.get()
    daemon = SimDaemon(
        instance,
        defs.get_repository_def(),
        Path(os.environ["OBSERVER_CLOCK_FILE"]),
        exchange_clock,
        args.out / "ticks.jsonl",
    )
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    daemon.set_time(at(4, 50))
    daemon.tick()  # the daemon starts: sensors take their first look
    daemon.advance(at(5, 10), 10 * MIN)  # 05:00 universe_before_open
    daemon.advance(at(8, 50), 60 * MIN)
    marks["pre_open"] = time.monotonic() - t0
    daemon.advance(at(10, 15), 5 * MIN, settle_s=0.2)
    daemon.set_time(at(10, 19))
    fault("rest_5xx", n=100_000, status=503)  # the exchange fails every REST call of the 10:20 slot
    daemon.advance(at(10, 20), MIN)
    http.delete("/faults").raise_for_status()
    daemon.advance(at(11, 5), 5 * MIN, settle_s=0.2)
    daemon.advance(at(11, 25), 5 * MIN, daemon_up=False, settle_s=0.2)  # the daemon is down: 11:10, 11:20 missed
    daemon.tick()  # it is back at 11:25
    daemon.advance(at(13, 0), 5 * MIN, settle_s=0.2)
    fault("ws_key_in_use", seconds=3)
    fault("ws_drop")
    daemon.advance(at(13, 5), MIN / 3, settle_s=0.5)  # refused for 3 s, then its back-off: minutes lost
    daemon.advance(at(15, 50), 5 * MIN, settle_s=0.2)
    marks["session"] = time.monotonic() - t0
    daemon.join(60)  # the capture run ends with its window
    daemon.advance(at(20, 30), 30 * MIN)
    daemon.advance(at(21, 45), 5 * MIN)  # final report 20:40, system events 20:50, backup 21:00, retention 21:30
    marks["evening"] = time.monotonic() - t0

    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "day": d.isoformat(),
                "runs": [asdict(r) for r in daemon.launched],
                "wall_s": marks,
                "sensor_s": {k: round(v, 2) for k, v in sorted(daemon.sensor_s.items(), key=lambda kv: -kv[1])},
                "threads_alive": [t.name for t in daemon.threads if t.is_alive()],
            },
            indent=1,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
