"""`observer replay` round trip: a short day captured from the exchange with faults, then served again.

One module fixture records a few seconds of the exchange (``--clock open`` at 20x) with Observer's own capture on
every feed kind the open clock produces (the three trade tapes, KRX's book, expected prices, both status feeds)
while the exchange duplicates, withholds (``ws_skip``) and garbles frames and drops the session once. Then
``observer replay`` serves that day, paused until two clients hold their registrations, then at 10x:

* python-kis 2.1.6 subscribed to a code receives exactly the recorded trade records of that code, in order
  (duplicated frames included: they were received);
* Observer's capture, run against the replay with another app key, journals what compacts to the same ticks, books
  and statuses as the original (receive times, keys and connection flags aside);
* the replay's gaps are the recording's: the capture's gap markers, and the session drop as a journal hole;
* the REST TRs answer from the recorded Track A slot and minute bars as of the replay clock, "no data" otherwise;
* with the journal gone (retention), the replay rebuilds the trade frames from the compacted tick tables.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from compat.test_python_kis import pykis_client
from support import open_clock_midday
from track_b.test_capture import capture_env, key_id_of, read_status, start, wait_for

from local_exchange.server import run_sim_process
from observer_assets.replay.process import run_observer
from observer_assets.replay.recording import load
from observer_assets.track_a.snapshot import raw_line, table_from_raw
from observer_assets.track_b.compaction import compact_all
from observer_assets.track_b.journal import read_journal, segments
from observer_resources.calendar import KST
from observer_resources.events import gaps
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import TradeBatch, parse_message
from observer_resources.storage import lake, layout

pytest.importorskip("pykis")
pytestmark = pytest.mark.slow  # two captures, an exchange and a replay as processes: about a minute of wall time

FEEDS = "trades:KRX,trades:NXT,trades:UN,book:KRX,expected:KRX,status:KRX,status:NXT"
TAPES = (p.TR_WS_TRADE, p.TR_WS_TRADE_NXT, p.TR_WS_TRADE_UN)
#: facts of the connection, not of the market: they differ between a capture and its replay
CONNECTION_COLUMNS = {"receive_ts", "key_id", "conn_id", "frame_seq", "mitigation_level", "quality_flag",
                      "after_reconnect"}  # fmt: skip
_creds = itertools.count(7600)


class Recorded:
    def __init__(self, data: Path, day, key: str, codes: list[str], creds) -> None:
        self.data, self.day, self.key, self.codes, self.creds = data, day, key, codes, creds


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, make_creds_module) -> Recorded:
    tmp = tmp_path_factory.mktemp("recorded")
    sim = run_sim_process(
        *("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "300", "--speed", "20"),
        *("--hold-after-disconnect", "0.2"),
        *open_clock_midday(),
    )
    captures: list = []
    try:
        members = set(sim.admin("truth/nxt")["members"])
        rows = sim.admin("listings", params={"order": "activity", "limit": "60"})["listings"]
        codes = [r["code"] for r in rows if not r["halted"] and r["code"] in members][:7]
        creds = make_creds_module(next(_creds))
        data = tmp / "data"
        env = capture_env(sim, data, creds, OBSERVER_TRACK_B_FEEDS=FEEDS, OBSERVER_TRACK_B_EVAL_S="2")
        (key,) = key_id_of(env)
        until = (datetime.now(KST) + timedelta(seconds=90)).isoformat()
        cap = start(captures, env, ["--pins", ",".join(codes), "--status-interval", "0.3", "--until", until], tmp)
        wait_for(lambda: (s := read_status(data)) and s["keys"][key]["registrations"] == 37, 30, "registered", cap)
        track_a_slot(sim, data, codes, make_creds_module(next(_creds)))
        time.sleep(0.5)

        def fault(kind: str, **params) -> None:
            sim.admin("faults", {"kind": kind, "appkey": creds[0], **params})

        fault("ws_duplicate", n=3)
        fault("ws_skip", code=codes[0], n=4)
        fault("ws_malformed", n=2)
        time.sleep(1.5)
        fault("ws_drop", close_frame=True)
        wait_for(lambda: read_status(data)["keys"][key].get("reconnects", 0) >= 1, 20, "reconnect", cap)
        wait_for(lambda: read_status(data)["keys"][key]["registrations"] == 37, 20, "re-registered", cap)
        time.sleep(1.5)
        cap.proc.send_signal(signal.SIGTERM)
        assert cap.wait(30) == 0
    finally:
        for c in captures:
            c.kill()
        sim.stop()
    day = datetime.now(KST).date()
    return Recorded(data, day, key, codes, creds)


def track_a_slot(sim, data: Path, codes: list[str], creds) -> None:
    """The slot Track A would write now: the codes' multi-quote, archived lines to table (python-kis needs a price
    from ``inquire-price`` before it subscribes, and the replay answers it from the recorded slot)."""
    now = datetime.now(KST)
    slot_ts = now.replace(minute=now.minute - now.minute % 10, second=0, microsecond=0)
    h = _token(sim.rest_url, creds)
    params = {f"FID_COND_MRKT_DIV_CODE_{i}": "J" for i in range(1, len(codes) + 1)}
    params |= {f"FID_INPUT_ISCD_{i}": c for i, c in enumerate(codes, 1)}
    r = httpx.get(sim.rest_url + p.QUOTE_BASE + "/intstock-multprice", headers=h | {"tr_id": p.TR_MULTPRICE},
                  params=params)  # fmt: skip
    lines = [raw_line(p.TR_MULTPRICE, row["inter_shrn_iscd"], row, now) for row in r.json()["output"]]
    lake.write_table_atomic(layout.slot_dir(data, slot_ts) / "snapshot.parquet", table_from_raw(lines, slot_ts, {}))


@pytest.fixture(scope="module")
def make_creds_module():
    from local_exchange.accounts import demo_credentials

    return demo_credentials


def journal_frames(data: Path, day, key: str) -> list:
    return [ln for ln in read_journal(segments(data, day, key_id=key)) if ln.ok and ln.kind == "frame"]


def compacted(lines: list, day) -> dict[str, pa.Table]:
    """Every tape and feed table of the lines, all hours, with the connection's columns dropped."""
    by_hour: dict[int, list] = defaultdict(list)
    for ln in lines:
        by_hour[ln.rx.astimezone(KST).hour].append(ln)
    out: dict[str, list[pa.Table]] = defaultdict(list)
    for hour in sorted(by_hour):
        tables = compact_all(by_hour[hour], day=day, hour=hour)
        for tr, (t, _) in tables.tapes.items():
            out[tr].append(t)
        for kind, t in tables.feeds.items():
            out[kind].append(t)
    tables = {
        k: pa.concat_tables(ts).drop_columns([c for c in ts[0].column_names if c in CONNECTION_COLUMNS])
        for k, ts in out.items()
    }
    # feed rows are in receive order, which interleaves codes differently on another connection: compare them sorted
    return {k: t if k in TAPES else t.sort_by([(c, "ascending") for c in t.column_names]) for k, t in tables.items()}


def recorded_trades(lines: list, code: str) -> list[tuple]:
    """The H0STCNT0 records of ``code`` the capture received, in order, as (acml_vol, price, time)."""
    out = []
    for ln in lines:
        if isinstance(ln.payload, str) and ln.payload.startswith(f"0|{p.TR_WS_TRADE}|"):
            msg = parse_message(ln.payload)
            if isinstance(msg, TradeBatch):
                out += [(t.acml_vol, Decimal(t.price), t.exchange_time) for t in msg.records if t.code == code]
    return out


def test_replay_round_trip(recorded: Recorded, tmp_path, monkeypatch) -> None:
    t_start = time.monotonic()
    orig = journal_frames(recorded.data, recorded.day, recorded.key)
    assert len({ln.conn for ln in orig}) == 2, "the drop made a second connection"
    replay = run_observer("replay", recorded.day.isoformat(), "--data-dir", str(recorded.data), "--speed", "0",
                          "--ping-interval", "1")  # fmt: skip
    captures: list = []
    try:
        summary = replay.get("/admin/replay/summary")
        assert summary["source"] == "journal" and summary["keys"] == [recorded.key]
        assert summary["skipped"].get("unroutable", 0) >= 1  # the garbled frames are not re-sent

        # --- the replay's gaps are the recording's --------------------------------------------------------------
        g = replay.get("/admin/replay/gaps")
        assert g["source"] == "events"
        mine = [(x.gap_id, x.reason, x.start.isoformat()) for x in gaps(recorded.data, recorded.day)]
        assert [(x["gap_id"], x["reason"], x["start"]) for x in g["gaps"]] == mine
        assert any(x[1] == "ws_disconnect" for x in mine)
        holes = [h for h in g["journal_holes"] if h["kind"] == "reconnect"]
        assert len(holes) == 1 and holes[0]["key_id"] == recorded.key

        # --- a capture and python-kis on the replay, registered while it is paused ------------------------------
        data2 = tmp_path / "replayed"
        creds2 = next(_creds)
        from local_exchange.accounts import demo_credentials

        env = capture_env(replay, data2, demo_credentials(creds2), OBSERVER_TRACK_B_FEEDS=FEEDS,
                          OBSERVER_TRACK_B_EVAL_S="2")  # fmt: skip
        (key2,) = key_id_of(env)
        until = (datetime.now(KST) + timedelta(seconds=120)).isoformat()
        cap = start(captures, env, ["--pins", ",".join(recorded.codes), "--until", until], tmp_path, "on-replay")
        wait_for(lambda: (s := read_status(data2)) and s["keys"][key2]["registrations"] == 37, 30, "registered", cap)

        code = recorded.codes[0]
        got: list = []
        lock = threading.Lock()

        def on_price(sender, e) -> None:
            with lock:
                got.append(e.response)

        with pykis_client(replay, monkeypatch, tmp_path, demo_credentials(next(_creds))) as (kis, log):
            ticket = kis.stock(code).on("price", on_price)
            wait_for(lambda: replay.admin("stats")["ws_sessions_active"] == 2, 10, "python-kis session")
            time.sleep(0.5)  # its registration ack
            replay.post("/admin/replay/clock", {"speed": 10})
            wait_for(lambda: replay.get("/admin/replay/clock")["finished"], 30, "the replay's end")
            time.sleep(1.0)
            ticket.unsubscribe()
            assert not log.problems(), log.problems()
        with lock:
            actual = [(r.volume, r.price, r.time.strftime("%H%M%S")) for r in got]
        expected = recorded_trades(orig, code)
        assert len(expected) > 20 and actual == expected

        cap.proc.send_signal(signal.SIGTERM)
        assert cap.wait(30) == 0
        replayed = journal_frames(data2, recorded.day, key2)
        want, have = compacted(orig, recorded.day), compacted(replayed, recorded.day)
        assert set(want) == set(have) and set(TAPES) <= set(want) and "books" in want and "status" in want
        for k in want:
            if not k.endswith("_sampled"):  # buckets of receive time: a fact of the connection
                assert have[k].equals(want[k]), k
        assert all(want[k].num_rows for k in (*TAPES, "books", "status"))  # (no auction on the open clock)
        print(f"round trip wall {time.monotonic() - t_start:.1f}s")
    finally:
        for c in captures:
            c.kill()
        replay.stop()


def _token(url: str, creds) -> dict[str, str]:
    r = httpx.post(url + p.PATH_TOKEN, json={"grant_type": "client_credentials", "appkey": creds[0],
                                            "appsecret": creds[1]})  # fmt: skip
    r.raise_for_status()
    return {"authorization": "Bearer " + r.json()["access_token"], "appkey": creds[0], "appsecret": creds[1]}


def test_rest_as_of_the_clock_and_the_tables_fallback(recorded: Recorded, tmp_path) -> None:
    from local_exchange.accounts import demo_credentials
    from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA

    day, code = recorded.day, recorded.codes[1]
    lake_dir = tmp_path / "lake"
    # a restored day without its journal: the compacted tapes, one Track A slot, minute bars
    orig = journal_frames(recorded.data, day, recorded.key)
    by_hour: dict[int, list] = defaultdict(list)
    for ln in orig:
        by_hour[ln.rx.astimezone(KST).hour].append(ln)
    for hour, lines in by_hour.items():
        tables = compact_all(lines, day=day, hour=hour)
        start_h = datetime.combine(day, datetime.min.time(), KST) + timedelta(hours=hour)
        for tr, (t, _) in tables.tapes.items():
            lake.write_table_atomic(layout.venue_ticks_path(lake_dir, start_h, tr), t)
    first = orig[0].rx.astimezone(KST)
    slot = first.replace(second=0, microsecond=0) + timedelta(minutes=1)  # after the replay clock's start
    row = {n: None for n in SNAPSHOT_SCHEMA.names} | {
        "slot_ts": slot, "code": code, "name": "테스트", "price": 1234, "change": 34, "change_rate": 2.83,
        "open": 1200, "high": 1240, "low": 1190, "prev_close": 1200, "volume": 5000, "trade_value": 6_170_000,
        "source": "live", "tr_id": p.TR_MULTPRICE, "fetched_at": slot, "venue": "KRX",
    }  # fmt: skip
    snap = pa.Table.from_pylist([row], schema=SNAPSHOT_SCHEMA)
    lake.write_table_atomic(layout.slot_dir(lake_dir, slot) / "snapshot.parquet", snap)
    bars = pa.Table.from_pylist(
        [
            {"code": code, "venue": "KRX", "market": "J", "minute": slot + timedelta(minutes=m), "open": 1200 + m,
             "high": 1210 + m, "low": 1190 + m, "close": 1205 + m, "volume": 10 * (m + 1), "value": 1000 * (m + 1),
             "source": "inquire-time-itemchartprice", "fetched_at": slot}
            for m in range(3)
        ]
    )  # fmt: skip
    lake.write_table_atomic(layout.minute_bars_path(lake_dir, day), bars)

    # the fallback rebuilds each tape's frames, the same records on the fields the table keeps
    rec = load(lake_dir, lake_dir, day)
    jr = load(recorded.data, recorded.data, day)
    assert rec.source == "tables" and {tr for tr, _ in rec.streams} == set(TAPES)
    kept = [p.H0STCNT0_INDEX[n] for n in ("MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "CNTG_VOL", "ACML_VOL")]

    def records(r, tr: str, c: str) -> list:
        out = []
        for f in r.streams[(tr, c)].frames:
            fields = f.split("|", 3)[3].split("^")
            w = len(fields) // int(f.split("|")[2])
            out += [tuple(fields[i * w + k] for k in kept) for i in range(int(f.split("|")[2]))]
        return list(dict.fromkeys(out))  # the tables hold a duplicated frame's records once

    for tr in TAPES:
        for c in recorded.codes:
            if (tr, c) in jr.streams:
                assert records(rec, tr, c) == records(jr, tr, c), (tr, c)

    replay = run_observer("replay", day.isoformat(), "--data-dir", str(lake_dir), "--speed", "0")
    try:
        assert "source=tables" in replay.ready_line
        creds = demo_credentials(next(_creds))
        h = _token(replay.rest_url, creds)

        def ask(path: str, tr: str, **params: str) -> dict:
            r = httpx.get(replay.rest_url + p.QUOTE_BASE + "/" + path, headers=h | {"tr_id": tr}, params=params)
            return r.json()

        price = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code}
        assert ask("inquire-price", p.TR_INQUIRE_PRICE, **price)["rt_cd"] == "7"  # the clock is before the slot
        hour = (slot + timedelta(minutes=5)).strftime("%H%M%S")
        chart = {**price, "FID_INPUT_HOUR_1": hour, "FID_PW_DATA_INCU_YN": "N", "FID_ETC_CLS_CODE": ""}
        replay.post("/admin/replay/clock", {"at": (slot + timedelta(minutes=2, seconds=1)).isoformat()})
        body = ask("inquire-price", p.TR_INQUIRE_PRICE, **price)
        assert body["rt_cd"] == "0" and body["output"]["stck_prpr"] == "1234" and body["output"]["per"] == ""
        assert list(body["output"]) == list(__import__("local_exchange.rest_outputs").rest_outputs.INQUIRE_PRICE_FIELDS)
        bars_now = ask("inquire-time-itemchartprice", p.TR_TIME_ITEMCHART, **chart)["output2"]
        ended = [(slot + timedelta(minutes=m)).strftime("%H%M%S") for m in (1, 0)]
        assert [b["stck_cntg_hour"] for b in bars_now] == ended  # the third minute has not ended by the clock
        assert ask("inquire-price", p.TR_INQUIRE_PRICE, **(price | {"FID_COND_MRKT_DIV_CODE": "NX"}))["rt_cd"] == "7"
        assert ask("inquire-price", p.TR_INQUIRE_PRICE, **(price | {"FID_INPUT_ISCD": "999999"}))["rt_cd"] == "7"
        assert ask("volume-rank", p.TR_VOLUME_RANK)["rt_cd"] == "7"
        multi = ask("intstock-multprice", p.TR_MULTPRICE, FID_COND_MRKT_DIV_CODE_1="J", FID_INPUT_ISCD_1=code,
                    FID_COND_MRKT_DIV_CODE_2="J", FID_INPUT_ISCD_2="999999")  # fmt: skip
        assert [r["inter_shrn_iscd"] for r in multi["output"]] == [code]
        print(json.dumps(replay.get("/admin/replay/summary"))[:300])
    finally:
        replay.stop()
