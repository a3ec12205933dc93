"""The automatic backfill path end to end: a day with injected Track A faults on disk, the real gap report asset,
the backfill sensor's ticks, the runs it asks for (materialized with their tags against the local exchange), and
the re-computed report showing the gaps restored with provenance — the unrecoverable one stays open."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import build_universe, kis_for, run_status_context

from observer_assets.gaps import sensors
from observer_assets.gaps.assets import gap_report
from observer_assets.gaps.checks import TRACK_A_CHECKS
from observer_assets.monitoring.freshness import track_a_current_slot_fresh
from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.schedules import track_a_job
from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import report_path, slot_dir, universe_path

GHOST = "999990"  # a universe member the exchange does not know: KIS cannot restore it


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "50"}  # the trimmed universe (tests/support.py) is smaller


def live_snapshot(codes: list[str], slot: datetime) -> pa.Table:
    """A live slot table as the asset writes it (values are irrelevant to gap detection: presence and source)."""
    n = len(codes)
    cols = {f.name: pa.nulls(n, f.type) for f in SNAPSHOT_SCHEMA}
    cols.update(
        slot_ts=pa.array([slot] * n, SNAPSHOT_SCHEMA.field("slot_ts").type),
        code=pa.array(sorted(codes)),
        price=pa.array([1000] * n, pa.int64()),
        volume=pa.array([1] * n, pa.int64()),
        source=pa.array(["live"] * n),
        tr_id=pa.array(["FHKST11300006"] * n),
        fetched_at=pa.array([slot + timedelta(seconds=4)] * n, SNAPSHOT_SCHEMA.field("fetched_at").type),
    )
    return pa.table(cols, schema=SNAPSHOT_SCHEMA)


def report(inst, day, as_of: datetime) -> pa.Table:
    res = dg.materialize(
        [gap_report, universe.to_source_asset()],
        partition_key=day_key(day),
        instance=inst,
        run_config={"ops": {"gap_report": {"config": {"as_of": as_of.isoformat()}}}},
    )
    assert res.success
    return pq.read_table(report_path(lake.data_dir(), day))


def tick(inst, cursor, kis):
    defs = dg.Definitions(
        assets=[track_a_snapshot, universe],
        jobs=[track_a_job],
        sensors=[sensors.gap_backfill_sensor],
        asset_checks=[*TRACK_A_CHECKS, track_a_current_slot_fresh],
        resources={"kis": kis},
    )
    ctx = dg.build_sensor_context(instance_ref=inst.get_ref(), cursor=cursor, definitions=defs)
    return sensors.gap_backfill_sensor.evaluate_tick(ctx)


def test_sensor_backfills_restorable_track_a_gaps_and_the_report_closes_them(env, small_sim):
    now = datetime.now(KST)
    today = now.date()
    slots = [s for s in calendar().track_a_slots(today) if s <= now]
    if len(slots) < 8:
        pytest.skip("too early in the (open-calendar) day for a past slot history")
    kis = kis_for(small_sim, env, 11)
    root = lake.data_dir()
    with dg.instance_for_test() as inst:
        codes = build_universe(inst, kis, today)
        uni = pq.read_table(universe_path(root, today))
        ghost = {f.name: [None] for f in uni.schema}
        ghost.update(code=[GHOST], name=["GHOST"])
        lake.write_table_atomic(universe_path(root, today), pa.concat_tables([uni, pa.table(ghost, schema=uni.schema)]))
        members = codes + [GHOST]

        missing_slot, partial_slot, ghost_slot = slots[-5], slots[-7], slots[-4]
        for s in slots:
            if s == missing_slot:
                continue
            have = members
            if s == partial_slot:
                have = members[:-6]  # 5 real symbols and the ghost missing
            elif s == ghost_slot:
                have = codes  # only the ghost missing: nothing KIS can give
            lake.write_table_atomic(slot_dir(root, s) / "snapshot.parquet", live_snapshot(have, s))

        rep = report(inst, today, now).to_pylist()
        open_a = {
            (r["kind"], r["symbol"], slot_key(r["slot_ts"]))
            for r in rep
            if r["kind"].startswith("track_a") and r["status"] == "open"
        }
        assert open_a == (
            {("track_a_missing_slot", None, slot_key(missing_slot))}
            | {("track_a_missing_symbol", c, slot_key(partial_slot)) for c in members[-6:]}
            | {("track_a_missing_symbol", GHOST, slot_key(ghost_slot))}
        )

        # Tick 1: one request per slot with restorable open gaps, with the tags; the new partitions are added.
        r1 = tick(inst, None, kis)
        want = sorted(slot_key(s) for s in (partial_slot, missing_slot, ghost_slot))
        assert sorted(r.partition_key for r in r1.run_requests) == want
        for r in r1.run_requests:
            assert r.tags["observer/kind"] == "backfill" and r.tags["observer/kis"] == "rest"
            assert r.run_key.startswith(f"backfill:{r.partition_key}:")
        # Tick 2 with the cursor: nothing new. A fresh cursor asks again with the very same run keys (the daemon
        # de-duplicates those), so a lost cursor cannot double the work.
        r2 = tick(inst, r1.cursor, kis)
        assert r2.run_requests == [] and r2.skip_message
        assert sorted(r.run_key for r in tick(inst, None, kis).run_requests) == sorted(
            r.run_key for r in r1.run_requests
        )

        # Execute the requested runs as the daemon would: the same partition and tags.
        backfill_runs = []
        for r in r1.run_requests:
            inst.add_dynamic_partitions("track_a_slot", [r.partition_key])
            res = dg.materialize(
                [track_a_snapshot, universe],
                selection=[track_a_snapshot],
                instance=inst,
                partition_key=r.partition_key,
                resources={"kis": kis},
                tags=r.tags,
            )
            assert res.success
            assert inst.get_run_by_id(res.run_id).tags["observer/kind"] == "backfill"
            backfill_runs.append(inst.get_run_by_id(res.run_id))

        # Each successful backfill asks, through the after-repair sensor, for a fresh report of its day; the
        # report is recomputed by that request (as the daemon would run it), not by the test.
        asked = {}
        for run in backfill_runs:
            ctx = run_status_context(inst, run, "gap_report_after_repair")
            for req in sensors.gap_report_after_repair(ctx):
                assert req.tags["observer/gap_report"] == "after_repair"
                asked[req.run_key] = req
        assert {r.partition_key for r in asked.values()} == {day_key(today)} and len(asked) == len(backfill_runs)
        req = next(iter(asked.values()))
        assert dg.materialize(
            [gap_report, universe.to_source_asset()],
            partition_key=req.partition_key,
            instance=inst,
            tags=req.tags,
            run_config={"ops": {"gap_report": {"config": {"as_of": now.isoformat()}}}},
        ).success
        # a live slot's run is no repair: it asks for nothing
        inst.add_dynamic_partitions("track_a_slot", [slot_key(slots[-1])])
        live = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            instance=inst,
            partition_key=slot_key(slots[-1]),
            resources={"kis": kis},
        )
        assert sensors.repaired_days(inst.get_run_by_id(live.run_id), [("track_a_snapshot", slot_key(slots[-1]))]) == []

        full = pq.read_table(slot_dir(root, missing_slot) / "snapshot.parquet").to_pylist()
        assert {r["code"] for r in full} == set(codes) and {r["source"] for r in full} == {"restored"}

        # The re-computed report: restored with provenance; the ghost stays open (unrecoverable by KIS).
        rep2 = pq.read_table(report_path(lake.data_dir(), today)).to_pylist()
        a2 = {(r["kind"], r["symbol"], slot_key(r["slot_ts"])): r for r in rep2 if r["kind"].startswith("track_a")}
        ms = a2[("track_a_missing_slot", None, slot_key(missing_slot))]
        assert ms["status"] == "restored" and ms["restored_from"] == "inquire-time-itemchartprice"
        for c in members[-6:-1]:
            r = a2[("track_a_missing_symbol", c, slot_key(partial_slot))]
            assert (r["status"], r["restored_from"]) == ("restored", "inquire-time-itemchartprice")
        assert a2[("track_a_missing_symbol", GHOST, slot_key(partial_slot))]["status"] == "open"
        assert a2[("track_a_missing_symbol", GHOST, slot_key(ghost_slot))]["status"] == "open"

        # Next tick: the report changed; the ghost-only slot has the same open gaps -> the same run key (no new
        # work); the partial slot's open set shrank to the ghost -> one retry, after which it is stable too.
        r3 = tick(inst, r2.cursor, kis)
        keys1 = {r.run_key for r in r1.run_requests}
        new = [r for r in r3.run_requests if r.run_key not in keys1]
        assert [r.partition_key for r in new] == [slot_key(partial_slot)]
        assert {r.partition_key for r in r3.run_requests} == {slot_key(partial_slot), slot_key(ghost_slot)}
        assert json.loads(r3.cursor).keys() == {today.isoformat()}


def test_restorable_slots_rules():
    t = datetime(2026, 3, 3, 10, 20, tzinfo=KST)
    rows = [
        {"kind": "track_a_missing_slot", "symbol": None, "slot_ts": t, "restorable": True, "status": "open"},
        {
            "kind": "track_a_missing_symbol",
            "symbol": "000020",
            "slot_ts": t + timedelta(minutes=10),
            "restorable": True,
            "status": "restored",
        },
        {
            "kind": "track_a_missing_symbol",
            "symbol": "000030",
            "slot_ts": t + timedelta(minutes=20),
            "restorable": False,
            "status": "open",
        },
        {
            "kind": "track_a_late",
            "symbol": None,
            "slot_ts": t + timedelta(minutes=30),
            "restorable": False,
            "status": "info",
        },
        {"kind": "track_b_loss", "symbol": "000040", "slot_ts": None, "restorable": True, "status": "open"},
    ]
    got = sensors.restorable_slots(pa.Table.from_pylist(rows))
    assert list(got) == ["2026-03-03T1020"] and len(got["2026-03-03T1020"]) == 12
    assert sensors.restorable_slots(pa.Table.from_pylist(rows)) == got  # deterministic fingerprint


# --- the UI path: launchPartitionBackfill over GraphQL ---------------------------------------------------------------
def test_a_slot_inside_its_live_window_waits_for_the_next_tick(env):
    """A report row for a slot younger than 10 minutes is not backfilled yet (its live run may still be collecting);
    the report is re-read on the next tick instead of being marked seen."""
    now = datetime.now(KST)
    cal = calendar()
    cur = cal.slot_at(now)
    old = cur - timedelta(minutes=30)
    if old.date() != now.date():
        pytest.skip("too close to midnight")
    rows = [
        {"kind": "track_a_missing_slot", "symbol": None, "slot_ts": t, "restorable": True, "status": "open"}
        for t in (old, cur)
    ]
    path = report_path(lake.data_dir(), now.date())
    lake.write_table_atomic(path, pa.Table.from_pylist(rows))
    with dg.instance_for_test() as inst:
        kis = kis_for(type("S", (), {"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9"})(), env, 30)
        r1 = tick(inst, None, kis)
        assert [r.partition_key for r in r1.run_requests] == [slot_key(old)]
        assert json.loads(r1.cursor) == {}  # not marked seen: the young slot is still to come
        r2 = tick(inst, r1.cursor, kis)
        assert [r.run_key for r in r2.run_requests] == [r1.run_requests[0].run_key]  # same key: the daemon dedups
