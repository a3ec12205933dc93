"""Track B's hourly assets on real journals: first a Journal fed with the local exchange's own H0STCNT0 records
(deterministic: a reconnect with a hole, a duplicated and a malformed frame, mitigation, an unsubscribe), then
the journal the real capture process wrote under the Dagster supervisor against the local exchange."""

import json
import os
import signal
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from local_exchange.market import Market
from observer_assets.orchestration.partitions import PartitionKeyError, hour_key, parse_hour_key
from observer_assets.track_b import journal as jr
from observer_assets.track_b.assets import journal_hours, previous_state, track_b_sampled, track_b_ticks
from observer_assets.track_b.capture_job import track_b_capture_job
from observer_assets.track_b.checks import track_b_losses_are_explained
from observer_assets.track_b.compaction import SAMPLE_SCHEMA, TICK_SCHEMA
from observer_assets.track_b.defs import defs as track_b_defs
from observer_resources.calendar import KST
from observer_resources.events import EventLog, gaps
from observer_resources.kis.config import configs_from_env
from observer_resources.resources import kis_pool_from_env
from observer_resources.storage.layout import heartbeat_path, manifest_path, sampled_path, state_path, ticks_path

DAY = date(2026, 3, 10)
KEY = "key-t1"


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(2026, 3, 10, h, m, tzinfo=KST) + timedelta(seconds=s)


def frame(recs: list[list[str]]) -> str:
    return f"0|H0STCNT0|{len(recs):03d}|" + "^".join(x for r in recs for x in r)


def ack(code: str, msg_cd: str, msg1: str) -> str:
    return (
        '{"header":{"tr_id":"H0STCNT0","tr_key":"'
        + code
        + '","encrypt":"N"},"body":{"rt_cd":"0","msg_cd":"'
        + msg_cd
        + '","msg1":"'
        + msg1
        + '","output":{"iv":"0123456789abcdef","key":"x"}}}'
    )


SUB = ("OPSP0000", "SUBSCRIBE SUCCESS")
UNSUB = ("OPSP0001", "UNSUBSCRIBE SUCCESS")
DROP = (at(10, 30), at(10, 30, 20))  # the session is down: nothing received
MITIGATION = (at(10, 40), at(11, 10))  # level 1 (1 Hz sampling)
B_UNSUB = at(11, 20)
SILENT_LOSS = at(11, 30)  # one trade of the busy code never arrives, on a live session


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Two codes of the exchange's model (one busy, one quiet) over 10:00-12:00, journaled by a real Journal."""
    data = tmp_path_factory.mktemp("lake")
    m = Market(seed=3, listings=400, clock_mode="krx")
    ranked = sorted(m.listings, key=lambda x: -x.activity)
    a_code, b_code = ranked[4].code, ranked[10].code
    recs: list[tuple[float, list[str]]] = []  # (exchange second of day, record)
    for code in (a_code, b_code):
        t = m.day_ticks(code, DAY)
        i0, i1 = (int(np.searchsorted(t.sec, s)) for s in (10 * 3600 + 2, 12 * 3600))  # after the 10:00:01 acks
        recs += [(int(t.sec[i]), m.trade_record(t, i)) for i in range(i0, i1)]
    recs.sort(key=lambda x: (x[0], x[1][0]))
    assert recs[0][0] >= 10 * 3600 + 2
    lines: list[tuple[datetime, str, int, int]] = []  # (rx, text, conn, mitigation level)
    sent: dict[int, set[tuple[str, int]]] = {10: set(), 11: set()}
    lost: dict[str, int] = {}
    lines += [(at(10, 0, 1), ack(c, *SUB), 1, 0) for c in (a_code, b_code)]
    lines += [(DROP[1] + timedelta(milliseconds=5 + i), ack(c, *SUB), 2, 0) for i, c in enumerate((a_code, b_code))]
    lines.append((B_UNSUB, ack(b_code, *UNSUB), 2, 0))
    # one frame per (second, code), up to 3 records, received 0.1 s after the second
    k = 0
    silent: list[list[str]] = []
    while k < len(recs):
        sec, r = recs[k]
        group = [r]
        while (
            k + len(group) < len(recs)
            and len(group) < 3
            and recs[k + len(group)][0] == sec
            and recs[k + len(group)][1][0] == r[0]
        ):
            group.append(recs[k + len(group)][1])
        k += len(group)
        rx = datetime.combine(DAY, datetime.min.time(), KST) + timedelta(seconds=sec + 0.1, microseconds=k)
        code = r[0]
        if code == a_code and rx >= SILENT_LOSS and not silent:  # lost on a live session, no marker
            silent.append(group[0])
            if len(group) == 1:
                continue
            group = group[1:]
        if DROP[0] <= rx < DROP[1] or (code == b_code and rx >= B_UNSUB):
            if DROP[0] <= rx < DROP[1]:
                lost[code] = lost.get(code, 0) + sum(int(x[12]) for x in group)
            continue
        conn = 1 if rx < DROP[0] else 2
        ml = 1 if MITIGATION[0] <= rx < MITIGATION[1] else 0
        lines.append((rx, frame(group), conn, ml))
        sent[rx.hour] |= {(x[0], int(x[13])) for x in group}
    dup = next(x for x in lines if x[0] >= at(10, 10) and x[1].startswith("0|"))
    lines.append((dup[0] + timedelta(milliseconds=1), dup[1], dup[2], dup[3]))  # KIS sends a frame twice
    bad = next(x for x in lines if x[0] >= at(10, 15) and x[1].startswith("0|"))
    lines.append((bad[0] + timedelta(milliseconds=1), bad[1][:60], 1, 0))  # a truncated frame
    lines.sort(key=lambda x: x[0])
    with jr.Journal(data, KEY, fsync_interval=0.01, clock=lambda: at(12, 0, 30)) as j:
        for rx, text, conn, ml in lines:
            j.append(
                rx, text, conn=conn, mitigation_level=ml, **({"bad": "short_record"} if text == bad[1][:60] else {})
            )
    # the capture's gap marker for the drop (same fields as EventLog.gap_open/gap_close, stamped on that day)
    ev = EventLog(data, source="track_b.capture")
    common = dict(
        gap_id="g1",
        symbol=None,
        gap_start_ts=DROP[0],
        scope="scalp",
        reason="ws_disconnect",
        severity="major",
        session_id=KEY,
        metadata={"key_id": KEY},
    )
    ev.emit("gap_marker", at=DROP[0], state="open", gap_end_ts=None, gap_seconds=None, **common)
    ev.emit("gap_marker", at=DROP[1], state="closed", gap_end_ts=DROP[1], gap_seconds=20.0, **common)
    conn1_last = max(rx for rx, t, c, _ in lines if c == 1)
    return {
        "data": data,
        "a": a_code,
        "b": b_code,
        "sent": sent,
        "lost": lost,
        "conn1_last": conn1_last,
        "silent": silent[0],
        "dup_records": int(dup[1].split("|")[2]),
    }


@pytest.fixture
def lake_env(scenario, monkeypatch):
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(scenario["data"]))
    return scenario["data"]


def materialize(inst, key, assets=(track_b_ticks, track_b_sampled)):
    inst.add_dynamic_partitions("track_b_hour", [key])
    res = dg.materialize([*assets, track_b_losses_are_explained], partition_key=key, instance=inst)
    out = {
        a.key.to_user_string(): res.asset_materializations_for_node(a.key.to_user_string())[0].metadata for a in assets
    }
    (check,) = res.get_asset_check_evaluations()
    out["check"] = check
    return out


def test_hours_compact_to_typed_parquet_with_the_metadata_in_any_order(scenario, lake_env):
    data, a, b = lake_env, scenario["a"], scenario["b"]
    assert [hour_key(h) for h in journal_hours(data)] == ["2026-03-10T10", "2026-03-10T11"]
    with dg.instance_for_test() as inst:
        # hour 11 first: its carry is recomputed from hour 10's journal, as an in-order run would have
        md11_first = materialize(inst, "2026-03-10T11")
        t11_first = pq.read_table(ticks_path(data, at(11)))
        assert md11_first["track_b_ticks"]["previous_hour"].value == "recomputed from the journal of 2026-03-10T10"
        md10 = materialize(inst, "2026-03-10T10")
        md11 = materialize(inst, "2026-03-10T11")
        assert md11["track_b_ticks"]["previous_hour"].value == "stored state of 2026-03-10T10"
        assert md10["track_b_ticks"]["previous_hour"].value.startswith("none")
        t10, t11 = pq.read_table(ticks_path(data, at(10))), pq.read_table(ticks_path(data, at(11)))
        assert t11.equals(t11_first)  # the order hours are compacted in changes nothing
        assert (
            md11["track_b_ticks"]["record_rate_per_slot"].value
            == md11_first["track_b_ticks"]["record_rate_per_slot"].value
        )

    m10, m11 = md10["track_b_ticks"], md11["track_b_ticks"]
    # typed, zone-aware, exactly the ticks that were received (each once), in the hour they were received
    for t in (t10, t11):
        assert t.schema == TICK_SCHEMA
        assert str(t.schema.field("receive_ts").type) == "timestamp[us, tz=Asia/Seoul]"
    for t, h in ((t10, 10), (t11, 11)):
        got = list(zip(t["code"].to_pylist(), t["acml_vol"].to_pylist()))
        assert len(got) == len(set(got)) and set(got) == scenario["sent"][h]
    assert m10["ticks"].value == t10.num_rows and m11["ticks"].value == t11.num_rows
    assert m10["symbols"].value == 2 and m11["symbols"].value == 2
    assert m10["duplicates_dropped"].value == scenario["dup_records"] and m11["duplicates_dropped"].value == 0
    assert m10["malformed_frames"].value == 1 and m11["malformed_frames"].value == 0
    assert m10["bad_journal_lines"].value == 0
    # the hole: the busy code's first tick after the reconnect carries the missing volume
    assert m10["volume_breaks"].value >= 1 and m10["missing_volume"].value == sum(scenario["lost"].values())
    silent = scenario["silent"]
    assert m11["volume_breaks"].value == 1 and m11["missing_volume"].value == int(silent[12])
    assert m11["volume_breaks_by_code"].value == {
        a: {"count": 1, "missing_volume": int(silent[12]), "overlap_volume": 0}
    }
    # the check: hour 10's loss is inside the gap marker; hour 11's is not, and says so
    c10, c11 = md10["check"], md11["check"]
    assert c10.passed and c10.metadata["volume_breaks"].value == m10["volume_breaks"].value
    assert not c11.passed and c11.severity == dg.AssetCheckSeverity.WARN
    (bad,) = c11.metadata["unexplained_breaks"].value
    assert (bad["code"], bad["missing_volume"]) == (a, int(silent[12]))
    assert m10["reconnect_flags"].value == 2 and m11["reconnect_flags"].value == 0  # carried across the hour
    # the first tick of each code after the drop (new connection, gap marker) is flagged, lost volume or not
    after = t10.filter(pc.fill_null(t10["after_reconnect"], False))
    assert sorted(after["code"].to_pylist()) == sorted([a, b])
    assert all(rx >= DROP[1] for rx in after["receive_ts"].to_pylist())
    # order by (code, seq): each code numbered from 1 over both hours, hour 11 continuing from state.json
    both = pa.concat_tables([t10, t11])
    for code in (a, b):
        mine = both.filter(pc.equal(both["code"], code))
        assert mine["seq"].to_pylist() == list(range(1, mine.num_rows + 1))
        assert mine["acml_vol"].to_pylist() == sorted(mine["acml_vol"].to_pylist())
    # a state written before seq was carried is not trusted: the carry is recomputed from the journal
    st = state_path(data, at(10))
    saved = st.read_text()
    old = json.loads(saved)
    for c in old["carry"].values():
        c.pop("seq")
    st.write_text(json.dumps(old))
    try:
        carry, _, how = previous_state(data, at(11))
        assert how == "recomputed from the journal of 2026-03-10T10"
        assert carry["H0STCNT0"][a]["seq"] == max(t10.filter(pc.equal(t10["code"], a))["seq"].to_pylist())
    finally:
        st.write_text(saved)
    assert m11["unchecked_first_ticks"].value == 0
    # disconnected seconds from the gap marker; record rate per slot from the subscription acks
    assert m10["disconnected_seconds"].value == 20.0 and m11["disconnected_seconds"].value == 0.0
    assert m10["disconnected_seconds_by_key"].value == {KEY: 20.0}
    held10 = (scenario["conn1_last"] - at(10, 0, 1)).total_seconds() + (at(11) - DROP[1]).total_seconds() - 0.005
    r10, r11 = m10["record_rate_per_slot"].value, m11["record_rate_per_slot"].value
    assert r10[a]["slot_minutes"] == pytest.approx(held10 / 60, abs=0.01) and not r10[a]["approx"]
    assert r10[a]["ticks_per_minute"] == pytest.approx(r10[a]["ticks"] / (held10 / 60), rel=1e-3)
    assert r11[a]["slot_minutes"] == 60.0 and r11[b]["slot_minutes"] == 20.0  # unsubscribed at 11:20
    assert r10[a]["ticks"] + r10[b]["ticks"] == m10["ticks"].value
    assert m10["subscription_acks"].value == 4 and m11["subscription_acks"].value == 1

    # the sampled view: 2 Hz, 1 Hz under mitigation, every trade and share accounted for
    s10 = pq.read_table(sampled_path(data, at(10)))
    assert s10.schema == SAMPLE_SCHEMA
    ms = md10["track_b_sampled"]
    assert set(ms["rows_by_bucket"].value) == {"0.5s", "1s"} and ms["mitigation_levels"].value == [0, 1]
    assert sum(s10["bucket_trades"].to_pylist()) == t10.num_rows
    assert ms["volume"].value == sum(t10["qty"].to_pylist()) and ms["rows"].value == s10.num_rows
    assert ms["gap_buckets"].value >= 1
    per_sec: dict = {}
    for c, bs, w in zip(*(s10[x].to_pylist() for x in ("code", "bucket_start", "bucket_s"))):
        if w == 0.5:
            per_sec[(c, bs.replace(microsecond=0))] = per_sec.get((c, bs.replace(microsecond=0)), 0) + 1
    assert max(per_sec.values()) <= 2  # 2 Hz at most

    # readable as a hive dataset with no project code (the manifest and state live under _meta/)
    dset = ds.dataset(data / "track_b", format="parquet", partitioning="hive")
    assert dset.to_table().num_rows == t10.num_rows + t11.num_rows
    man = json.loads(manifest_path(data, at(10)).read_text())
    assert man["ticks"] == t10.num_rows and len(man["journal_fingerprint"]) == 20


def test_rematerializing_is_idempotent(scenario, lake_env):
    with dg.instance_for_test() as inst:
        materialize(inst, "2026-03-10T10")
        before = pq.read_table(ticks_path(lake_env, at(10)))
        sampled = pq.read_table(sampled_path(lake_env, at(10)))
        materialize(inst, "2026-03-10T10")
        assert pq.read_table(ticks_path(lake_env, at(10))).equals(before)
        assert pq.read_table(sampled_path(lake_env, at(10))).equals(sampled)
        assert not list((lake_env / "track_b").rglob(".*.tmp"))


def test_an_hour_without_journal_and_a_bad_key_fail_clearly(scenario, lake_env):
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("track_b_hour", ["2026-03-10T12", "2026-03-10 10"])
        with pytest.raises(dg.Failure, match="no Track B journal for 2026-03-10T12"):
            dg.materialize([track_b_ticks], partition_key="2026-03-10T12", instance=inst)
        with pytest.raises(PartitionKeyError, match="must look like YYYY-MM-DDTHH"):
            dg.materialize([track_b_ticks], partition_key="2026-03-10 10", instance=inst)
    assert parse_hour_key("2026-03-10T09") == at(9) and hour_key(at(9, 59, 59)) == "2026-03-10T09"
    with pytest.raises(PartitionKeyError):
        parse_hour_key("2026-03-10T24")


def test_names_are_pinned():
    """The lead extends tests/test_definitions.py with these; renaming any of them orphans stored history."""
    # the restore needs the KIS resource, which definitions.py gives every domain
    defs = dg.Definitions.merge(track_b_defs, dg.Definitions(resources={"kis": kis_pool_from_env()}))
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == [
        "track_b_journal",
        "track_b_restored",
        "track_b_sampled",
        "track_b_ticks",
    ]
    for k in graph.get_all_asset_keys():
        pd = graph.get(k).partitions_def
        if k.to_user_string() == "track_b_journal":  # the capture's raw record: external, observed, unpartitioned
            assert pd is None and not graph.get(k).is_materializable
            continue
        if k.to_user_string() == "track_b_restored":  # a day's repair, not an hour's
            assert pd.name == "trading_day"
            continue
        assert isinstance(pd, dg.DynamicPartitionsDefinition) and pd.name == "track_b_hour"
    assert sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys) == [
        "track_b_ticks:track_b_losses_are_explained",
        "track_b_ticks:track_b_phases_agree",
    ]
    repo = defs.get_repository_def()
    assert sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")) == [
        "track_b_capture_job",
        "track_b_compaction_job",
    ]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "track_b_capture_sensor",
        "track_b_compaction_sensor",
        "track_b_journal_sensor",
    ]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repo.sensor_defs)
    assert {s.name: s.minimum_interval_seconds for s in repo.sensor_defs} == {
        "track_b_capture_sensor": 15,
        "track_b_compaction_sensor": 30,
        "track_b_journal_sensor": 60,
    }
    for spec in defs.resolve_all_asset_specs():
        kinds = {"python", "jsonl"} if spec.key.to_user_string() == "track_b_journal" else {"python", "parquet"}
        if spec.key.to_user_string() == "track_b_restored":  # the gap domain's repair, kept beside what it repairs
            continue
        assert spec.description and spec.group_name == "track_b" and spec.kinds == kinds


# --- the real capture, supervised by the Dagster job, then compacted --------------------------------------

SPEED = 20  # sim seconds per real second: a few busy codes give thousands of ticks in seconds


@pytest.fixture(scope="module")
def fast_sim():
    from local_exchange.server import run_sim_process

    proc = run_sim_process(
        "--mode",
        "real",
        "--clock",
        "open",
        "--seed",
        "7",
        "--listings",
        "300",
        "--speed",
        str(SPEED),
        "--hold-after-disconnect",
        "0.2",
    )
    try:
        yield proc
    finally:
        proc.stop()


def _status(data: Path) -> dict | None:
    try:
        return json.loads((data / "system" / "capture" / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow  # long: it runs beside the day in the life, where the slow stage has room, not in the parallel part
def test_real_capture_under_the_job_survives_kill_9_and_compacts_against_the_exchange_truth(
    fast_sim, tmp_path, monkeypatch, make_creds
):
    for k in list(os.environ):
        if k.startswith(("KIS_", "OBSERVER_")):
            monkeypatch.delenv(k)
    data = tmp_path / "data"
    creds = make_creds(7301)
    env = dict(
        OBSERVER_DATA_DIR=str(data),
        OBSERVER_CALENDAR="open",
        KIS_REST_URL=fast_sim.rest_url,
        KIS_WS_URL=fast_sim.ws_url,
        KIS_APP_KEY=creds[0],
        KIS_APP_SECRET=creds[1],
        OBSERVER_TRACK_B_EVAL_S="2",
        OBSERVER_TRACK_B_SAMPLE_S="1",
        OBSERVER_TRACK_B_FEEDS="trades:KRX",  # held against the KRX tape's truth
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (key,) = [c.key_id for c in configs_from_env(env)]
    rows = fast_sim.admin("listings", params={"order": "activity", "limit": "20"})["listings"]
    pins = [r["code"] for r in rows if not r["halted"]][:5]
    ref_sim = datetime.fromisoformat(fast_sim.admin("clock")["now"])
    ref_real = time.time()
    killed: dict = {}

    def kill_once() -> None:
        try:
            first = _wait(
                lambda: (
                    (s := _status(data))
                    and key in s.get("keys", {})
                    and len(s["keys"][key]["registered"]) == len(pins)
                    and s
                ),
                30,
                "the pins registered",
            )
            time.sleep(2.0)
            killed["pid"], killed["at"] = first["pid"], time.time()
            os.kill(first["pid"], signal.SIGKILL)
            back = _wait(
                lambda: (
                    (s := _status(data))
                    and s["pid"] != first["pid"]
                    and len(s["keys"][key]["registered"]) == len(pins)
                    and s
                ),
                30,
                "the restarted capture",
            )
            killed["back_at"] = time.time()
            killed["new_pid"] = back["pid"]
        except AssertionError as e:
            killed["error"] = str(e)

    t = threading.Thread(target=kill_once)
    t.start()
    with dg.instance_for_test() as inst:
        until = datetime.now(KST) + timedelta(seconds=14)
        res = track_b_capture_job.execute_in_process(
            instance=inst,
            run_config={
                "ops": {
                    "track_b_capture": {"config": {"until": until.isoformat(), "pins": pins, "status_interval_s": 0.5}}
                }
            },
        )
        t.join()
        assert res.success and "error" not in killed, killed
        logs = [e.user_message for e in inst.all_logs(res.run_id) if e.user_message]
        assert any("capture_started" in m for m in logs)  # the real capture's JSON log lines, forwarded
        assert sum("died (signal SIGKILL)" in m for m in logs) == 1
        assert killed["back_at"] - killed["at"] < 10, killed  # back, registered, within seconds
        beat = json.loads(heartbeat_path(data).read_text())
        assert beat["restarts"] == 1 and beat["state"] == "ended"
        # lineage: the journal's materialization names the capture run that wrote it
        (jm,) = inst.fetch_materializations(dg.AssetKey("track_b_journal"), limit=5).records
        assert jm.run_id == res.run_id
        jmd = jm.asset_materialization.metadata
        assert jmd["segments"].value >= 1 and jmd["keys"].value == [key] and jmd["capture_restarts"].value == 1

        # compact every hour the capture wrote (the run may straddle an hour)
        hours = journal_hours(data)
        tables, mds = [], []
        for h in hours:
            md = materialize(inst, hour_key(h))
            assert md["check"].passed, md["check"].metadata  # every loss is inside the restart's gap
            mds.append(md["track_b_ticks"])
            tables.append(pq.read_table(ticks_path(data, h)))
    table = pa.concat_tables(tables)
    day = datetime.now(KST).date()
    my_gaps = [g for g in gaps(data, day) if g.metadata.get("key_id") == key and not g.symbol]
    restart_gaps = [g for g in my_gaps if g.reason == "system_error"]
    assert len(restart_gaps) == 1 and restart_gaps[0].end is not None
    g = restart_gaps[0]
    assert g.start.timestamp() <= killed["at"] + 0.05 and g.end.timestamp() >= killed["at"]
    windows = [(x.start.timestamp(), (x.end or datetime.now(KST)).timestamp()) for x in my_gaps]

    # every tick the exchange sent was recorded exactly once, except ticks sent inside the restart's gap
    got = list(zip(table["code"].to_pylist(), table["acml_vol"].to_pylist()))
    assert len(got) == len(set(got))
    sent_total = lost = 0
    for code in pins:
        entries = fast_sim.admin("truth/sent", params={"appkey": creds[0], "code": code})["entries"]
        sent = {(code, e["acml_vol"]): e for e in entries if e["status"] == "sent"}
        sent_total += len(sent)
        mine = {k for k in got if k[0] == code}
        assert mine <= set(sent), code
        for k in set(sent) - mine:
            at_real = ref_real + (datetime.fromisoformat(sent[k]["sent_at_sim"]) - ref_sim).total_seconds() / SPEED
            assert any(a - 0.5 <= at_real <= b + 0.5 for a, b in windows), (k, at_real, windows)
            lost += 1
    assert sent_total > 500 and len(got) == sent_total - lost
    print(
        f"real capture: {sent_total} ticks sent, {lost} lost inside the restart gap "
        f"({(g.end - g.start).total_seconds():.2f} s); registered again {killed['back_at'] - killed['at']:.2f} s "
        "after the kill"
    )
    assert sum(md["ticks"].value for md in mds) == len(got)
    assert {c for md in mds for c in md["record_rate_per_slot"].value} == set(pins)
    for md in mds:
        for code, r in md["record_rate_per_slot"].value.items():
            assert not r["approx"] and r["slot_minutes"] > 0  # slot time from the exchange's acks
    # disconnected seconds: the restart's gap, as the capture marked it
    disc = sum(md["disconnected_seconds"].value for md in mds)
    assert disc == pytest.approx((g.end - g.start).total_seconds(), abs=0.01) and 0 < disc < 10
    assert sum(md["duplicates_dropped"].value for md in mds) == 0
    assert sum(md["malformed_frames"].value for md in mds) == 0
    # the cumulative-volume identity holds wherever nothing was lost: every break is at the restart
    for md in mds:
        for code, b in md["volume_breaks_by_code"].value.items():
            assert b["count"] == 1 and b["missing_volume"] > 0


def test_compaction_writes_to_a_url_lake_while_the_journal_stays_local(scenario, monkeypatch):
    """Steps on several hosts share a lake URL, not a disk: the journal is read from OBSERVER_LOCAL_DIR and the
    same hour's ticks land on the fsspec URL, identical to a local compaction."""
    import uuid

    from upath import UPath

    from observer_resources.storage import lake as lk

    monkeypatch.setenv("OBSERVER_DATA_DIR", str(scenario["data"]))
    with dg.instance_for_test() as inst:
        materialize(inst, "2026-03-10T10", assets=(track_b_ticks,))
    local = lk.read_table(ticks_path(scenario["data"], at(10, 0)))
    url = f"memory://observer-lake-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OBSERVER_DATA_DIR", url)
    monkeypatch.setenv("OBSERVER_LOCAL_DIR", str(scenario["data"]))
    with dg.instance_for_test() as inst:
        md = materialize(inst, "2026-03-10T10")
    remote = lk.read_table(ticks_path(UPath(url), at(10, 0)))
    assert remote.num_rows == local.num_rows > 0 and remote.equals(local)
    assert md["track_b_ticks"]["disconnected_seconds"].value > 0  # the gap markers were read from the local log
    assert UPath(url, "track_b_sampled").exists()
