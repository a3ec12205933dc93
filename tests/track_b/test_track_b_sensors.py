"""Track B sensors, evaluated with evaluate_tick on a real (temporary) instance and a chosen "now"; the runs they
see are real runs (a stand-in capture child), the journals they scan are real Journal segments."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from observer_assets.definitions import defs as all_defs
from observer_assets.orchestration.runs import MAX_RUNTIME_TAG
from observer_assets.track_b import journal as jr
from observer_assets.track_b.assets import track_b_sampled, track_b_ticks
from observer_assets.track_b.capture_job import track_b_capture_job
from observer_assets.track_b.sensors import (
    COMPACTION_TAGS,
    GRACE_S,
    UNSEALED_WAIT_S,
    build_capture_sensor,
    build_compaction_sensor,
)
from observer_resources.calendar import KST
from observer_resources.storage.layout import heartbeat_path, manifest_path

FAKE = Path(__file__).with_name("fake_capture.py")
ROOT = Path(__file__).resolve().parents[2]


def kst(*a) -> datetime:
    return datetime(*a, tzinfo=KST)


ENV = {"OBSERVER_CALENDAR": "krx"}


def tick(sensor_def, instance, cursor=None):
    # instance_ref (not instance): like the daemon's context, so partitioned requests are resolved against the
    # instance's dynamic partitions plus the tick's own add requests
    return sensor_def.evaluate_tick(
        dg.build_sensor_context(instance_ref=instance.get_ref(), cursor=cursor, definitions=all_defs)
    )


def capture_at(t: datetime, instance, cursor=None):
    return tick(build_capture_sensor(now=lambda: t), instance, cursor)


# --- the capture sensor -------------------------------------------------------------------------------


def test_launches_one_capture_in_the_window_with_the_right_tags(env):
    with dg.instance_for_test() as inst:
        res = capture_at(kst(2026, 11, 26, 10, 0), inst)
        (req,) = res.run_requests
        assert req.tags[MAX_RUNTIME_TAG] == str(5 * 3600 + 900)  # 10:00 -> 15:00, plus the margin
        assert req.tags["observer/kis"] == "ws"  # never counted against the observer/kis: rest limit
        assert req.run_config["ops"]["track_b_capture"]["config"]["until"] == "2026-11-26T15:00:00+09:00"
        assert json.loads(res.cursor)["launches"] == 1
        again = capture_at(kst(2026, 11, 26, 10, 0, 15), inst, res.cursor)
        assert again.run_requests[0].run_key != req.run_key  # every launch is a new run
        assert json.loads(again.cursor)["launches"] == 2


@pytest.mark.parametrize(
    "at, why",
    [
        (kst(2026, 11, 26, 9, 29), "outside the Track B window of 2026-11-26 (09:30-15:00 KST)"),
        (kst(2026, 11, 26, 15, 0), "outside the Track B window"),
        (kst(2026, 11, 26, 20, 0), "outside the Track B window"),
        (kst(2026, 11, 28, 11, 0), "2026-11-28 is not a trading day"),  # Saturday
        (kst(2026, 10, 5, 11, 0), "2026-10-05 is not a trading day"),  # Chuseok substitute holiday
        (kst(2026, 11, 19, 10, 15), "outside the Track B window of 2026-11-19 (10:30-16:00 KST)"),  # CSAT: +1 h
        (kst(2026, 11, 26, 14, 59, 50), "the window ends in 10 s"),
    ],
)
def test_nothing_outside_the_window_or_on_holidays(env, at, why):
    with dg.instance_for_test() as inst:
        res = capture_at(at, inst)
        assert not res.run_requests
        assert why in res.skip_message


def test_special_days_move_the_window_and_the_open_calendar_runs_any_time(env, monkeypatch):
    with dg.instance_for_test() as inst:
        res = capture_at(kst(2026, 11, 19, 15, 45), inst)  # CSAT day: the window is 10:30-16:00
        assert (
            res.run_requests[0].run_config["ops"]["track_b_capture"]["config"]["until"] == "2026-11-19T16:00:00+09:00"
        )
        monkeypatch.setenv("OBSERVER_CALENDAR", "open")
        res = capture_at(kst(2026, 11, 28, 3, 0), inst)  # a Saturday night on the demo calendar
        assert len(res.run_requests) == 1


RUNNER = textwrap.dedent(r"""
    import sys
    import dagster as dg
    from observer_assets.track_b.capture_job import track_b_capture_job
    home, until, fake = sys.argv[1:4]
    with dg.DagsterInstance.from_config(home) as inst:
        track_b_capture_job.execute_in_process(instance=inst, run_config={"ops": {"track_b_capture": {"config": {
            "until": until, "command": [sys.executable, fake]}}}})
""")


def test_a_running_capture_is_left_alone_and_a_dead_one_is_replaced(env, monkeypatch):
    """A real capture run in another process (the run worker), then kill -9 of that worker: the run stays
    STARTED in the instance (no code server to notice here), the heartbeat names a dead pid, and the sensor
    marks the run failed and launches a new one."""
    home = env / "home"
    home.mkdir()
    fake_dir = env / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("FAKE_DIR", str(fake_dir))
    runner = env / "runner.py"
    runner.write_text(RUNNER)
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        now = datetime.now(KST)
        monkeypatch.setenv("OBSERVER_CALENDAR", "open")
        worker = subprocess.Popen(
            [sys.executable, str(runner), str(home), (now + timedelta(minutes=5)).isoformat(), str(FAKE)],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def started():
                recs = inst.get_run_records(
                    dg.RunsFilter(job_name=track_b_capture_job.name, statuses=[dg.DagsterRunStatus.STARTED])
                )
                beat = env / "data" / "system" / "capture" / "status.json"
                return recs if recs and beat.exists() and heartbeat_path(env / "data").exists() else None

            (rec,) = wait_for(started, timeout=60)
            res = capture_at(datetime.now(KST), inst)
            assert not res.run_requests
            msg = res.skip_message
            assert f"capture run {rec.dagster_run.run_id[:8]} is started" in msg
            assert "(alive recording)" in msg and "key-fake: connected, 2 registered/2 desired, 7 ticks" in msg
            assert "supervisor of run" in msg and "0 restarts" in msg

            child = json.loads(heartbeat_path(env / "data").read_text())["child_pid"]
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            wait_for(lambda: not _alive(child), timeout=5)  # the child followed its supervisor (PDEATHSIG)
            assert inst.get_run_by_id(rec.dagster_run.run_id).status == dg.DagsterRunStatus.STARTED

            res = capture_at(datetime.now(KST), inst)
            (req,) = res.run_requests
            failed = inst.get_run_by_id(rec.dagster_run.run_id)
            assert failed.status == dg.DagsterRunStatus.FAILURE
            assert req.tags["observer/kis"] == "ws" and int(req.tags[MAX_RUNTIME_TAG]) > 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_a_failed_run_is_replaced_on_the_next_tick(env):
    with dg.instance_for_test() as inst:
        res = track_b_capture_job.execute_in_process(
            instance=inst,
            raise_on_error=False,
            run_config={"ops": {"track_b_capture": {"config": {"until": "2026-11-26T15:00:00"}}}},
        )  # no offset
        assert not res.success
        res = capture_at(kst(2026, 11, 26, 11, 0), inst)
        (req,) = res.run_requests
        assert "previous" in json.loads(res.cursor)["previous"] and "failure" in json.loads(res.cursor)["previous"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


# --- the compaction sensor -----------------------------------------------------------------------------

DAY = date(2026, 3, 10)


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return kst(2026, 3, 10, h, m) + timedelta(seconds=s)


PING = '{"header":{"tr_id":"PINGPONG","datetime":"20260310100000"}}'


def write_hours(data: Path, key: str, hours: list[int]) -> None:
    """A real journal with a few frames in each hour, sealed by its writer."""
    clock = {"now": at(hours[0])}
    j = jr.Journal(data, key, fsync_interval=0.01, clock=lambda: clock["now"])
    for h in hours:
        for k in range(3):
            j.append(at(h, 10 + k), PING, conn=1)
        clock["now"] = at(h, 59)
    j.flush()
    clock["now"] = at(hours[-1] + 1, 0, 10)
    j.close()


CRASHING_WRITER = textwrap.dedent(r"""
    import os, sys
    from datetime import datetime, timedelta
    from observer_assets.track_b.journal import Journal
    from observer_resources.calendar import KST
    t = datetime(2026, 3, 10, 10, 10, tzinfo=KST)
    j = Journal(sys.argv[1], "key-a", fsync_interval=0.01, clock=lambda: t)
    for k in range(3):
        j.append(t + timedelta(minutes=k), sys.argv[2], conn=1)
    j.flush()
    os._exit(0)  # dies without sealing its segment
""")


def compaction_at(t: datetime, instance, cursor=None):
    return tick(build_compaction_sensor(now=lambda: t), instance, cursor)


def test_compaction_requests_closed_hours_only_and_once(env):
    data = env / "data"
    write_hours(data, "key-a", [10, 11])
    write_hours(data, "key-b", [10])
    with dg.instance_for_test() as inst:
        res = compaction_at(at(11, 0, GRACE_S - 1), inst)  # hour 10 ended, but not its grace
        assert not res.run_requests and "open: 2026-03-10T10, 2026-03-10T11" in res.skip_message
        res = compaction_at(at(11, 0, GRACE_S + 1), inst)
        assert [(r.partition_key, COMPACTION_TAGS.items() <= r.tags.items()) for r in res.run_requests] == [
            ("2026-03-10T10", True)
        ]
        assert res.dynamic_partitions_requests[0].partition_keys == ["2026-03-10T10"]
        # once: the next ticks see it requested (not yet compacted) and ask nothing
        res2 = compaction_at(at(11, 5), inst, res.cursor)
        assert not res2.run_requests and "requested, not compacted yet: 2026-03-10T10" in res2.skip_message
        # compacted: done, and still nothing requested
        inst.add_dynamic_partitions("track_b_hour", ["2026-03-10T10"])
        assert dg.materialize([track_b_ticks, track_b_sampled], partition_key="2026-03-10T10", instance=inst).success
        res3 = compaction_at(at(11, 30), inst, res2.cursor)
        assert not res3.run_requests and "1 hours compacted" in res3.skip_message
        res4 = compaction_at(at(12, 1), inst, res3.cursor)
        assert [r.partition_key for r in res4.run_requests] == ["2026-03-10T11"]
        # a fresh cursor still never re-asks a compacted hour (the manifest is the record)
        res5 = compaction_at(at(12, 1), inst, None)
        assert [r.partition_key for r in res5.run_requests] == ["2026-03-10T11"]


def test_a_crashed_writers_hour_waits_then_is_recompacted_when_its_journal_changes(env):
    data = env / "data"
    subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(data), PING], cwd=ROOT, check=True)
    seg = jr.segment_path(data, "key-a", DAY, 10)
    assert seg.exists() and not jr.segment_closed(seg)
    with open(seg, "ab") as f:
        f.write(b'{"rx":"2026-03-10T10:30:00.000000+09:00","r":"x","c":1,"n":9,"p":"tor')  # a torn tail
    with dg.instance_for_test() as inst:
        res = compaction_at(at(11, 1), inst)
        assert not res.run_requests and "waiting for the writer to seal: 2026-03-10T10" in res.skip_message
        res = compaction_at(at(11, 0, UNSEALED_WAIT_S + 1), inst, res.cursor)
        (req,) = res.run_requests
        inst.add_dynamic_partitions("track_b_hour", ["2026-03-10T10"])
        r = dg.materialize([track_b_ticks], partition_key="2026-03-10T10", instance=inst)
        md = r.asset_materializations_for_node("track_b_ticks")[0].metadata
        assert md["bad_journal_lines"].value == 1 and md["unsealed_segments"].value == 1
        first_fp = json.loads(manifest_path(data, at(10)).read_text())["journal_fingerprint"]
        assert req.run_key == f"track_b_compaction:2026-03-10T10:{first_fp}"
        # the capture restarts: a new journal recovers the segment (cuts the torn tail) and seals it
        with jr.Journal(data, "key-a", fsync_interval=0.01, clock=lambda: at(11, 6)):
            pass
        assert jr.segment_closed(seg)
        res2 = compaction_at(at(11, 7), inst, res.cursor)
        (req2,) = res2.run_requests
        assert req2.partition_key == "2026-03-10T10" and req2.run_key != req.run_key
        r = dg.materialize([track_b_ticks], partition_key="2026-03-10T10", instance=inst)
        md = r.asset_materializations_for_node("track_b_ticks")[0].metadata
        assert md["bad_journal_lines"].value == 0 and md["unsealed_segments"].value == 0
        assert not compaction_at(at(11, 8), inst, res2.cursor).run_requests
