"""Every reason and data_lost judgement on its evidence: small real days (Parquet files at the layout's paths, event
lines through the real EventLog writer, Track A runs in a real Dagster instance) read by the report's own reader."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from observer_assets.gaps.assets import gap_report, write_report
from observer_assets.gaps.detect import COVERAGE_SCHEMA, GAP_SCHEMA, REASONS, VERDICT_SCHEMA, SlotRun, detect
from observer_assets.gaps.report import build_report, load_day, slot_runs, upgrade_gap_report_table
from observer_assets.orchestration.partitions import calendar, day_key, slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import LATE_TAG
from observer_assets.universe.assets import universe
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.events import EventLog
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    TRACK_A_FAILURES,
    coverage_path,
    report_dir,
    report_path,
    report_summary_path,
    slot_dir,
    ticks_path,
    universe_path,
    verdict_path,
    verdict_table_path,
)

ENV = {"OBSERVER_CALENDAR": "krx"}
DAY = date(2026, 3, 10)  # a KRX trading day: slots 09:00..15:30
UNI = ["000010", "000020", "000030", "000040"]
TS = pa.timestamp("us", tz="Asia/Seoul")


def at(h: int, m: int = 0, s: float = 0.0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=KST) + timedelta(seconds=s)


def put_universe(root, day: date = DAY) -> None:
    lake.write_table_atomic(universe_path(root, day), pa.table({"code": UNI}))


def put_snapshot(root, slot: datetime, late_s: float, codes: list[str] = UNI) -> None:
    n = len(codes)
    lake.write_table_atomic(
        slot_dir(root, slot) / "snapshot.parquet",
        pa.table(
            {
                "slot_ts": pa.array([slot] * n, TS),
                "code": codes,
                "source": ["live"] * n,
                "restored_from": pa.nulls(n, pa.string()),
                "fetched_at": pa.array([slot + timedelta(seconds=late_s)] * n, TS),
                "late_s": [late_s] * n,
            }
        ),
    )


def put_failures(root, slot: datetime, errors: dict[str, str]) -> None:
    lake.write_table_atomic(
        slot_dir(root, slot, TRACK_A_FAILURES) / "failures.parquet",
        pa.table({"code": list(errors), "error": list(errors.values()), "at": pa.array([slot] * len(errors), TS)}),
    )


def put_ticks(root, spec: list[tuple[str, datetime, int]], lost=lambda code, rx: False, key: str = "k1") -> None:
    """Ticks of (code, receive time, qty) with consistent cumulative volume and counts, in one hour's file; the
    ticks ``lost`` says are left out after the cumulative values were counted (lost on the wire)."""
    acml: dict[str, int] = {}
    cnt: dict[str, int] = {}
    rows = []
    for code, rx, q in sorted(spec, key=lambda x: x[1]):
        acml[code], cnt[code] = acml.get(code, 0) + q, cnt.get(code, 0) + 1
        if not lost(code, rx):
            rows.append(
                {"code": code, "receive_ts": rx, "acml_vol": acml[code], "qty": q, "buy_cnt": cnt[code], "sell_cnt": 0}
            )
    t = pa.Table.from_pylist(rows).cast(
        pa.schema(
            [
                ("code", pa.string()),
                ("receive_ts", TS),
                ("acml_vol", pa.int64()),
                ("qty", pa.int64()),
                ("buy_cnt", pa.int64()),
                ("sell_cnt", pa.int64()),
            ]
        )
    )
    t = t.append_column("key_id", pa.array([key] * t.num_rows)).append_column(
        "day_open",
        pa.array([1000] * t.num_rows, pa.int64()),  # a column the report does not read
    )
    lake.write_table_atomic(ticks_path(root, spec[0][1].replace(minute=0, second=0, microsecond=0)), t)


@pytest.fixture
def sim_clock(env, monkeypatch):
    """The simulated clock every writer stamps its events with (gap markers are stamped when they are written)."""
    path = env / "clock.json"
    clock.write_sim(path, at(9))
    monkeypatch.setenv(clock.ENV, str(path))
    return path


def gap(ev: EventLog, reason: str, a: datetime, b: datetime | None, key: str = "k1", **meta) -> str:
    """A gap marker pair as the capture writes them: opened at ``a``, closed at ``b`` (None: left open)."""
    path = Path(os.environ[clock.ENV])
    clock.write_sim(path, a)
    gid = ev.gap_open(scope="scalp", reason=reason, severity="major", start=a, session_id="s1", key_id=key, **meta)
    if b is not None:
        clock.write_sim(path, b)
        ev.gap_close(gid, scope="scalp", reason=reason, severity="major", start=a, end=b, session_id="s1", key_id=key)
    return gid


def by_slot(rows: list[dict], kind: str) -> dict[datetime, dict]:
    return {r["slot_ts"]: r for r in rows if r["kind"] == kind}


# --- Track A: why a slot was late or missing ---------------------------------------------------------------------
def track_a_day(root) -> EventLog:
    """09:00..10:20: on time, late and missing slots whose causes are on record in different places."""
    put_universe(root)
    for s, late in [(at(9), 5), (at(9, 10), 340), (at(9, 20), 200), (at(9, 30), 150), (at(10), 130), (at(10, 20), 4)]:
        put_snapshot(root, s, late)
    put_failures(root, at(10, 10), dict.fromkeys(UNI, "deadline: next slot"))  # 10:10 got nothing in time
    ev = EventLog(root, source="track_a")
    for s in (at(9, 31), at(9, 31, 30)):  # rejections while the 09:30 run fetched
        ev.emit("rate_limit_rejected", at=s, tr_id="FHKST11300006", code="EGW00201", retry=1, gave_up=False)
    ev.emit("rate_limit_waits", at=at(9, 32, 40), requests=9, waited_requests=3, rate_limit_retries=2)  # a summary
    ev.emit("rate_limit_store_recreated", at=at(9, 45), path="x.sqlite", error="corrupt")  # not a rejection
    ev.emit("track_a_slot_failed", at=at(9, 50, 20), slot=slot_key(at(9, 50)), error="KeyError: 'stck_prpr'")
    ev.emit("track_a_slot", at=at(10, 2, 15), slot=slot_key(at(10)), mode="live", ok=4, failed=0)
    return ev


RUNS = {
    at(9): [SlotRun("r0900", "SUCCESS", at(9, 0, 1), at(9, 0, 2), at(9, 0, 9), "schedule")],
    # nothing launched it at 09:10 (the daemon came up at 09:15); the catch-up sensor did
    at(9, 10): [SlotRun("r0910", "SUCCESS", at(9, 15, 30), at(9, 15, 33), at(9, 15, 50), "catch_up")],
    # launched on time, waited in the queue behind a backfill
    at(9, 20): [SlotRun("r0920", "SUCCESS", at(9, 20, 1), at(9, 23, 10), at(9, 23, 30), "schedule")],
    at(9, 30): [SlotRun("r0930", "SUCCESS", at(9, 30, 1), at(9, 30, 3), at(9, 32, 40), "schedule")],
    at(9, 50): [SlotRun("r0950", "FAILURE", at(9, 50, 1), at(9, 50, 3), at(9, 50, 20), "schedule")],
    at(10): [SlotRun("r1000", "SUCCESS", at(10, 0, 1), at(10, 0, 2), at(10, 2, 15), "schedule")],
    at(10, 10): [
        SlotRun("r1010", "SUCCESS", at(10, 19, 40), at(10, 19, 42), at(10, 19, 59), "catch_up"),
        SlotRun("b1010", "SUCCESS", at(10, 40), at(10, 40, 2), at(10, 40, 30), "backfill"),  # never the cause
    ],
    at(10, 20): [SlotRun("r1020", "SUCCESS", at(10, 20, 1), at(10, 20, 2), at(10, 20, 6), "schedule")],
}


def test_late_and_missing_slot_reasons_come_from_their_evidence(env):
    root = lake.data_dir()
    track_a_day(root)
    inp = load_day(root, DAY, at(10, 25), now=at(16))
    assert inp.runs is None and inp.failures.keys() == {at(10, 10)}  # no failures file: no failures

    rep = detect(dataclasses.replace(inp, runs=RUNS))
    rows = rep.rows.to_pylist()
    late, missing = by_slot(rows, "track_a_late"), by_slot(rows, "track_a_missing_slot")
    assert {s: r["reason"] for s, r in late.items()} == {
        at(9, 10): "launched_late",
        at(9, 20): "started_late",
        at(9, 30): "rate_limit",
        at(10): "unknown",  # 0 failures, run on time, no rejections: not an API error
    }
    assert {s: r["reason"] for s, r in missing.items()} == {
        at(9, 40): "not_run",
        at(9, 50): "system_error",
        at(10, 10): "launched_late",  # its failures say deadline: time ran out because the run began late
    }
    ev = json.loads(late[at(9, 10)]["evidence"])
    assert ev["run"]["launched_by"] == "catch_up" and ev["failures"] == 0
    assert (
        late[at(9, 30)]["error_code"] == "EGW00201"
        and json.loads(late[at(9, 30)]["evidence"])["rate_limit_rejections"] == 2
    )
    assert json.loads(missing[at(9, 50)]["evidence"])["run_failed"]["error"] == "KeyError: 'stck_prpr'"
    assert {r["reason"] for r in rows} <= set(REASONS)
    notices = [r for r in rows if r["kind"] == "rate_limit"]  # one per rejection on record, nothing else
    assert [r["start"] for r in notices] == [at(9, 31), at(9, 31, 30)]
    cov = {c["slot"]: c for c in rep.coverage.to_pylist()}
    assert rep.coverage.schema == COVERAGE_SCHEMA and list(cov) == [f"T{s:%H%M}" for s in inp.slots]
    assert (cov["T0910"]["state"], cov["T0910"]["late_seconds"], cov["T0910"]["reason"]) == (
        "live",
        340.0,
        "launched_late",
    )
    assert (cov["T1010"]["state"], cov["T1010"]["missing"], cov["T1010"]["failures"]) == ("missing", 4, 4)

    # without the runs, only what the lake and the event log prove: never a guess
    rows = detect(inp).rows.to_pylist()
    late, missing = by_slot(rows, "track_a_late"), by_slot(rows, "track_a_missing_slot")
    assert {s: r["reason"] for s, r in late.items()} == {
        at(9, 10): "unknown",
        at(9, 20): "unknown",
        at(9, 30): "rate_limit",
        at(10): "unknown",
    }
    assert {s: r["reason"] for s, r in missing.items()} == {
        at(9, 40): "unknown",
        at(9, 50): "system_error",
        at(10, 10): "deadline",
    }


def test_missing_symbol_reasons() -> None:
    from observer_assets.gaps.detect_track_a import classify_error

    assert classify_error("RateLimitedError EGW00201", "unknown") == ("rate_limit", "EGW00201")
    assert classify_error("key k2 degraded: BadCredentialsError EGW00105", "unknown") == ("api_error", "EGW00105")
    assert classify_error("TransientError", "unknown") == ("api_error", None)
    assert classify_error("missing from multi-quote answer", "unknown") == ("no_data_received", None)
    assert classify_error("deadline: next slot", "unknown") == ("deadline", None)
    assert classify_error("something new", "unknown") == ("unknown", None)
    assert classify_error("Failure: universe rejected", "system_error") == ("system_error", None)


# --- Track B: data_lost only when something subscribed could have been lost ----------------------------------------
def busy(code: str, start: datetime, seconds: int, qty: int = 10) -> list:
    return [(code, start + timedelta(seconds=i), qty) for i in range(seconds)]


def track_b_day(root) -> dict[str, str]:
    """A capture window 09:30-15:00 on key k1: disconnects before the first slot, with losses, with every held code
    continuous, with nothing to prove continuity; a stop left open; a disconnect after the window."""
    put_universe(root)
    ev = EventLog(root, source="capture")
    ids = {}
    window = {"day": DAY.isoformat(), "start": at(9, 30).isoformat(), "end": at(15).isoformat(), "note": ""}
    # the process's first recording instant precedes its start event by a moment
    ids["before_first_slot"] = gap(ev, "ws_disconnect", at(9, 29, 59.9), at(9, 30, 40), kind="never_connected")
    ev.emit("capture_started", at=at(9, 30), run_id="run1", keys=["k1"], window=window, stop_at=at(15), pins=[])
    ev.emit("ws_connected", at=at(9, 30, 41), key_id="k1", reconnect=False, registered=0, desired=0)
    for code in ("000010", "000020"):  # the first slot evaluation
        ev.emit("slot_change", at=at(9, 31), action="allocate", key="k1", index=0, code=code, trigger="bootstrap")
    ids["losses"] = gap(ev, "ws_disconnect", at(9, 40), at(9, 40, 30))
    ids["continuous"] = gap(ev, "ws_disconnect", at(9, 38, 0.2), at(9, 38, 0.8))
    ids["unproven"] = gap(ev, "ws_disconnect", at(9, 55), at(9, 56))
    ev.emit("ws_connected", at=at(9, 56), key_id="k1", reconnect=True, registered=2, desired=2)
    ids["stop"] = gap(ev, "manual_stop", at(14, 50), None, kind="manual_stop", stop_reason="signal SIGTERM")
    ev.emit("capture_stopped", at=at(14, 50, 1), run_id="run1", reason="signal SIGTERM")
    ids["after_window"] = gap(ev, "ws_disconnect", at(15, 0, 10), at(15, 0, 40))
    spec = busy("000010", at(9, 31), 19 * 60)  # 09:31:00..09:49:59, a trade a second
    quiet = [("000020", at(9, 31), 5), ("000020", at(9, 36), 5), ("000020", at(9, 44), 5)]
    put_ticks(root, spec + quiet, lost=lambda code, rx: code == "000010" and at(9, 40) < rx < at(9, 40, 30))
    for s in calendar().track_a_slots(DAY):  # Track A on time all day: only the windows are judged here
        put_snapshot(root, s, 3)
    return ids


def test_disconnects_and_stops_lose_data_only_when_something_subscribed_could_be_lost(sim_clock):
    root = lake.data_dir()
    ids = track_b_day(root)
    rep = detect(load_day(root, DAY, now=at(16)))  # today, as of 16:00
    w = {r["gap_id"]: r for r in rep.rows.to_pylist() if r["kind"] in ("ws_disconnect", "manual_stop")}
    got = {name: (w[g]["data_lost"], w[g]["subscribed_codes"], w[g]["status"]) for name, g in ids.items()}
    assert got == {
        "before_first_slot": (False, 0, "info"),  # nothing subscribed yet
        "losses": (True, 2, "open"),  # the ticks prove trades lost
        "continuous": (False, 2, "info"),  # both codes' cumulative volume runs on unbroken across it
        "unproven": (True, 2, "open"),  # held, and no tick after it to show nothing was lost
        "stop": (True, 2, "open"),
        "after_window": (False, 0, "info"),  # outside the capture's window
    }
    assert w[ids["losses"]]["missing_volume"] == 290 and w[ids["losses"]]["restorable"] is True
    assert (w[ids["continuous"]]["missing_volume"], w[ids["continuous"]]["restorable"]) == (0, False)
    assert w[ids["unproven"]]["missing_volume"] is None
    # the open stop counts only until the window's end, not until the report's as-of time
    assert (w[ids["stop"]]["seconds"], w[ids["stop"]]["end"]) == (600.0, None)
    assert w[ids["after_window"]]["seconds"] == 0.0
    assert all(r["key_id"] == "k1" for r in w.values())
    because = {n: json.loads(w[g]["evidence"])["data_lost_because"] for n, g in ids.items()}
    assert because["before_first_slot"].startswith("nothing subscribed")
    assert because["after_window"].startswith("outside")
    # only the real loss counts toward the 60-second rule (the stop is a loss of 600 s, the unproven one 60 s)
    v = {r["rule"]: r for r in rep.verdict_table.to_pylist()}
    assert v["gaps_of_60s"]["value"] == 2.0 and v["gaps_of_60s"]["fired"] is True


def test_without_the_capture_events_a_window_may_have_lost_data(sim_clock):
    root = lake.data_dir()
    put_universe(root)
    ev = EventLog(root, source="capture")
    g1 = gap(ev, "ws_disconnect", at(9, 40), at(9, 40, 30))  # no capture_started on record: nothing is known
    put_ticks(root, busy("000010", at(9, 39), 120))
    rows = {r["gap_id"]: r for r in detect(load_day(root, DAY, now=at(16))).rows.to_pylist()}
    assert (rows[g1]["data_lost"], rows[g1]["subscribed_codes"]) == (True, None)

    # a session that wanted more codes than its slot_change events account for: the replay is incomplete
    window = {"start": at(9, 30).isoformat(), "end": at(15).isoformat()}
    ev.emit("capture_started", at=at(9, 30), run_id="run1", keys=["k1"], window=window, stop_at=at(15))
    ev.emit("slot_change", at=at(9, 31), action="allocate", key="k1", index=0, code="000010", trigger="manual")
    ev.emit("ws_connected", at=at(9, 45), key_id="k1", reconnect=True, registered=3, desired=3)
    g2 = gap(ev, "ws_disconnect", at(9, 50), at(9, 50, 30))
    rows = {r["gap_id"]: r for r in detect(load_day(root, DAY, now=at(16))).rows.to_pylist()}
    assert (rows[g2]["data_lost"], rows[g2]["subscribed_codes"]) == (True, None)
    assert "more codes" in json.loads(rows[g2]["evidence"])["subscribed"]["basis"]


@pytest.mark.env(OBSERVER_TRACK_B_WINDOW="phases")
def test_a_phase_no_capture_ran_through_is_a_gap_of_its_own(sim_clock, monkeypatch):
    """On the two-venue day the capture starts at 10:00 (its window opened at 08:00) and stops at 12:00 as planned
    by someone who set --until: every phase piece of the window before 10:00 and after 12:00 (up to the report's
    as-of time) is a ``track_b_phase_missing`` row naming its venue and phase, whole phases critical."""
    day = date(2026, 12, 1)
    root = lake.data_dir()
    put_universe(root, day)
    ev = EventLog(root, source="capture")
    window = {"start": at(8, day=day).isoformat(), "end": at(20, day=day).isoformat()}
    ev.emit("capture_started", at=at(10, day=day), run_id="r1", keys=["k1"], window=window, stop_at=at(12, day=day))
    ev.emit("capture_stopped", at=at(12, day=day), run_id="r1", reason="until")
    rep = detect(load_day(root, day, now=at(12, 30, day=day)))
    got = sorted(
        (r["venue"], json.loads(r["evidence"])["phase"], r["start"], r["end"], r["severity"])
        for r in rep.rows.to_pylist()
        if r["kind"] == "track_b_phase_missing"
    )
    by = {(v, ph): (a, b, sev) for v, ph, a, b, sev in got if a < at(12, day=day)}
    assert by[("KRX", "opening_auction")] == (at(8, 30, day=day), at(9, day=day), "critical")  # whole phase
    assert by[("KRX", "regular")] == (at(9, day=day), at(10, day=day), "critical")  # 60 min of it
    assert by[("NXT", "pre_market")] == (at(8, day=day), at(8, 50, day=day), "critical")
    assert by[("NXT", "main")] == (at(9, 0, 30, day=day), at(10, day=day), "critical")
    after = [x for x in got if x[2] == at(12, day=day)]
    assert sorted((v, ph) for v, ph, *_ in after) == [("KRX", "regular"), ("NXT", "main")]
    assert all(x[3] == at(12, 30, day=day) for x in after)  # up to the as-of time, no further
    assert {r["phase"] for r in rep.rows.to_pylist() if r["kind"] == "track_b_phase_missing"} >= {
        "KRX:regular",
        "NXT:pre_market",
    }
    # the same day on the default window (09:30-15:00): only the regular session's missed parts
    monkeypatch.setenv("OBSERVER_TRACK_B_WINDOW", "09:30-15:00")
    rep = detect(load_day(root, day, now=at(12, 30, day=day)))
    got = sorted((r["venue"], r["start"]) for r in rep.rows.to_pylist() if r["kind"] == "track_b_phase_missing")
    assert got == [
        ("KRX", at(9, 30, day=day)),
        ("KRX", at(12, day=day)),
        ("NXT", at(9, 30, day=day)),
        ("NXT", at(12, day=day)),
    ]


# --- the asset: a late launch on a real Dagster instance; the three tables and the JSON -----------------------------
@pytest.mark.env(OBSERVER_CALENDAR="open")
def test_gap_report_asset_writes_every_table_and_reads_the_runs(env):
    root = lake.data_dir()
    now = clock.now().astimezone(KST)
    slot = calendar().slot_at(now - timedelta(minutes=5))  # 5..15 minutes ago
    if slot is None or slot == calendar().track_a_slots(slot.date())[0]:
        pytest.skip("too close to midnight: no earlier slot of the day to find unrun")
    day = slot.date()
    put_universe(root, day)

    @dg.asset(name="track_a_snapshot", partitions_def=track_a_slot_partitions)
    def stand_in() -> None:  # the live fetch, minutes after its slot: the run itself is real
        put_snapshot(root, slot, (clock.now() - slot).total_seconds())

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        assert dg.materialize([stand_in], partition_key=slot_key(slot), instance=inst, tags={LATE_TAG: "true"}).success
        (run,) = slot_runs(inst, [slot])[slot]
        assert (run.launched_by, run.status) == ("catch_up", "SUCCESS") and run.created > slot
        assert run.started is not None and run.created <= run.started <= run.ended
        cfg = {"ops": {"gap_report": {"config": {"as_of": now.isoformat()}}}}
        res = dg.materialize(
            [gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst, run_config=cfg
        )
        files = (report_path(root, day), coverage_path(root, day), verdict_table_path(root, day))
        files += (verdict_path(root, day), report_summary_path(root, day))
        first = {p: p.read_bytes() for p in files}
        write_report(root, day, build_report(root, day, now, instance=inst))  # what a re-run writes
    assert res.success
    assert {p: p.read_bytes() for p in files} == first  # byte for byte
    rows = pq.read_table(report_path(root, day), partitioning=None)
    assert rows.schema == GAP_SCHEMA
    late = by_slot(rows.to_pylist(), "track_a_late")[slot]
    assert late["reason"] == "launched_late" and json.loads(late["evidence"])["run"]["run_id"] == run.run_id
    earlier = [r for r in by_slot(rows.to_pylist(), "track_a_missing_slot").values() if r["slot_ts"] < slot]
    assert earlier and {r["reason"] for r in earlier} == {"not_run"}  # the instance has no run for them
    cov = pq.read_table(coverage_path(root, day), partitioning=None)
    assert cov.schema == COVERAGE_SCHEMA and "date" not in cov.column_names
    mine = next(c for c in cov.to_pylist() if c["slot_ts"] == slot)
    assert (mine["slot"], mine["state"], mine["live"], mine["reason"]) == (f"T{slot:%H%M}", "live", 4, "launched_late")
    ver = pq.read_table(verdict_table_path(root, day), partitioning=None)
    assert ver.schema == VERDICT_SCHEMA
    verdict = json.loads(verdict_path(root, day).read_text())
    fired = {r["rule"] for r in ver.to_pylist() if r["fired"]}
    assert fired == {r["rule"] for r in verdict["rules_fired"]} and verdict["anomaly_day"] is bool(fired)
    assert json.loads(report_summary_path(root, day).read_text())["runs_looked_up"] is True
    assert sorted(p.name for p in report_dir(root, day).iterdir()) == ["gap_report.parquet"]
    md = res.asset_materializations_for_node("gap_report")[0].metadata
    assert md["coverage_rows"].value == cov.num_rows and "launched_late" in md["summary"].value


def test_upgrade_gap_report_table_of_an_earlier_report():

    old = pq.read_table(
        Path(__file__).parents[1] / "fixtures/lake_v1/gaps/date=2026-11-26/gap_report.parquet", partitioning=None
    )
    assert "key_id" not in old.column_names
    up = upgrade_gap_report_table(old)
    assert up.schema == GAP_SCHEMA and up.num_rows == old.num_rows
    assert up["key_id"].null_count == up.num_rows and up["subscribed_codes"].null_count == up.num_rows
    assert up.select(old.column_names).equals(old)  # nothing of the earlier report changed
    assert upgrade_gap_report_table(up).equals(up)  # idempotent
