"""The lake on an fsspec URL: steps on different hosts share a lake, not a disk.

The assets run against the local exchange with OBSERVER_DATA_DIR=memory://… (an fsspec filesystem that is not a
local path, so every path operation must go through fsspec) and OBSERVER_LOCAL_DIR for what needs appends and fsync.
"""

from __future__ import annotations

import os
import uuid
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pytest
from upath import UPath

from observer_assets.orchestration.partitions import calendar, day_key
from observer_resources.calendar import KST
from observer_resources.storage import lake


def test_lake_paths_from_the_environment(tmp_path):
    assert lake.data_dir({"OBSERVER_DATA_DIR": str(tmp_path)}) == tmp_path.resolve()
    assert lake.data_dir({"OBSERVER_DATA_DIR": f"file://{tmp_path}"}) == tmp_path.resolve()
    url = lake.data_dir({"OBSERVER_DATA_DIR": "memory://x/lake"})
    assert isinstance(url, UPath) and not lake.is_local(url)
    assert lake.local_dir({"OBSERVER_DATA_DIR": str(tmp_path)}) == tmp_path.resolve()
    assert (
        lake.local_dir({"OBSERVER_DATA_DIR": "memory://x", "OBSERVER_LOCAL_DIR": str(tmp_path)}) == tmp_path.resolve()
    )
    with pytest.raises(lake.LakeConfigError, match="OBSERVER_LOCAL_DIR"):
        lake.local_dir({"OBSERVER_DATA_DIR": "s3://bucket/lake"})
    with pytest.raises(lake.LakeConfigError, match="must be a local directory"):
        lake.local_dir({"OBSERVER_LOCAL_DIR": "s3://bucket/x"})
    with pytest.raises(lake.LakeConfigError, match="only for a lake on a URL"):  # one tree, one backup
        lake.local_dir({"OBSERVER_DATA_DIR": str(tmp_path), "OBSERVER_LOCAL_DIR": str(tmp_path / "elsewhere")})


def test_atomic_writes_on_a_url_leave_no_temp_objects():
    import pyarrow as pa

    root = UPath(f"memory://observer-{uuid.uuid4().hex[:8]}")
    target = root / "track_a" / "date=2026-03-03" / "slot=0900" / "snapshot.parquet"
    lake.write_table_atomic(target, pa.table({"code": ["005930"], "price": [70000]}))
    lake.write_table_atomic(target, pa.table({"code": ["005930", "000660"], "price": [70000, 1]}))  # rewrite
    assert lake.read_table(target).num_rows == 2 and lake.read_schema(target).names == ["code", "price"]
    assert [p.name for p in target.parent.iterdir()] == ["snapshot.parquet"]


def test_the_daily_assets_run_on_a_url_lake(tmp_path, monkeypatch):
    from local_exchange.accounts import demo_credentials
    from local_exchange.server import run_sim_process
    from observer_assets.gaps.assets import gap_report
    from observer_assets.monitoring.events import system_events
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.universe.assets import universe
    from observer_resources.events import events_path
    from observer_resources.resources import KisResource
    from observer_resources.storage.layout import events_summary_path, report_path, slot_dir, universe_path

    url = f"memory://observer-lake-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OBSERVER_DATA_DIR", url)
    monkeypatch.setenv("OBSERVER_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "20")
    sim = run_sim_process("--mode", "real", "--clock", "open", "--seed", "3", "--listings", "120")
    try:
        key, secret = demo_credentials(78)
        kis = KisResource(app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url)
        now = datetime.now(KST)
        day = now.date()
        slot = calendar().slot_at(now)
        with dg.instance_for_test() as inst:
            inst.add_dynamic_partitions("trading_day", [day_key(day)])
            assert dg.materialize(
                [universe],
                partition_key=day_key(day),
                instance=inst,
                resources={"kis": kis},
                run_config={"ops": {"universe": {"config": {"min_master_codes": 50}}}},
            ).success
            skey = slot.strftime("%Y-%m-%dT%H%M")
            inst.add_dynamic_partitions("track_a_slot", [skey])
            res = dg.materialize(
                [track_a_snapshot, universe],
                selection=[track_a_snapshot],
                partition_key=skey,
                instance=inst,
                resources={"kis": kis},
            )
            assert res.success
            # a second run of the slot takes the archive path (raw answers re-read from the URL)
            assert dg.materialize(
                [track_a_snapshot, universe],
                selection=[track_a_snapshot],
                partition_key=skey,
                instance=inst,
                resources={"kis": kis},
            ).success
            assert dg.materialize(
                [gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst
            ).success
            assert dg.materialize([system_events], partition_key=day_key(day), instance=inst).success
    finally:
        sim.stop()
    root = UPath(url)
    n_uni = lake.read_table(universe_path(root, day)).num_rows
    snap = lake.read_table(slot_dir(root, slot) / "snapshot.parquet")
    assert n_uni > 20 and snap.num_rows == n_uni
    assert lake.read_table(report_path(root, day)).num_rows >= 0
    assert events_summary_path(root, day).exists()
    # what needs appends stayed local: the event log, the token cache; nothing of the lake leaked to local disk
    local = {str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert events_path(tmp_path / "local", day).relative_to(tmp_path / "local").as_posix() in local
    assert not [p for p in local if p.startswith(("track_a", "universe", "gaps"))], local
    assert not os.path.exists("memory:")


def test_a_url_lake_is_backed_up_restored_and_retained_with_its_local_directory(tmp_path):
    """Backup, restore and retention see one tree: the lake's objects on the URL and the journal and events on the
    local directory; a restore puts each back where it lives, and retention deletes objects only once packaged."""
    import pyarrow as pa

    from observer_assets.backup import backup, retention
    from observer_assets.backup import restore as restoring
    from observer_assets.backup.daysets import Tree, scan
    from observer_assets.backup.settings import RetentionPolicy
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.events import EventLog
    from observer_resources.storage import layout

    cal = MarketCalendar("krx")
    day, today = date(2026, 3, 4), date(2026, 3, 20)  # a Wednesday, and a day long after it
    remote = UPath(f"memory://observer-lake-{uuid.uuid4().hex[:8]}")
    local = tmp_path / "local"
    tree = Tree(local, remote)
    uni = layout.universe_path(remote, day)
    lake.write_table_atomic(uni, pa.table({"code": ["005930"], "prev_close": [70000]}))
    lake.write_json_atomic(layout.verdict_path(remote, day), {"anomaly_day": False})
    seg = layout.segment_path(local, "k1", day, 9)
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b'{"kind":"frame"}\n')
    (local / "universe").mkdir()  # a stray local copy of a lake dataset is not the lake's: never packaged
    files = {f.rel for f in scan(tree)}
    key_of = lambda p: p.path.split(remote.path.rstrip("/") + "/", 1)[1]  # noqa: E731
    assert files == {key_of(uni), key_of(layout.verdict_path(remote, day)), seg.relative_to(local).as_posix()}
    dest = UPath(f"memory://observer-backups-{uuid.uuid4().hex[:8]}")
    res = backup.run(tree, dest, cal, day, events=EventLog(local))
    assert res.action == "written" and res.files == 3
    before = {rel: (tree / rel).read_bytes() for rel in files}

    for rel in files:  # the day lost, both halves
        (tree / rel).unlink()
    out = restoring.restore(dest, day, tree)
    assert out["restored"] == 3
    assert {rel: (tree / rel).read_bytes() for rel in files} == before
    assert isinstance(tree / seg.relative_to(local).as_posix(), Path) and seg.is_file()

    done = retention.apply(tree, dest, cal, today, RetentionPolicy(), events=EventLog(local))
    # the day's files go (objects of the lake too); its universe is kept longer (OBSERVER_RETENTION_UNIVERSE_DAYS)
    assert set(done.deleted["2026-03-04"]["paths"]) == files - {key_of(uni)}
    assert not seg.exists() and not layout.verdict_path(remote, day).exists() and uni.exists()
