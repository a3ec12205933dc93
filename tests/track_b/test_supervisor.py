"""The capture supervisor: real child processes (a stand-in script, then the real capture against the local
exchange), real signals, a real Dagster instance. Nothing here replaces the supervisor's own logic."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from support import start_dagster_dev

from observer_assets.orchestration.runs import MAX_RUNTIME_TAG
from observer_assets.track_b.capture_job import CAPTURE_TAGS, run_tags, track_b_capture_job
from observer_assets.track_b.supervisor import CaptureSupervisor, RestartPolicy, capture_window, format_line
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import gaps, read_events
from observer_resources.storage.layout import heartbeat_path

FAKE = Path(__file__).with_name("fake_capture.py")  # the stand-in capture (see its docstring)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = FAKE
    d = tmp_path / "fake"
    d.mkdir()
    monkeypatch.setenv("FAKE_DIR", str(d))
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    return script, d


def starts(d: Path) -> list[tuple[int, int, float]]:
    out = []
    for f in d.glob("start-*"):
        _, n, pid = f.name.split("-")
        out.append((int(n), int(pid), json.loads(f.read_text())["t"]))
    return sorted(out)


def wait_for(pred, timeout=10.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_job_restarts_a_killed_child_within_seconds_and_stops_at_the_window_end(fake, tmp_path):
    script, d = fake
    until = datetime.now(KST) + timedelta(seconds=6)
    killed = {}

    def killer():
        first = wait_for(lambda: starts(d), timeout=20)[0]
        time.sleep(0.5)
        killed["t"] = time.time()
        os.kill(first[1], signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    with dg.instance_for_test() as inst:
        t0 = time.monotonic()
        res = track_b_capture_job.execute_in_process(
            instance=inst,
            run_config={
                "ops": {
                    "track_b_capture": {
                        "config": {
                            "until": until.isoformat(),
                            "command": [sys.executable, str(script)],
                            "pins": ["005930"],
                        }
                    }
                }
            },
        )
        took = time.monotonic() - t0
        t.join()
        assert res.success
        # it ended at the window end (the child exits 0 at --until), not before, not long after
        assert datetime.now(KST) >= until and took < 6 + 8
        s = starts(d)
        assert len(s) == 2, s
        restart_delay = s[1][2] - killed["t"]
        assert 0.5 <= restart_delay < 3.0, restart_delay  # 1 s policy delay + process start
        argv = json.loads(next(d.glob("start-0-*")).read_text())["argv"]
        assert argv[argv.index("--until") + 1] == until.isoformat() and argv[argv.index("--pins") + 1] == "005930"

        logs = [e.user_message for e in inst.all_logs(res.run_id) if e.user_message]
        assert any("capture_started" in m and "start=0" in m for m in logs)  # the child's JSON lines, forwarded
        assert any("capture_started" in m and "start=1" in m for m in logs)
        assert any("a plain line on stdout" in m for m in logs)
        died = [m for m in logs if "died (signal SIGKILL)" in m]
        assert len(died) == 1 and "restart 1 in 1 s" in died[0]
        assert any("capture finished: the window is over" in m for m in logs)
        summary = next(m for m in logs if m.startswith("capture supervision over: "))
        result = json.loads(summary.split(": ", 1)[1])
        assert result["restarts"] == 1 and result["reason"] == "window_end"
        assert [e["returncode"] for e in result["exits"]] == [-9, 0]
    beat = json.loads(heartbeat_path(tmp_path / "data").read_text())
    assert beat["run_id"] == res.run_id and beat["state"] == "ended" and beat["restarts"] == 1
    ev = [
        e
        for e in read_events(tmp_path / "data", datetime.now(KST).date())
        if e["event_type"] == "capture_supervisor_restart"
    ]
    assert len(ev) == 1 and ev[0]["returncode"] == -9 and ev[0]["run_id"] == res.run_id


def test_a_crash_loop_backs_off_but_every_restart_is_within_30_s(fake, tmp_path, monkeypatch):
    script, d = fake
    monkeypatch.setenv("FAKE_MODE", "crash")
    logs: list[tuple[str, str]] = []
    sup = CaptureSupervisor(
        [sys.executable, str(script)],
        until=datetime.now(KST) + timedelta(seconds=3.5),
        on_log=lambda lvl, m: logs.append((lvl, m)),
        data_dir=tmp_path / "data",
        policy=RestartPolicy((0.2, 0.5, 1.0), stable_after_s=30),
    )
    res = sup.run()
    delays = [e.restart_in_s for e in res.exits]
    assert res.restarts >= 3 and all(e.returncode == 3 for e in res.exits)
    assert delays[:3] == [0.2, 0.5, 1.0] and all(x == 1.0 for x in delays[3:-1])
    assert max(RestartPolicy().delays_s) < 30
    # the crash's last output is in the error line, and a non-JSON line is forwarded as a warning
    err = [m for lvl, m in logs if lvl == "error" and "died (exit code 3)" in m]
    assert err and "Traceback (most recent call last): boom" in err[0]
    assert ("warning", f"[capture {res.exits[0].pid}] Traceback (most recent call last): boom") in logs
    assert res.reason == "window_over"


SUPERVISE = textwrap.dedent(r"""
    import sys
    from datetime import datetime, timedelta
    from pathlib import Path
    from observer_assets.track_b.supervisor import CaptureSupervisor
    from observer_resources.calendar import KST
    script, data = sys.argv[1], sys.argv[2]
    sup = CaptureSupervisor([sys.executable, script], until=datetime.now(KST) + timedelta(seconds=60),
                            on_log=lambda lvl, m: print(lvl, m, flush=True), data_dir=Path(data),
                            term_grace_s=float(sys.argv[3]))
    try:
        sup.run()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def _supervise(tmp_path, script, grace="5"):
    runner = tmp_path / "supervise.py"
    runner.write_text(SUPERVISE)
    return subprocess.Popen(
        [sys.executable, str(runner), str(script), str(tmp_path / "data"), grace],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.parametrize("mode", ["run", "stubborn"])
def test_a_terminated_run_stops_its_child_sigterm_then_sigkill(fake, tmp_path, monkeypatch, mode):
    """Dagster delivers a run termination as SIGINT to the run worker (KeyboardInterrupt in the main thread)."""
    script, d = fake
    monkeypatch.setenv("FAKE_MODE", mode)
    proc = _supervise(tmp_path, script, grace="1")
    _, pid, _ = wait_for(lambda: starts(d), timeout=20)[0]
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    took = time.monotonic() - t0
    assert proc.returncode == 130, out
    assert "interrupted" in out
    wait_for(lambda: not _alive(pid), timeout=3)
    if mode == "run":
        assert (d / f"term-{pid}").exists() and took < 2.0, out  # SIGTERM honoured at once
        assert "capture_stopped" in out
    else:
        assert not (d / f"term-{pid}").exists()
        assert "ignored SIGTERM for 1 s: SIGKILL" in out and 1.0 <= took < 3.0, out
    assert len(starts(d)) == 1  # never restarted while stopping


def test_a_killed_supervisor_takes_its_child_with_it(fake, tmp_path):
    """kill -9 of the run worker: the kernel SIGTERMs the capture (PR_SET_PDEATHSIG), so no orphan keeps the
    journal locks from the replacement run."""
    script, d = fake
    proc = _supervise(tmp_path, script)
    _, pid, _ = wait_for(lambda: starts(d), timeout=20)[0]
    proc.kill()
    proc.wait()
    wait_for(lambda: (d / f"term-{pid}").exists(), timeout=3)
    wait_for(lambda: not _alive(pid), timeout=3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of a process we did not start is reaped by init; treat a zombie as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_format_line_keeps_levels_and_fields():
    lvl, msg = format_line(
        '{"at":"2026-03-10T10:00:00+09:00","level":"warning","event":"ws_disconnect","key_id":"key-1","attempt":2}\n',
        42,
    )
    assert lvl == "warning" and msg == '[capture 42 @2026-03-10T10:00:00+09:00] ws_disconnect key_id="key-1" attempt=2'
    assert format_line('{"level":"critical","event":"ws_failure_critical"}', 1)[0] == "critical"
    assert format_line("not json", 7) == ("warning", "[capture 7] not json")


def test_run_tags_never_join_the_rest_queue_and_bound_the_runtime():
    now = datetime(2026, 11, 26, 10, 0, tzinfo=KST)
    w = capture_window(MarketCalendar("krx"), now.date(), "09:30-15:00")
    tags = run_tags(w.end, now)
    assert tags[MAX_RUNTIME_TAG] == str(5 * 3600 + 900)  # the rest of the window + the stop margin, numeric
    assert tags.get("observer/kis") != "rest" and tags["observer/kis"] == "ws"
    assert track_b_capture_job.run_tags[MAX_RUNTIME_TAG].isdigit()
    assert {k: track_b_capture_job.run_tags[k] for k in CAPTURE_TAGS} == CAPTURE_TAGS
    assert track_b_capture_job.executor_def.name == "in_process"


# --- the whole chain under the real daemon ----------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_under_dagster_dev_a_killed_run_worker_is_replaced_within_30_s(tmp_path, make_creds):
    """`dagster dev` (webserver, daemon, code server) with the Track B definitions, the real capture and the local
    exchange: the sensor starts the capture run; kill -9 of its run worker takes the capture with it; the code
    server marks the run failed; the sensor launches a new run whose capture is registered again. Prints the
    measured chain; then stopping `dagster dev` stops the run and its capture."""
    from local_exchange.server import run_sim_process
    from observer_resources.kis.config import configs_from_env

    root = Path(__file__).resolve().parents[2]
    sim = run_sim_process("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "300")
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    (home / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    creds = make_creds(7401)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home),
        "OBSERVER_DATA_DIR": str(data),
        "OBSERVER_CALENDAR": "open",
        "KIS_REST_URL": sim.rest_url,
        "KIS_WS_URL": sim.ws_url,
        "KIS_APP_KEY": creds[0],
        "KIS_APP_SECRET": creds[1],
        "OBSERVER_TRACK_B_PINS": ",".join(
            r["code"] for r in sim.admin("listings", params={"order": "activity", "limit": "3"})["listings"]
        ),
    }
    (key,) = [c.key_id for c in configs_from_env(env)]
    port = _free_port()
    dev = start_dagster_dev(Path(__file__).with_name("_capture_defs.py"), port, env, root, tmp_path / "dev.log")

    def status():
        try:
            s = json.loads((data / "system" / "capture" / "status.json").read_text())
            return s if len(s["keys"][key]["registered"]) == 3 and s["state"] != "stopped" else None
        except (OSError, ValueError, KeyError):
            return None

    def runs(inst):
        return inst.get_run_records(dg.RunsFilter(job_name="track_b_capture_job"))

    try:
        t_dev = time.monotonic()
        first = wait_for(status, timeout=150, step=0.2)
        print(f"first capture registered {time.monotonic() - t_dev:.1f} s after `dagster dev` started")
        beat = json.loads(heartbeat_path(data).read_text())
        worker, child = beat["pid"], first["pid"]
        assert beat["child_pid"] == child
        with dg.DagsterInstance.from_config(str(home)) as inst:
            (rec,) = runs(inst)
            assert rec.dagster_run.status == dg.DagsterRunStatus.STARTED
            assert (
                rec.dagster_run.tags["observer/kis"] == "ws" and rec.dagster_run.tags["dagster/max_runtime"].isdigit()
            )
            t0, kill_wall = time.monotonic(), time.time()
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda: not _alive(child), timeout=15)
            t_child = time.monotonic() - t0
            wait_for(
                lambda: inst.get_run_by_id(rec.dagster_run.run_id).status == dg.DagsterRunStatus.FAILURE,
                timeout=30,
                step=0.1,
            )
            t_failed = time.monotonic() - t0
            new = wait_for(
                lambda: [r for r in runs(inst) if r.dagster_run.run_id != rec.dagster_run.run_id], timeout=40, step=0.1
            )
            t_new = time.monotonic() - t0
            back = wait_for(lambda: (s := status()) and s["pid"] != child and s, timeout=40, step=0.1)
            t_back = time.monotonic() - t0
            st = inst.get_run_stats(new[0].dagster_run.run_id)
            nb = json.loads(heartbeat_path(data).read_text())
            rel = lambda ts: ts - kill_wall  # noqa: E731
            print(
                f"kill -9 of the run worker: capture child gone {t_child:.1f} s, run FAILURE {t_failed:.1f} s, "
                f"new run created {t_new:.1f} s, dequeued/launched {rel(st.launch_time):.1f} s, run worker "
                f"started {rel(st.start_time):.1f} s, capture child started "
                f"{rel(datetime.fromisoformat(nb['child_started_at']).timestamp()):.1f} s, "
                f"new capture registered {t_back:.1f} s"
            )
            assert t_back < 30
            assert len(new) == 1
            assert inst.get_run_by_id(new[0].dagster_run.run_id).status == dg.DagsterRunStatus.STARTED
            # the hole is a gap marker (the capture, SIGTERMed by the kernel, records it as a stop in the window)
            hole = [
                g
                for g in gaps(data, datetime.now(KST).date())
                if g.metadata.get("key_id") == key
                and g.end is not None
                and g.start.timestamp() <= kill_wall + 1
                and g.end.timestamp() >= kill_wall
            ]
            assert len(hole) == 1, gaps(data, datetime.now(KST).date())
            print(f"the hole: {hole[0].reason} gap of {(hole[0].end - hole[0].start).total_seconds():.1f} s")
            new_child = back["pid"]

            # terminating the run from the UI stops its capture: SIGTERM, an orderly stop, run CANCELED
            import httpx

            new_id = new[0].dagster_run.run_id
            q = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"
            t0 = time.monotonic()
            r = httpx.post(
                f"http://127.0.0.1:{port}/graphql", json={"query": q, "variables": {"id": new_id}}, timeout=30
            )
            assert r.json()["data"]["terminateRun"]["__typename"] == "TerminateRunSuccess", r.text
            wait_for(lambda: not _alive(new_child), timeout=30)
            wait_for(lambda: inst.get_run_by_id(new_id).status == dg.DagsterRunStatus.CANCELED, timeout=30)
            print(f"terminate: capture stopped and run CANCELED {time.monotonic() - t0:.1f} s after terminateRun")
            stopped = [
                e
                for e in read_events(data, datetime.now(KST).date())
                if e["event_type"] == "capture_stopped" and str(e.get("run_id")).endswith(f".{new_child}")
            ]
            assert stopped, "the capture stopped in order (SIGTERM), it was not killed"
    finally:
        dev.send_signal(signal.SIGINT)  # `dagster dev` stops its processes on SIGINT
        try:
            dev.wait(timeout=90)
        finally:
            try:
                os.killpg(dev.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            sim.stop()
    # no capture outlives the deployment (the sensor may have started another after the termination)
    last = json.loads((data / "system" / "capture" / "status.json").read_text())
    wait_for(lambda: not _alive(last["pid"]), timeout=30)
    wait_for(lambda: not _alive(json.loads(heartbeat_path(data).read_text())["pid"]), timeout=30)
