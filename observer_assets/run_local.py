"""`make run`: the pipeline on embedded defaults.

Starts the local KIS exchange (unless real keys are set), then `dagster dev` (webserver + daemon) on
127.0.0.1:3000 with the SQLite instance in $DAGSTER_HOME and the lake in $OBSERVER_DATA_DIR. With no keys the
exchange runs an always-open market (`--clock open`) and Observer the matching demo calendar, so a newcomer
sees the universe and Track A materialized at any hour, through the same schedules, sensors and assets that run
live. Ctrl-C stops both.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from observer_resources.kis.config import LOCAL_REST_URL, LOCAL_WS_URL

ROOT = Path(__file__).resolve().parent.parent


def _default_sigint() -> None:
    # A shell that starts us in the background leaves SIGINT ignored, and ignored signals survive exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> int:
    env = dict(os.environ)
    home = Path(env.setdefault("DAGSTER_HOME", str(ROOT / ".dagster_home"))).resolve()
    env["DAGSTER_HOME"] = str(home)
    env.setdefault("OBSERVER_DATA_DIR", str(ROOT / "data"))
    home.mkdir(parents=True, exist_ok=True)
    Path(env["OBSERVER_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")

    sim = None
    if not env.get("KIS_APP_KEY"):
        env.setdefault("OBSERVER_CALENDAR", "open")
        env.setdefault("KIS_REST_URL", LOCAL_REST_URL)
        env.setdefault("KIS_WS_URL", LOCAL_WS_URL)
        rest_port = env["KIS_REST_URL"].rsplit(":", 1)[1]
        ws_port = env["KIS_WS_URL"].rsplit(":", 1)[1]
        clock = "open" if env["OBSERVER_CALENDAR"] == "open" else "krx"
        sim = subprocess.Popen(
            [sys.executable, "-m", "observer_resources.sim", "--clock", clock, "--rest-port", rest_port,
             "--ws-port", ws_port],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        assert sim.stdout is not None
        line = sim.stdout.readline()
        if "ready" not in line:
            sim.kill()
            print("observer: the local exchange did not start (is port %s in use?)" % rest_port, file=sys.stderr)
            return 1
        print(line.strip(), flush=True)
    dagster = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", env.get("DAGSTER_PORT", "3000"),
         "-w", str(ROOT / "workspace.yaml")],
        env=env, cwd=ROOT, start_new_session=True, preexec_fn=_default_sigint,
    )
    print("observer: Dagster UI on http://127.0.0.1:%s (Ctrl-C stops everything)" % env.get("DAGSTER_PORT", "3000"), flush=True)

    def stop(*_: object) -> None:
        # `dagster dev` shuts its webserver, daemon and code servers down on SIGINT (on SIGTERM it leaves them).
        if dagster.poll() is None:
            dagster.send_signal(signal.SIGINT)
        if sim is not None and sim.poll() is None:
            sim.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = dagster.wait()
    finally:
        stop()
        for p in (dagster, sim):
            if p is None:
                continue
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        try:  # anything of dagster's process group still alive
            os.killpg(dagster.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code

if __name__ == "__main__":
    raise SystemExit(main())
