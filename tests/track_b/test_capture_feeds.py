"""The capture across feeds and phases, as real processes on the KRX calendar's two-venue morning.

One exchange plays 2026-12-01 from 08:59 to 09:02 at 10x (KRX's opening auction into the regular session, NXT's
break into its main session). Two captures run on it at once, each with its own app key:

* with ``OBSERVER_TRACK_B_FEEDS=trades:UN,book:KRX,expected:KRX,status:KRX,status:NXT`` each symbol costs three
  registrations and the session two more, so a session follows 13 symbols and holds 41 registrations. Every feed is
  journaled as received; the unified tape is exactly what the exchange sent, record for record; expected prices
  arrive only in the auction; the status feeds announce the phases and agree with the table;
* the second capture's phase table (``OBSERVER_CALENDAR_PHASES``) has NXT's main session at 09:10 instead of
  09:00:30, so when NXT announces its main session at 09:00:30 the capture records a ``calendar_disagreement``.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from local_exchange.server import run_sim_process
from observer_assets.monitoring import alerts, sensors
from observer_assets.track_b.assets import track_b_ticks
from observer_assets.track_b.checks import track_b_phases_agree
from observer_assets.track_b.journal import read_journal, segments
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.phases import PHASES_FILE
from observer_resources.events import read_events
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import FeedFrame, OrderBookFrame, TradeBatch, parse_message
from track_b.test_capture import capture_env, captures, key_id_of, read_status, start, wait_for  # noqa: F401 - fixture

# two captures and an exchange playing the open: with the end-to-end runs, off the bulk's clock
pytestmark = pytest.mark.slow

SPEED = 10
DAY = "2026-12-01"
T0 = datetime(2026, 12, 1, 8, 59, tzinfo=KST)
UNTIL = datetime(2026, 12, 1, 9, 2, tzinfo=KST)
FEEDS = "trades:UN,book:KRX,expected:KRX,status:KRX,status:NXT"
_creds = itertools.count(7400)


@pytest.fixture(scope="module")
def sim():
    proc = run_sim_process(
        *("--mode", "real", "--clock", "krx", "--seed", "5", "--listings", "300", "--speed", "0"),
        *("--start", T0.isoformat(), "--hold-after-disconnect", "0.2"),
    )
    try:
        yield proc
    finally:
        proc.stop()


def late_nxt_table(tmp: Path) -> Path:
    text = PHASES_FILE.read_text(encoding="utf-8")
    edited = re.sub(r'(name = "main",\s+kind = "continuous", start = )"09:00:30"', r'\1"09:10:00"', text, count=1)
    assert edited != text
    path = tmp / "phases-late-nxt.toml"
    path.write_text(edited, encoding="utf-8")
    return path


def frames_by_tr(data: Path, key: str) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for ln in read_journal(segments(data, datetime.fromisoformat(DAY).date(), key_id=key)):
        if ln.ok and ln.kind == "frame":
            msg = parse_message(ln.payload)
            if isinstance(msg, TradeBatch | OrderBookFrame | FeedFrame):
                out[msg.tr_id].append((ln.rx, msg))
    return out


def test_feeds_per_symbol_status_check_and_a_disagreeing_table(
    sim,
    make_creds,
    tmp_path,
    captures,  # noqa: F811 - the fixture
    monkeypatch,
    caplog,
):
    members = set(sim.admin("truth/nxt", params={"day": DAY.replace("-", "")})["members"])
    rows = sim.admin("listings", params={"order": "activity", "limit": "80"})["listings"]
    codes = [r["code"] for r in rows if not r["halted"] and r["code"] in members][:13]
    assert len(codes) == 13 and "005930" in members
    for code in codes:  # the day's tapes, generated now rather than by the first trade at 10x
        sim.admin(
            "truth/ticks", params={"code": code, "day": "20261201", "venue": "UN", "records": "0", "to": "090100"}
        )
    clock_file = tmp_path / "clock.json"
    runs = {}
    for name, extra in (("agree", {}), ("late", {"OBSERVER_CALENDAR_PHASES": str(late_nxt_table(tmp_path))})):
        creds = make_creds(next(_creds))
        data = tmp_path / name
        env = capture_env(
            sim,
            data,
            creds,
            OBSERVER_CALENDAR="krx",
            OBSERVER_CLOCK_FILE=str(clock_file),
            OBSERVER_TRACK_B_WINDOW="phases",
            OBSERVER_TRACK_B_FEEDS=FEEDS,
            OBSERVER_TRACK_B_EVAL_S="2",
            **extra,
        )
        runs[name] = (creds, data, key_id_of(env)[0], env)
    clock.write_sim(clock_file, T0, 0)
    caps = {
        name: start(captures, env, ["--pins", ",".join(codes), "--until", UNTIL.isoformat()], tmp_path, name)
        for name, (_, _, _, env) in runs.items()
    }
    for name, (_, data, key, _) in runs.items():
        wait_for(
            lambda data=data, key=key: (s := read_status(data)) and s["keys"][key]["registrations"] == 41,
            30,
            f"{name}: 41 registrations",
            caps[name],
        )
    sim.admin("clock", {"at": T0.isoformat(), "speed": SPEED})
    clock.write_sim(clock_file, T0, SPEED)
    for c in caps.values():
        assert c.wait(timeout=(UNTIL - T0).total_seconds() / SPEED + 60) == 0

    # --- the capture on the shipped table --------------------------------------------------------------------
    creds, data, key, _ = runs["agree"]
    status = read_status(data)["keys"][key]
    assert status["calendar_disagreements"] == 0 and status["phases"] == {"KRX": "20", "NXT": "20"}
    by_tr = frames_by_tr(data, key)
    assert set(by_tr) == {p.TR_WS_TRADE_UN, p.TR_WS_ORDERBOOK, p.TR_WS_EXPECTED, p.TR_WS_STATUS, p.TR_WS_STATUS_NXT}
    # the unified tape: exactly what the exchange's H0UNCNT0 stream sent each code, once, in order
    got: dict[str, list] = defaultdict(list)
    for _, msg in by_tr[p.TR_WS_TRADE_UN]:
        for t in msg.records:
            got[t.code].append((t.exchange_time, t.price, t.qty, t.acml_vol))
    for code in codes:
        sent = sim.admin("truth/sent", params={"appkey": creds[0], "code": code, "tr_id": p.TR_WS_TRADE_UN})
        assert got[code] == [(e["time"], e["price"], e["qty"], e["acml_vol"]) for e in sent["entries"]], code
    assert sum(map(len, got.values())) > 200
    # expected prices only in KRX's opening auction, books of the 13 codes, the status feed's phases in order
    auction_end = datetime(2026, 12, 1, 9, 0, tzinfo=KST)
    expected = [(rx, r) for rx, m in by_tr[p.TR_WS_EXPECTED] for r in m.records]
    assert expected and all(r[1] < "090000" for _, r in expected)
    assert {r[0] for _, r in expected} == set(codes)
    assert {b.code for _, m in by_tr[p.TR_WS_ORDERBOOK] for b in m.records} == set(codes)
    changes = [e for e in read_events(data, auction_end.date()) if e["event_type"] == "phase_change"]
    krx = [e["phase_code"] for e in changes if e["venue"] == "KRX"]
    nxt = [e["phase_code"] for e in changes if e["venue"] == "NXT"]
    assert krx == ["12", "20"] and nxt == ["00", "20"] and all(e["agrees"] for e in changes)

    # --- the capture whose table has NXT's main session at 09:10 --------------------------------------------
    creds, data, key, _ = runs["late"]
    seen = [e for e in read_events(data, auction_end.date()) if e["event_type"] == "calendar_disagreement"]
    assert seen and {e["venue"] for e in seen} == {"NXT"}
    first = seen[0]
    assert first["phase_code"] == "20" and first["table_phases"] == ["none"]
    # recorded when the exchange's record of NXT's main session arrived (sent at 09:00:30 or, the exchange busy
    # with the open, a little later)
    truth = sim.admin("truth/feed", params={"appkey": creds[0], "tr_id": p.TR_WS_STATUS_NXT, "code": "005930"})
    (sent,) = [datetime.fromisoformat(e["sent_at_sim"]) for e in truth["entries"] if e["record"][3] == "20"]
    at = datetime.fromisoformat(first["timestamp"])
    assert datetime(2026, 12, 1, 9, 0, 30, tzinfo=KST) <= sent <= at < UNTIL
    assert read_status(data)["keys"][key]["calendar_disagreements"] == len(seen)
    assert Counter(e["venue"] for e in read_events(data, at.date()) if e["event_type"] == "phase_change") == {
        "KRX": 2,
        "NXT": 2,
    }

    # --- compacted by the hour's asset: each venue's tape, books, expected prices, phases; the disagreement alerts
    for k in (alerts.WEBHOOK_ENV, alerts.CHAT_ID_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    verdicts: dict[str, dict] = {}
    alert_texts: list[str] = []
    for name in ("agree", "late"):
        data = runs[name][1]
        monkeypatch.setenv("OBSERVER_DATA_DIR", str(data))
        with dg.instance_for_test() as inst:
            cursor = sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst)).cursor
            for hour in ("2026-12-01T08", "2026-12-01T09"):
                inst.add_dynamic_partitions("track_b_hour", [hour])
                res = dg.materialize([track_b_ticks, track_b_phases_agree], partition_key=hour, instance=inst)
                (ev,) = res.get_asset_check_evaluations()
                md = ev.metadata
                verdicts.setdefault(name, {})[hour] = (ev.passed, md["disagreements"].value, md["phase_changes"].value)
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="observer.alerts"):
                sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=cursor))
            alert_texts += [r.getMessage() for r in caplog.records if "check FAILED" in r.getMessage()]
    assert verdicts == {
        "agree": {"2026-12-01T08": (True, 0, 2), "2026-12-01T09": (True, 0, 2)},
        "late": {"2026-12-01T08": (True, 0, 2), "2026-12-01T09": (False, len(seen), 2)},
    }
    (alert,) = alert_texts
    assert "track_b_phases_agree, partition 2026-12-01T09" in alert and "NXT" in alert

    # a trader reads the lake with pyarrow alone (Hive partitions): one symbol's unified tape, its books, phases
    data = runs["agree"][1]
    code = codes[0]
    tape = ds.dataset(data / "track_b_unified", partitioning="hive").to_table(filter=pc.field("code") == code)
    tape = tape.sort_by("seq")
    sent = sim.admin("truth/sent", params={"appkey": runs["agree"][0][0], "code": code, "tr_id": p.TR_WS_TRADE_UN})
    assert tape["acml_vol"].to_pylist() == [e["acml_vol"] for e in sent["entries"]] and tape.num_rows > 10
    assert set(tape["quality_flag"].to_pylist()) <= {"ok"} and tape["seq"].to_pylist() == list(
        range(1, tape.num_rows + 1)
    )
    krx = ds.dataset(data / "track_b", partitioning="hive").to_table()
    assert krx.num_rows == 0, "no KRX trade feed was registered: its tape is empty, not missing"
    books = ds.dataset(data / "track_b_books", partitioning="hive").to_table()
    assert set(books["code"].to_pylist()) == set(codes) and set(books["venue"].to_pylist()) == {"KRX"}
    assert (
        books.num_rows == sum(len(m.records) for _, m in by_tr[p.TR_WS_ORDERBOOK])
        and pc.all(pc.greater(books["ask1"], 0)).as_py()
    )
    snaps = ds.dataset(data / "track_b_books_sampled", partitioning="hive").to_table()
    assert pc.sum(snaps["bucket_books"]).as_py() == books.num_rows  # every book in exactly one second's snapshot
    keys = list(zip(snaps["code"].to_pylist(), snaps["venue"].to_pylist(), snaps["bucket_start"].to_pylist()))
    # one row per code, venue and second of receipt that held a book (how many seconds held two depends on the
    # machine's load: the count is compared with the books' own seconds, not assumed smaller)
    seconds = {
        (c, v, t.replace(microsecond=0))
        for c, v, t in zip(books["code"].to_pylist(), books["venue"].to_pylist(), books["receive_ts"].to_pylist())
    }
    assert len(keys) == len(set(keys)) == len(seconds) and {(c, v, t) for c, v, t in keys} == seconds
    exp = ds.dataset(data / "track_b_expected", partitioning="hive").to_table()
    assert exp.num_rows == len(expected) and pc.max(exp["exchange_ts"]).as_py() < auction_end
    status_rows = ds.dataset(data / "track_b_status", partitioning="hive").to_table().sort_by("receive_ts")
    assert list(zip(status_rows["venue"].to_pylist(), status_rows["phase_code"].to_pylist())) == [
        ("KRX", "12"),
        ("NXT", "00"),
        ("KRX", "20"),
        ("NXT", "20"),
    ]
