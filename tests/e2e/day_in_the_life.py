"""One trading day of the local exchange, on both venues, driven only by Observer's own schedules and sensors.

Run by ``test_day_in_the_life.py`` as its own process (a deployment: its environment names the instance, the lake,
the exchange and the shared clock before the definitions load, and leaves every collection setting at its default:
the two-venue day, 08:00-20:00). The script only moves time and injects the faults an operator fears; every run is
one a schedule or a sensor asked for (see ``sim_daemon``):

- 05:00 the universe and its members' NXT status; from 08:00 a Track A slot every 10 minutes through every phase;
  the Track B capture on the unified tape and both venues' market status from 08:00 to 20:00, compacted hour by
  hour; the gap report every 30 minutes;
- 08:20 (NXT's pre-market), 10:20 and 17:00 (the after-market) every REST call fails: the slot is lost live;
- 11:05-11:25 the daemon is down (no tick at all): back at 11:25, the scheduler launches only its newest missed
  tick (11:20, late); 11:10 is never collected live;
- 13:00 and 18:30 the exchange drops the WebSocket (refusing new sessions for a few seconds at 13:00);
- 14:00 the exchange withholds ten trades of one streamed symbol; 14:30 it sends frames twice and malformed ones;
- after 20:00 the final gap report, the day's system events, the backup and retention; then the next day, a
  holiday, from 07:30 to 20:30, when nothing may run and nothing may call the data stale.

At the end it writes ``summary.json``: every run launched, by whom, and whether it succeeded, and the faults with
the sim instants they were injected at. The test asserts on the instance, the lake and the exchange's ground
truth, as an operator would read them in the UI.
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
    from observer_assets.track_b.capture import read_status

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

    faults: list[dict] = []

    def fail_slot(h: int, m: int) -> None:
        """Every REST call of the h:m slot fails (the exchange answers 503); the slot's snapshot is lost live."""
        daemon.set_time(at(h, m) - MIN)
        fault("rest_5xx", n=100_000, status=503)
        daemon.advance(at(h, m), MIN)
        http.delete("/faults").raise_for_status()
        faults.append({"kind": "missed_slot", "at": at(h, m).isoformat()})

    data_dir = Path(os.environ["OBSERVER_DATA_DIR"])

    def capture_registered(timeout_s: float = 60.0) -> None:
        """Hold the clock until the capture's session holds its registrations, as the real clock would in the few
        seconds the capture takes to start (a stepped clock would otherwise run minutes past its first phase)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            keys = ((read_status(data_dir) or {}).get("keys") or {}).values()
            if keys and all(k["connected"] and k["registrations"] for k in keys):
                return
            time.sleep(0.1)
        raise SystemExit("the capture did not register within a minute of its window's start")

    def streamed_code() -> str:
        """The busiest symbol the capture holds now (not the status anchor), from its status file: a busy one shows
        the withheld trades by its next trade's cumulative volume before the slot rules can let it go."""
        status = read_status(data_dir) or {"keys": {}}
        held = {c for k in status["keys"].values() for c in k["registered"]} - {"005930"}
        busiest = http.get("/listings", params={"order": "activity", "limit": "1000"}).json()["listings"]
        return next(r["code"] for r in busiest if r["code"] in held)

    daemon.set_time(at(4, 50))
    daemon.tick()  # the daemon starts: sensors take their first look
    daemon.advance(at(5, 10), 10 * MIN)  # 05:00 universe_before_open, with the members' NXT status
    daemon.advance(at(7, 50), 60 * MIN)
    marks["pre_open"] = time.monotonic() - t0
    daemon.advance(at(8, 0), 5 * MIN)  # the window opens: the capture sensor launches the capture
    capture_registered()
    daemon.advance(at(8, 15), 5 * MIN, settle_s=0.2)
    fail_slot(8, 20)  # NXT's pre-market: only NXT's stocks are quoted, on the unified market
    daemon.advance(at(10, 15), 5 * MIN, settle_s=0.2)
    fail_slot(10, 20)
    daemon.advance(at(11, 5), 5 * MIN, settle_s=0.2)
    daemon.advance(at(11, 25), 5 * MIN, daemon_up=False, settle_s=0.2)  # the daemon is down: 11:10, 11:20 missed
    daemon.tick()  # it is back at 11:25
    faults.append({"kind": "daemon_down", "start": at(11, 5).isoformat(), "end": at(11, 25).isoformat()})
    daemon.advance(at(13, 0), 5 * MIN, settle_s=0.2)
    fault("ws_key_in_use", seconds=3)
    fault("ws_drop")
    faults.append({"kind": "ws_drop", "at": at(13, 0).isoformat()})
    daemon.advance(at(13, 5), MIN / 3, settle_s=0.5)  # refused for 3 s, then its back-off: minutes lost
    daemon.advance(at(14, 0), 5 * MIN, settle_s=0.2)
    code = streamed_code()
    fault("ws_skip", code=code, n=10, tr_id="H0UNCNT0")  # ten trades withheld: the tape's volume says so
    faults.append({"kind": "ws_skip", "at": at(14, 0).isoformat(), "code": code, "n": 10})
    daemon.advance(at(14, 30), MIN, settle_s=0.2)
    fault("ws_duplicate", n=20)
    fault("ws_malformed", n=3, variant="field_count")
    faults.append({"kind": "ws_duplicate_malformed", "at": at(14, 30).isoformat()})
    daemon.advance(at(14, 40), 5 * MIN, settle_s=0.2)
    # quieter hours in 10-minute steps, each on a slot instant so every slot is launched on time: a third less wall
    # time than 5-minute steps, which the suite's 15-minute budget needs
    daemon.advance(at(16, 50), 10 * MIN, settle_s=0.2)
    daemon.advance(at(16, 55), 5 * MIN, settle_s=0.2)
    marks["session"] = time.monotonic() - t0
    fail_slot(17, 0)  # the after-market: NXT's stocks on the unified market
    daemon.advance(at(18, 30), 5 * MIN, settle_s=0.2)
    fault("ws_drop")
    faults.append({"kind": "ws_drop", "at": at(18, 30).isoformat()})
    daemon.advance(at(18, 35), MIN / 3, settle_s=0.5)  # its back-off: a minute or two lost
    daemon.advance(at(18, 40), 5 * MIN, settle_s=0.2)
    daemon.advance(at(20, 0), 10 * MIN, settle_s=0.2)
    daemon.advance(at(20, 5), 5 * MIN, settle_s=0.2)
    daemon.join(60)  # the capture run ends with its window
    marks["evening"] = time.monotonic() - t0
    daemon.advance(at(21, 45), 5 * MIN)  # final report 20:40, system events 20:50, backup 21:00, retention 21:30
    # a restore the last hour's compaction asked for, and its report: the run-status sensor has been seen to take
    # up to 15 ticks to pick up a restore's success on this stepped clock (not understood yet)
    daemon.advance(at(23, 30), 5 * MIN)
    holiday = d + timedelta(days=1)
    daemon.set_time(datetime.combine(holiday, dtime(7, 30), KST))
    daemon.advance(datetime.combine(holiday, dtime(20, 30), KST), 90 * MIN)  # nine looks at a closed market
    marks["holiday"] = time.monotonic() - t0

    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "day": d.isoformat(),
                "runs": [asdict(r) for r in daemon.launched],
                "faults": faults,
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
