"""The Track B capture process end to end, against the local exchange in a subprocess, as real processes.

* ground truth: 41 busy codes, three drops (with and without a close frame), duplicated and malformed frames;
  the journal, compacted, holds every tick the exchange sent exactly once except ticks inside the gap markers,
  and every drop is a gap marker whose bounds are within 2 s of the exchange's own record of the outage;
* ``kill -9`` and an immediate restart: the torn tail is cut, the hole is a ``system_error`` gap around the dead
  time, recording resumes within a few seconds of the new process starting;
* two app keys: two sessions, disjoint slot sets (82 codes, bootstrapped from a Track A snapshot), one journal
  each; a later snapshot's trigger is refused into the overflow ledger; a mitigation level change is an event
  and is stamped on the journal lines;
* the 5-minute failure rule (shortened): critical gap, ``ws_failure_critical`` event, anomaly marker;
* the ``on_frame`` hook of the WebSocket client sees every frame, malformed ones included, before its trades.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import open_clock_midday

from local_exchange.accounts import appkey_id
from local_exchange.server import run_sim_process
from observer_assets.track_b.capture import read_status
from observer_assets.track_b.capture.logs import JsonLineFormatter
from observer_assets.track_b.compaction import compact
from observer_assets.track_b.journal import read_journal, segments
from observer_assets.track_b.sysstat import CpuMeter, memory, parse_meminfo, parse_proc_stat, process_age_s
from observer_resources.calendar import KST
from observer_resources.events import gaps, read_events
from observer_resources.kis.config import KisConfig, configs_from_env
from observer_resources.kis.frames import Malformed, TradeBatch
from observer_resources.kis.ws import KisWebSocketClient
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider
from observer_resources.storage.layout import anomaly_path, overflow_path, slot_label

SPEED = 20  # sim seconds per real second: 41 busy codes give thousands of ticks in seconds
SIM_ARGS = (
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
    *open_clock_midday(),
)
_creds = itertools.count(7100)


@pytest.fixture(scope="module")
def sim():
    proc = run_sim_process(*SIM_ARGS)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def busy(sim) -> list[str]:
    rows = sim.admin("listings", params={"order": "activity", "limit": "100"})["listings"]
    return [r["code"] for r in rows if not r["halted"]]


class CaptureProc:
    """One capture process; stderr (JSON lines) to a file so a full pipe never blocks it."""

    def __init__(self, env: dict[str, str], args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._err = open(log_path, "ab")
        self.spawned_wall = time.time()
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer_assets.track_b.capture", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._err.close()


@pytest.fixture
def captures():
    started: list[CaptureProc] = []
    yield started
    for c in started:  # only the processes this test started, by their handle
        c.kill()


def capture_env(sim, data_dir: Path, creds: tuple[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_"))}
    # the KRX tape alone unless a test asks for other feeds (the two-venue default has tests of its own)
    env.update(
        OBSERVER_DATA_DIR=str(data_dir),
        OBSERVER_CALENDAR="open",
        OBSERVER_TRACK_B_FEEDS="trades:KRX",
        PYTHONUNBUFFERED="1",
    )
    if sim is not None:
        env.update(KIS_REST_URL=sim.rest_url, KIS_WS_URL=sim.ws_url)
    if creds is not None:
        env.update(KIS_APP_KEY=creds[0], KIS_APP_SECRET=creds[1])
    env.update(extra)
    return env


def start(captures: list, env: dict[str, str], args: list[str], tmp: Path, name: str = "capture") -> CaptureProc:
    c = CaptureProc(env, args, tmp / f"{name}-{len(captures)}.log")
    captures.append(c)
    return c


def until(seconds: float) -> str:
    return (datetime.now(KST) + timedelta(seconds=seconds)).isoformat()


def today() -> date:
    return datetime.now(KST).date()


def events(data_dir: Path, name: str | None = None) -> list[dict]:
    return [e for e in read_events(data_dir, today()) if name is None or e["event_type"] == name]


def wait_for(cond, timeout: float, what: str, proc: CaptureProc | None = None):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(
                f"capture exited ({proc.proc.returncode}) while waiting for {what}; log tail: {proc.logs()[-5:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}" + (f"; log tail: {proc.logs()[-5:]}" if proc else "")
            )
        time.sleep(0.05)


def key_id_of(env: dict[str, str]) -> list[str]:
    return [c.key_id for c in configs_from_env(env)]


def journal_lines(data_dir: Path, key_id: str) -> list:
    return list(read_journal(segments(data_dir, today(), key_id=key_id)))


def to_real(sim_iso: str, ref_sim: datetime, ref_real: float) -> float:
    """A sim-clock instant as wall-clock epoch seconds (the sim clock runs SPEED x from the reference pair)."""
    return ref_real + (datetime.fromisoformat(sim_iso) - ref_sim).total_seconds() / SPEED


# --- 1. ground truth -------------------------------------------------------------------------------------


def test_ground_truth_41_codes_drops_duplicates_malformed(sim, busy, make_creds, tmp_path, captures):
    creds = make_creds(next(_creds))
    codes = busy[:41]
    data = tmp_path / "data"
    env = capture_env(sim, data, creds, OBSERVER_TRACK_B_EVAL_S="2", OBSERVER_TRACK_B_SAMPLE_S="1")
    (key,) = key_id_of(env)
    cap = start(captures, env, ["--pins", ",".join(codes), "--status-interval", "0.5", "--until", until(120)], tmp_path)

    def reconnects() -> int:
        return sum(1 for e in events(data, "ws_connected") if e.get("reconnect"))

    def fault(kind: str, **params) -> dict:
        return sim.admin("faults", {"kind": kind, "appkey": creds[0], **params})

    wait_for(lambda: (s := read_status(data)) and len(s["keys"][key]["registered"]) == 41, 20, "41 registered", cap)
    time.sleep(2.0)
    drops = []
    for i, close_frame in enumerate((True, False, True)):
        drops.append(fault("ws_drop", close_frame=close_frame))
        wait_for(lambda: reconnects() == i + 1, 20, f"reconnect {i + 1}", cap)
        wait_for(lambda: len(read_status(data)["keys"][key]["registered"]) == 41, 10, "re-subscription", cap)
        if i == 0:  # between drops, well away from both: every duplicated / malformed frame arrives
            time.sleep(1.0)
            fault("ws_duplicate", n=6)
            fault("ws_malformed", n=4)  # truncated_json, field_count, non_numeric (record), unknown_tr
            wait_for(
                lambda: all(
                    f["status"] == "done"
                    for f in sim.admin("faults")["log"]
                    if f["params"].get("appkey") == appkey_id(creds[0])
                    and f["kind"] in ("ws_duplicate", "ws_malformed")
                ),
                10,
                "faults used",
                cap,
            )
        time.sleep(2.0)
    cap.proc.send_signal(signal.SIGTERM)
    assert cap.wait(30) == 0
    logs = cap.logs()
    assert logs[-1]["event"] == "capture_stopped" and logs[-1]["reason"] == "signal SIGTERM"

    # --- the journal, compacted, against the exchange's record of what it sent ------------------------
    lines = journal_lines(data, key)
    assert lines and all(ln.ok for ln in lines), "no torn or corrupt line after a clean stop"
    frames = [ln for ln in lines if ln.kind == "frame"]
    assert {ln.mitigation_level for ln in frames} == {0}
    assert sorted(Counter(ln.meta["bad"] for ln in frames if "bad" in ln.meta).elements()) == [
        "field_count",
        "truncated_json",
        "unknown_tr",
    ]
    assert sum(ln.meta.get("rej", 0) for ln in frames) == 1  # the non-numeric record, its frame kept whole
    assert len({ln.conn for ln in frames}) == 4  # one connection per session: 3 drops, 3 reconnects
    table, stats = compact(lines, day=today(), hour=frames[0].rx.hour)
    assert stats["malformed_frames"] == 3 and stats["malformed_records"] == 1
    assert stats["bad_lines"] == {}

    my_gaps = [g for g in gaps(data, today()) if g.metadata.get("key_id") == key]
    drop_gaps = sorted((g for g in my_gaps if g.reason == "ws_disconnect"), key=lambda g: g.start)
    assert len(drop_gaps) == 3 and all(g.end is not None and g.severity == "major" for g in drop_gaps)
    (stop_gap,) = [g for g in my_gaps if g.reason == "manual_stop"]  # SIGTERM inside the window
    assert stop_gap.end is None
    windows = [(g.start.timestamp(), g.end.timestamp()) for g in drop_gaps]

    got = defaultdict(list)
    for code, ex, price, qty, acml in zip(
        *(table[c].to_pylist() for c in ("code", "exchange_ts", "price", "qty", "acml_vol"))
    ):
        got[code].append((ex.strftime("%H%M%S"), price, qty, acml))
    log_faults = {f["id"]: f for f in sim.admin("faults")["log"]}
    ref = log_faults[drops[0]["id"]]
    ref_sim, ref_real = datetime.fromisoformat(ref["start_sim"]), ref["start_real"]

    def reveal_real(day: str, hhmmss: str) -> float:  # a tick of second S is revealed when the sim clock reaches S
        return to_real(
            datetime.strptime(day + hhmmss, "%Y%m%d%H%M%S").replace(tzinfo=KST).isoformat(), ref_sim, ref_real
        )

    def in_a_gap(t: float, slack: float) -> bool:
        return any(a - slack <= t <= b + slack for a, b in windows)

    sent_total = dup_entries = lost_in_flight = missed_market = 0
    for code in codes:
        entries = sim.admin("truth/sent", params={"appkey": creds[0], "code": code})["entries"]
        assert {e["status"] for e in entries} <= {"sent", "duplicate"}, code
        dup_entries += sum(e["status"] == "duplicate" for e in entries)
        sent = [e for e in entries if e["status"] == "sent"]
        sent_total += len(sent)
        mine = got.get(code, [])
        assert len(mine) == len(set(mine)), f"{code}: a tick recorded twice"
        want = {(e["time"], e["price"], e["qty"], e["acml_vol"]): e for e in sent}
        assert set(mine) <= set(want), f"{code}: a tick the exchange never sent"
        # 1) sent but not recorded (in flight at a drop): inside a gap marker
        for k in set(want) - set(mine):
            assert in_a_gap(to_real(want[k]["sent_at_sim"], ref_sim, ref_real), 0.25), (code, want[k])
            lost_in_flight += 1
        # 2) against the market's full record: every tick between two recorded ones was missed inside a gap
        rec = sorted((want[k]["day"], want[k]["index"], want[k]["time"]) for k in mine)
        for (d0, i0, t0), (d1, i1, t1) in zip(rec, rec[1:]):
            if d0 != d1 or i1 == i0 + 1:
                continue
            truth = sim.admin("truth/ticks", params={"code": code, "day": d0, "from": t0, "to": t1, "records": "0"})[
                "ticks"
            ]
            for t in truth:
                if i0 < t["index"] < i1:
                    assert in_a_gap(reveal_real(d0, t["time"]), 0.25), (code, t, [(a, b) for a, b in windows])
                    missed_market += 1
    assert sent_total >= 2000, f"only {sent_total} ticks: the check needs a busy stream"
    assert stats["ticks"] == sent_total - lost_in_flight
    assert stats["duplicates_dropped"] == dup_entries > 0
    assert missed_market > 0, "the drops did cost ticks (KIS has no replay); all of them are inside the gaps"

    # --- every drop is a gap marker within 2 s of the truth -------------------------------------------------
    # start: the exchange's drop instant (fault log, wall clock). end: the slot set registered again, i.e. the
    # exchange's subscribe acks on the new connection, as archived in the journal with their receive times.
    acks: dict[int, list[float]] = defaultdict(list)
    for ln in frames:
        if '"SUBSCRIBE SUCCESS"' in (ln.payload or ""):
            acks[ln.conn].append(ln.rx.timestamp())
    assert sorted(len(v) for v in acks.values()) == [41, 41, 41, 41]
    report = []
    for f, g, conn in zip(drops, drop_gaps, sorted(acks)[1:]):
        drop_at = log_faults[f["id"]]["start_real"]
        registered_at = max(acks[conn])
        detected = datetime.fromisoformat(g.metadata["detected_at"]).timestamp()
        first_frame = datetime.fromisoformat(g.metadata["first_frame_at"]).timestamp()
        report.append(
            {
                "close_frame": f["params"]["close_frame"],
                "start-drop": round(g.start.timestamp() - drop_at, 3),
                "detected-drop": round(detected - drop_at, 3),
                "end-registered": round(g.end.timestamp() - registered_at, 3),
                "end-first_frame": round(g.end.timestamp() - first_frame, 3),
                "end-drop": round(g.end.timestamp() - drop_at, 3),
            }
        )
        assert abs(g.start.timestamp() - drop_at) <= 2.0
        assert g.start.timestamp() <= drop_at + 0.05  # the gap never starts after data stopped
        assert abs(g.end.timestamp() - registered_at) <= 2.0
        assert g.end.timestamp() >= registered_at - 0.002  # never before every slot was back (ms-rounded times)
        assert first_frame == pytest.approx(min(acks[conn]), abs=0.001)
    print("gap bounds vs truth (s):", json.dumps(report))

    ev = events(data)
    kinds = Counter(e["event_type"] for e in ev)
    assert kinds["capture_started"] == 1 and kinds["capture_stopped"] == 1 and kinds["ws_disconnect"] == 3
    assert kinds["slot_change"] == 41  # the 41 pins
    assert kinds["approval_key_issued"] >= 1  # the capture's token provider writes to the host's event log too
    st = read_status(data)
    assert st["state"] == "stopped" and st["keys"][key]["reconnects"] == 3 and st["keys"][key]["bad_frames"] == 3
    assert 0 < st["keys"][key]["disconnected_seconds"] < 30


# --- 2. kill -9 and restart ----------------------------------------------------------------------------------


def test_kill_9_torn_tail_cut_hole_recorded_and_recording_resumes(sim, busy, make_creds, tmp_path, captures):
    creds = make_creds(next(_creds))
    data = tmp_path / "data"
    env = capture_env(sim, data, creds)
    (key,) = key_id_of(env)
    pins = ["--pins", ",".join(busy[:10]), "--status-interval", "0.5"]
    first = start(captures, env, pins + ["--until", until(120)], tmp_path)
    wait_for(lambda: (s := read_status(data)) and s["keys"][key]["journal_durable_seq"] > 200, 20, "recording", first)
    time.sleep(1.0)
    killed_at = time.time()
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    seg = segments(data, today(), key_id=key)[-1]
    torn = b'{"rx":"' + datetime.now(KST).isoformat().encode() + b'","r":"dead","c":1,"n":99999,"p":"0|H0STC'
    with open(seg, "ab") as f:  # what a write cut short by the crash leaves: a line without its end
        f.write(torn)

    second = start(captures, env, pins + ["--until", until(9)], tmp_path)
    assert second.wait(40) == 0
    logs = second.logs()
    rec = next(e for e in logs if e["event"] == "capture_recovered")
    assert rec["cut_bytes"] == len(torn)
    ff = next(e for e in logs if e["event"] == "first_frame")
    startup = ff["since_process_start_s"]
    assert startup is not None and startup < 8.0, ff  # back within seconds (interpreter start-up included), not 30
    lines = journal_lines(data, key)
    assert all(ln.ok for ln in lines), "the torn tail was cut, nothing else is bad"
    runs = [ln.run for ln in lines if ln.kind == "frame"]
    new_run = next(e["run_id"] for e in logs if e["event"] == "capture_started")
    assert runs.count(new_run) > 100 and len(set(runs)) == 2, "recording resumed in the same journal"
    first_new = min(ln.rx.timestamp() for ln in lines if ln.kind == "frame" and ln.run == new_run)
    last_old = max(ln.rx.timestamp() for ln in lines if ln.kind == "frame" and ln.run != new_run)

    (g,) = [g for g in gaps(data, today()) if g.reason == "system_error" and g.metadata.get("key_id") == key]
    assert g.end is not None and g.severity == "major" and g.scope == "scalp" and g.symbol is None
    assert g.start.timestamp() == pytest.approx(last_old, abs=0.001)  # from the last durable frame ...
    assert killed_at - 1.5 <= g.start.timestamp() <= killed_at  # ... which is within ~0.2 s of the kill
    assert first_new - 0.01 <= g.end.timestamp() <= first_new + 5.0  # ... to the slot set registered again
    assert g.end.timestamp() - second.spawned_wall < 8.0
    assert g.metadata["cut_bytes"] == len(torn) and g.metadata["start_basis"] == "last durable frame"
    print(
        f"kill->restart: gap {g.start.timestamp() - killed_at:+.3f}s..{g.end.timestamp() - killed_at:+.3f}s "
        f"around the kill; new process to first frame {startup:.2f}s"
    )
    assert not [x for x in gaps(data, today()) if x.end is None and x.reason != "manual_stop"]


# --- 3. two keys ------------------------------------------------------------------------------------------------


def _snapshot(path: Path, ts: datetime, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tbl = pa.table(
        {
            "slot_ts": pa.array([ts] * len(rows), pa.timestamp("us", tz="Asia/Seoul")),
            "code": [r["code"] for r in rows],
            "price": [r["price"] for r in rows],
            "volume": [r["volume"] for r in rows],
            "trade_value": [r["trade_value"] for r in rows],
        }
    )
    tmp = path.with_name(".tmp.parquet")
    pq.write_table(tbl, tmp)
    os.replace(tmp, path)


def test_two_keys_disjoint_sessions_bootstrap_overflow_and_mitigation(sim, busy, tmp_path, captures):
    data = tmp_path / "data"
    codes = busy[:90]
    slot = datetime.now(KST).replace(second=0, microsecond=0) - timedelta(minutes=20)
    rows = [
        {"code": c, "price": 10_000, "volume": 1_000 * (100 - i), "trade_value": 10_000_000 * (100 - i)}
        for i, c in enumerate(codes)
    ]
    base = data / "track_a" / f"date={today().isoformat()}"
    _snapshot(base / f"slot={slot_label(slot)}" / "snapshot.parquet", slot, rows)
    mitigation = {
        "hold_enter_s": 0,
        "enter1": {"cpu_pct": 0},
        "enter2": {"cpu_pct": 1e9, "mem_pct": 1e9, "write_latency_ms": 1e9, "queue_lag_s": 1e9},
    }
    env = capture_env(
        sim,
        data,
        None,
        OBSERVER_DEMO_KEYS="2",
        OBSERVER_TRACK_B_EVAL_S="1",
        OBSERVER_TRACK_B_SAMPLE_S="1.5",
        OBSERVER_TRACK_B_MITIGATION=json.dumps(mitigation),
    )
    keys = key_id_of(env)
    assert len(keys) == 2
    cap = start(captures, env, ["--status-interval", "0.5", "--until", until(12)], tmp_path)
    st = wait_for(
        lambda: (s := read_status(data)) and all(len(s["keys"][k]["registered"]) == 41 for k in keys) and s,
        25,
        "both sessions full",
        cap,
    )
    a, b = (set(st["keys"][k]["registered"]) for k in keys)
    assert not a & b and a | b == set(codes[:82])  # the 82 highest traded values, split, disjoint
    # a later snapshot: a 10 % jump on a code without a slot -> volatility, refused (dwell) into the ledger
    later = slot + timedelta(minutes=10)
    jump = codes[85]
    rows2 = [dict(r, price=11_000 if r["code"] == jump else r["price"], volume=r["volume"] + 10) for r in rows]
    _snapshot(base / f"slot={slot_label(later)}" / "snapshot.parquet", later, rows2)
    assert cap.wait(40) == 0
    logs = cap.logs()
    assert logs[-1]["event"] == "capture_stopped" and logs[-1]["reason"] == "until"

    for k, held in zip(keys, (a, b)):
        lines = journal_lines(data, k)
        frames = [ln for ln in lines if ln.kind == "frame"]
        assert frames and all(ln.ok for ln in lines) and {ln.key_id for ln in frames} == {k}
        table, stats = compact(lines, day=today(), hour=frames[0].rx.hour)
        assert stats["ticks"] > 100 and set(stats["per_code"]) <= held, "each journal holds its own session"
        levels = [ln.mitigation_level for ln in frames]
        assert levels[-1] == 1 and set(levels) <= {0, 1}
        assert levels == sorted(levels), "the level changed once, 0 -> 1, and every line says which"
    (change,) = events(data, "mitigation_level_change")
    assert change["old"] == 0 and change["new"] == 1 and change["rate_hz"] == 1.0
    assert "cpu_pct" in change["cause"] and set(change["values"]) == {
        "cpu_pct",
        "mem_pct",
        "write_latency_ms",
        "queue_lag_s",
    }
    allocs = [e for e in events(data, "slot_change") if e["action"] == "allocate"]
    assert len(allocs) == 82 and {e["trigger"] for e in allocs} == {"bootstrap"}
    ledger = [json.loads(x) for x in overflow_path(data, today()).read_text().splitlines()]
    refused = [r for rec in ledger for r in rec["rejected"] if r["symbol"] == jump]
    assert refused and refused[0]["trigger_type"] == "volatility" and refused[0]["reason"] == "dwell"
    rec = next(rec for rec in ledger if any(r["symbol"] == jump for r in rec["rejected"]))
    assert len(rec["selected"]) == 82 and rec["system_state"]["mitigation_level"] in (0, 1)
    assert set(rec["system_state"]["ws"]) == set(keys)
    assert not [g for g in gaps(data, today()) if g.reason == "ws_disconnect"]


# --- 4. the 5-minute rule (shortened) ---------------------------------------------------------------------------


def test_failure_rule_critical_gap_anomaly_then_recovery(sim, busy, make_creds, tmp_path, captures):
    creds = make_creds(next(_creds))
    data = tmp_path / "data"
    sim.admin("faults", {"kind": "ws_key_in_use", "appkey": creds[0], "seconds": 60.0})  # refused until cleared
    env = capture_env(
        sim,
        data,
        creds,
        OBSERVER_TRACK_B_FAILURE_S="2",
        OBSERVER_TRACK_B_BACKOFF="0.3",
        OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S="0.4",
    )
    (key,) = key_id_of(env)
    cap = start(
        captures, env, ["--pins", ",".join(busy[:5]), "--status-interval", "0.5", "--until", until(60)], tmp_path
    )
    (crit,) = wait_for(lambda: events(data, "ws_failure_critical"), 30, "the failure rule", cap)
    assert crit["rule"] == "ws_failure_5min" and crit["failing_seconds"] >= 2.0 and crit["threshold_seconds"] == 2.0
    assert "key_in_use" in crit["last_error"] and crit["severity"] == "critical"
    doc = json.loads(anomaly_path(data, today()).read_text())  # written while the failure goes on
    assert doc["anomaly"] is True and doc["retention_days"] == 7 and doc["rules"][0]["rule"] == "ws_failure_5min"
    assert doc["rules"][0]["values"]["failing_seconds"] >= 2.0 and doc["rules"][0]["values"]["key_id"] == key
    wait_for(lambda: read_status(data)["keys"][key]["open_gap"]["severity"] == "critical", 5, "status", cap)
    sim.admin("faults", method="DELETE")  # the exchange lets the key in again
    wait_for(lambda: read_status(data)["keys"][key]["ticks"] > 0, 20, "recording after the failure", cap)
    cap.proc.send_signal(signal.SIGTERM)
    assert cap.wait(30) == 0
    (g,) = [g for g in gaps(data, today()) if g.metadata.get("key_id") == key and g.reason == "ws_disconnect"]
    assert g.metadata["kind"] == "never_connected" and g.end is not None and g.severity == "critical"
    assert (g.end - g.start).total_seconds() > 2.0
    assert g.start <= datetime.fromisoformat(crit["failing_since"]) + timedelta(milliseconds=1)
    markers = [e for e in events(data, "gap_marker") if e["gap_id"] == g.gap_id]
    assert [(m["state"], m["severity"]) for m in markers] == [
        ("open", "major"),
        ("open", "critical"),
        ("closed", "critical"),
    ]
    rules = {r["rule"]: r for r in json.loads(anomaly_path(data, today()).read_text())["rules"]}
    assert set(rules) == {"ws_failure_5min", "critical_gap"}
    assert rules["critical_gap"]["values"]["gap_seconds"] == pytest.approx((g.end - g.start).total_seconds(), abs=0.01)
    st = read_status(data)["keys"][key]
    assert st["connect_failures"] >= 3, "it kept retrying without spinning"
    failed = [e for e in events(data, "ws_connect_failed") if "key_in_use" in e["reason"]]
    assert len(failed) == st["connect_failures"]
    gaps_between = [
        (datetime.fromisoformat(b["timestamp"]) - datetime.fromisoformat(a["timestamp"])).total_seconds()
        for a, b in zip(failed, failed[1:])
    ]
    assert min(gaps_between) >= 0.3, "backoff floor after OPSP8996"
    # SIGTERM inside the window left a manual_stop gap open; the next start closes it once it is registered
    (stop_gap,) = [g for g in gaps(data, today()) if g.reason == "manual_stop"]
    assert stop_gap.end is None and stop_gap.metadata["key_id"] == key
    again = start(captures, env, ["--pins", ",".join(busy[:5]), "--until", until(5)], tmp_path)
    assert again.wait(40) == 0
    (stop_gap,) = [g for g in gaps(data, today()) if g.reason == "manual_stop"]
    assert stop_gap.end is not None and stop_gap.end.timestamp() > again.spawned_wall
    assert not [g for g in gaps(data, today()) if g.end is None]
    assert not [e for e in again.logs() if e["event"] == "capture_recovered"], "a clean stop needs no recovery"


def test_failure_rule_with_a_dead_exchange_keeps_retrying_until_the_end(tmp_path, captures):
    data = tmp_path / "data"
    env = capture_env(
        None,
        data,
        None,
        KIS_REST_URL="http://127.0.0.1:9",
        KIS_WS_URL="ws://127.0.0.1:9",
        OBSERVER_TRACK_B_FAILURE_S="1",
        OBSERVER_TRACK_B_BACKOFF="0.2,0.4",
    )
    cap = start(captures, env, ["--until", until(4), "--status-interval", "0.5"], tmp_path)
    assert cap.wait(40) == 0
    (g,) = gaps(data, today())
    assert g.severity == "critical" and g.end is not None and g.metadata["closed_by"] == "capture_stopped"
    assert len(events(data, "ws_connect_failed")) >= 4 and len(events(data, "ws_failure_critical")) == 1
    assert json.loads(anomaly_path(data, today()).read_text())["rules"][0]["rule"] == "ws_failure_5min"


# --- the WebSocket client's raw-frame hook -------------------------------------------------------------------


def test_ws_on_frame_sees_every_frame_first_malformed_included(sim, busy, make_creds, tmp_path):
    key, secret = make_creds(next(_creds))
    config = KisConfig(key, secret, "real", sim.rest_url, sim.ws_url)
    tokens = SharedTokenProvider(config, SqliteTokenStore(tmp_path / "tok.db"))
    frames: list[tuple[bytes, datetime, object, int]] = []
    order: list[str] = []
    box: dict = {}

    def on_frame(raw, dt, msg):
        frames.append((raw, dt, msg, box["c"].connection_id))
        if isinstance(msg, TradeBatch):
            order.extend(f"f:{t.code}:{t.acml_vol}" for t in msg.records)

    def on_trades(records, mono, dt):
        order.extend(f"t:{t.code}:{t.acml_vol}" for t in records)

    client = KisWebSocketClient(
        config,
        tokens,
        on_trades=on_trades,
        on_frame=on_frame,
        backoff=(0.2,),
        key_in_use_backoff=0.3,
        subscribe_spacing=0.005,
    )
    box["c"] = client

    async def go():
        assert client.connection_id == 0
        await client.set_desired(busy[:5])
        task = asyncio.create_task(client.run())
        while len(frames) < 30:
            await asyncio.sleep(0.05)
        sim.admin("faults", {"kind": "ws_malformed", "appkey": key, "n": 4})
        while sum(isinstance(m, Malformed) for _, _, m, _ in frames) < 3:
            await asyncio.sleep(0.05)
        sim.admin("faults", {"kind": "ws_drop", "appkey": key})
        while client.connection_id < 2 or not client.registered:
            await asyncio.sleep(0.05)
        n = len(frames)
        while len(frames) < n + 10:
            await asyncio.sleep(0.05)
        client.stop()
        await task

    asyncio.run(go())
    tokens.close()
    assert all(isinstance(raw, bytes) for raw, _, _, _ in frames)
    assert {m.reason for _, _, m, _ in frames if isinstance(m, Malformed)} == {
        "truncated_json",
        "field_count",
        "unknown_tr",
    }
    conns = [c for *_, c in frames]  # a reconnect refused with OPSP8996 (key still held) is a connection too
    assert conns == sorted(conns) and conns[0] == 1 and max(conns) == client.connection_id >= 2
    assert all(dt.utcoffset() == timedelta(hours=9) for _, dt, _, _ in frames)
    assert [dt for _, dt, _, _ in frames] == sorted(dt for _, dt, _, _ in frames)
    # each trade passes on_frame before on_trades gets it
    first_seen: dict[str, int] = {}
    for i, item in enumerate(order):
        first_seen.setdefault(item, i)
    for item, i in first_seen.items():
        if item.startswith("t:"):
            assert first_seen.get("f:" + item[2:], 10**9) < i, item
    assert client.stats.frame_callback_errors == 0 and client.stats.parse.frames == len(frames)


# --- small pure parts ------------------------------------------------------------------------------------------


def test_proc_parsers_and_meters():
    assert parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n") == (150, 1000)
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1 2 3\n")
    assert parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n") == 75.0
    assert parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 100 kB\nCached: 300 kB\n") == 50.0
    cpu = CpuMeter()
    sum(i * i for i in range(200_000))
    assert 0.0 <= cpu.percent() <= 100.0
    m = memory()
    assert m.available and 0.0 < m.percent < 100.0
    age = process_age_s()
    assert age is not None and 0 < age < 3600


def test_log_lines_are_json_objects():
    import logging

    rec = logging.LogRecord("observer.kis", logging.WARNING, __file__, 1, "kis ws: %s", ("down",), None)
    out = json.loads(JsonLineFormatter().format(rec))
    assert out["level"] == "warning" and out["event"] == "observer.kis" and out["message"] == "kis ws: down"
    assert out["at"].endswith("+09:00")
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "gap_open", (), None)
    rec.event, rec.fields = "gap_open", {"gap_id": "g1", "at": "shadowed", "start": datetime(2026, 1, 2, tzinfo=KST)}
    out = json.loads(JsonLineFormatter().format(rec))
    assert out["event"] == "gap_open" and out["gap_id"] == "g1" and out["at_"] == "shadowed"
    assert out["at"] != "shadowed" and out["start"].startswith("2026-01-02")


def test_token_store_is_the_one_the_dagster_resources_share():
    from observer_assets.track_b.capture import capture
    from observer_resources import resources
    from observer_resources.resources import default_state_dir

    assert (
        capture.open_token_provider is resources.open_token_provider
    )  # SQLite file or OBSERVER_STATE_DB_URL, one rule
    assert default_state_dir({"OBSERVER_DATA_DIR": "/x"}) == Path("/x") / "state"  # what the capture uses
    assert default_state_dir({"OBSERVER_DATA_DIR": "s3://b/lake", "OBSERVER_LOCAL_DIR": "/y"}) == Path("/y") / "state"
