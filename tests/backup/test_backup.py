"""Backups and restores on real files, a real Dagster instance and real processes.

The day's lake is built by the real assets against the local exchange (universe, Track A slots, gap report) plus
Track B files and events; the round trip deletes every file of the day and restores it through the Dagster job.
Faults are real too: a byte flipped in a stored package file, a destination filesystem that corrupts what it is
given (an fsspec implementation, as a failing disk or bucket would), and kill -9 in the middle of a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from upath import UPath

from observer_assets.backup import backup, package
from observer_assets.backup import restore as restoring
from observer_assets.backup.assets import daily_backup, restore_job
from observer_assets.backup.daysets import by_package, covered_days, scan
from observer_assets.orchestration.partitions import day_key
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import EventLog, events_path, read_events
from observer_resources.storage import lake

OPEN = MarketCalendar("open")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def day_hashes(root: Path, day: date) -> dict[str, str]:
    return {f.rel: _sha(root / f.rel) for f in by_package(OPEN, scan(root)).get(day, [])}


# --- a real day --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bsim():
    from local_exchange.server import run_sim_process

    p = run_sim_process("--mode", "real", "--clock", "open", "--seed", "11", "--listings", "120")
    yield p
    p.stop()


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "20"}


def build_day(inst: dg.DagsterInstance, sim, tmp_path: Path) -> date:
    """Today's lake from the real assets against the local exchange, plus Track B files and events."""
    from local_exchange.accounts import demo_credentials
    from observer_assets.gaps.assets import gap_report
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.track_b.compaction import TICK_SCHEMA
    from observer_assets.universe.assets import universe
    from observer_resources.resources import KisResource

    key, secret = demo_credentials(61)
    kis = KisResource(
        app_key=key,
        app_secret=secret,
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        state_dir=str(tmp_path / "data" / "state"),
    )
    now = datetime.now(KST)
    day = now.date()
    inst.add_dynamic_partitions("trading_day", [day_key(day)])
    assert dg.materialize(
        [universe],
        partition_key=day_key(day),
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"universe": {"config": {"min_master_codes": 50}}}},
    ).success
    slot = OPEN.slot_at(now)
    keys = [s.strftime("%Y-%m-%dT%H%M") for s in (slot - timedelta(minutes=10), slot) if s.date() == day]
    for k in keys:
        inst.add_dynamic_partitions("track_a_slot", [k])
        assert dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=k,
            instance=inst,
            resources={"kis": kis},
        ).success
    root = lake.data_dir()
    hour = now.replace(minute=0, second=0, microsecond=0)
    raw = root / "raw" / "track_b" / f"date={day}" / "key=k1" / f"{hour:%H}.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(
        "".join(json.dumps({"code": "005930", "acml_vol": 100 + i, "qty": 1, "i": i}) + "\n" for i in range(3000))
    )
    rows = [
        {
            "code": "005930",
            "exchange_ts": hour,
            "receive_ts": hour,
            "price": 70000 + i,
            "qty": 1,
            "acml_vol": 100 + i,
            "quality_flag": "ok",
            "missing_volume": 0,
            "key_id": "k1",
            "conn_id": "c1",
        }
        for i in range(3000)
    ]
    lake.write_table_atomic(
        root / "track_b" / f"date={day}" / f"hour={hour:%H}" / "ticks.parquet",
        pa.Table.from_pylist(rows, schema=TICK_SCHEMA),
    )
    EventLog(root).emit("ws_connected", session_id="s1")
    assert dg.materialize([gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst).success
    return day


def test_round_trip_backup_delete_restore_is_byte_identical_and_readable(env, bsim):
    """backup → delete every file of the day → restore (the Dagster job) → the same bytes, and the assets read."""
    with dg.instance_for_test() as inst:
        day = build_day(inst, bsim, env)
        root = lake.data_dir()
        # a secret-bearing file the package must never carry
        (root / "state").mkdir(exist_ok=True)
        (root / "state" / "not-for-backup.txt").write_text("SECRET-TOKEN-VALUE")
        before = day_hashes(root, day)
        datasets = {rel.split("/")[0] for rel in before}
        assert {
            "universe",
            "universe_exclusions",
            "universe_prev_close",
            "track_a",
            "raw",
            "track_b",
            "gaps",
            "_meta",
            "system",
        } <= datasets, datasets
        res = dg.materialize([daily_backup], partition_key=day_key(day), instance=inst)
        assert res.success
        md = res.asset_materializations_for_node("daily_backup")[0].metadata
        assert md["action"].value == "written" and md["files"].value == len(before)
        pkg = Path(os.environ["OBSERVER_BACKUP_URL"]) / day.isoformat()
        manifest = json.loads((pkg / "manifest.json").read_text())
        assert {e["path"]: e["sha256"] for e in manifest["files"]} == before
        assert (pkg / "SUCCESS.marker").exists()
        assert (
            json.loads((pkg / "SUCCESS.marker").read_text())["manifest_sha256"]
            == hashlib.sha256((pkg / "manifest.json").read_bytes()).hexdigest()
        )
        rows = {e["path"]: e["rows"] for e in manifest["files"]}
        for rel, n in rows.items():
            if rel.endswith(".parquet"):
                assert n == pq.ParquetFile(root / rel).metadata.num_rows
        for p in pkg.rglob("*"):
            if p.is_file():
                assert b"SECRET-TOKEN-VALUE" not in p.read_bytes(), p
        assert not any(e["path"].startswith("state/") for e in manifest["files"])
        assert "backup_succeeded" in [e["event_type"] for e in read_events(root, day)]
        # delete the whole day, then restore it through the Dagster job
        for rel in before:
            (root / rel).unlink()
        assert day_hashes(root, day) == {}
        r = restore_job.execute_in_process(
            instance=inst, run_config={"ops": {"restore_day": {"config": {"day": day.isoformat()}}}}
        )
        assert r.success
        after = day_hashes(root, day)
        events_rel = events_path(root, day).relative_to(root).as_posix()  # the restore appends its event to it
        assert {k: v for k, v in after.items() if k != events_rel} == {
            k: v for k, v in before.items() if k != events_rel
        }
        size = next(e["size"] for e in manifest["files"] if e["path"] == events_rel)
        assert hashlib.sha256((root / events_rel).read_bytes()[:size]).hexdigest() == before[events_rel]
        assert b"backup_restored" in (root / events_rel).read_bytes()[size:]
        # readable: Parquet by pyarrow/pandas, JSON lines by pandas, and the gap report recomputes from them
        for rel in before:
            if rel.endswith(".parquet"):
                assert len(pd.read_parquet(root / rel)) == rows[rel]
            elif rel.endswith(".jsonl"):  # (today's event log has the restore's own line on top)
                assert len(pd.read_json(root / rel, lines=True)) == rows[rel] + (rel == events_rel)
        from observer_assets.gaps.assets import gap_report
        from observer_assets.universe.assets import universe

        assert dg.materialize(
            [gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst
        ).success
    assert "backup_restored" in [e["event_type"] for e in read_events(root, day)]


# --- corruption -------------------------------------------------------------------------------------


def small_day(root: Path, day: date) -> dict[str, str]:
    for i in range(3):
        lake.write_table_atomic(
            root / "track_a" / f"date={day}" / f"slot=09{i}0" / "snapshot.parquet",
            pa.table({"code": [f"{n:06d}" for n in range(200)], "price": list(range(200))}),
        )
    raw = root / "raw" / "track_b" / f"date={day}" / "key=k1" / "09.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("".join(f'{{"i": {i}}}\n' for i in range(2000)))
    EventLog(root).emit("ws_connected", at=datetime(day.year, day.month, day.day, 9, 0, tzinfo=KST), session_id="s")
    return day_hashes(root, day)


def test_a_flipped_byte_fails_verification_withdraws_the_marker_and_the_day_is_kept(tmp_path, webhook):
    from observer_assets.backup import retention
    from observer_assets.backup.settings import RetentionPolicy

    hits = webhook
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 3)
    small_day(root, day)
    ev = EventLog(root)
    assert backup.run(root, dest, OPEN, day, events=ev).action == "written"
    stored = package.package_dir(dest, day) / "files" / "track_a" / f"date={day}" / "slot=0910" / "snapshot.parquet"
    b = bytearray(stored.read_bytes())
    b[len(b) // 2] ^= 0x01
    stored.write_bytes(bytes(b))
    v = package.verify(dest, day)
    assert not v.ok and [p for p, _ in v.problems] == [f"track_a/date={day}/slot=0910/snapshot.parquet"]
    # the restore refuses and names the file; nothing is placed
    with pytest.raises(restoring.RestoreError, match="slot=0910/snapshot.parquet"):
        restoring.restore(dest, day, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").rglob("*.parquet"))
    # retention, days later, re-reads the package before deleting: it fails, so the day stays
    today = day + timedelta(days=5)
    out = retention.apply(root, dest, OPEN, today, RetentionPolicy(), events=ev)
    assert not out.deleted and str(day) in out.kept
    assert not (package.package_dir(dest, day) / "SUCCESS.marker").exists()
    assert day_hashes(root, day)  # every local file still there
    assert any(f"{day}" in h.get("text", "") for h in hits), hits  # the alert reached the webhook
    anomaly = json.loads((root / "system" / "anomaly" / f"{day:%Y%m%d}.json").read_text())
    assert "backup_failure" in [r["rule"] for r in anomaly["rules"]]
    kinds = [e["event_type"] for e in read_events(root, datetime.now(KST).date())]
    assert "backup_verify_failed" in kinds
    # the next backup rewrites the package from the local files; now an anomaly day, it is kept 7 days
    assert backup.run(root, dest, OPEN, day, events=ev).action == "written"
    assert package.verify(dest, day).ok
    assert not retention.apply(root, dest, OPEN, today, RetentionPolicy(), events=ev).deleted
    assert retention.apply(root, dest, OPEN, day + timedelta(days=8), RetentionPolicy(), events=ev).deleted


class BitrotFS(LocalFileSystem):
    """A destination that corrupts one byte of every Parquet file it stores (a failing disk or bucket)."""

    protocol = ("bitrot",)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("bitrot://") :] if path.startswith("bitrot://") else path)

    def _open(self, path, mode="rb", **kw):
        f = super()._open(path, mode, **kw)
        if "w" in mode and str(path).endswith(".parquet"):
            write, flipped = f.write, []

            def rotten(b):
                if not flipped and len(b) > 64:
                    b = bytearray(b)
                    b[64] ^= 0x20
                    flipped.append(True)
                return write(bytes(b))

            f.write = rotten
        return f


def test_corruption_on_the_way_to_the_destination_leaves_no_success_marker(env):
    fsspec.register_implementation("bitrot", BitrotFS, clobber=True)
    os.environ["OBSERVER_BACKUP_URL"] = f"bitrot://{env / 'rotten'}"
    root = lake.data_dir()
    day = datetime.now(KST).date()
    small_day(root, day)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        res = dg.materialize([daily_backup], partition_key=day_key(day), instance=inst, raise_on_error=False)
        assert not res.success
        failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
        assert "no SUCCESS.marker" in failure.step_failure_data.error.message
        assert "snapshot.parquet" in failure.step_failure_data.error.message
    pkg = env / "rotten" / day.isoformat()
    assert (pkg / "manifest.json").exists() and not (pkg / "SUCCESS.marker").exists()
    assert not package.read_state(UPath(f"bitrot://{env / 'rotten'}"), day).committed
    failed = [e for e in read_events(root, day) if e["event_type"] == "backup_failed"]
    assert failed and failed[0]["problem_count"] == 3  # the three snapshots, each named
    assert "backup_failure" in (root / "system" / "anomaly" / f"{day:%Y%m%d}.json").read_text()


def test_any_fsspec_destination_works_in_memory(tmp_path):
    root, dest = tmp_path / "data", UPath("memory://observer-test/backups")
    day = date(2026, 3, 4)
    before = small_day(root, day)
    r = backup.run(root, dest, OPEN, day, events=EventLog(root))
    assert r.action == "written" and r.files == len(before)
    assert r.stored_bytes < r.bytes  # JSON lines travel zstd-compressed
    assert package.verify(dest, day).ok
    out = restoring.restore(dest, day, tmp_path / "copy")
    assert out["restored"] == len(before)
    assert day_hashes(tmp_path / "copy", day) == before


def test_restore_refuses_a_conflict_an_unverified_package_and_a_bad_date(tmp_path):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 5)
    before = small_day(root, day)
    env = {**os.environ, "OBSERVER_DATA_DIR": str(root), "OBSERVER_BACKUP_URL": str(dest), "OBSERVER_CALENDAR": "open"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "observer_assets.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    assert cli("restore", "2026-13-01").returncode == 2
    r = cli("restore", day.isoformat())
    assert r.returncode == 1 and "no backup" in r.stderr
    assert cli("backup", day.isoformat()).returncode == 0
    assert json.loads(cli("verify", day.isoformat()).stdout)["ok"] is True
    # a local file that differs from the backup is in the way: refused, named, untouched
    rel = f"raw/track_b/date={day}/key=k1/09.jsonl"
    (root / rel).write_text("changed\n")
    r = cli("restore", day.isoformat())
    assert r.returncode == 1 and rel in r.stderr
    assert (root / rel).read_text() == "changed\n"
    assert cli("restore", day.isoformat(), "--overwrite").returncode == 0
    assert _sha(root / rel) == before[rel]
    # the restored file has its original mtime back: the next backup finds the day unchanged and only re-reads it
    again = cli("backup", day.isoformat())
    assert again.returncode == 0 and json.loads(again.stdout)["action"] == "unchanged", again.stdout
    # a package whose marker does not name its manifest is refused
    mpath = dest / day.isoformat() / "manifest.json"
    mpath.write_bytes(mpath.read_bytes().replace(b'"anomaly": false', b'"anomaly": true'))
    r = cli("restore", day.isoformat(), "--to", str(tmp_path / "x"))
    assert r.returncode == 1 and "SUCCESS.marker does not name this manifest" in r.stderr
    v = cli("verify", day.isoformat())
    assert v.returncode == 1 and "SUCCESS.marker" in v.stdout


def test_non_trading_day_files_travel_with_the_next_trading_day(tmp_path):
    krx = MarketCalendar("krx")
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    mon = date(2026, 3, 9)  # the Saturday before is 2026-03-07
    EventLog(root).emit("capture_started", at=datetime(2026, 3, 7, 10, 0, tzinfo=KST))
    small_day(root, mon)
    assert covered_days(krx, mon) == [date(2026, 3, 7), date(2026, 3, 8), mon]
    r = backup.run(root, dest, krx, mon, events=EventLog(root))
    paths = {e.path for e in package.read_state(dest, mon).manifest.entries}
    assert events_path(root, date(2026, 3, 7)).relative_to(root).as_posix() in paths and r.files == len(paths)


# --- kill -9 ---------------------------------------------------------------------------------------


def test_kill_9_during_a_backup_leaves_no_marker_and_the_next_run_completes_it(tmp_path):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 10)
    d = root / "raw" / "track_b" / f"date={day}"
    rnd = os.urandom(1 << 19)
    for i in range(240):  # ~240 MiB of JSON lines: a backup of a few seconds
        p = d / f"key=k{i:03d}" / "09.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((rnd[i:] + rnd[:i]).hex().encode()[: 1 << 20] + b"\n")
    before = day_hashes(root, day)
    env = {**os.environ, "OBSERVER_DATA_DIR": str(root), "OBSERVER_BACKUP_URL": str(dest), "OBSERVER_CALENDAR": "open"}
    cmd = [sys.executable, "-m", "observer_assets.cli", "backup", day.isoformat()]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    files = dest / day.isoformat() / "files"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if files.exists() and sum(1 for _ in files.rglob("*.zst")) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    pkg = dest / day.isoformat()
    assert not (pkg / "SUCCESS.marker").exists(), "killed before the end, yet committed"
    assert not package.read_state(UPath(dest), day).committed
    assert backup.pending(root, UPath(dest), OPEN, datetime(2026, 3, 11, tzinfo=KST))[0].reason == "no SUCCESS.marker"
    with pytest.raises(restoring.RestoreError, match="no backup|SUCCESS"):
        restoring.restore(UPath(dest), day, tmp_path / "copy")
    # the next run completes it
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["action"] == "written"
    assert package.verify(UPath(dest), day).ok
    restoring.restore(UPath(dest), day, tmp_path / "copy")
    assert day_hashes(tmp_path / "copy", day) == before


# --- schedule and catch-up ------------------------------------------------------------------------


def test_the_schedule_asks_for_every_pending_day_once(env):
    from observer_assets.backup.schedules import backup_daily
    from observer_assets.backup.sensors import backup_catch_up
    from observer_assets.definitions import defs

    repo = defs.get_repository_def()

    root = lake.data_dir()
    today = datetime.now(KST).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    for d in days:
        small_day(root, d)
    with dg.instance_for_test() as inst:
        at = datetime.combine(today, datetime.min.time(), KST).replace(hour=21)
        ctx = dg.build_schedule_context(instance=inst, scheduled_execution_time=at, repository_def=repo)
        reqs = backup_daily.evaluate_tick(ctx).run_requests
        assert {r.partition_key for r in reqs} >= {day_key(d) for d in days}
        assert set(inst.get_dynamic_partitions("trading_day")) >= {day_key(d) for d in days}
        for d in days:
            assert dg.materialize(
                [daily_backup],
                partition_key=day_key(d),
                instance=inst,
                tags={k: v for r in reqs if r.partition_key == day_key(d) for k, v in r.tags.items()},
            ).success
        # committed and unchanged: neither the schedule nor the catch-up sensor asks again for those days
        again = backup_daily.evaluate_tick(
            dg.build_schedule_context(instance=inst, scheduled_execution_time=at, repository_def=repo)
        )
        assert not {r.partition_key for r in again.run_requests or []} & {day_key(d) for d in days}
        # (called directly: evaluate_tick would validate a request for today, pending after 21:00 KST, against
        # dynamic partitions the test harness cannot load)
        s = backup_catch_up(dg.build_sensor_context(instance=inst, repository_def=repo))
        asked = {r.partition_key for r in s.run_requests} if isinstance(s, dg.SensorResult) else set()
        assert not asked & {day_key(d) for d in days}
