"""A stand-in for the capture process in the supervisor and sensor tests (run as a script, never imported).

Honours the contract's flags and exit codes, logs JSON lines on stderr (plus one plain stdout line), writes
``system/capture/status.json`` in the contract's shape every 0.2 s, and records each start (and a SIGTERM) in
$FAKE_DIR. FAKE_MODE: ``run`` (until --until), ``crash`` (exit 3 after 0.2 s), ``stubborn`` (ignores SIGTERM).
"""

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("--until")
ap.add_argument("--pins")
ap.add_argument("--status-interval")
a = ap.parse_args()
d = os.environ["FAKE_DIR"]
mode = os.environ.get("FAKE_MODE", "run")


def log(level: str, event: str, **kw: object) -> None:
    print(
        json.dumps({"at": datetime.now().astimezone().isoformat(), "level": level, "event": event, **kw}),
        file=sys.stderr,
        flush=True,
    )


def status() -> None:
    path = Path(os.environ["OBSERVER_DATA_DIR"]) / "system" / "capture" / "status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now().astimezone().isoformat()
    body = {
        "pid": os.getpid(),
        "run_id": "fake",
        "state": "recording",
        "started_at": now,
        "updated_at": now,
        "keys": {
            "key-fake": {
                "connected": True,
                "registered": ["005930", "000660"],
                "desired": ["005930", "000660"],
                "ticks": 7,
                "reconnects": 0,
                "disconnected_seconds": 0.0,
                "mitigation_level": 0,
            }
        },
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def term(*_: object) -> None:
    open(os.path.join(d, f"term-{os.getpid()}"), "w").close()
    log("info", "capture_stopped", why="SIGTERM")
    sys.exit(0)


signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else term)  # before announcing the start
n = len([f for f in os.listdir(d) if f.startswith("start-")])
with open(os.path.join(d, f".tmp-{os.getpid()}"), "w") as f:
    json.dump({"t": time.time(), "argv": sys.argv[1:]}, f)
os.replace(os.path.join(d, f".tmp-{os.getpid()}"), os.path.join(d, f"start-{n}-{os.getpid()}"))  # whole or absent
log("info", "capture_started", pid=os.getpid(), start=n)
print("a plain line on stdout", flush=True)
if mode == "crash":
    time.sleep(0.2)
    print("Traceback (most recent call last): boom", file=sys.stderr, flush=True)
    sys.exit(3)
until = datetime.fromisoformat(a.until)
while datetime.now(until.tzinfo) < until:
    status()
    time.sleep(0.2)
log("info", "capture_window_over")
sys.exit(0)
