"""Track B compaction over a real journal of real H0STCNT0 records (the local exchange's market model):
duplicates, a skipped tick, a reconnect, malformed frames, the hour boundary, the per-code sequence, the VI flag,
the 47th field, the sampled view, Parquet, and the upgrade of tables written under the earlier schema."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from local_exchange.market import Market
from observer_assets.track_b.compaction import (
    SAMPLE_SCHEMA,
    TICK_SCHEMA,
    compact,
    sample,
    seq_end,
    upgrade_sampled_table,
    upgrade_ticks_table,
)
from observer_assets.track_b.journal import Journal
from observer_assets.track_b.journal_format import segments
from observer_assets.track_b.journal_read import read_journal
from observer_resources.calendar import KST
from observer_resources.storage.lake import write_table_atomic

DAY = date(2026, 3, 10)
ELEVEN = 11 * 3600


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(2026, 3, 10, h, m, tzinfo=KST) + timedelta(seconds=s)


def frame(recs: list[list[str]]) -> str:
    return f"0|H0STCNT0|{len(recs):03d}|" + "^".join(x for r in recs for x in r)


def rec_key(r: list[str]) -> tuple[str, int]:
    return r[0], int(r[13])  # (code, ACML_VOL)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=3, listings=400, clock_mode="krx")


def around_eleven(market: Market, code: str, before: int, after: int) -> list[list[str]]:
    t = market.day_ticks(code, DAY)
    i0 = int(np.searchsorted(t.sec, ELEVEN))  # first trade stamped 11:00:00 or later
    return [market.trade_record(t, i) for i in range(i0 - before, i0 + after)]


@pytest.fixture(scope="module")
def scenario(market: Market, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two busy codes around 11:00, journaled by a real Journal, with every kind of trouble."""
    data = tmp_path_factory.mktemp("journal")
    a_code, b_code = (l.code for l in sorted(market.listings, key=lambda l: -l.activity)[:2])
    a = around_eleven(market, a_code, 30, 30)
    b = around_eleven(market, b_code, 20, 20)
    for recs in (a, b):  # precondition of the oracle: the model's stream satisfies the volume identity
        assert all(int(y[13]) == int(x[13]) + int(y[12]) for x, y in zip(recs, recs[1:]))
    assert a[30][1] >= "110000" > a[29][1]
    b[5] = list(b[5])
    b[5][10] = ""  # ASKP1 absent: must become null, never 0
    skipped = a[20]  # a tick lost on the wire
    a10 = a[:20] + a[21:30]  # A's trades before 11:00 (minus the lost one)
    boundary = a[30:33]  # stamped 11:00:00.., received 10:59:59.9
    a11 = a[33:]
    b10, b11 = b[:20], b[20:]
    lines: list[tuple[datetime, str, int]] = []  # (rx, text, conn)
    rx = at(10, 59, 0)
    step = timedelta(milliseconds=300)
    sizes = [1, 3, 19, 1, 2, 3]
    i = k = 0
    while i < len(a10):  # multi-record frames of 1..19 records
        n = sizes[k % len(sizes)]
        lines.append((rx, frame(a10[i : i + n]), 1))
        rx += step
        i += n
        k += 1
    dup_text = lines[1][1]  # KIS sends a frame twice
    lines.append((rx, dup_text, 1))
    lines.append((rx, frame(b10[:10]), 1))
    lines.append((rx + step, "0|H0STCNT0|002|" + "^".join(b10[10]), 1))  # malformed: 23 fields per record
    lines.append((rx + step, '{"header":{"tr_id":"PINGPONG","datetime":"20260310105930"}}', 1))
    lines.append((rx + step, frame(b10[10:]), 1))
    lines.append((at(10, 59, 59.9), frame(boundary), 1))
    # hour 11: a new connection (reconnect); KIS repeats the last frame of hour 10 first
    lines.append((at(11, 0, 0.2), frame(boundary), 2))
    lines.append(
        (
            at(11, 0, 0.3),
            '{"header":{"tr_id":"H0STCNT0","tr_key":"' + a_code + '","encrypt":"N"},'
            '"body":{"rt_cd":"0","msg_cd":"OPSP0000","msg1":"SUBSCRIBE SUCCESS"}}',
            2,
        )
    )
    lines.append((at(11, 0, 0.5), frame(a11[:5]), 2))
    lines.append((at(11, 0, 0.5), frame(b11), 2))
    lines.append((at(11, 0, 0.9), frame(a11[5:]), 2))
    assert all(r < at(11) for r, _, c in lines if c == 1) and all(r >= at(11) for r, _, c in lines if c == 2)
    with Journal(data, "key-c1", fsync_interval=0.01, clock=lambda: at(11, 30)) as j:
        for r, text, conn in lines:
            j.append(r, text, conn=conn, mitigation_level=0)
    t10, s10 = compact(read_journal(segments(data, DAY, 10)), day=DAY, hour=10)
    t11, s11 = compact(read_journal(segments(data, DAY, 11)), day=DAY, hour=11, prev=s10["carry"])
    return {
        "data": data,
        "a": a_code,
        "b": b_code,
        "a10": a10,
        "a11": a11,
        "b10": b10,
        "b11": b11,
        "boundary": boundary,
        "skipped": skipped,
        "dup_count": int(dup_text.split("|")[2]),
        "b5": b[5],
        "t10": t10,
        "s10": s10,
        "t11": t11,
        "s11": s11,
    }


def keys(t: pa.Table) -> list[tuple[str, int]]:
    return list(zip(t["code"].to_pylist(), t["acml_vol"].to_pylist()))


def test_every_tick_lands_in_exactly_one_hour(scenario: dict) -> None:
    sent = scenario["a10"] + scenario["b10"] + scenario["boundary"] + scenario["a11"] + scenario["b11"]
    k10, k11 = keys(scenario["t10"]), keys(scenario["t11"])
    assert len(k10) == len(set(k10)) and len(k11) == len(set(k11))
    assert not set(k10) & set(k11)
    assert sorted(k10 + k11) == sorted(rec_key(r) for r in sent)
    assert rec_key(scenario["skipped"]) not in set(k10 + k11)
    # received 10:59:59.9, stamped 11:00:00 or later: hour of receipt -> hour 10
    t10 = scenario["t10"].to_pylist()
    for r in scenario["boundary"]:
        row = next(x for x in t10 if (x["code"], x["acml_vol"]) == rec_key(r))
        assert row["receive_ts"] == at(10, 59, 59.9)
        assert row["exchange_ts"] >= at(11) and row["exchange_ts"].strftime("%H%M%S") == r[1]
    s10, s11 = scenario["s10"], scenario["s11"]
    assert s10["ticks"] == len(k10) and s11["ticks"] == len(k11)
    assert s10["rx_outside_hour"] == 0 and s11["rx_outside_hour"] == 0


def test_duplicates_are_dropped_and_counted(scenario: dict) -> None:
    assert scenario["s10"]["duplicates_dropped"] == scenario["dup_count"]
    assert scenario["s11"]["duplicates_dropped"] == len(scenario["boundary"])
    assert scenario["s11"]["duplicates_of_previous_hour"] == len(scenario["boundary"])
    assert scenario["s10"]["acml_conflicts"] == 0


def test_gap_flags_mark_the_tick_after_a_volume_break_and_after_a_reconnect(scenario: dict) -> None:
    a, skipped = scenario["a"], scenario["skipped"]
    t10, t11 = scenario["t10"].to_pylist(), scenario["t11"].to_pylist()
    gaps10 = [(r["code"], r["acml_vol"], r["missing_volume"]) for r in t10 if r["quality_flag"] == "gap"]
    after_skip = scenario["a10"][20]  # the tick that follows the lost one
    assert gaps10 == [(a, int(after_skip[13]), int(skipped[12]))]
    assert scenario["s10"]["vol_breaks"] == {a: {"count": 1, "missing_volume": int(skipped[12]), "overlap_volume": 0}}
    assert scenario["s10"]["gap_ticks"] == 1 and scenario["s10"]["unchecked_first_ticks"] == 2
    # hour 10 has no earlier hour: a code's first tick has nothing to compare with (null), the others were not
    # preceded by a reconnect
    firsts10 = {rec_key(scenario["a10"][0]), rec_key(scenario["b10"][0])}
    assert all((r["after_reconnect"] is None) == ((r["code"], r["acml_vol"]) in firsts10) for r in t10)
    assert not any(r["after_reconnect"] for r in t10)
    # hour 11: the first tick of each code comes over a new connection; no volume is missing (carry), and the
    # ticks are still told apart from the ones that follow an unbroken observation
    after11 = {(r["code"], r["acml_vol"]) for r in t11 if r["quality_flag"] == "after_reconnect"}
    assert after11 == {rec_key(scenario["a11"][0]), rec_key(scenario["b11"][0])}
    assert after11 == {(r["code"], r["acml_vol"]) for r in t11 if r["after_reconnect"]}
    assert all(r["after_reconnect"] is False for r in t11 if (r["code"], r["acml_vol"]) not in after11)
    assert scenario["s11"]["vol_breaks"] == {} and scenario["s11"]["reconnect_flags"] == 2
    assert all(r["missing_volume"] is None for r in t11)
    assert all(
        r["quality_flag"] == "ok"
        for r in t10 + t11
        if (r["code"], r["acml_vol"]) not in after11 | {(a, int(after_skip[13]))}
    )
    assert {r["conn_id"].split("/")[1] for r in t11} == {"2"}
    assert scenario["s11"]["between_connections_s"] == 0.0  # one connection per hour in this record


def test_seq_orders_each_code_across_the_hour_boundary_through_the_carry(scenario: dict) -> None:
    t10, t11 = scenario["t10"], scenario["t11"]
    both = pa.concat_tables([t10, t11]).to_pylist()
    for code in (scenario["a"], scenario["b"]):
        rows = [r for r in both if r["code"] == code]
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # hour 11 continues hour 10
        by_seq = sorted(rows, key=lambda r: r["seq"])
        assert [r["acml_vol"] for r in by_seq] == sorted(r["acml_vol"] for r in rows)
        # many trades share one exchange second: the second alone cannot order them, seq does
        assert len({r["exchange_ts"] for r in rows}) < len(rows)
    assert scenario["s10"]["carry"][scenario["a"]]["seq"] == max(
        r["seq"] for r in t10.to_pylist() if r["code"] == scenario["a"]
    )
    assert seq_end(t10) == {c: v["seq"] for c, v in scenario["s10"]["carry"].items()}


def test_without_the_previous_hour_a_lost_first_tick_is_still_seen_from_the_next(scenario: dict) -> None:
    t11, s11 = compact(read_journal(segments(scenario["data"], DAY, 11)), day=DAY, hour=11)
    assert s11["unchecked_first_ticks"] == 2 and s11["duplicates_dropped"] == 0  # nothing to compare with
    assert t11.num_rows == scenario["t11"].num_rows + len(scenario["boundary"])
    firsts = [r for r in t11.to_pylist() if r["seq"] == 1]  # without the carry the sequence restarts
    assert len(firsts) == 2 and all(r["after_reconnect"] is None for r in firsts)


def test_malformed_and_control_frames_are_set_aside_and_counted(scenario: dict) -> None:
    s10, s11 = scenario["s10"], scenario["s11"]
    assert s10["malformed_frames"] == 1 and s10["malformed"] == {"frame:short_record": 1}
    assert s10["malformed_samples"][0]["reason"] == "short_record"
    assert s10["other_messages"] == {"PingPong": 1}
    assert s11["other_messages"] == {"Ack:H0STCNT0": 1}
    assert s10["bad_lines"] == {} and s10["line_kinds"]["open"] == 1 and s10["line_kinds"]["close"] == 1


def test_columns_are_typed_sorted_and_never_zero_for_absent_quotes(scenario: dict) -> None:
    for t in (scenario["t10"], scenario["t11"]):
        assert t.schema == TICK_SCHEMA
        assert keys(t) == sorted(keys(t))
        assert 0 not in t["ask1"].to_pylist() and 0 not in t["bid1"].to_pylist()
        assert set(t["mitigation_level"].to_pylist()) == {0}
        assert set(t["key_id"].to_pylist()) == {"key-c1"}
    row = next(r for r in scenario["t10"].to_pylist() if (r["code"], r["acml_vol"]) == rec_key(scenario["b5"]))
    assert row["ask1"] is None and row["bid1"] == int(scenario["b5"][11])
    r0 = scenario["b10"][0]
    row = next(r for r in scenario["t10"].to_pylist() if (r["code"], r["acml_vol"]) == rec_key(r0))
    assert (row["price"], row["qty"], row["acml_value"], row["change"], row["trade_class"]) == (
        int(r0[2]),
        int(r0[12]),
        int(r0[14]),
        int(r0[4]),
        r0[21],
    )
    # STCK_OPRC/HGPR/LWPR are the day's running open/high/low, named for it; the trade's own are price and qty
    assert (row["day_open"], row["day_high"], row["day_low"]) == (int(r0[7]), int(r0[8]), int(r0[9]))
    assert not {"open", "high", "low", "date", "hour", "slot"} & set(scenario["t10"].column_names)
    # 46-field frames in continuous trading: no 47th field, not in a VI (VI_STND_PRC is sent all the same)
    assert row["market_cls_code"] is None and row["hour_cls_code"] == "0" and row["vi_active"] is False
    assert row["vi_standard_price"] == int(r0[45])
    assert row["exchange_ts"].utcoffset() == timedelta(hours=9)
    assert scenario["s10"]["per_code"] == {
        scenario["a"]: len(scenario["a10"]) + len(scenario["boundary"]),
        scenario["b"]: len(scenario["b10"]),
    }


def test_parquet_round_trip_keeps_types_and_time_zone(scenario: dict, tmp_path: Path) -> None:
    path = write_table_atomic(
        tmp_path / "track_b_ticks" / "date=2026-03-10" / "hour=10" / "ticks.parquet", scenario["t10"]
    )
    back = pq.read_table(path)
    assert back.schema.field("exchange_ts").type == pa.timestamp("ms", tz="Asia/Seoul")
    assert back.equals(scenario["t10"])


# --- the sampled view ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_ticks(market: Market, tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, Path]:
    """~1,500 ticks of the busiest code received in one-record frames, level 0 then level 1, one lost tick."""
    data = tmp_path_factory.mktemp("busy")
    code = max(market.listings, key=lambda l: l.activity).code
    t = market.day_ticks(code, DAY)
    i0 = int(np.searchsorted(t.sec, 10 * 3600))
    recs = [market.trade_record(t, i) for i in range(i0, i0 + 1500)]
    del recs[700]  # a lost tick inside a level-1 bucket
    with Journal(data, "key-s1", fsync_interval=0.01, clock=lambda: at(10, 30)) as j:
        for k, r in enumerate(recs):
            sec = int(r[1][:2]) * 3600 + int(r[1][2:4]) * 60 + int(r[1][4:])
            rx = datetime(2026, 3, 10, tzinfo=KST) + timedelta(seconds=sec, microseconds=(k * 37_000) % 1_000_000)
            j.append(rx, frame([r]), conn=1, mitigation_level=0 if k < 600 else 1)
    ticks, _ = compact(read_journal(segments(data, DAY, 10)), day=DAY, hour=10)
    return ticks, data


def test_sample_keeps_the_last_tick_of_each_bucket_and_the_bucket_totals(busy_ticks: tuple[pa.Table, Path]) -> None:
    ticks, _ = busy_ticks
    out = sample(ticks)
    assert out.schema == SAMPLE_SCHEMA
    # oracle: plain Python grouping of the tick rows
    width = {0: 500_000, 1: 1_000_000}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ticks.to_pylist():
        us = int(r["receive_ts"].timestamp() * 1_000_000 + 0.5)
        w = width[r["mitigation_level"]]
        groups[(r["code"], w, us // w)].append(r)
    assert out.num_rows == len(groups)
    got = {
        (r["code"], int(round(r["bucket_s"] * 1e6)), int(r["bucket_start"].timestamp() * 1e6 + 0.5)): r
        for r in out.to_pylist()
    }
    for (code, w, bkt), rows in groups.items():
        s = got[(code, w, bkt * w)]
        last = max(rows, key=lambda x: x["acml_vol"])
        assert (s["acml_vol"], s["price"], s["receive_ts"]) == (last["acml_vol"], last["price"], last["receive_ts"])
        assert s["bucket_trades"] == len(rows)
        assert s["bucket_volume"] == sum(x["qty"] for x in rows)
        assert (s["bucket_high"], s["bucket_low"]) == (max(x["price"] for x in rows), min(x["price"] for x in rows))
        flags = {x["quality_flag"] for x in rows}
        assert s["quality_flag"] == next((f for f in ("gap", "after_reconnect") if f in flags), "ok")
        ar = [x["after_reconnect"] for x in rows]
        assert s["after_reconnect"] is (True if True in ar else None if None in ar else False)
        assert s["seq"] == last["seq"]
    assert sum(out["bucket_volume"].to_pylist()) == sum(ticks["qty"].to_pylist())
    assert out["quality_flag"].to_pylist().count("gap") == 1
    assert sorted(set(out["bucket_s"].to_pylist())) == [0.5, 1.0]
    starts = [(r["code"], r["bucket_start"]) for r in out.to_pylist()]
    assert starts == sorted(starts)
    # 2 Hz: never more than two samples per code per second at level 0
    per_sec = defaultdict(int)
    for r in out.to_pylist():
        if r["bucket_s"] == 0.5:
            per_sec[r["bucket_start"].replace(microsecond=0)] += 1
    assert max(per_sec.values()) <= 2


def test_sample_widths_follow_the_configuration(busy_ticks: tuple[pa.Table, Path]) -> None:
    ticks, _ = busy_ticks
    out = sample(ticks, bucket_s_by_level={0: 2.0, 1: 2.0})
    assert set(out["bucket_s"].to_pylist()) == {2.0}
    assert sum(out["bucket_volume"].to_pylist()) == sum(ticks["qty"].to_pylist())
    assert sample(ticks.slice(0, 0)).num_rows == 0
    with pytest.raises(ValueError, match="mitigation level"):
        sample(ticks, bucket_s_by_level={0: 0.5})


def test_damaged_journal_lines_are_counted_not_guessed(scenario: dict, tmp_path: Path) -> None:
    (src,) = segments(scenario["data"], DAY, 10)
    body = bytearray(src.read_bytes())
    i = body.index(b"|019|") + 8  # inside the 19-record frame
    body[i] = ord("0") if body[i] != ord("0") else ord("1")
    damaged = tmp_path / src.relative_to(scenario["data"])
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(bytes(body) + b'{"rx":"2026-03-10T10:59:59.95')  # plus a torn tail
    t, s = compact(read_journal([damaged]), day=DAY, hour=10)
    assert s["bad_lines"] == {"bad_crc": 1, "torn_tail": 1}
    assert t.num_rows == scenario["t10"].num_rows - 19  # the damaged frame's ticks are not invented
    assert set(keys(t)) < set(keys(scenario["t10"]))


def test_a_crash_cut_is_reported_by_the_compaction(market: Market, tmp_path: Path) -> None:
    lst = max(market.listings, key=lambda l: l.activity)
    t = market.day_ticks(lst.code, DAY)
    recs = [market.trade_record(t, i) for i in range(40)]
    with Journal(tmp_path, "key-c2", clock=lambda: at(10, 30), run_id="a") as j:
        for k in range(20):
            j.append(at(10, 0, k), frame(recs[k : k + 1]), conn=1)
    (path,) = segments(tmp_path, DAY, 10)
    body = path.read_bytes()
    body = body[: body.rindex(b"\n", 0, len(body) - 1) + 1]  # the writer died before its close line...
    last = body[: len(body) - 1].rindex(b"\n") + 1
    path.write_bytes(body[: last + 40])  # ...in the middle of its last frame line
    with Journal(tmp_path, "key-c2", clock=lambda: at(10, 31), run_id="b") as j:
        for k in range(20, 40):
            j.append(at(10, 1, k), frame(recs[k : k + 1]), conn=1)
    ticks, s = compact(read_journal([path]), day=DAY, hour=10)
    assert [(r["cut_bytes"], r["bad_lines"]) for r in s["journal_recoveries"]] == [(40, 0)]
    assert ticks.num_rows == 39 and s["bad_lines"] == {}
    # the lost frame shows as a cumulative-volume break on the next tick (and the new run as a reconnect)
    assert s["vol_breaks"] == {lst.code: {"count": 1, "missing_volume": int(recs[19][12]), "overlap_volume": 0}}


# --- what a single frame says: the VI flag and the 47th field -----------------------------------------------------


def journaled(tmp: Path, key: str, lines: list[tuple[datetime, str, int]]) -> list:
    with Journal(tmp, key, fsync_interval=0.01, clock=lambda: at(10, 30)) as j:
        for rx, text, conn in lines:
            j.append(rx, text, conn=conn, mitigation_level=0)
    return list(read_journal(segments(tmp, DAY, 10, key)))


def test_vi_flag_follows_the_hour_class_code_kis_sends(market: Market, tmp_path: Path) -> None:
    code = max(market.listings, key=lambda l: l.activity).code
    t = market.day_ticks(code, DAY)
    # HOUR_CLS_CODE as KIS sends it: 0 continuous, C single price after 09:00 (a VI), B/A/D the scheduled
    # auctions (a VI there cannot be told from the frame), and an empty field
    classes = ["0", "C", "C", "0", "B", "A", "D", ""]
    recs = [market.trade_record(t, 200 + i) for i in range(len(classes))]
    for r, c in zip(recs, classes):
        r[43] = c
    tbl, _ = compact(journaled(tmp_path, "key-v", [(at(10, 0, 1), frame(recs), 1)]), day=DAY, hour=10)
    got = tbl.to_pylist()
    assert [r["hour_cls_code"] for r in got] == classes
    assert [r["vi_active"] for r in got] == [False, True, True, False, None, None, None, None]
    # VI_STND_PRC is on every record whatever the phase: a reference price, not a flag
    assert all(r["vi_standard_price"] == int(x[45]) for r, x in zip(got, recs))


def test_the_47th_field_market_cls_code_is_kept(tmp_path: Path) -> None:
    m47 = Market(seed=3, listings=400, clock_mode="krx", fields47=True)
    code = max(m47.listings, key=lambda l: l.activity).code
    t = m47.day_ticks(code, DAY)
    recs = [m47.trade_record(t, 300 + i) for i in range(6)]
    assert {len(r) for r in recs} == {47}
    lines = [(at(10, 0, 1), frame(recs[:3]), 1), (at(10, 0, 2), frame(recs[3:]), 1)]  # 141-field frames
    wide, s = compact(journaled(tmp_path / "w", "key-w", lines), day=DAY, hour=10)
    assert s["malformed"] == {} and wide.num_rows == 6
    assert wide["market_cls_code"].to_pylist() == [r[46] for r in recs] == ["2"] * 6
    narrow_lines = [(rx, frame([r[:46] for r in recs[i : i + 3]]), c) for (rx, _, c), i in zip(lines, (0, 3))]
    narrow, _ = compact(journaled(tmp_path / "n", "key-w", narrow_lines), day=DAY, hour=10)
    assert narrow["market_cls_code"].null_count == 6
    same = [c for c in TICK_SCHEMA.names if c not in ("market_cls_code", "conn_id", "frame_seq")]
    assert wide.select(same).equals(narrow.select(same))


# --- a break in observation that the cumulative volume does not show -------------------------------------------------


def us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def test_first_tick_after_a_recorded_outage_or_a_key_move_is_flagged_without_volume_loss(
    market: Market, tmp_path: Path
) -> None:
    code = max(market.listings, key=lambda l: l.activity).code
    t = market.day_ticks(code, DAY)
    recs = [market.trade_record(t, 400 + i) for i in range(10)]
    lines = [(at(10, 0, i), frame([r]), 1) for i, r in enumerate(recs)]  # one connection, nothing lost
    jl = journaled(tmp_path / "o", "key-o", lines)
    plain, _ = compact(jl, day=DAY, hour=10)
    assert plain["quality_flag"].to_pylist() == ["ok"] * 10
    assert plain["after_reconnect"].to_pylist() == [None] + [False] * 9
    # the capture recorded an outage of the key between ticks 5 and 6 (the socket came back under the same
    # connection id, or the journal cannot show it): tick 6 is the first after it
    for outage in (("key-o", us(at(10, 0, 5.2))), (None, us(at(10, 0, 5.5)))):
        flagged, s = compact(jl, day=DAY, hour=10, outages=[outage])
        rows = flagged.to_pylist()
        assert [r["after_reconnect"] for r in rows] == [None] + [False] * 5 + [True] + [False] * 3
        assert rows[6]["quality_flag"] == "after_reconnect" and rows[6]["missing_volume"] is None
        assert s["reconnect_flags"] == 1 and s["vol_breaks"] == {}
    other_key, _ = compact(jl, day=DAY, hour=10, outages=[("key-x", us(at(10, 0, 5.2)))])
    assert other_key.equals(plain)
    # the code moves from one app key to another (its key was down): a new connection for the code, the volume
    # chain intact across the move
    a = journaled(tmp_path / "m", "key-a", lines[:5])
    b = journaled(tmp_path / "m", "key-b", lines[5:])
    moved, s = compact(a + b, day=DAY, hour=10)
    rows = moved.to_pylist()
    assert [r["key_id"] for r in rows] == ["key-a"] * 5 + ["key-b"] * 5
    assert [r["after_reconnect"] for r in rows] == [None] + [False] * 4 + [True] + [False] * 4
    assert [r["quality_flag"] for r in rows].count("after_reconnect") == 1 and s["vol_breaks"] == {}


# --- tables written under the earlier schema -----------------------------------------------------------------------


def as_written_before(t: pa.Table) -> pa.Table:
    """What the earlier compaction wrote for these ticks: open/high/low, no seq, market_cls_code, vi_active or
    after_reconnect, and 'gap' on a reconnect of the same key as on a volume break."""
    old = t.drop_columns(["seq", "market_cls_code", "vi_active", "after_reconnect"])
    old = old.rename_columns(
        [{"day_open": "open", "day_high": "high", "day_low": "low"}.get(c, c) for c in old.column_names]
    )
    flag = pa.array(["ok" if f == "ok" else "gap" for f in t["quality_flag"].to_pylist()], pa.string())
    return old.set_column(old.schema.get_field_index("quality_flag"), "quality_flag", flag)


def test_upgrade_turns_tables_of_the_earlier_schema_into_the_current_one(scenario: dict, tmp_path: Path) -> None:
    t10, t11 = scenario["t10"], scenario["t11"]
    old10, old11 = as_written_before(t10), as_written_before(t11)
    path = write_table_atomic(tmp_path / "old" / "ticks.parquet", old10)  # as a migration reads it back
    up10 = upgrade_ticks_table(pq.read_table(path))
    assert up10.equals(t10)
    # hour by hour in order, the sequence continues; without seq_start it restarts
    up11 = upgrade_ticks_table(old11, seq_start=seq_end(up10))
    assert up11.equals(t11)
    restarted = upgrade_ticks_table(old11)
    assert sorted(r for r in restarted["seq"].to_pylist() if r == 1) == [1, 1]
    # idempotent; rows keep their order even when the table was not sorted
    assert upgrade_ticks_table(up11).equals(t11)
    shuffled = old11.take(pa.array(np.random.default_rng(0).permutation(old11.num_rows)))
    up = upgrade_ticks_table(shuffled, seq_start=seq_end(up10))
    assert up.sort_by([("code", "ascending"), ("seq", "ascending")]).equals(t11)
    # the sampled view: rebuilt from the hour's ticks exactly; from the sampled table alone, the same values
    s11 = sample(t11)
    old_s11 = as_written_before(s11)
    old_s11 = old_s11.set_column(
        old_s11.schema.get_field_index("missing_volume"),
        "missing_volume",
        pa.array(
            [
                0 if f == "gap" and m is None else m
                for f, m in zip(old_s11["quality_flag"].to_pylist(), s11["missing_volume"].to_pylist())
            ],
            pa.int64(),
        ),
    )
    assert upgrade_sampled_table(old_s11, ticks=old11, seq_start=seq_end(up10)).equals(s11)
    assert upgrade_sampled_table(old_s11, seq_start=seq_end(up10)).equals(s11)
    assert upgrade_sampled_table(s11).equals(s11)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lake_v1"


@pytest.mark.skipif(not FIXTURE.exists(), reason="the earlier lake fixture is not in this checkout")
def test_upgrade_reads_the_files_the_earlier_writers_left() -> None:
    from observer_assets.track_b.restore import RESTORED_SCHEMA, upgrade_restored_table

    day = FIXTURE / "track_b" / "date=2026-11-26"
    olds = [pq.read_table(day / f"hour={h}" / "ticks.parquet", partitioning=None) for h in ("09", "10")]
    assert "open" in olds[0].column_names and "seq" not in olds[0].column_names
    seq_start: dict[str, int] = {}
    ups = []
    for old in olds:  # hour by hour, as a migration walks them
        up = upgrade_ticks_table(old, seq_start=seq_start)
        seq_start.update(seq_end(up))
        assert up.schema == TICK_SCHEMA and upgrade_ticks_table(up).equals(up)
        assert up["day_high"].equals(old["high"]) and up["acml_vol"].equals(old["acml_vol"])
        assert up["vi_active"].to_pylist() == [{"0": False, "C": True}.get(h) for h in old["hour_cls_code"].to_pylist()]
        assert up["market_cls_code"].null_count == up.num_rows
        ups.append(up)
    rows = pa.concat_tables(ups).sort_by([("code", "ascending"), ("seq", "ascending")]).to_pylist()
    for code in {r["code"] for r in rows}:
        mine = [r for r in rows if r["code"] == code]
        assert [r["seq"] for r in mine] == list(range(1, len(mine) + 1))
        assert [r["acml_vol"] for r in mine] == sorted(r["acml_vol"] for r in mine)
    old_s = pq.read_table(
        FIXTURE / "track_b_sampled" / "date=2026-11-26" / "hour=09" / "sampled.parquet", partitioning=None
    )
    up_s = upgrade_sampled_table(old_s)
    assert up_s.schema == SAMPLE_SCHEMA and up_s.num_rows == old_s.num_rows and upgrade_sampled_table(up_s).equals(up_s)
    assert up_s["bucket_volume"].equals(old_s["bucket_volume"]) and up_s["day_low"].equals(old_s["low"])
    old_r = pq.read_table(FIXTURE / "track_b_restored" / "date=2026-11-26" / "restored.parquet", partitioning=None)
    assert upgrade_restored_table(old_r).schema == RESTORED_SCHEMA
