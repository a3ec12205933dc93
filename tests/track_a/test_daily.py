"""Track A's later columns, the upgrade of older tables, and the daily table: built by its sensor on a real instance
after the session, rebuilt after a backfill re-materializes a slot, from real slot files in a real lake."""

import json
from datetime import date, datetime, timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from observer_assets.definitions import defs
from observer_assets.orchestration.partitions import calendar, slot_key
from observer_assets.track_a import daily, restore, snapshot
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.kis.models import MinuteBar
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_path, slot_dir, slot_label

DAY = date(2026, 11, 26)  # a Thursday, a normal KRX session (09:00..15:30)
CODES = ["000020", "000040", "005930"]
KEY_ID = "key-0123456789ab"


def multprice_fields(code: str, price: int, **over: str) -> dict[str, str]:
    """One multi-quote output row as KIS sends it (every value a string)."""
    prev = 10_000
    f = {
        "kospi_kosdaq_cls_name": "코스피",
        "mrkt_trtm_cls_name": "장중",
        "hour_cls_code": "0",
        "inter_shrn_iscd": code,
        "inter_kor_isnm": f"종목{code}",
        "inter2_prpr": str(price),
        "inter2_prdy_vrss": str(price - prev),
        "prdy_vrss_sign": "2" if price > prev else "5" if price < prev else "3",
        "prdy_ctrt": f"{100 * (price - prev) / prev:.2f}",
        "acml_vol": "120000",
        "inter2_oprc": "10000",
        "inter2_hgpr": str(max(price, prev)),
        "inter2_lwpr": str(min(price, prev)),
        "inter2_llam": "7000",
        "inter2_mxpr": "13000",
        "inter2_askp": str(price + 10),
        "inter2_bidp": str(price),
        "seln_rsqn": "300",
        "shnu_rsqn": "500",
        "total_askp_rsqn": "45000",
        "total_bidp_rsqn": "52000",
        "acml_tr_pbmn": str(120000 * price),
        "inter2_prdy_clpr": str(prev),
        "oprc_vrss_hgpr_rate": "0.00",
        "intr_antc_cntg_vrss": "0",
        "intr_antc_cntg_vrss_sign": "3",
        "intr_antc_cntg_prdy_ctrt": "0.00",
        "intr_antc_vol": "0",
        "inter2_sdpr": str(prev),
    }
    f.update(over)
    return f


def slot_table(t: datetime, codes=CODES, late_s: float = 2.5) -> pa.Table:
    """A slot's table as the live run derives it: raw archive lines through table_from_raw."""
    lines = [
        snapshot.raw_line(
            "FHKST11300006",
            c,
            multprice_fields(c, 10_000 + 10 * i + t.minute, acml_vol=str(1_000 * (60 * t.hour + t.minute) + i)),
            t + timedelta(seconds=late_s + i / 1000),
            KEY_ID,
        )
        for i, c in enumerate(codes)
    ]
    return snapshot.table_from_raw(lines, t, {})


def kst(*a) -> datetime:
    return datetime(*a, tzinfo=KST)


# --- the columns ---------------------------------------------------------------------------------------------------


def test_the_multi_quote_row_keeps_book_totals_phase_sign_expected_cross_key_and_lateness():
    t = kst(2026, 11, 26, 9, 0)
    pre_open = multprice_fields(
        "005930",
        10_000,
        mrkt_trtm_cls_name="장개시전",
        hour_cls_code="B",
        inter2_prdy_vrss="0",
        intr_antc_cntg_vrss="150",
        intr_antc_cntg_vrss_sign="5",
        intr_antc_vol="8123",
    )
    limit_up = multprice_fields("000020", 13_000, prdy_vrss_sign="1")
    table = snapshot.table_from_raw(
        [
            snapshot.raw_line("FHKST11300006", "005930", pre_open, t + timedelta(seconds=1.25), KEY_ID),
            snapshot.raw_line("FHKST11300006", "000020", limit_up, t + timedelta(seconds=3), None),
        ],
        t,
        {},
    )
    assert table.schema.equals(snapshot.SNAPSHOT_SCHEMA)
    a, b = table.to_pylist()  # sorted by code: 000020, 005930
    assert (b["total_ask_size"], b["total_bid_size"]) == (45_000, 52_000)
    assert (b["session_phase"], b["hour_cls_code"]) == ("장개시전", "B")
    assert (b["expected_price"], b["expected_volume"]) == (9_850, 8_123)  # 10,000 - 150 (sign 5: down)
    assert (b["change_sign"], a["change_sign"]) == (3, 1)  # flat; limit up
    assert (a["expected_price"], a["expected_volume"]) == (None, None)  # volume 0: no expected cross
    assert (b["key_id"], a["key_id"]) == (KEY_ID, None)  # an archive line without a key gives null
    assert (b["late_s"], a["late_s"]) == (1.25, 3.0)
    assert b["halted"] is None and b["vi_code"] is None and b["status_code"] is None  # not in this TR

    # the direction comes from the sign code whatever the difference's own sign; the reference is price - change
    up = snapshot.row_from_multprice(
        multprice_fields("1", 10_200, intr_antc_cntg_vrss="-300", intr_antc_cntg_vrss_sign="2", intr_antc_vol="5")
    )
    assert up["expected_price"] == 10_300
    ex_rights = snapshot.row_from_multprice(  # base price 9,000 after a corporate action; previous close 10,000
        multprice_fields("1", 9_100, inter2_prdy_vrss="100", intr_antc_cntg_vrss="50", intr_antc_cntg_vrss_sign="2")
        | {"intr_antc_vol": "7"}
    )
    assert ex_rights["expected_price"] == 9_050
    assert snapshot.row_from_multprice(multprice_fields("1", 10_000, prdy_vrss_sign="9"))["change_sign"] is None


def test_upgrade_brings_an_older_table_to_the_current_schema_and_is_idempotent(tmp_path):
    t = kst(2026, 11, 26, 10, 0)
    current = slot_table(t)
    path = tmp_path / "old.parquet"
    lake.write_table_atomic(path, current.drop_columns(list(snapshot.ADDED_COLUMNS)))  # as written before them
    old = pq.read_table(path)
    assert "late_s" not in old.column_names and "key_id" not in old.column_names

    up = snapshot.upgrade_snapshot_table(old)
    assert up.schema.equals(snapshot.SNAPSHOT_SCHEMA)
    assert up.drop_columns(list(snapshot.ADDED_COLUMNS)).equals(old)  # existing columns untouched
    assert up["late_s"].to_pylist() == current["late_s"].to_pylist() == [2.5, 2.501, 2.502]  # computed
    for name in snapshot.ADDED_COLUMNS:
        if name == "venue":  # every row written before was a KRX quote
            assert up[name].to_pylist() == ["KRX"] * up.num_rows
        elif name != "late_s":
            assert up[name].null_count == up.num_rows, name
    assert snapshot.upgrade_snapshot_table(up).equals(up)  # idempotent
    assert snapshot.upgrade_snapshot_table(current).equals(current)  # a current table is left as it is
    with pytest.raises(ValueError, match="unknown columns"):
        snapshot.upgrade_snapshot_table(current.append_column("hour", pa.array(["T09"] * 3)))


# --- the daily table, through its sensor ----------------------------------------------------------------------------


@pytest.mark.env(OBSERVER_CALENDAR="krx")
def test_the_daily_table_is_built_after_the_session_and_rebuilt_when_a_slot_is_backfilled(env, monkeypatch):
    clock_file = env / "clock.json"
    monkeypatch.setenv("OBSERVER_CLOCK_FILE", str(clock_file))
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("track_a_daily_sensor")
    job = repo.get_job("track_a_daily_job")
    root = lake.data_dir()
    slots = calendar().track_a_slots(DAY)
    first, second, last = slots[0], slots[1], slots[-1]
    cursor: list[str | None] = [None]

    with dg.instance_for_test() as inst:

        def materialized(t: datetime, table: pa.Table) -> None:
            """The slot's file and its materialization, as a slot run (live, backfill or restore) leaves them."""
            lake.write_table_atomic(slot_dir(root, t) / "snapshot.parquet", table)
            inst.add_dynamic_partitions("track_a_slot", [slot_key(t)])
            inst.report_runless_asset_event(dg.AssetMaterialization("track_a_snapshot", partition=slot_key(t)))

        def tick(at: datetime):
            clock.write_sim(clock_file, at)
            res = sensor.evaluate_tick(
                dg.build_sensor_context(instance_ref=inst.get_ref(), cursor=cursor[0], repository_def=repo)
            )
            cursor[0] = res.cursor
            for req in res.dynamic_partitions_requests or []:  # what the daemon does with them
                inst.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            return res

        def run(req: dg.RunRequest, **kw) -> dg.ExecuteInProcessResult:
            return job.execute_in_process(instance=inst, partition_key=req.partition_key, tags=req.tags, **kw)

        # the 09:00 file was written before the later columns; the day is not over while slots still come
        materialized(first, slot_table(first).drop_columns(list(snapshot.ADDED_COLUMNS)))
        materialized(second, slot_table(second))
        assert "waiting: 2026-11-26" in tick(kst(2026, 11, 26, 12, 0)).skip_message
        materialized(last, slot_table(last, late_s=30.0))
        # a day materialized once whose files are gone since (retention): nothing to build, no run that would fail
        inst.add_dynamic_partitions("track_a_slot", ["2026-11-25T1000"])
        inst.report_runless_asset_event(dg.AssetMaterialization("track_a_snapshot", partition="2026-11-25T1000"))
        assert not tick(kst(2026, 11, 26, 15, 35)).run_requests  # 15:30's live window is still open

        (req,) = tick(kst(2026, 11, 26, 15, 41)).run_requests
        assert req.partition_key == "2026-11-26" and req.run_key.startswith("track_a_daily:2026-11-26:")
        assert inst.has_dynamic_partition("trading_day", "2026-11-26")
        res = run(req)
        assert res.success
        md = res.asset_materializations_for_node("track_a_daily")[0].metadata
        path = daily_path(root, DAY)
        table = pq.read_table(path)
        assert table.schema.equals(daily.DAILY_SCHEMA) and table.num_rows == 9 == md["dagster/row_count"].value
        assert (md["slots"].value, md["slots_expected"].value, len(md["slots_missing"].value)) == (3, 40, 37)
        rows = table.select(["code", "slot_ts", "slot"]).to_pylist()
        assert rows == sorted(rows, key=lambda r: (r["code"], r["slot_ts"]))
        assert (
            [r["slot"] for r in rows[:3]] == ["T0900", "T0910", "T1530"] == [slot_label(t) for t in slots[:2] + [last]]
        )
        # what traded since the previous slot: null for the first slot and where the slot before is missing (15:20)
        iv = {(r["code"], r["slot"]): r["interval_volume"] for r in table.to_pylist()}
        assert [iv[("005930", s)] for s in ("T0900", "T0910", "T1530")] == [None, 10_000, None]
        older = table.filter(pc.equal(table["slot"], "T0900"))
        assert older["key_id"].null_count == 3 and older["late_s"].to_pylist() == [2.5, 2.501, 2.502]
        meta = pq.ParquetFile(path).metadata
        assert meta.num_row_groups == 1 and [c.column_index for c in meta.row_group(0).sorting_columns] == [2, 0]
        # plain pyarrow and pandas read it as a hive dataset: date from the path, slot from the file, no clash
        one = ds.dataset(root / "track_a_daily", partitioning="hive").to_table(filter=ds.field("code") == "005930")
        assert one.num_rows == 3 and set(one["date"].to_pylist()) == {DAY.isoformat()}
        assert len(pd.read_parquet(root / "track_a_daily", filters=[("slot", "==", "T1530")])) == 3

        nothing = tick(kst(2026, 11, 26, 16, 0))
        assert not nothing.run_requests and "waiting: none" in nothing.skip_message  # nothing new: nothing asked

        # a backfill restores a symbol the 09:10 slot lacked; while a daily run of the day is in flight it waits
        bar = MinuteBar(
            at=second - timedelta(minutes=1),
            close=9_990,
            open=9_990,
            high=9_990,
            low=9_990,
            volume=40,
            acml_value=400_000,
            raw={},
        )
        restored = restore.rows_table(
            [
                restore.restored_row(
                    "000030",
                    second,
                    [bar],
                    acml_vol=40,
                    name=None,
                    prev_close=10_000,
                    endpoint=restore.ENDPOINT_PAST,
                    fetched_at=kst(2026, 11, 26, 17, 0),
                )
            ]
        )
        busy = inst.create_run_for_job(
            job, tags={"dagster/partition": "2026-11-26"}, status=dg.DagsterRunStatus.STARTED
        )
        materialized(second, restore.merge(slot_table(second), restored))
        assert not tick(kst(2026, 11, 26, 17, 5)).run_requests
        inst.report_run_failed(busy)
        (again,) = tick(kst(2026, 11, 26, 17, 6)).run_requests
        assert again.run_key != req.run_key and again.partition_key == "2026-11-26"
        assert run(again).success
        rebuilt = pq.read_table(path)
        row = rebuilt.filter(pc.equal(rebuilt["code"], "000030")).to_pylist()
        assert len(row) == 1 and row[0]["slot"] == "T0910" and row[0]["source"] == "restored"
        assert row[0]["late_s"] == 7 * 3600 + 50 * 60  # fetched at 17:00 for the 09:10 slot
        assert row[0]["change_sign"] is None and row[0]["key_id"] is None  # not in minute bars; no key asked here
        assert row[0]["interval_volume"] is None  # no 09:00 row for it

        # idempotent: the same slot files give the same bytes
        before = path.read_bytes()
        assert run(again).success and path.read_bytes() == before

        # a slot file gone (retention, a deletion): the rebuild refuses instead of dropping its rows
        (slot_dir(root, last) / "snapshot.parquet").unlink()
        failed = run(again, raise_on_error=False)
        assert not failed.success and path.read_bytes() == before
        assert "T1530" in json.dumps(str(failed.all_events))


def test_the_capture_reads_the_slot_files_by_their_spelling(tmp_path):
    """Track B's triggers read today's slot files (``slot=T0910``); a directory not spelt as a slot is not one."""
    from observer_assets.track_b.capture.snapshots import TrackASnapshots

    for t in (kst(2026, 11, 26, 9, 0), kst(2026, 11, 26, 9, 10)):
        lake.write_table_atomic(slot_dir(tmp_path, t) / "snapshot.parquet", slot_table(t))
    stray = slot_dir(tmp_path, kst(2026, 11, 26, 9, 20)).with_name("slot=0920") / "snapshot.parquet"
    lake.write_table_atomic(stray, slot_table(kst(2026, 11, 26, 9, 20)))
    snaps = TrackASnapshots(tmp_path, DAY).poll()
    assert [s.ts for s in snaps] == [kst(2026, 11, 26, 9, 0), kst(2026, 11, 26, 9, 10)]
    assert sorted(snaps[1].rows) == CODES
