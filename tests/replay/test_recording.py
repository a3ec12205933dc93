"""The replay's pure parts, without sockets: routing frames by (tr_id, code), and a day read back from a journal
with its holes (a reconnect, a corrupt line, a restart) and its window."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from local_exchange.frame_source import route_frame
from observer_assets.replay.recording import load
from observer_assets.track_b.journal import Journal
from observer_assets.track_b.journal_format import segments
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p

DAY = date(2026, 3, 10)


def rec(code: str, vol: int, width: int = 46) -> list[str]:
    return [code, "093000", "70000"] + [str(vol)] * (width - 3)


def frame(tr: str, *records: list[str]) -> str:
    return f"0|{tr}|{len(records):03d}|" + "^".join("^".join(r) for r in records)


def test_route_frame_keeps_one_code_frames_and_splits_mixed_ones() -> None:
    one = frame(p.TR_WS_TRADE, rec("005930", 1), rec("005930", 2))
    assert route_frame(one) == [(p.TR_WS_TRADE, "005930", one)]
    wide = frame(p.TR_WS_TRADE_UN, rec("000660", 1, 47))
    assert route_frame(wide) == [(p.TR_WS_TRADE_UN, "000660", wide)]
    mixed = frame(p.TR_WS_TRADE, rec("005930", 1), rec("000660", 2), rec("005930", 3))
    assert route_frame(mixed) == [
        (p.TR_WS_TRADE, "005930", frame(p.TR_WS_TRADE, rec("005930", 1), rec("005930", 3))),
        (p.TR_WS_TRADE, "000660", frame(p.TR_WS_TRADE, rec("000660", 2))),
    ]
    status = frame(p.TR_WS_STATUS, ["005930"] + ["x"] * 10)
    assert route_frame(status) == [(p.TR_WS_STATUS, "005930", status)]
    for bad in (
        '{"header":{"tr_id":"PINGPONG"}}',
        "1|H0STCNI0|001|abcd",  # encrypted
        "0|H0ZZZZZ0|001|" + "^".join(rec("005930", 1)),  # unknown TR
        f"0|{p.TR_WS_TRADE}|002|" + "^".join(rec("005930", 1)),  # the count does not divide the fields
        f"0|{p.TR_WS_TRADE}|x|",
    ):
        assert route_frame(bad) is None, bad


def test_a_journal_day_with_its_holes_and_window(tmp_path) -> None:
    t0 = datetime(2026, 3, 10, 9, 0, tzinfo=KST)
    j = Journal(tmp_path, "key-a", fsync_interval=0.0, clock=lambda: t0 + timedelta(hours=8))
    for i in range(5):
        j.append(t0 + timedelta(seconds=i), frame(p.TR_WS_TRADE, rec("005930", i)), conn=1)
    j.append(t0 + timedelta(seconds=5), '{"header":{"tr_id":"PINGPONG"}}', conn=1)
    j.append(t0 + timedelta(seconds=6), "0|H0ZZZZZ0|001|x", conn=1)
    for i in range(5, 8):  # after a reconnect
        j.append(t0 + timedelta(seconds=10 + i), frame(p.TR_WS_TRADE, rec("005930", i)), conn=2)
    j.close()
    j2 = Journal(tmp_path, "key-a", fsync_interval=0.0, clock=lambda: t0 + timedelta(hours=8), run_id="second")
    j2.append(t0 + timedelta(seconds=40), frame(p.TR_WS_TRADE, rec("000660", 1)), conn=1)
    j2.close()
    (seg,) = segments(tmp_path, DAY)
    lines = seg.read_bytes().split(b"\n")
    victim = next(i for i, ln in enumerate(lines) if b'"n":2,' in ln)
    lines[victim] = lines[victim].replace(b"70000", b"70001")  # the CRC no longer matches
    seg.write_bytes(b"\n".join(lines))

    r = load(tmp_path, tmp_path, DAY)
    assert r.source == "journal" and r.keys == ["key-a"]
    assert r.streams[(p.TR_WS_TRADE, "005930")].frames == [
        frame(p.TR_WS_TRADE, rec("005930", i)) for i in (0, 1, 3, 4, 5, 6, 7)
    ]  # the corrupt line is never served
    assert list(r.streams) == [(p.TR_WS_TRADE, "005930"), (p.TR_WS_TRADE, "000660")]
    assert r.skipped == {"bad_crc": 1, "control": 1, "unroutable": 1}
    kinds = [(h.kind, h.start.second if h.start else None, h.end.second if h.end else None) for h in r.holes]
    assert kinds == [("bad_line", 1, 3), ("reconnect", 6, 15), ("restart", 17, 40)]

    late = load(tmp_path, tmp_path, DAY, t_from="09:00", t_to="09:01")
    assert late.frames == r.frames
    none_after = load(tmp_path, tmp_path, DAY, t_from="09:01")
    assert none_after.frames == 0 and none_after.holes == r.holes  # holes are the whole day's
