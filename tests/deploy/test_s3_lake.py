"""The lake and the backups on an S3-protocol server on loopback: moto's server (``moto[server]`` from PyPI), a real
HTTP server speaking S3, reached by s3fs exactly as a bucket on AWS or MinIO would be (``AWS_ENDPOINT_URL``).

Why moto: it installs with pip from the package index like everything else here (MinIO, Garage and SeaweedFS are
neither on PyPI nor in Debian), starts in about a second, and is a maintained implementation of the S3 API used by
botocore's own users. Its one limit: it keeps its objects in memory. So the interrupted upload is judged at the
instant the server dies: a relay between the writer and the server holds the upload mid-body, the test reads the
store directly (the old partition whole, nothing half-written beside it), then kills the server; the writer must
fail loudly, and after a restart the same write lands whole.

Marked ``deploy`` (CI's stage after `make test`: `make deploy-test`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import httpx
import pyarrow as pa
import pytest
from support import open_clock_midday
from track_b.test_capture import capture_env, key_id_of, read_status, start, wait_for
from upath import UPath

from local_exchange.accounts import demo_credentials
from local_exchange.server import run_sim_process
from observer_assets.backup.daysets import file_day
from observer_assets.orchestration.partitions import calendar, day_key, hour_key
from observer_resources.calendar import KST
from observer_resources.storage import lake, layout

pytestmark = pytest.mark.deploy
pytest.importorskip("moto")
pytest.importorskip("s3fs")

LAKE = "s3://observer-lake/lake"
BACKUPS = "s3://observer-backups/observer"
S3_ENV = {"AWS_ACCESS_KEY_ID": "observer-test", "AWS_SECRET_ACCESS_KEY": "observer-test-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 server in its own process on 127.0.0.1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise AssertionError("moto's S3 server did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def s3fs_at(url: str):  # noqa: ANN201 - an s3fs.S3FileSystem
    import s3fs

    return s3fs.S3FileSystem(
        key=S3_ENV["AWS_ACCESS_KEY_ID"],
        secret=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=url,
        skip_instance_cache=True,
    )


@pytest.fixture
def s3(monkeypatch):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a filesystem cached by an earlier test talks to its server
    server = S3Server()
    fs = s3fs_at(server.url)
    for bucket in ("observer-lake", "observer-backups"):
        fs.mkdir(bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    yield server
    server.kill()


def objects(fs, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (no scheme), by its key below it, with its bytes."""
    fs.invalidate_cache()
    base = prefix.rstrip("/")
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in fs.find(base)}


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_day_on_the_s3_lake_round_trips_through_backup_and_restore_byte_for_byte(s3, tmp_path, monkeypatch):
    from observer_assets.backup.assets import daily_backup, restore_job
    from observer_assets.gaps.assets import gap_report
    from observer_assets.monitoring.events import system_events
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.track_b.assets import journal_hours, track_b_sampled, track_b_ticks
    from observer_assets.universe.assets import universe
    from observer_resources.resources import KisResource

    local = tmp_path / "local"
    monkeypatch.setenv("OBSERVER_DATA_DIR", LAKE)
    monkeypatch.setenv("OBSERVER_LOCAL_DIR", str(local))
    monkeypatch.setenv("OBSERVER_BACKUP_URL", BACKUPS)
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "20")
    monkeypatch.setenv("OBSERVER_TRACK_B_FEEDS", "trades:KRX")
    sim = run_sim_process("--mode", "real", "--clock", "open", "--seed", "3", "--listings", "120", *open_clock_midday())
    captures: list = []
    try:
        # Track B: the capture journals on the local directory, whatever the lake is
        rows = sim.admin("listings", params={"order": "activity", "limit": "10"})["listings"]
        codes = [r["code"] for r in rows if not r["halted"]][:3]
        env = capture_env(sim, local, demo_credentials(81), OBSERVER_LOCAL_DIR=str(local))
        env |= {"OBSERVER_DATA_DIR": LAKE, "AWS_ENDPOINT_URL": s3.url, "AWS_DEFAULT_REGION": "us-east-1", **S3_ENV}
        (key,) = key_id_of(env)
        cap = start(captures, env, ["--pins", ",".join(codes), "--status-interval", "0.3"], tmp_path)
        wait_for(lambda: (s := read_status(local)) and s["keys"][key].get("ticks", 0) >= 20, 60, "ticks", cap)
        cap.proc.send_signal(signal.SIGTERM)
        assert cap.wait(30) == 0

        key_, secret = demo_credentials(82)
        kis = KisResource(app_key=key_, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url)
        now = datetime.now(KST)
        day, slot = now.date(), calendar().slot_at(now)
        dkey, skey = day_key(day), slot.strftime("%Y-%m-%dT%H%M")
        hours = [hour_key(h) for h in journal_hours(local)]
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions("trading_day", [dkey])
            inst.add_dynamic_partitions("track_a_slot", [skey])
            inst.add_dynamic_partitions("track_b_hour", hours)
            ok = lambda assets, pk, **kw: dg.materialize(assets, partition_key=pk, instance=inst, **kw).success  # noqa: E731
            assert ok([universe], dkey, resources={"kis": kis}, run_config=_min_master())
            assert ok([track_a_snapshot, universe], skey, selection=[track_a_snapshot], resources={"kis": kis})
            for h in hours:
                assert ok([track_b_ticks, track_b_sampled], h)
            assert ok([gap_report, universe.to_source_asset()], dkey)
            assert ok([system_events], dkey)
            assert ok([daily_backup], dkey)

            fs = s3fs_at(s3.url)
            lake_before = objects(fs, LAKE[5:])
            local_before = local_files(local)
            datasets = {k.split("/", 1)[0] for k in lake_before}
            assert {"universe", "track_a", "track_b", "gaps"} <= datasets, datasets
            summary = str(layout.events_summary_path(UPath(LAKE), day)).split("/lake/", 1)[1]
            assert summary in lake_before, sorted(lake_before)
            assert layout.on_local_dir(next(k for k in local_before if k.startswith("raw/track_b/")))
            assert not any(k.startswith(("universe", "track_a", "gaps")) for k in local_before)
            pkg = objects(fs, f"{BACKUPS[5:]}/{day.isoformat()}")
            assert "SUCCESS.marker" in pkg and "manifest.json" in pkg

            # the day is lost: every object of the lake and every dated local file
            fs.rm(LAKE[5:], recursive=True)
            for rel in local_before:
                if not rel.startswith(("state/", "system/capture/")):
                    (local / rel).unlink()
            assert not objects(fs, "observer-lake")
            res = restore_job.execute_in_process(
                run_config={"ops": {"restore_day": {"config": {"day": day.isoformat()}}}}, instance=inst
            )
            assert res.success
    finally:
        for c in captures:
            c.kill()
        sim.stop()
    lake_after = objects(fs, LAKE[5:])
    assert set(lake_after) == set(lake_before)
    for k, b in lake_before.items():  # byte for byte
        assert hashlib.sha256(lake_after[k]).digest() == hashlib.sha256(b).digest(), k
    # the local directory's share (the journal, the event log): each file as packaged, byte for byte (the event log
    # grows after its packaging: the backup and the restore each record themselves in it)
    manifest = json.loads(pkg["manifest.json"])
    local_after = local_files(local)
    packaged = [e for e in manifest["files"] if layout.on_local_dir(e["path"])]
    assert {e["path"] for e in packaged} == {r for r in local_before if file_day(tuple(r.split("/")))}
    assert any(e["path"].startswith("raw/track_b/") for e in packaged)
    for e in packaged:
        got = local_after[e["path"]]
        assert hashlib.sha256(got[: e["size"]]).hexdigest() == e["sha256"], e["path"]
        if not e["path"].startswith("system/events/"):
            assert got == local_before[e["path"]], e["path"]
    # the restored lake reads as the lake did
    assert lake.read_table(layout.universe_path(UPath(LAKE), day)).num_rows > 20


def _min_master() -> dict:
    return {"ops": {"universe": {"config": {"min_master_codes": 50}}}}


class HoldingRelay:
    """A TCP relay in front of the S3 server that forwards requests until ``hold_after`` bytes have gone upstream,
    then forwards nothing more: an upload caught mid-body, for as long as the test wants."""

    def __init__(self, upstream: int, hold_after: int) -> None:
        self.upstream, self.hold_after, self.sent = upstream, hold_after, 0
        self.holding = threading.Event()
        self.conns: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            self.conns += [c, u]
            threading.Thread(target=self._pump, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream:
                    room = self.hold_after - self.sent
                    if room <= 0:
                        self.holding.set()
                        while True:  # held: nothing more reaches the server
                            time.sleep(0.05)
                            src.getpeername()
                    data = data[:room] if len(data) > room else data
                    self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


WRITER = """
import sys
import numpy as np, pyarrow as pa
from upath import UPath
from observer_resources.storage import lake
t = pa.table({"x": np.random.default_rng(1).integers(0, 2**62, 1_500_000)})  # ~12 MB that does not compress
try:
    lake.write_table_atomic(UPath(sys.argv[1]), t)
except Exception as e:
    print(f"write failed: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(3)
"""


def test_the_server_killed_mid_upload_leaves_the_old_partition_whole_and_nothing_half_visible(s3, tmp_path):
    target = f"{LAKE}/track_a/date=2026-12-04/slot=T1000/snapshot.parquet"
    old = pa.table({"code": ["005930", "000660"], "price": [70000, 180000]})
    lake.write_table_atomic(UPath(target), old)
    fs = s3fs_at(s3.url)
    before = objects(fs, LAKE[5:])
    relay = HoldingRelay(s3.port, hold_after=4 << 20)  # the request line, headers and 4 MiB of the body
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}", "AWS_MAX_ATTEMPTS": "2"}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, target], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert relay.holding.wait(120), "the upload never reached the server"
        # the instant before the server dies, as any reader sees the store: the old partition, whole; no new or
        # temp object, not even a partial one
        during = objects(fs, LAKE[5:])
        assert during == before, sorted(set(during) ^ set(before))
        assert lake.read_table(UPath(target)).equals(old)
        s3.kill()
        relay.close()
        _, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
        relay.close()
    assert writer.returncode == 3 and "write failed" in err, err  # a clear error, not a silent loss
    assert not list(tmp_path.rglob("*.tmp"))
    # the server back (moto starts empty): the same write lands whole, and nothing of the killed one is there
    again = S3Server(s3.port)
    try:
        fs = s3fs_at(again.url)
        fs.mkdir("observer-lake")
        env["AWS_ENDPOINT_URL"] = again.url
        done = subprocess.run([sys.executable, "-c", WRITER, target], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert list(objects(fs, LAKE[5:])) == ["track_a/date=2026-12-04/slot=T1000/snapshot.parquet"]
        got = pa.BufferReader(fs.cat_file(target[5:]))
        import pyarrow.parquet as pq

        assert pq.read_table(got).num_rows == 1_500_000
    finally:
        again.kill()
