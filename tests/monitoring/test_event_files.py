"""Per-host event files and the one tolerant reader, against real parts: two processes with different host ids
appending at once to one shared directory, garbage written into the middle of one host's file, and the
``gap_report`` and ``system_events`` assets built from that day on a real Dagster instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from observer_assets.backup.daysets import file_day
from observer_assets.gaps.assets import gap_report
from observer_assets.monitoring.events import load_day as ops_load_day
from observer_assets.monitoring.events import read_day, system_events
from observer_assets.orchestration.partitions import day_key
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.events import (
    HOST_ID_ENV,
    EventLog,
    events_dir,
    events_files,
    events_path,
    gaps,
    host_id,
    legacy_events_path,
    load_day,
    read_events,
)
from observer_resources.storage.layout import report_path, report_summary_path

DAY = date(2026, 3, 10)  # a KRX trading day (Tuesday)
N = 200  # events per host

WRITER = r"""
import os, sys, time
from datetime import datetime, timedelta
from observer_resources.calendar import KST
from observer_resources.events import EventLog

data, n, offset, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
host = os.environ["OBSERVER_HOST_ID"]
log = EventLog(data, source=host)
base = datetime(2026, 3, 10, 9, 0, tzinfo=KST)
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:  # both writers start together
    time.sleep(0.001)
for i in range(n):
    log.emit("host_note", at=base + timedelta(seconds=2 * i + offset), host=host, i=i)
start = base + timedelta(minutes=30 + offset)
end = start + timedelta(seconds=20)
marker = dict(gap_id=f"gap-{host}", symbol=None, gap_start_ts=start, scope="scalp", reason="ws_disconnect",
              severity="major", session_id=host, metadata={"key_id": f"key-{host}"})
# gap_open/gap_close stamp the wall clock; the markers of the fixed day are written as they would be that day
log.emit("gap_marker", at=start, state="open", gap_end_ts=None, gap_seconds=None, **marker)
log.emit("gap_marker", at=end, state="closed", gap_end_ts=end, gap_seconds=20.0, **marker)
"""


def write_concurrently(data: Path, tmp_path: Path) -> None:
    """Two processes, hosts ``alpha`` and ``beta``, appending to ``data`` at the same time."""
    go = tmp_path / "go"
    procs = []
    for host, offset in (("alpha", 0), ("beta", 1)):
        env = {**os.environ, HOST_ID_ENV: host}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(data), str(N), str(offset), str(go)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(0.5)  # both imported and waiting
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


def test_host_ids_are_filesystem_safe_and_names_start_with_the_day():
    assert host_id({HOST_ID_ENV: "web-1.example.com/../x"}) == "web-1-example-com-x"
    assert host_id({HOST_ID_ENV: "  "}) == host_id({})  # blank: the host name
    assert host_id({}) and "." not in host_id({}) and "/" not in host_id({})
    p = events_path(Path("/lake"), DAY, "alpha")
    assert p.name == "20260310.alpha.jsonl"
    # the backup dates a system file by its leading YYYYMMDD: a per-host file travels with its day
    assert file_day(("system", "events", p.name)) == DAY


def test_two_hosts_append_concurrently_each_to_its_own_file(tmp_path):
    data = tmp_path / "shared"
    write_concurrently(data, tmp_path)
    files = events_files(data, DAY)
    assert [f.name for f in files] == ["20260310.alpha.jsonl", "20260310.beta.jsonl"]
    for f in files:  # each host's file holds only its own, whole lines
        lines = f.read_bytes().split(b"\n")
        assert lines.pop() == b"" and len(lines) == N + 2
        assert {json.loads(x)["source"] for x in lines} == {f.name.split(".")[1]}
    d = load_day(data, DAY)
    assert (d.bad_count, d.torn_count, d.files) == (0, 0, tuple(files))
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in d.records]
    assert len(d.records) == 2 * (N + 2) and stamps == sorted(stamps)  # merged in time order
    notes = [e for e in d.records if e["event_type"] == "host_note"]
    assert [e["host"] for e in notes[:4]] == ["alpha", "beta", "alpha", "beta"]
    assert {g.metadata["key_id"] for g in gaps(data, DAY)} == {"key-alpha", "key-beta"}


def test_garbage_in_the_middle_of_one_hosts_file_is_counted_and_the_day_still_reports(tmp_path, monkeypatch):
    data = tmp_path / "shared"
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(data))
    monkeypatch.setenv("OBSERVER_CALENDAR", "krx")
    write_concurrently(data, tmp_path)
    alpha = events_path(data, DAY, "alpha")
    lines = alpha.read_bytes().split(b"\n")[:-1]
    garbage = b'\x00\xff\xfe garbage {"event_type": "host_no'
    glued = b'{"event_type": "host_note", "timest' + lines[10]  # a torn fragment, then a whole event: kept
    alpha.write_bytes(b"\n".join(lines[:10] + [garbage, glued] + lines[11:]) + b"\n")

    events = list(read_events(data, DAY))  # never raises
    d = load_day(data, DAY)
    assert d.bad_lines == {alpha.name: [11, 12]} and d.bad_count == 2 and d.torn_count == 0
    assert len(events) == len(d.records) == 2 * (N + 2)  # nothing but the garbage lost
    assert d.problems() == [f"{alpha.name}:11", f"{alpha.name}:12"]
    assert ops_load_day(data, DAY) == d and read_day(data, DAY).attrs["bad_count"] == 2

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(DAY)])
        res = dg.materialize([gap_report, universe.to_source_asset()], partition_key=day_key(DAY), instance=inst)
        assert res.success
        md = res.asset_materializations_for_node("gap_report")[0].metadata
        ev = dg.materialize([system_events], partition_key=day_key(DAY), instance=inst)
        assert ev.success
        emd = ev.asset_materializations_for_node("system_events")[0].metadata
    assert (md["events_bad_lines"].value, md["events_torn_lines"].value) == (2, 0)
    assert "2 unreadable and 0 torn line(s) skipped" in md["summary"].value
    summary = json.loads(report_summary_path(data, DAY).read_text())
    assert summary["events_bad_lines"] == 2 and summary["events_unreadable_where"] == d.problems()
    rows = pq.read_table(report_path(data, DAY)).to_pylist()
    disc = [r for r in rows if r["kind"] == "ws_disconnect"]
    assert len(disc) == 2  # both hosts' gap markers made it into the report
    assert all(set(json.loads(r["source_files"])) == {str(f) for f in d.files} for r in disc)
    assert emd["bad_lines"].value == 2 and emd["events"].value == 2 * (N + 2)
    assert f"{alpha.name}:11" in emd["note"].value


def test_legacy_day_file_torn_tail_and_bad_shapes_never_raise(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv(HOST_ID_ENV, "gamma")
    legacy = legacy_events_path(data, DAY)
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(
        b'{"event_type": "old", "timestamp": "2026-03-10T12:00:00+09:00"}\n'
        b'[1, 2]\n{"no_type": 1}\n\xff\xfe\n\n'
        b'{"event_type": "old_torn", "timestamp": "2026-03'
    )  # torn last line of an old file
    log = EventLog(data)
    log.emit("first", at=datetime(2026, 3, 10, 8, 0, tzinfo=KST))
    mine = events_path(data, DAY)
    assert mine.name == "20260310.gamma.jsonl"
    with open(mine, "ab") as f:  # a writer of this host died mid-line
        f.write(b'{"event_type": "half", "timest')
    log.emit("after", at=datetime(2026, 3, 10, 13, 0, tzinfo=KST))  # ends the fragment's line first
    log.emit("appended_later_happened_earlier", at=datetime(2026, 3, 10, 9, 0, tzinfo=KST))
    d = load_day(data, DAY)
    assert [e["event_type"] for e in d.records] == ["first", "appended_later_happened_earlier", "old", "after"]
    assert d.bad_lines == {legacy.name: [2, 3, 4], mine.name: [2]} and d.torn_lines == {legacy.name: 1}
    assert [f.name for f in d.files] == [legacy.name, mine.name]
    assert list(read_events(data, DAY)) == d.records
    empty = load_day(data, date(2026, 3, 11))
    assert not empty.exists and empty.records == [] and empty.directory == events_dir(data)
    assert list(read_events(data, date(2026, 3, 11))) == [] and gaps(data, date(2026, 3, 11)) == []
    # a gap marker missing its fields is skipped, not fatal
    log.emit("gap_marker", at=datetime(2026, 3, 10, 14, 0, tzinfo=KST), gap_id="x")
    assert gaps(data, DAY) == []


def test_the_exporter_adds_up_every_hosts_file(tmp_path, monkeypatch):
    from prometheus_client.parser import text_string_to_metric_families

    from observer_assets.monitoring.metrics import ObserverCollector, collect_text

    data = tmp_path / "data"
    data.mkdir()
    now = datetime.now(KST)
    for host, n in (("alpha", 2), ("beta", 3)):
        monkeypatch.setenv(HOST_ID_ENV, host)
        log = EventLog(data)
        for _ in range(n):
            log.emit("rate_limit_rejected", at=now, key_id="key-x", tr_id="FHKST01010100")
        log.emit("retention_deleted", at=now, day="2026-01-05", files=n, bytes=100 * n)
    legacy = legacy_events_path(data, now.date())  # an older version's file of the same day counts too
    legacy.write_text(
        json.dumps({"event_type": "rate_limit_rejected", "timestamp": now.isoformat(), "key_id": "key-x"})
        + "\nnot json\n"
    )
    env = {"OBSERVER_DATA_DIR": str(data), "OBSERVER_CALENDAR": "open"}
    c = ObserverCollector(env, now=now, cache_seconds=0, slow_cache_seconds=0)
    try:
        samples = {
            s.name: s.value
            for f in text_string_to_metric_families(collect_text(env, collector=c))
            for s in f.samples
            if s.labels.get("key_id") in (None, "key-x")
        }
    finally:
        c.close()
    assert samples["observer_rate_limit_rejections_total"] == 6
    assert samples["observer_retention_deleted_files_total"] == 5
    assert samples["observer_retention_deleted_bytes_total"] == 500


def test_the_exporter_follows_a_file_by_the_event_logs_line_policy(tmp_path):
    """The exporter's incremental tail and the day reader agree line for line: the same bad lines, the same events
    (one glued behind a torn fragment included); a last line without its newline waits, it is not yet bad."""
    from observer_assets.monitoring.metric_events import EventFigures, Tail, feed_event

    data = tmp_path / "data"
    path = events_path(data, DAY, "alpha")
    path.parent.mkdir(parents=True)

    def rejected(n: int) -> bytes:
        return json.dumps(
            {"event_type": "rate_limit_rejected", "timestamp": f"2026-03-10T09:00:0{n}+09:00", "key_id": "k"}
        ).encode()

    tail = Tail(path, EventFigures, feed_event)
    whole = rejected(3)
    garbage = b'not json\n[1, 2]\n{"no_type": 1}\n\xff\xfe\n\n'
    for chunk in (
        rejected(1) + b"\n",
        garbage + whole[:20],
        whole[20:] + b"\n",
        b'{"event_type": "rate_limit_rej' + rejected(4) + b"\n",
    ):
        with open(path, "ab") as f:
            f.write(chunk)
        tail.read()
    d = load_day(data, DAY)
    assert tail.state.rejections["k"] == len(d.records) == 3 and tail.bad == d.bad_count == 5
    assert d.bad_lines == {path.name: [2, 3, 4, 5, 8]}


def test_the_summary_and_the_gap_report_merge_markers_alike(tmp_path):
    """One merge of gap markers (``merge_gaps``): a re-mark after the close changes nothing, an escalation re-marks
    the severity, a close without its open marker (opened the day before) is counted as such."""
    from observer_assets.monitoring.summary import summarize
    from observer_resources.events import gaps_from, merge_gaps

    log = EventLog(tmp_path / "data")

    def marker(gap_id: str, hh: int, mm: int, end: tuple[int, int] | None, severity: str, written: datetime) -> None:
        start = datetime(2026, 3, 10, hh, mm, tzinfo=KST)
        stop = datetime(2026, 3, 10, *end, tzinfo=KST) if end else None
        log.emit(
            "gap_marker",
            at=written,
            gap_id=gap_id,
            state="closed" if stop else "open",
            symbol=None,
            gap_start_ts=start,
            gap_end_ts=stop,
            gap_seconds=(stop - start).total_seconds() if stop else None,
            scope="scalp",
            reason="ws_disconnect",
            severity=severity,
            session_id="s",
            metadata={"key_id": "k1"},
        )

    def at(hh: int, mm: int) -> datetime:
        return datetime(2026, 3, 10, hh, mm, tzinfo=KST)

    marker("a", 10, 0, None, "major", at(10, 0))
    marker("a", 10, 0, None, "critical", at(10, 5))  # escalated
    marker("b", 8, 50, (9, 0), "minor", at(9, 0))  # opened before the markers read
    marker("c", 11, 0, None, "major", at(11, 0))
    marker("c", 11, 0, (11, 2), "major", at(11, 2))
    marker("c", 11, 0, None, "minor", at(11, 3))  # a stale re-mark after the close
    records = load_day(tmp_path / "data", DAY).records
    merged = {m.gap.gap_id: m for m in merge_gaps(records)}
    assert [(m.gap.severity, m.gap.end is None, m.opened, m.seconds) for m in merged.values()] == [
        ("minor", False, False, 600.0),
        ("critical", True, True, None),
        ("major", False, True, 120.0),
    ]
    assert [g.gap_id for g in gaps_from(records)] == ["b", "a", "c"]  # by start
    g = summarize(records)["gaps"]
    assert (g["opened"], g["closed"], g["still_open"], g["closed_without_open_marker"]) == (2, 2, 1, 1)
    assert g["closed_seconds"] == 720.0 and g["by_severity"] == {"minor": 1, "critical": 1, "major": 1}
    assert [x["gap_id"] for x in g["open_gaps"]] == ["a"] and g["open_gaps"][0]["severity"] == "critical"
