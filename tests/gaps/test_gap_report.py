"""The gap report over a simulated day built with the real pieces: universe and a Track A slot materialized
against the local exchange, the day's other slots derived from it with injected faults, Track B ticks of the
exchange's own market model through a real Journal and the real compaction (a skipped tick, a disconnect),
gap markers through EventLog, then the `gap_report` asset in Dagster. It must list every injected fault and
nothing else (precision and recall 100 %)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from local_exchange.accounts import demo_credentials
from local_exchange.market import Market
from observer_assets.gaps.assets import gap_report
from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.snapshot import FAILURE_SCHEMA, TS
from observer_assets.track_b.compaction import compact
from observer_assets.track_b.journal import Journal, read_journal, segments
from observer_assets.universe.assets import universe
from observer_assets.universe.dataset import read_universe
from observer_resources.calendar import KST
from observer_resources.events import EventLog
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
from observer_resources.storage.layout import (
    coverage_path,
    report_path,
    report_summary_path,
    slot_dir,
    ticks_path,
    verdict_path,
)

# The local exchange publishes masters for today only, so the day is today on the always-open calendar.
DAY = datetime.now(KST).date()
KEY = "key-g1"
AS_OF = datetime(DAY.year, DAY.month, DAY.day, 10, 25, tzinfo=KST)


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, h, m, tzinfo=KST) + timedelta(seconds=s)


@pytest.fixture(scope="module")
def frozen_sim():
    from local_exchange.server import run_sim_process

    p = run_sim_process("--mode", "real", "--clock", "open", "--seed", "11", "--listings", "600", "--speed", "0")
    yield p
    p.stop()


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "100"}


def frame(rec: list[str]) -> str:
    return "0|H0STCNT0|001|" + "^".join(rec)


def build_track_a(sim, tmp_path, inst) -> dict:
    """Universe + the 09:00 slot for real; later slots derived from it (fetched on time) with faults."""
    key, secret = demo_credentials(41)
    kis = KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(tmp_path / "state")
    )
    inst.add_dynamic_partitions("trading_day", [day_key(DAY)])
    res = dg.materialize(
        [universe],
        partition_key=day_key(DAY),
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"universe": {"config": {"min_master_codes": 100, "nxt_status": False}}}},
    )
    assert res.success
    slots = calendar().track_a_slots(DAY)
    live = calendar().slot_at(datetime.now(KST))  # the current slot, fetched live (later than AS_OF: not judged)
    inst.add_dynamic_partitions("track_a_slot", [slot_key(live)])
    res = dg.materialize(
        [track_a_snapshot, universe],
        selection=[track_a_snapshot],
        partition_key=slot_key(live),
        instance=inst,
        resources={"kis": kis},
    )
    assert res.success
    root = lake.data_dir()
    base = pq.read_table(slot_dir(root, live) / "snapshot.parquet")
    uni = read_universe(root, DAY)["code"].to_pylist()
    assert base.num_rows == len(uni) > 100

    def put(slot: datetime, table: pa.Table, late_s: float = 3.0) -> None:
        n = table.num_rows
        t = table.set_column(0, "slot_ts", pa.array([slot] * n, TS))
        t = t.set_column(
            t.schema.get_field_index("fetched_at"), "fetched_at", pa.array([slot + timedelta(seconds=late_s)] * n, TS)
        )
        lake.write_table_atomic(slot_dir(root, slot) / "snapshot.parquet", t)

    dropped = sorted(uni)[5:8]
    for s in [x for x in slots if x <= AS_OF + timedelta(minutes=30)]:  # later slots exist too: not judged
        if s == at(9, 20):  # missing slot (also when the live slot above happened to be this one)
            (slot_dir(root, s) / "snapshot.parquet").unlink(missing_ok=True)
            continue
        if s == at(9, 30):  # partial: three symbols lost (two rate-limited, one left out of the answer)
            put(s, base.filter(pc.invert(pc.is_in(base["code"], pa.array(dropped)))))
            lake.write_table_atomic(
                slot_dir(root, s, FAILURES) / "failures.parquet",
                pa.table(
                    {
                        "code": dropped,
                        "error": [
                            "RateLimitedError EGW00201",
                            "RateLimitedError EGW00201",
                            "missing from multi-quote answer",
                        ],
                        "at": pa.array([s] * 3, TS),
                    },
                    schema=FAILURE_SCHEMA,
                ),
            )
        elif s == at(9, 50):
            put(s, base, late_s=240)  # late by 4 minutes: major
        elif s == at(10, 10):  # lost live, then restored by a backfill
            r = base.set_column(base.schema.get_field_index("source"), "source", pa.array(["restored"] * base.num_rows))
            r = r.set_column(
                r.schema.get_field_index("restored_from"),
                "restored_from",
                pa.array(["inquire-time-itemchartprice"] * r.num_rows),
            )
            put(s, r, late_s=3600)
        else:
            put(s, base)
    return {"universe": uni, "dropped": dropped, "live": live}


def build_track_b(root, uni: list[str]) -> dict:
    """Real market ticks 09:30..10:25 of three codes through a Journal and the compaction; one tick skipped,
    one disconnect (10:00:00-10:01:00) with its gap markers."""
    m = Market(seed=11, listings=600, clock_mode="open")
    act = sorted((m.by_code[c] for c in uni if c in m.by_code), key=lambda x: -x.activity)
    lo, hi = 9 * 3600 + 1800, 10 * 3600 + 1500

    def n_in(code: str) -> int:
        s_ = m.day_ticks(code, DAY).sec
        return int(((s_ >= lo) & (s_ < hi)).sum())

    quiet = next(x.code for x in reversed(act) if n_in(x.code) >= 5)
    codes = [act[0].code, act[1].code, quiet]  # two busy, one quiet
    truth: dict[str, list[tuple[int, list[str]]]] = {}
    for c in codes:
        t = m.day_ticks(c, DAY)
        idx = [i for i in range(len(t.sec)) if lo <= int(t.sec[i]) < hi]
        truth[c] = [(int(t.sec[i]), m.trade_record(t, i)) for i in idx]
    a = codes[0]
    secs = [s for s, _ in truth[a]]
    # the skipped tick: a busy moment around 09:45 (neighbours close, so no silence hides it)
    k = next(i for i in range(1, len(secs) - 1) if secs[i] >= 9 * 3600 + 2700 and secs[i + 1] - secs[i - 1] < 5)
    skipped = truth[a][k]
    d0, d1 = at(10), at(10, 1)
    frames = []
    for c in codes:
        for j, (s, rec) in enumerate(truth[c]):
            rx = datetime.combine(DAY, datetime.min.time(), KST) + timedelta(seconds=s, microseconds=100_000 + j % 1000)
            if (c == a and j == k) or d0 <= rx < d1:
                continue
            frames.append((rx, frame(rec), 1 if rx < d0 else 2))
    frames.sort(key=lambda x: x[0])
    with Journal(root, KEY, fsync_interval=0.01, clock=lambda: at(10, 30)) as jn:
        for rx, text, conn in frames:
            jn.append(rx, text, conn=conn, mitigation_level=0)
    prev = None
    for h in (9, 10):
        t, st = compact(read_journal(segments(root, DAY, h)), day=DAY, hour=h, prev=prev)
        prev = st["carry"]
        lake.write_table_atomic(ticks_path(root, at(h)), t)
    last_before = max(rx for rx, _, _ in frames if rx < d0)
    ev = EventLog(root, source="test")
    gid = ev.gap_open(
        scope="scalp",
        reason="ws_disconnect",
        severity="major",
        start=last_before,
        session_id="s1",
        key_id=KEY,
        kind="disconnect",
    )
    ev.gap_close(
        gid,
        scope="scalp",
        reason="ws_disconnect",
        severity="major",
        start=last_before,
        end=d1,
        session_id="s1",
        key_id=KEY,
    )
    ev.emit("ws_connected", at=d1, key_id=KEY, reconnect=True)
    lost_in_window = {
        c: [
            (s, r)
            for s, r in truth[c]
            if d0 <= datetime.combine(DAY, datetime.min.time(), KST) + timedelta(seconds=s, microseconds=100_000) < d1
        ]
        for c in codes
    }
    return {
        "codes": codes,
        "a": a,
        "skipped": skipped,
        "truth": truth,
        "gap_id": gid,
        "window": (last_before, d1),
        "lost_in_window": lost_in_window,
    }


def test_gap_report_finds_every_injected_fault_and_nothing_else(env, frozen_sim):
    with dg.instance_for_test() as inst:
        ta = build_track_a(frozen_sim, env, inst)
        root = lake.data_dir()
        tb = build_track_b(root, ta["universe"])
        res = dg.materialize(
            [gap_report],
            partition_key=day_key(DAY),
            instance=inst,
            run_config={"ops": {"gap_report": {"config": {"as_of": AS_OF.isoformat()}}}},
        )
        assert res.success
        md = res.asset_materializations_for_node("gap_report")[0].metadata
    rows = pq.read_table(report_path(root, DAY)).to_pylist()
    found = sorted((r["kind"], r["symbol"], r["slot_ts"]) for r in rows if r["kind"] != "track_b_silence")
    expected = sorted(
        [
            ("track_a_missing_slot", None, at(9, 20)),
            *[("track_a_missing_symbol", c, at(9, 30)) for c in ta["dropped"]],
            ("rate_limit", None, at(9, 30)),
            ("track_a_late", None, at(9, 50)),
            ("track_a_missing_slot", None, at(10, 10)),
            ("track_b_loss", tb["a"], None),
            ("ws_disconnect", None, None),
        ]
    )
    assert found == expected  # precision and recall over the injected faults
    by = {(r["kind"], r["symbol"], r["slot_ts"]): r for r in rows}
    assert by[("track_a_missing_slot", None, at(9, 20))]["status"] == "open"
    assert by[("track_a_missing_slot", None, at(9, 20))]["severity"] == "critical"
    restored = by[("track_a_missing_slot", None, at(10, 10))]
    assert (restored["status"], restored["restored_from"]) == ("restored", "inquire-time-itemchartprice")
    reasons = {r["symbol"]: r["reason"] for r in rows if r["kind"] == "track_a_missing_symbol"}
    assert reasons == {
        ta["dropped"][0]: "rate_limit",
        ta["dropped"][1]: "rate_limit",
        ta["dropped"][2]: "no_data_received",  # answered without it
    }
    assert by[("track_a_late", None, at(9, 50))]["severity"] == "major"
    # the instance holds no run of the slots written by hand: nothing launched 09:20 (unless the live run was 09:20's,
    # deleted after it ran); 09:50's lateness is unexplained
    if ta["live"] != at(9, 20):
        assert by[("track_a_missing_slot", None, at(9, 20))]["reason"] == "not_run"
    if ta["live"] != at(9, 50):  # the suite run between 09:50 and 10:00 KST fetched 09:50 live: its run is evidence
        assert by[("track_a_late", None, at(9, 50))]["reason"] == "unknown"
    assert all(r["slot_ts"] is None or r["slot_ts"] <= AS_OF for r in rows)  # never a future slot

    loss = by[("track_b_loss", tb["a"], None)]
    skipped = tb["skipped"][1]
    assert loss["missing_volume"] == int(skipped[12])  # CNTG_VOL of the lost trade
    assert loss["missing_trades"] == 1
    disc = by[("ws_disconnect", None, None)]
    assert disc["gap_id"] == tb["gap_id"] and disc["start"] == tb["window"][0] and disc["end"] == tb["window"][1]
    lost_vol = {c: sum(int(r[12]) for _, r in v) for c, v in tb["lost_in_window"].items() if v}
    ev = json.loads(disc["evidence"])
    assert {c: x["missing_volume"] for c, x in ev["losses"].items()} == lost_vol
    assert disc["missing_volume"] == sum(lost_vol.values())

    # silences: exactly the true quiet spans >= 10 s of the exchange's stream, outside the disconnect; never losses
    w0, w1 = tb["window"]
    base = datetime.combine(DAY, datetime.min.time(), KST)
    want = set()
    for c, tr in tb["truth"].items():
        rxs = [base + timedelta(seconds=s, microseconds=100_000 + j % 1000) for j, (s, _) in enumerate(tr)]
        for x, y in zip(rxs, rxs[1:]):
            for a_, b_ in ((x, min(y, w0)), (max(x, w1), y)) if (x < w1 and y > w0) else ((x, y),):
                if (b_ - a_).total_seconds() >= 10:
                    want.add((c, a_, b_))
    assert any(c == tb["codes"][2] for c, _, _ in want)  # the quiet code is silent, and never a loss
    got = {(r["symbol"], r["start"], r["end"]) for r in rows if r["kind"] == "track_b_silence"}
    assert got == want
    assert all(not r["data_lost"] and r["status"] == "info" for r in rows if r["kind"] == "track_b_silence")

    verdict = json.loads(verdict_path(root, DAY).read_text())
    assert verdict["anomaly_day"] is True
    assert {r["rule"] for r in verdict["rules_fired"]} == {"critical_gap", "gaps_of_60s"}
    assert md["rows"].value == len(rows) and "Anomaly day: YES" in md["summary"].value
    cov = {c["slot"]: c for c in pq.read_table(coverage_path(root, DAY), partitioning=None).to_pylist()}
    assert cov["T0930"]["missing"] == 3 and cov["T0900"]["coverage_ratio"] == 1.0
    assert (cov["T1010"]["state"], cov["T1010"]["restored"]) == ("restored", len(ta["universe"]))
    assert "T1030" not in cov and max(cov) == "T1020"
    assert json.loads(report_summary_path(root, DAY).read_text())["slots_by_state"]["missing"] == 1
