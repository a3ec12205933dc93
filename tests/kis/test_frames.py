"""WebSocket frame parsing (docs/kis-protocol.md §8 "WebSocket protocol"): every record of a multi-record frame, acks,
heartbeats, and every kind of bad input counted with its reason, never raised."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import (
    Ack,
    Encrypted,
    FeedFrame,
    Malformed,
    OrderBookFrame,
    ParseStats,
    PingPong,
    TradeBatch,
    parse_message,
)

# The portal's golden record (docs/kis-protocol.md §8.4 "H0STCNT0"), 46 fields, field 44 empty.
GOLDEN = (
    "005930^093354^71900^5^-100^-0.14^72023.83^72100^72400^71700^71900^71800^1^3052507^219853241700"
    "^5105^6937^1832^84.90^1366314^1159996^1^0.39^20.28^090020^5^-200^090820^5^-500^092619^2^200"
    "^20230612^20^N^65945^216924^1118750^2199206^0.05^2424142^125.92^0^^72100"
)
I = p.H0STCNT0_INDEX


def consistent_records(n: int, *, code: str = "005930", extra: tuple[str, ...] = ()) -> list[list[str]]:
    """n consecutive trades after the golden one, keeping the §8.4 invariants within and between records."""
    prev = GOLDEN.split("^")
    prev[0] = code
    out = []
    prev_close = 72000
    for k in range(n):
        f = list(prev)
        buy = k % 2 == 0
        price = 71900 if buy else 71800
        qty = 1 + (k * 7) % 50
        sec = 54 + k
        f[I["STCK_CNTG_HOUR"]] = f"0933{sec % 60:02d}" if sec < 60 else f"0934{sec - 60:02d}"
        f[I["STCK_PRPR"]] = str(price)
        f[I["PRDY_VRSS"]] = str(price - prev_close)
        f[I["PRDY_VRSS_SIGN"]] = "5"
        f[I["PRDY_CTRT"]] = f"{(price - prev_close) / prev_close * 100:.2f}"
        f[I["CNTG_VOL"]] = str(qty)
        acml = int(prev[I["ACML_VOL"]]) + qty
        value = int(prev[I["ACML_TR_PBMN"]]) + qty * price
        f[I["ACML_VOL"]], f[I["ACML_TR_PBMN"]] = str(acml), str(value)
        f[I["WGHN_AVRG_STCK_PRC"]] = f"{value / acml:.2f}"
        sell_cnt, buy_cnt = int(prev[I["SELN_CNTG_CSNU"]]), int(prev[I["SHNU_CNTG_CSNU"]])
        sell_qty, buy_qty = int(prev[I["SELN_CNTG_SMTN"]]), int(prev[I["SHNU_CNTG_SMTN"]])
        if buy:
            buy_cnt, buy_qty = buy_cnt + 1, buy_qty + qty
        else:
            sell_cnt, sell_qty = sell_cnt + 1, sell_qty + qty
        f[I["SELN_CNTG_CSNU"]], f[I["SHNU_CNTG_CSNU"]] = str(sell_cnt), str(buy_cnt)
        f[I["NTBY_CNTG_CSNU"]] = str(buy_cnt - sell_cnt)
        f[I["SELN_CNTG_SMTN"]], f[I["SHNU_CNTG_SMTN"]] = str(sell_qty), str(buy_qty)
        f[I["CTTR"]] = f"{buy_qty / sell_qty * 100:.2f}"
        f[I["CCLD_DVSN"]] = "1" if buy else "5"
        f[I["ASKP1"]], f[I["BIDP1"]] = ("71900", "71800")
        out.append(f + list(extra))
        prev = f
    return out


def frame(records: list[list[str]], tr_id: str = "H0STCNT0", flag: str = "0") -> str:
    return f"{flag}|{tr_id}|{len(records):03d}|" + "^".join("^".join(r) for r in records)


# --- data frames ---------------------------------------------------------------------------------


def test_golden_record_maps_every_field():
    msg = parse_message(f"0|H0STCNT0|001|{GOLDEN}")
    assert isinstance(msg, TradeBatch)
    assert (msg.tr_id, msg.raw_count, msg.width, msg.rejected) == ("H0STCNT0", 1, 46, ())
    (t,) = msg.records
    assert t.code == "005930" and t.exchange_time == "093354"
    assert t.exchange_dt == datetime(2023, 6, 12, 9, 33, 54, tzinfo=KST)
    assert t.exchange_dt.isoformat() == "2023-06-12T09:33:54+09:00"
    assert (t.price, t.change, t.change_sign, t.change_rate) == (71900, -100, "5", -0.14)
    assert (t.vwap, t.open, t.high, t.low) == (72023.83, 72100, 72400, 71700)
    assert (t.ask1, t.bid1, t.qty, t.acml_vol, t.acml_value) == (71900, 71800, 1, 3052507, 219853241700)
    assert (t.sell_cnt, t.buy_cnt, t.net_cnt, t.strength) == (5105, 6937, 1832, 84.90)
    assert (t.sell_qty, t.buy_qty, t.trade_class, t.buy_ratio, t.prdy_vol_rate) == (1366314, 1159996, "1", 0.39, 20.28)
    assert (t.session_code, t.halted, t.hour_cls_code) == ("20", False, "0")
    assert (t.ask_size1, t.bid_size1, t.total_ask_size, t.total_bid_size) == (65945, 216924, 1118750, 2199206)
    assert t.vi_standard_price == 72100 and t.market_cls_code is None and t.extra == ()
    assert t.raw == tuple(GOLDEN.split("^"))
    for name in ("price", "qty", "acml_vol", "acml_value", "open"):
        assert type(getattr(t, name)) is int
    for name in ("change_rate", "vwap", "strength", "buy_ratio", "prdy_vol_rate"):
        assert type(getattr(t, name)) is float


@pytest.mark.parametrize("n", [1, 3, 19])
def test_multi_record_frames_yield_every_record(n):
    recs = consistent_records(n)
    stats = ParseStats()
    msg = parse_message(frame(recs).encode(), stats)
    assert isinstance(msg, TradeBatch) and msg.raw_count == n and msg.width == 46
    assert len(msg.records) == n and msg.rejected == ()
    assert [t.acml_vol for t in msg.records] == [int(r[I["ACML_VOL"]]) for r in recs]
    assert [t.raw for t in msg.records] == [tuple(r) for r in recs]
    prev = 3052507
    for t in msg.records:  # the cumulative-volume identity survives parsing, record by record
        assert t.acml_vol == prev + t.qty
        prev = t.acml_vol
        assert round(t.acml_value / t.acml_vol, 2) == t.vwap
        assert t.net_cnt == t.buy_cnt - t.sell_cnt
    assert stats.records == n and stats.data_frames == 1 and stats.malformed_total == 0


def test_records_of_different_symbols_in_one_frame():
    recs = consistent_records(2, code="005930") + consistent_records(2, code="000660")
    msg = parse_message(frame(recs))
    assert [t.code for t in msg.records] == ["005930", "005930", "000660", "000660"]


@pytest.mark.parametrize("n", [1, 3])
def test_47_field_records_keep_market_cls_code(n):
    recs = consistent_records(n, extra=("2",))
    msg = parse_message(frame(recs))
    assert isinstance(msg, TradeBatch) and msg.width == 47 and len(msg.records) == n
    for t, r in zip(msg.records, recs):
        assert t.market_cls_code == "2" and t.extra == ("2",)
        assert t.acml_vol == int(r[I["ACML_VOL"]]) and len(t.raw) == 47


def test_zero_or_empty_best_bid_ask_is_none_never_zero():
    recs = consistent_records(3)
    recs[0][I["ASKP1"]], recs[0][I["BIDP1"]] = "0", "0"
    recs[1][I["ASKP1"]], recs[1][I["BIDP1"]], recs[1][I["VI_STND_PRC"]] = "", "", ""
    msg = parse_message(frame(recs))
    assert len(msg.records) == 3 and msg.rejected == ()
    assert [(t.ask1, t.bid1) for t in msg.records] == [(None, None), (None, None), (71900, 71800)]
    assert msg.records[1].vi_standard_price is None
    assert msg.records[1].raw[I["ASKP1"]] == ""  # raw keeps what was sent


def test_non_numeric_record_is_rejected_alone():
    recs = consistent_records(3)
    recs[1][I["STCK_PRPR"]] = "7l900"
    stats = ParseStats()
    msg = parse_message(frame(recs), stats)
    assert isinstance(msg, TradeBatch)
    assert [t.acml_vol for t in msg.records] == [int(recs[0][I["ACML_VOL"]]), int(recs[2][I["ACML_VOL"]])]
    (bad,) = msg.rejected
    assert (bad.index, bad.reason) == (1, "non_numeric") and "STCK_PRPR" in bad.detail
    assert bad.raw == tuple(recs[1])  # the rejected record's fields are kept, not lost
    assert stats.records == 2 and stats.malformed == {"non_numeric": 1}


def test_bad_time_record_is_rejected_with_its_reason():
    recs = consistent_records(2)
    recs[0][I["BSOP_DATE"]] = "2023061"
    msg = parse_message(frame(recs))
    assert len(msg.records) == 1 and msg.rejected[0].reason == "bad_time"


def test_order_book_frame():
    fields = (
        ["005930", "093354", "0"]
        + [str(72000 + 100 * i) for i in range(10)]
        + [str(71900 - 100 * i) for i in range(10)]
        + [str(10 + i) for i in range(20)]
        + ["1000", "2000", "0", "0", "71950", "15", "300", "50", "2", "0.07", "3052507", "5", "-3", "0", "0", "0"]
    )
    assert len(fields) == 59
    msg = parse_message(f"0|H0STASP0|001|{'^'.join(fields)}")
    assert isinstance(msg, OrderBookFrame)
    (b,) = msg.records
    assert b.asks[0] == 72000 and b.bids[9] == 71000 and b.ask_sizes[0] == 10 and b.bid_sizes[9] == 29
    assert (b.total_ask_size, b.total_bid_size, b.expected_price, b.expected_qty, b.acml_vol) == (
        1000,
        2000,
        71950,
        15,
        3052507,
    )


def test_feed_field_lists_have_the_documented_widths():
    assert p.WS_REALTIME_TRS == set(p.WS_FEED_WIDTHS)
    assert p.H0NXCNT0_FIELDS[21] == "CNTG_CLS_CODE" and p.H0STCNT0_FIELDS[21] == "CCLD_DVSN"
    assert p.H0NXASP0_FIELDS[:59] == p.H0STASP0_FIELDS and p.H0UNASP0_FIELDS[-1] == "NMID_CLS_CODE"
    assert p.H0STANC0_FIELDS == p.H0NXANC0_FIELDS[:45] and p.H0NXANC0_FIELDS[-1] == "VI_STND_PRC"
    assert "MKSC_SHRN_ISCD" not in p.H0UNMKO0_FIELDS and p.H0UNMKO0_FIELDS == p.H0STMKO0_FIELDS[1:]


@pytest.mark.parametrize("tr_id", ["H0NXCNT0", "H0UNCNT0"])
def test_nxt_and_unified_trades_parse_like_krx_ones(tr_id):
    msg = parse_message(f"0|{tr_id}|002|{GOLDEN}^{GOLDEN}")
    assert isinstance(msg, TradeBatch) and msg.tr_id == tr_id and len(msg.records) == 2 and not msg.rejected


@pytest.mark.parametrize("tr_id", ["H0NXASP0", "H0UNASP0"])
def test_nxt_and_unified_books_need_their_65_fields(tr_id):
    fields = (
        ["005930", "093354", "0"]
        + [str(72000 + 100 * i) for i in range(10)]
        + [str(71900 - 100 * i) for i in range(10)]
        + [str(10 + i) for i in range(20)]
        + ["1000", "2000", "0", "0", "71950", "15", "300", "50", "2", "0.07", "3052507", "5", "-3", "0", "0", "0"]
        + ["71950", "40", "1", "71950", "30", "2"]
    )
    assert len(fields) == 65
    msg = parse_message(f"0|{tr_id}|001|{'^'.join(fields)}")
    assert isinstance(msg, OrderBookFrame) and msg.width == 65
    (b,) = msg.records
    assert b.asks[0] == 72000 and b.acml_vol == 3052507
    short = parse_message(f"0|{tr_id}|001|{'^'.join(fields[:59])}")
    assert isinstance(short, Malformed) and short.reason == "short_record"


def test_cp949_bytes_do_not_crash_the_parser():
    recs = consistent_records(2)
    recs[0][I["MRKT_TRTM_CLS_CODE"]] = "정상"
    raw = frame(recs).encode("cp949")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    msg = parse_message(raw)
    assert isinstance(msg, TradeBatch) and len(msg.records) == 2
    assert msg.records[0].raw[I["MRKT_TRTM_CLS_CODE"]] == "정상"


# --- malformed input ------------------------------------------------------------------------------

PINGPONG = '{"header":{"tr_id":"PINGPONG","datetime":"20230612093354"}}'


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        (b"", "empty"),
        ("   ", "empty"),
        ('{"header":{"tr_id":"H0STCNT0","tr_key":"005930"},"body":{"rt_cd":"0","msg', "truncated_json"),
        ('{"foo": 1}', "bad_json"),
        ("[1, 2]", "bad_frame"),
        (f"0|H0STCNT0|001|{'^'.join(GOLDEN.split('^')[:45])}", "short_record"),
        (f"0|H0STCNT0|002|{GOLDEN}^{'^'.join(GOLDEN.split('^')[:45])}", "field_count"),
        (f"0|H0XXXXX0|001|{GOLDEN}", "unknown_tr"),
        (f"0|H0STCNT0|abc|{GOLDEN}", "bad_count"),
        (f"0|H0STCNT0|000|{GOLDEN}", "bad_count"),
        ("0|H0STCNT0|001", "bad_frame"),
        (bytes(range(128, 256)) * 3, "undecodable"),
        (b"\x00\x01\x02garbage\xff\xfe", "undecodable"),
        ("hello world", "bad_frame"),
    ],
)
def test_malformed_inputs_are_counted_with_their_reason(raw, reason):
    stats = ParseStats()
    msg = parse_message(raw, stats)
    assert isinstance(msg, Malformed), msg
    assert msg.reason == reason
    assert stats.malformed == {reason: 1} and stats.frames == 1
    assert len(msg.raw_excerpt) <= 200
    assert stats.unknown_tr == (1 if reason == "unknown_tr" else 0)


def test_encrypted_frame_is_reported_not_decrypted():
    stats = ParseStats()
    msg = parse_message("1|H0STCNI0|001|qZ0X3c0m9L0Ax2bA+/ZZt0yQ==", stats)
    assert msg == Encrypted("H0STCNI0", 1)
    assert stats.encrypted == 1 and stats.malformed_total == 0


def test_stream_of_mixed_messages_keeps_counting():
    stats = ParseStats()
    seq = [
        frame(consistent_records(3)),
        "garbage",
        PINGPONG,
        "1|H0STCNI0|001|xx",
        f"0|H0ZZZZZ0|001|{GOLDEN}",
        frame(consistent_records(19)),
    ]
    msgs = [parse_message(m, stats) for m in seq]
    assert [type(m).__name__ for m in msgs] == [
        "TradeBatch",
        "Malformed",
        "PingPong",
        "Encrypted",
        "Malformed",
        "TradeBatch",
    ]
    assert stats.as_dict() == {
        "frames": 6,
        "data_frames": 2,
        "records": 22,
        "malformed": {"bad_frame": 1, "unknown_tr": 1},
        "malformed_total": 2,
        "unknown_tr": 1,
        "encrypted": 1,
        "pingpong": 1,
        "acks": 0,
    }


# --- control messages ------------------------------------------------------------------------------


def test_pingpong_is_detected_and_keeps_exact_text():
    assert parse_message(PINGPONG) == PingPong(PINGPONG)
    assert parse_message(PINGPONG.encode()) == PingPong(PINGPONG)
    spaced = '{ "header" : { "tr_id" : "PINGPONG", "datetime" : "20230612093354" } }'
    assert parse_message(spaced) == PingPong(spaced)


def _ack(msg_cd: str, rt_cd: str, msg1: str, tr_id: str = "H0STCNT0", tr_key: str = "005930") -> str:
    body = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if msg_cd == "OPSP0000":
        body["output"] = {"iv": "0123456789abcdef", "key": "k" * 32}
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body})


@pytest.mark.parametrize(
    "msg_cd, kind",
    [
        ("OPSP0000", "subscribed"),
        ("OPSP0001", "unsubscribed"),
        ("OPSP0002", "already"),
        ("OPSP0003", "not_registered"),
        ("OPSP0008", "max_over"),
        ("OPSP0007", "error"),
    ],
)
def test_acks_are_classified_by_msg_cd(msg_cd, kind):
    rt_cd, msg1 = p.OPSP_MESSAGES.get(msg_cd, ("1", "internal error"))
    stats = ParseStats()
    msg = parse_message(_ack(msg_cd, rt_cd, msg1), stats)
    assert msg == Ack("H0STCNT0", "005930", rt_cd, msg_cd, msg1, kind, "N")
    assert stats.acks == 1


def test_key_in_use_ack_with_null_tr_id():
    msg = parse_message(_ack("OPSP8996", "9", "ALREADY IN USE appkey", tr_id="(null)", tr_key=""))
    assert isinstance(msg, Ack) and msg.kind == "key_in_use" and msg.tr_id == "(null)"


def test_mock_variants_of_ack_codes_are_read_by_their_text():
    assert parse_message(_ack("OPSP0001", "1", "ALREADY IN SUBSCRIBE")).kind == "already"
    assert parse_message(_ack("OPSP0009", "9", "MAX SUBSCRIBE OVER")).kind == "max_over"


def test_status_and_expected_feeds_parse_to_checked_field_tuples():
    """Market status and expected prices are kept as field tuples; a record without a usable phase code, time or
    price is rejected with its fields, the others of the frame survive."""
    ok = ["005930", "N", "", "20", "22", "1", "0", "00", "N", "N", "1"]
    bad = [*ok[:3], "x", *ok[4:]]
    stats = ParseStats()
    msg = parse_message("0|H0STMKO0|002|" + "^".join(ok + bad), stats)
    assert isinstance(msg, FeedFrame) and msg.tr_id == "H0STMKO0" and msg.width == 11
    assert msg.records == [tuple(ok)] and [r.reason for r in msg.rejected] == ["bad_status"]
    assert stats.records == 1 and stats.malformed == {"bad_status": 1}
    unified = parse_message("0|H0UNMKO0|001|" + "^".join(ok[1:]))
    assert isinstance(unified, FeedFrame) and unified.records == [tuple(ok[1:])]
    expected = GOLDEN.split("^")[:45]
    msg = parse_message("0|H0STANC0|002|" + "^".join(expected + [expected[0], "9:00", *expected[2:]]))
    assert isinstance(msg, FeedFrame) and msg.records == [tuple(expected)]
    assert [r.reason for r in msg.rejected] == ["bad_time"]
    short = parse_message("0|H0NXANC0|001|" + "^".join(expected))  # NXT keeps VI_STND_PRC: 46 fields
    assert isinstance(short, Malformed) and short.reason == "short_record"
