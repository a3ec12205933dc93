"""Track B journal: real files, real fsync, real child processes killed with SIGKILL, real write errors
(RLIMIT_FSIZE makes the kernel refuse writes mid-batch, the same path as ENOSPC)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from local_exchange.market import Market
from observer_assets.track_b.journal import Journal, JournalError
from observer_assets.track_b.journal_format import line_ok, segments
from observer_assets.track_b.journal_read import read_journal
from observer_assets.track_b.journal_recovery import recover, segment_closed
from observer_resources.calendar import KST
from observer_resources.storage.layout import segment_path

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 10)


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(2026, 3, 10, h, m, tzinfo=KST) + timedelta(seconds=s)


class Clock:
    """The journal's wall clock (used for idle close and control lines), set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def sim_frames(n_frames: int, per_frame: int = 3) -> list[str]:
    """Real H0STCNT0 frames from the local exchange's market model (one busy code)."""
    m = Market(seed=3, listings=400, clock_mode="krx")
    lst = max(m.listings, key=lambda l: l.activity)
    t = m.day_ticks(lst.code, DAY)
    out = []
    for f in range(n_frames):
        recs = [m.trade_record(t, f * per_frame + k) for k in range(per_frame)]
        out.append(f"0|H0STCNT0|{per_frame:03d}|" + "^".join(x for r in recs for x in r))
    return out


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def test_every_frame_is_kept_as_received_with_its_receive_time(tmp_path: Path) -> None:
    frames = sim_frames(20)
    odd = [
        "0|H0STCNT0|002|005930^0900",  # malformed: kept, flagged by the capture
        '{"header":{"tr_id":"PINGPONG","datetime":"20260310100000"}}',
        'quote " backslash \\ newline \n tab \t 한글',
    ]
    cp949 = "한글 frame".encode("cp949")  # not UTF-8: stored base64, returned as the same bytes
    rxs = [at(10, 0, i * 0.001 + 0.000123) for i in range(len(frames) + len(odd) + 1)]
    with Journal(tmp_path, "key-t1", fsync_interval=0.01, clock=Clock(at(10, 5))) as j:
        for i, f in enumerate(frames):
            j.append(rxs[i], f, conn=1, mitigation_level=0)
        for k, f in enumerate(odd):
            j.append(rxs[len(frames) + k], f, conn=2, **({"bad": "field_count"} if k == 0 else {}))
        j.append(rxs[-1], cp949, conn=2)
        j.flush()
        assert j.durable_seq == len(rxs) - 1 and j.durable_upto == rxs[-1]
    path = segment_path(tmp_path, "key-t1", DAY, 10)
    assert segments(tmp_path, DAY) == [path]
    raw_lines = lines_of(path)
    assert all(line_ok(ln) for ln in raw_lines)
    assert all(json.loads(ln)["crc"] for ln in raw_lines)  # each line is plain JSON as well
    got = [ln for ln in read_journal([path])]
    assert [g.kind for g in got] == ["open"] + ["frame"] * len(rxs) + ["close"]
    data = got[1:-1]
    assert [d.payload for d in data] == frames + odd + [cp949]
    assert [d.rx for d in data] == rxs
    assert all(d.rx.utcoffset() == timedelta(hours=9) for d in data)
    assert b'"rx":"2026-03-10T10:00:00.000123+09:00"' in raw_lines[1]
    assert [d.n for d in data] == list(range(len(rxs)))
    assert {d.conn for d in data} == {1, 2} and data[0].conn_id.endswith("/1")
    assert data[0].mitigation_level == 0 and data[len(frames)].meta == {"bad": "field_count"}
    assert all(d.key_id == "key-t1" and d.ok for d in got)
    assert segment_closed(path)


def test_crc_detects_a_changed_byte_that_still_parses(tmp_path: Path) -> None:
    with Journal(tmp_path, "key-t2", clock=Clock(at(10))) as j:
        j.append(at(10), sim_frames(1)[0], conn=1)
    path = segment_path(tmp_path, "key-t2", DAY, 10)
    line = lines_of(path)[1]
    i = line.index(b"|003|") + 6  # a digit inside the first record
    digit = line[i : i + 1]
    assert digit.isdigit()
    forged = line[:i] + (b"1" if digit != b"1" else b"2") + line[i + 1 :]
    json.loads(forged)  # still valid JSON: only the CRC can tell
    assert line_ok(line) and not line_ok(forged)


def test_segments_rotate_on_the_hour_of_receipt_and_close(tmp_path: Path) -> None:
    clock = Clock(at(10, 59, 59))
    events: list[dict] = []
    with Journal(tmp_path, "key-t3", fsync_interval=0.01, clock=clock, on_event=events.append) as j:
        j.append(at(10, 59, 59.9), "0|a", conn=1)
        j.append(at(11, 0, 0.1), "0|b", conn=1)
        j.flush()
        p10, p11 = (segment_path(tmp_path, "key-t3", DAY, h) for h in (10, 11))
        assert segment_closed(p10) and not segment_closed(p11)
    assert segment_closed(p11)
    assert [ln.payload for ln in read_journal([p10]) if ln.kind == "frame"] == ["0|a"]
    assert [ln.payload for ln in read_journal([p11]) if ln.kind == "frame"] == ["0|b"]
    assert [e["event"] for e in events].count("journal_segment_closed") == 2


def test_a_quiet_segment_is_closed_after_its_hour_and_late_lines_go_forward(tmp_path: Path) -> None:
    clock = Clock(at(14, 59, 50))
    with Journal(tmp_path, "key-t4", fsync_interval=0.01, close_grace_s=2.0, clock=clock) as j:
        j.append(at(14, 59, 50), "0|last", conn=1)
        j.flush()
        p14 = segment_path(tmp_path, "key-t4", DAY, 14)
        assert not segment_closed(p14)
        clock.now = at(15, 0, 3)  # hour over + grace: the idle check (every 1 s) seals it
        deadline = time.monotonic() + 5
        while not segment_closed(p14) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert segment_closed(p14)
        j.append(at(14, 59, 59.5), "0|late", conn=1)  # received in hour 14, appended after the seal
        j.flush()
        assert j.late_lines == 1
    assert [ln.payload for ln in read_journal([p14]) if ln.kind == "frame"] == ["0|last"]
    p15 = segment_path(tmp_path, "key-t4", DAY, 15)
    late = [ln for ln in read_journal([p15]) if ln.kind == "frame"]
    assert [(ln.payload, ln.rx) for ln in late] == [("0|late", at(14, 59, 59.5))]


def test_bad_input_is_refused_loudly_and_nothing_is_written(tmp_path: Path) -> None:
    j = Journal(tmp_path, "key-t5", clock=Clock(at(10)))
    with pytest.raises(ValueError, match="timezone-aware"):
        j.append(datetime(2026, 3, 10, 10), "x")
    with pytest.raises(ValueError, match="reserved"):
        j.append(at(10), "x", crc="1")
    with pytest.raises(TypeError):
        j.append(at(10), "x", conn="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        j.append(at(10), 12)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        j.append(at(10), "x", meta=object())
    with pytest.raises(JournalError, match="another process"):
        Journal(tmp_path, "key-t5")
    with pytest.raises(ValueError):
        Journal(tmp_path, "../evil")
    j.append(at(10), "kept")
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append(at(10), "after close")
    frames = [ln for ln in read_journal(segments(tmp_path, DAY)) if ln.kind == "frame"]
    assert [(f.payload, f.n) for f in frames] == [("kept", 0)]


def test_group_commit_makes_every_line_durable_within_the_interval(tmp_path: Path) -> None:
    frames = sim_frames(10)
    with Journal(tmp_path, "key-t6", fsync_interval=0.1, clock=Clock(at(10))) as j:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 0.6:  # ~1,000 frames/s for 0.6 s
            j.append(at(10, 0, n * 0.001), frames[n % 10], conn=1)
            n += 1
            time.sleep(0.001)
        j.flush()
        st = j.stats()
    assert st["lines"] == n and st["queue_lines"] == 0 and st["error"] is None
    # grouped: a handful of fsyncs for hundreds of lines, at most one per interval (+ the final flush)
    assert st["fsyncs"] <= 0.6 / 0.1 + 3 < n
    lat = st["durable_latency"]
    # the contract is durable within 1 s (typical: the interval + one fsync; a shared disk can stall an fsync)
    assert lat["count"] == n and lat["max_ms"] < 1000 and lat["p50_ms"] < 500


def test_recover_cuts_a_torn_tail_only(tmp_path: Path) -> None:
    with Journal(tmp_path, "key-t7", clock=Clock(at(10))) as j:
        for i in range(50):
            j.append(at(10, 0, i), f"0|frame {i}", conn=1)
    path = segment_path(tmp_path, "key-t7", DAY, 10)
    good = path.read_bytes()
    whole = lines_of(path)
    # a complete line whose CRC is wrong, then half a line: both after the last good line
    bad_crc = whole[5].replace(b"frame 4", b"frame X") + b"\n"
    torn = whole[7][: len(whole[7]) // 2]
    path.write_bytes(good + bad_crc + torn)
    rec = recover(path)
    assert rec.cut_bytes == len(bad_crc) + len(torn)
    assert rec.valid_lines == 52 and rec.bad_lines == 0 and rec.quarantined is None
    assert rec.last_rx == at(10, 0, 49) and rec.closed
    assert path.read_bytes() == good
    again = recover(path)
    assert again.cut_bytes == 0 and again.valid_lines == 52


def test_recover_never_truncates_corruption_inside_the_file(tmp_path: Path) -> None:
    with Journal(tmp_path, "key-t8", clock=Clock(at(10))) as j:
        for i in range(30):
            j.append(at(10, 0, i), f"0|frame {i}", conn=1)
    path = segment_path(tmp_path, "key-t8", DAY, 10)
    data = bytearray(path.read_bytes())
    i = data.index(b"frame 10")
    data[i + 6] = ord("7")  # a bit flip in the middle of the file
    data += b'{"rx":"2026-03-10T10:00'  # and a torn tail
    path.write_bytes(bytes(data))
    rec = recover(path)
    assert rec.bad_lines == 1 and rec.quarantined is not None
    assert rec.quarantined.read_bytes() == bytes(data)  # evidence as found
    assert rec.cut_bytes == len(b'{"rx":"2026-03-10T10:00')
    assert path.stat().st_size == len(data) - rec.cut_bytes  # the bad line itself stays
    kinds = [(ln.ok, ln.error) for ln in read_journal([path])]
    assert kinds.count((False, "bad_crc")) == 1 and len(kinds) == 32
    assert not list(path.parent.glob("*.jsonl.quarantine-*"))[1:]  # one copy
    recover(path)
    assert len(list(path.parent.glob("*.jsonl.quarantine-*"))) == 1  # not copied again


def test_a_restart_recovers_seals_and_appends_after_a_crash(tmp_path: Path) -> None:
    with Journal(tmp_path, "key-t9", clock=Clock(at(10)), run_id="first") as j:
        for i in range(10):
            j.append(at(10, 0, i), f"0|frame {i}", conn=1)
    path = segment_path(tmp_path, "key-t9", DAY, 10)
    body = path.read_bytes()
    crashed = body[: body.rindex(b"\n", 0, len(body) - 1) + 1]  # drop the close line: the writer died
    torn = b'{"rx":"2026-03-10T10:00:11.000000+09:00","r":"first","c":1,"n":10,"p":"0|fra'
    path.write_bytes(crashed + torn)
    events: list[dict] = []
    with Journal(tmp_path, "key-t9", clock=Clock(at(10, 1)), run_id="second", on_event=events.append) as j:
        j.append(at(10, 1), "0|after restart", conn=1)
    rec = [e for e in events if e["event"] == "journal_recovered"]
    assert len(rec) == 1 and rec[0]["cut_bytes"] == len(torn)
    got = list(read_journal([path]))
    assert all(ln.ok for ln in got)
    assert [(ln.kind, ln.run) for ln in got] == (
        [("open", "first")]
        + [("frame", "first")] * 10
        + [("close", "second"), ("open", "second"), ("frame", "second"), ("close", "second")]
    )
    assert got[11].meta["reason"] == "recovered" and got[11].meta["cut_bytes"] == len(torn)


def test_a_restart_reads_only_the_tail_and_verifies_the_rest_in_the_background(tmp_path: Path) -> None:
    batch = 64 << 10
    with Journal(
        tmp_path, "key-t10", flush_bytes=batch, max_batch_bytes=batch, clock=Clock(at(10)), run_id="first"
    ) as j:
        for i in range(3000):
            j.append(at(10, 0, i * 0.001), f"0|frame {i:05d} " + "x" * 200, conn=1)
    path = segment_path(tmp_path, "key-t10", DAY, 10)
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * batch
    i = data.index(b"frame 00100")
    data[i + 9] = ord("9")  # corruption far before the tail window
    body = bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])  # the writer died: no close line
    path.write_bytes(body + b'{"rx":"2026-03-10T10:00:09')  # and left a torn tail
    events: list[dict] = []
    with Journal(
        tmp_path,
        "key-t10",
        flush_bytes=batch,
        max_batch_bytes=batch,
        clock=Clock(at(10, 1)),
        run_id="second",
        on_event=events.append,
    ) as j:
        j.append(at(10, 1), "0|after", conn=1)
        j.flush()
        j.wait_verified(30)
    tail = next(e for e in events if e["event"] == "journal_recovered")
    assert tail["cut_bytes"] == len(b'{"rx":"2026-03-10T10:00:09') and tail["scanned_from"] > 0
    assert tail["bad_lines"] == 0  # the corruption is outside the window...
    corrupt = [e for e in events if e["event"] == "journal_corruption"]
    assert len(corrupt) == 1 and corrupt[0]["bad_lines"] == 1  # ...and found by the background check
    q = Path(corrupt[0]["quarantined"])
    assert q.read_bytes() == body[: q.stat().st_size] and q.stat().st_size <= len(body)
    got = list(read_journal([path]))
    assert [ln.error for ln in got if not ln.ok] == ["bad_crc"]  # kept in place, readable around it
    assert got[-2].payload == "0|after" and got[-1].kind == "close"


# --- crash safety: SIGKILL at random moments -------------------------------------------------------

CHILD = r"""
import sys, time
from datetime import datetime, timedelta
sys.path.insert(0, sys.argv[3])
from observer_resources.calendar import KST
from observer_assets.track_b.journal import Journal
data_dir, run = sys.argv[1], sys.argv[2]
frames = sys.stdin.read().split("\n")
base = datetime(2026, 3, 10, 10, 0, tzinfo=KST)
j = Journal(data_dir, "key-kill", fsync_interval=0.02, flush_bytes=256 << 10, run_id=run,
            clock=lambda: base + timedelta(minutes=30))
print("ready", flush=True)
last = -1
i = 0
while True:
    j.append(base + timedelta(microseconds=i), frames[i % len(frames)], conn=1, mitigation_level=0)
    i += 1
    d = j.durable_seq
    if d != last:
        last = d
        print(d, flush=True)  # acknowledged durable
    if i % 40 == 0:
        time.sleep(0.001)
"""


def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_SEED", time.time_ns() % 2**32))
    print(f"KILL_SEED={seed}")
    rng = random.Random(seed)
    frames = "\n".join(sim_frames(60, per_frame=1) + sim_frames(4, per_frame=19))
    path = segment_path(tmp_path, "key-kill", DAY, 10)
    acked: dict[str, int] = {}
    cuts = []
    for k in range(5):
        run = f"run{k}"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), run, str(ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin and proc.stdout
        proc.stdin.write(frames)
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "ready"
        seen = [-1]

        def reader() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                seen[0] = int(line)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while seen[0] < 0 and time.monotonic() < deadline:  # recording (after its recovery) has started
            time.sleep(0.005)
        assert seen[0] >= 0, f"{run}: nothing durable within 10 s of start"
        time.sleep(rng.uniform(0.0, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        t.join(5)
        acked[run] = seen[0]  # everything the child printed was durable before it died
        rec = recover(path)
        cuts.append(rec.cut_bytes)
        assert rec.bad_lines == 0
        assert all(line_ok(ln) for ln in lines_of(path))
    final = list(read_journal([path]))
    assert all(ln.ok for ln in final)
    for run, ack in acked.items():
        ns = [ln.n for ln in final if ln.kind == "frame" and ln.run == run]
        assert ns == list(range(len(ns))), f"{run}: lines out of order or missing inside the record"
        assert len(ns) - 1 >= ack, f"{run}: acknowledged line {ack} missing after kill -9 (have {len(ns)})"
    # each later run started with a recovery of the earlier one and appended after it
    opens = [ln.run for ln in final if ln.kind == "open"]
    assert opens == list(acked)
    print(f"kill -9 x{len(acked)}: torn tails cut {cuts}, acked {acked}")


# --- write errors: the kernel refuses a write mid-batch --------------------------------------------

FULL_CHILD = r"""
import json, resource, signal, sys, time
from datetime import datetime, timedelta
sys.path.insert(0, sys.argv[2])
from observer_resources.calendar import KST
from observer_assets.track_b.journal import Journal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
base = datetime(2026, 3, 10, 10, 0, tzinfo=KST)
events = []
j = Journal(sys.argv[1], "key-full", fsync_interval=0.01, retry_max_s=0.05, clock=lambda: base,
            on_event=events.append)
frame = "0|H0STCNT0|001|" + "9" * 600
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # like a disk that fills up at 100 kB
n = 0
for i in range(400):
    j.append(base + timedelta(milliseconds=i), frame, conn=1)
    n += 1
deadline = time.monotonic() + 5
while j.error is None and time.monotonic() < deadline:
    time.sleep(0.01)
during = j.stats()
for i in range(100):  # the capture keeps appending while the disk is full
    j.append(base + timedelta(seconds=1, milliseconds=i), frame, conn=1)
    n += 1
time.sleep(0.2)
still = j.stats()
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
j.flush(timeout=10)
j.close()
print(json.dumps({"during": during, "still": still, "after": j.stats(), "n": n,
                  "events": [e["event"] for e in events], "errnos": sorted({e.get("errno") for e in events if e.get("errno")})}))
"""


def test_a_write_error_keeps_every_line_and_recovers(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", FULL_CHILD, str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    during, still, after = r["during"], r["still"], r["after"]
    assert during["error"] and during["error"].startswith("EFBIG") and during["write_errors"] >= 1
    assert still["queue_lines"] > 0 and still["durable_seq"] < r["n"] - 1  # buffered, not lost, not acked
    assert still["write_errors"] > during["write_errors"]  # it keeps retrying
    assert after["error"] is None and after["queue_lines"] == 0 and after["durable_seq"] == r["n"] - 1
    assert "journal_write_error" in r["events"] and "journal_write_recovered" in r["events"]
    assert r["errnos"] == ["EFBIG"]
    path = segment_path(tmp_path, "key-full", DAY, 10)
    got = list(read_journal([path]))
    assert all(ln.ok for ln in got)  # the partial write was cut back before the retry
    assert [ln.n for ln in got if ln.kind == "frame"] == list(range(r["n"]))  # each line exactly once
