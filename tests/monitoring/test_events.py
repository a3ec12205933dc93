"""System events against real parts: token and rate-limit events from the real clients talking to the local
exchange, the summary of a day written through EventLog (torn last line included), the read-back with pandas,
and the ``system_events`` asset on a real Dagster instance."""

import asyncio
import json
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from observer_assets.monitoring.events import load_day, read_day, summarize, system_events
from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.events import EventLog, events_dir, events_path, read_file
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import BadCredentialsError, RateLimitedError
from observer_resources.kis.rest import KisRestClient
from observer_resources.resources import KisResource
from observer_resources.shared.rate_limit import SharedRateLimiter
from observer_resources.shared.token_store import TOKEN_STORE_FILE, SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider
from observer_resources.storage.layout import events_summary_path as summary_path

FAST = timedelta(seconds=0.2)  # stands in for KIS's minute between token issuances


def all_events(data_dir: Path) -> list[dict]:
    """Every event of every day file in file order (a test may straddle midnight KST), read by the event log's own
    reader; the clients under test must write only whole events."""
    out = []
    for f in sorted(events_dir(data_dir).glob("*.jsonl")):
        records, bad, torn = read_file(f)
        assert not bad and not torn, f"{f.name}: bad lines {bad}, torn last line {torn}"
        out += records
    return out


def events_bytes(data_dir: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(events_dir(data_dir).glob("*.jsonl")))


def a_code(sim) -> str:
    return sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]


def sim_now(sim) -> datetime:
    return datetime.fromisoformat(sim.admin("clock")["now"])


# --- tokens -----------------------------------------------------------------------------------------


def test_token_issue_through_the_resource_is_an_event_without_the_token(sim, creds, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(data))
    key, secret = creds

    def resource() -> KisResource:
        return KisResource(
            app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(tmp_path / "state")
        )

    first, second = resource(), resource()  # two resource instances = two step processes sharing the store
    code = a_code(sim)

    async def quote(kis: KisResource) -> int:
        async with kis.rest_client() as client:
            return (await client.inquire_price(code)).price

    try:
        assert asyncio.run(quote(first)) > 0
        approval = asyncio.run(first.token_provider().approval_key())
        assert asyncio.run(quote(second)) > 0  # takes the stored token, asks KIS for none
    finally:
        for kis in (first, second):
            kis.teardown_after_execution(dg.build_init_resource_context())

    key_id = first.kis_config().key_id
    token = SqliteTokenStore(tmp_path / "state" / TOKEN_STORE_FILE).get(key_id, "access").value
    evs = all_events(data)
    issued = [e for e in evs if e["event_type"] == "token_issued"]
    assert [(e["issued_by"], e["reason"]) for e in issued] == [
        ("this_process", "missing"),
        ("shared_store", "valid in the shared store"),
    ]
    for e in issued:
        assert e["key_id"] == key_id and e["source"] == "kis"
        exp = datetime.fromisoformat(e["expires_at"])
        assert exp.utcoffset() == timedelta(hours=9)  # KST, with its offset
        # KIS states the expiry to the second, stamped after our issued_at: up to a second past 24 h
        assert timedelta(hours=23) < exp - datetime.fromisoformat(e["issued_at"]) <= timedelta(hours=24, seconds=1)
    (appr,) = [e for e in evs if e["event_type"] == "approval_key_issued"]
    assert appr["key_id"] == key_id
    blob = events_bytes(data)
    for s in (token, approval, key, secret):
        assert s[:24].encode() not in blob and s[-24:].encode() not in blob
    assert sim.admin("stats")["by_appkey"][key]["tokens_issued_total"] == 1
    t = summarize(evs)["tokens"]
    assert (t["issued_by_kis"], t["adopted_from_store"], t["approval_keys"], t["failures"]) == (1, 1, 1, 0)


def test_refresh_after_rejection_and_failures_are_events(sim, make_creds, tmp_path):
    data = tmp_path / "data"
    log = EventLog(data, source="test")
    key, secret = make_creds(9101)
    cfg = KisConfig(key, secret, "real", sim.rest_url, sim.ws_url)
    tokens = SharedTokenProvider(cfg, SqliteTokenStore(tmp_path / "t.sqlite"), too_soon_wait=FAST, events=log)
    limiter = SharedRateLimiter(cfg.key_id, 18.0, tmp_path / "rl.sqlite")
    code = a_code(sim)

    async def quote() -> int:
        async with KisRestClient(cfg, tokens, limiter, events=log) as client:
            return (await client.inquire_price(code)).price

    assert asyncio.run(quote()) > 0
    before = asyncio.run(tokens.access_token())
    # KIS expires the token early; KIS's one-issuance-a-minute rule runs on the exchange clock: let a minute pass there
    sim.admin("faults", {"kind": "token_expire_now", "appkey": key})
    sim.admin("clock", {"at": (sim_now(sim) + timedelta(seconds=61)).isoformat()})
    time.sleep(FAST.total_seconds())
    assert asyncio.run(quote()) > 0  # EGW00123 -> refresh -> retried once
    after = asyncio.run(tokens.access_token())
    assert after != before

    # Bad credentials: the token and the approval key both fail, as events with KIS's code.
    other_secret = make_creds(9102)[1]
    bad_cfg = KisConfig(key, other_secret, "real", sim.rest_url, sim.ws_url)
    bad = SharedTokenProvider(bad_cfg, SqliteTokenStore(tmp_path / "bad.sqlite"), events=log)
    with pytest.raises(BadCredentialsError) as exc:
        asyncio.run(bad.access_token())
    with pytest.raises(BadCredentialsError):
        asyncio.run(bad.approval_key())
    tokens.close()
    bad.close()

    evs = all_events(data)
    kinds = [e["event_type"] for e in evs if e["event_type"].startswith(("token_", "approval_"))]
    assert kinds == ["token_issued", "token_refreshed", "token_issue_failed", "approval_key_failed"]
    refreshed = next(e for e in evs if e["event_type"] == "token_refreshed")
    assert (refreshed["reason"], refreshed["issued_by"], refreshed["same_as_replaced"]) == (
        "rejected by KIS",
        "this_process",
        False,
    )
    failed = next(e for e in evs if e["event_type"] == "token_issue_failed")
    assert failed["error"] == "BadCredentialsError" and failed["code"] == exc.value.code and failed["message"]
    assert failed["reason"] == "missing"
    blob = events_bytes(data)
    for s in (before, after, secret, other_secret):
        assert s[:24].encode() not in blob
    t = summarize(evs)["tokens"]
    assert (t["issued_by_kis"], t["refreshes"], t["failures"], t["approval_key_failures"]) == (2, 1, 1, 1)
    assert {f["event"] for f in t["failure_list"]} == {"token_issue_failed", "approval_key_failed"}


def test_egw00133_refusals_are_events(sim, make_creds, tmp_path):
    data = tmp_path / "data"
    key, secret = make_creds(9103)
    sim.admin("faults", {"kind": "token_refuse", "n": 1, "appkey": key})
    provider = SharedTokenProvider(
        KisConfig(key, secret, "real", sim.rest_url, sim.ws_url),
        SqliteTokenStore(tmp_path / "t.sqlite"),
        too_soon_wait=FAST,
        events=EventLog(data),
    )
    assert asyncio.run(provider.access_token())
    provider.close()
    evs = [e for e in all_events(data) if e["event_type"].startswith("token_")]
    assert [e["event_type"] for e in evs] == ["token_issue_refused", "token_issued"]
    assert evs[0]["code"] == "EGW00133" and evs[0]["attempt"] == 1 and evs[0]["retry_in_seconds"] == 0.2
    assert summarize(evs)["tokens"]["refused_egw00133"] == 1


# --- rate limit -------------------------------------------------------------------------------------


def test_egw00201_burst_gives_rate_limit_events_and_a_wait_summary(sim, make_creds, tmp_path):
    data = tmp_path / "data"
    log = EventLog(data, source="test")
    key, secret = make_creds(9104)
    cfg = KisConfig(key, secret, "real", sim.rest_url, sim.ws_url)
    tokens = SharedTokenProvider(cfg, SqliteTokenStore(tmp_path / "t.sqlite"))
    limiter = SharedRateLimiter(cfg.key_id, 10.0, tmp_path / "rl.sqlite")
    codes = [li["code"] for li in sim.admin("listings", params={"limit": "8"})["listings"]]

    async def go() -> dict:
        async with KisRestClient(cfg, tokens, limiter, events=log, max_rate_retries=3) as client:
            sim.admin("faults", {"kind": "rest_rate_limit", "n": 2, "appkey": key})
            assert (await client.inquire_price(codes[0])).price > 0  # two rejections, then the answer
            sim.admin("faults", {"kind": "rest_rate_limit", "n": 4, "appkey": key})
            with pytest.raises(RateLimitedError):
                await client.inquire_price(codes[0])  # three retries, then it gives up
            await asyncio.gather(*(client.inquire_price(c) for c in codes))  # 8 at once through 10/s: they queue
            return client.stats.as_dict()

    stats = asyncio.run(go())
    tokens.close()
    evs = all_events(data)
    rej = [e for e in evs if e["event_type"] == "rate_limit_rejected"]
    assert [(e["retry"], e["gave_up"]) for e in rej] == [
        (1, False),
        (2, False),
        (1, False),
        (2, False),
        (3, False),
        (None, True),
    ]
    assert all(e["key_id"] == cfg.key_id and e["tr_id"] == "FHKST01010100" and e["code"] == "EGW00201" for e in rej)
    assert all(0.1 <= e["wait_seconds"] <= 1.0 for e in rej if not e["gave_up"])
    assert sim.admin("stats")["by_appkey"][key]["rate_limited_total"] == 6  # the exchange sent exactly these

    (summary_ev,) = [e for e in evs if e["event_type"] == "rate_limit_waits"]  # one, at close
    assert summary_ev["requests"] == stats["requests"] == 1 + 2 + 1 + 3 + 8
    assert summary_ev["rate_limit_retries"] == 5 and summary_ev["rate_limit_failures"] == 1
    assert summary_ev["waited_requests"] >= 5  # 8 requests at 10/s: most wait for their slot
    assert 0.4 <= summary_ev["max_wait_seconds"] <= summary_ev["wait_seconds"]
    s = summarize(evs)["rate_limit"]
    assert (s["rejections"], s["gave_up"]) == (6, 1)
    assert s["retry_wait_seconds"] == pytest.approx(sum(e["wait_seconds"] for e in rej), abs=1e-3)
    assert s["limiter_wait_seconds"] == summary_ev["wait_seconds"]
    assert s["total_wait_seconds"] == pytest.approx(s["retry_wait_seconds"] + s["limiter_wait_seconds"], abs=1e-3)


# --- a synthetic day ------------------------------------------------------------------------------------

DAY = date(2026, 3, 10)  # a Tuesday, a KRX trading day


def at(hh: int, mm: int, ss: float = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hh, mm, tzinfo=KST) + timedelta(seconds=ss)


def marker(
    log: EventLog,
    gap_id: str,
    start: datetime,
    end: datetime | None,
    reason: str,
    severity: str,
    key_id: str,
    symbol: str | None = None,
    written: datetime | None = None,
) -> str:
    """A gap marker as EventLog.gap_open/gap_close write it (§8.2), stamped at a chosen instant of DAY."""
    log.emit(
        "gap_marker",
        at=written or end or start,
        gap_id=gap_id,
        state="closed" if end else "open",
        symbol=symbol,
        gap_start_ts=start,
        gap_end_ts=end,
        gap_seconds=round((end - start).total_seconds(), 3) if end else None,
        scope="scalp",
        reason=reason,
        severity=severity,
        session_id="s",
        metadata={"key_id": key_id, "provider": "kis", "market": "krx"},
    )
    return gap_id


def write_day(data: Path) -> None:
    """A day's story, written the way the components write it."""
    log = EventLog(data, source="track_b_capture")
    log.emit("capture_started", at=at(8, 50), run_id="r1", keys=["k1", "k2"])
    for k in ("k1", "k2"):
        log.emit("ws_connected", at=at(8, 50, 2), key_id=k, reconnect=False, outage_seconds=0.0)
    # k1 drops at 10:00:00 (last frame 09:59:58), fails twice, is back at 10:00:30
    g1 = marker(log, "g1", at(9, 59, 58), None, "ws_disconnect", "major", "k1", written=at(10, 0))
    log.emit("ws_disconnect", at=at(10, 0), key_id="k1", reason="connection_lost", attempt=1, gap_id=g1)
    log.emit("ws_connect_failed", at=at(10, 0, 1), key_id="k1", attempt=2)
    log.emit("ws_connect_failed", at=at(10, 0, 3), key_id="k1", attempt=3)
    log.emit("ws_connected", at=at(10, 0, 30), key_id="k1", reconnect=True, outage_seconds=30.0)
    marker(log, g1, at(9, 59, 58), at(10, 0, 30), "ws_disconnect", "major", "k1")
    # k2 drops at 15:00 (last frame 14:59:50) and is still down at the day's last event (15:10); escalated critical
    g2 = marker(log, "g2", at(14, 59, 50), None, "ws_disconnect", "major", "k2", written=at(15, 0))
    log.emit("ws_disconnect", at=at(15, 0), key_id="k2", reason="server_close", attempt=1, gap_id=g2)
    marker(log, g2, at(14, 59, 50), None, "ws_disconnect", "critical", "k2", written=at(15, 5))  # escalated
    log.emit("anomaly_day", at=at(15, 5), rule="ws_failure_5min", severity="critical")
    # a quiet symbol: no data for 70 s, closed
    g3 = marker(log, "g3", at(11, 0), None, "no_data_received", "major", "k1", symbol="005930", written=at(11, 1))
    marker(log, g3, at(11, 0), at(11, 1, 10), "no_data_received", "major", "k1", symbol="005930")
    for i, action in enumerate(["allocate", "allocate", "replace", "release"]):
        log.emit("slot_change", at=at(9, 10 + i), action=action, key="k1", index=i, code=f"00{i}")
    log.emit("ws_max_over", at=at(9, 20), key_id="k2", code="000660", registered=41)
    for t, (old, new) in zip((at(11, 0), at(11, 10), at(11, 30)), [(0, 1), (1, 2), (2, 1)]):
        log.emit("mitigation_level_change", at=t, old=old, new=new, cause=f"cpu_pct={80 + new}")
    kis = EventLog(data, source="kis")
    kis.emit(
        "token_issued",
        at=at(8, 31),
        key_id="k1",
        reason="missing",
        issued_by="this_process",
        expires_at=at(8, 31) + timedelta(days=1),
        issued_at=at(8, 31),
    )
    kis.emit(
        "token_issued",
        at=at(9, 0),
        key_id="k1",
        reason="valid in the shared store",
        issued_by="shared_store",
        expires_at=at(8, 31) + timedelta(days=1),
        issued_at=at(8, 31),
    )
    kis.emit(
        "token_issue_failed",
        at=at(9, 1),
        key_id="k2",
        reason="missing",
        error="BadCredentialsError",
        code="EGW00105",
        message="invalid secret",
    )
    for r, w in ((1, 0.1), (2, 0.25)):
        kis.emit(
            "rate_limit_rejected",
            at=at(9, 2),
            key_id="k1",
            tr_id="FHKST11300006",
            retry=r,
            wait_seconds=w,
            gave_up=False,
        )
    kis.emit(
        "rate_limit_waits",
        at=at(9, 3),
        key_id="k1",
        requests=90,
        waited_requests=40,
        wait_seconds=3.5,
        max_wait_seconds=0.4,
    )
    kis.emit(
        "rate_limit_waits",
        at=at(9, 13),
        key_id="k1",
        requests=90,
        waited_requests=10,
        wait_seconds=1.0,
        max_wait_seconds=0.6,
    )
    etl = EventLog(data, source="dagster")
    etl.emit("universe_built", at=at(8, 30), day=DAY.isoformat(), count=2480, fallback=False)
    etl.emit("track_a_slot", at=at(9, 0, 5), slot="2026-03-10T0900", mode="live", ok=2470, failed=10)
    etl.emit("track_a_slot", at=at(9, 10, 5), slot="2026-03-10T0910", mode="restore", ok=2480, failed=0)
    etl.emit("track_a_slot_failed", at=at(9, 20, 5), slot="2026-03-10T0920", error="Failure: no universe")
    etl.emit("backup_succeeded", at=at(21, 0), day="2026-03-09")
    etl.emit("backup_verified", at=at(21, 1), day="2026-03-09")
    etl.emit("backup_failed", at=at(21, 2), day="2026-03-10", error="disk full")
    etl.emit("backup_verify_failed", at=at(21, 3), day="2026-03-08", problems=[["a.parquet", "sha256 differs"]])
    etl.emit("retention_deleted", at=at(21, 5), day="2026-03-04", files=12, bytes=1000)
    etl.emit("retention_deleted", at=at(21, 5), day="2026-03-05", files=3, bytes=500)
    etl.emit("retention_kept", at=at(21, 5), day="2026-03-06", why="anomaly day")
    etl.emit("retention_blocked", at=at(21, 5), day="2026-02-27", why="not backed up at the 10-day cap")
    log.emit("capture_stopped", at=at(15, 10), run_id="r1", reason="window end")
    # the writer died mid-line: a torn last line
    with open(events_path(data, DAY), "ab") as f:
        f.write(b'{"event_type": "ws_disconnect", "timestamp": "2026-03-10T15:2')


def test_summary_of_a_synthetic_day(tmp_path):
    data = tmp_path / "data"
    write_day(data)
    d = load_day(data, DAY)
    assert d.exists and d.torn_count == 1 and d.bad_lines == {} and d.files == (events_path(data, DAY),)
    df = read_day(data, DAY)  # pandas reads the file; the torn line is counted, not fatal
    assert len(df) == len(d.records) and df.attrs["torn_count"] == 1
    assert str(df["timestamp"].dt.tz) == "Asia/Seoul" and df["timestamp"].min() == at(8, 30)
    assert (df["event_type"] == "gap_marker").sum() == 6

    s = summarize(d.records)
    assert s["events"] == len(d.records) and s["by_type"]["gap_marker"] == 6
    ws = s["websocket"]
    assert (ws["connects"], ws["reconnects"], ws["disconnects"], ws["connect_failures"]) == (3, 1, 2, 2)
    assert ws["reconnect_attempts"] == 3
    # k1: 32 s (from its last frame); k2: from 14:59:50 to the capture's last event, 15:10 (still down)
    k2_open = (at(15, 10) - at(14, 59, 50)).total_seconds()
    assert ws["by_key"]["k1"]["disconnected_seconds"] == 32.0
    assert ws["disconnected_seconds"] == pytest.approx(32.0 + k2_open)
    assert ws["disconnected_basis"] == "ws_disconnect gap markers"
    assert [(x["key_id"], x["seconds_until_last_capture_event"]) for x in ws["still_disconnected"]] == [("k2", 610.0)]
    assert ws["outage_seconds_reported"] == 30.0 and ws["max_over"] == 1 and ws["failure_critical"] == 0
    assert s["slots"] == {
        "changes": 4,
        "by_action": {"allocate": 2, "replace": 1, "release": 1},
        "replacements": 1,
        "overflows": 1,
    }
    m = s["mitigation"]
    assert (m["changes"], m["max_level"], m["last_level"]) == (3, 2, 1)
    assert m["history"][0] == {"at": at(11, 0).isoformat(), "old": 0, "new": 1, "cause": "cpu_pct=81"}
    g = s["gaps"]
    assert (g["opened"], g["closed"], g["still_open"], g["markers"]) == (3, 2, 1, 6)
    assert g["closed_seconds"] == 32.0 + 70.0
    assert g["by_reason"] == {"ws_disconnect": 2, "no_data_received": 1}
    assert g["by_severity"] == {"major": 2, "critical": 1} and (g["critical"], g["major_or_worse"]) == (1, 3)
    assert g["open_gaps"][0]["severity"] == "critical" and g["open_gaps"][0]["start"] == at(14, 59, 50).isoformat()
    t = s["tokens"]
    assert (t["issued_by_kis"], t["adopted_from_store"], t["failures"]) == (1, 1, 1)
    assert t["failure_list"][0]["code"] == "EGW00105"
    rl = s["rate_limit"]
    assert (rl["rejections"], rl["retry_wait_seconds"], rl["limiter_requests"], rl["limiter_waited_requests"]) == (
        2,
        0.35,
        180,
        50,
    )
    assert (rl["limiter_wait_seconds"], rl["limiter_max_wait_seconds"], rl["total_wait_seconds"]) == (4.5, 0.6, 4.85)
    e = s["etl"]
    assert (e["universe_built"], e["universe_count"], e["track_a_slots"], e["track_a_slots_failed"]) == (1, 2480, 2, 1)
    assert (e["track_a_symbols_ok"], e["track_a_symbols_failed"], e["failures"]) == (4950, 10, 1)
    assert e["track_a_by_mode"] == {"live": 1, "restore": 1}
    b = s["backup"]
    assert (b["succeeded"], b["failed"], b["verified"], b["verify_failed"]) == (1, 1, 1, 1)
    assert b["days"]["failed"] == ["2026-03-10"] and b["days"]["verify_failed"] == ["2026-03-08"]
    r = s["retention"]
    assert (r["deleted"], r["kept"], r["blocked"], r["deleted_files"], r["deleted_bytes"]) == (2, 1, 1, 15, 1500)
    assert r["days"]["deleted"] == ["2026-03-04", "2026-03-05"]
    assert s["anomalies"] == ["ws_failure_5min"] and s["capture"]["started"] == 1
    assert s["first_at"] == at(8, 30).isoformat() and s["last_at"] == at(21, 5).isoformat()
    # the same summary from the DataFrame's rows (NaN where an event lacks a field)
    again = summarize(df.to_dict("records"))
    assert again["gaps"] == s["gaps"] and again["websocket"] == s["websocket"] and again["tokens"] == s["tokens"]


def test_a_corrupt_middle_line_is_counted_and_the_rest_read(tmp_path):
    data = tmp_path / "data"
    log = EventLog(data)
    log.emit("ws_connected", at=at(9, 0), key_id="k1")
    with open(events_path(data, DAY), "ab") as f:
        f.write(b"not json at all\n[1, 2]\n")
    log.emit("ws_disconnect", at=at(9, 5), key_id="k1")
    d = load_day(data, DAY)
    assert d.bad_lines == {events_path(data, DAY).name: [2, 3]} and d.torn_count == 0
    assert [e["event_type"] for e in d.records] == ["ws_connected", "ws_disconnect"]
    assert summarize(d.records)["websocket"]["disconnects"] == 1
    assert summarize([])["events"] == 0 and read_day(data, date(2026, 3, 11)).empty  # no file: empty, not an error


# --- the asset -------------------------------------------------------------------------------------------


def test_system_events_asset_materializes_the_summary(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(data))
    write_day(data)
    overflow = data / "system" / "overflow" / f"{DAY:%Y%m%d}.jsonl"
    overflow.parent.mkdir(parents=True)
    overflow.write_text(
        json.dumps({"rejected": [{"symbol": "a"}, {"symbol": "b"}, {"symbol": "c"}]})
        + "\n"
        + json.dumps({"rejected": [{"symbol": "d"}]})
        + "\n"
    )
    empty_day = date(2026, 3, 11)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(DAY), day_key(empty_day)])
        res = dg.materialize([system_events], partition_key=day_key(DAY), instance=inst)
        assert res.success
        md = res.asset_materializations_for_node("system_events")[0].metadata
        empty = dg.materialize([system_events], partition_key=day_key(empty_day), instance=inst)
        assert empty.success
        emd = empty.asset_materializations_for_node("system_events")[0].metadata

    expected = summarize(load_day(data, DAY).records)
    assert md["events"].value == expected["events"]
    assert (md["ws_disconnects"].value, md["ws_reconnect_attempts"].value) == (2, 3)
    assert md["ws_disconnected_seconds"].value == pytest.approx(expected["websocket"]["disconnected_seconds"])
    assert (md["gaps_opened"].value, md["gaps_closed"].value, md["gaps_still_open"].value) == (3, 2, 1)
    assert (md["rate_limit_rejections"].value, md["token_failures"].value, md["etl_failures"].value) == (2, 1, 1)
    assert md["backups_verify_failed"].value == 1
    assert (md["backups_failed"].value, md["retention_blocked"].value, md["mitigation_max_level"].value) == (1, 1, 2)
    assert md["slot_overflow_candidates"].value == 4 and md["torn_lines"].value == 1
    assert isinstance(md["ws_disconnected_seconds"], dg.FloatMetadataValue)
    assert isinstance(md["gaps_opened"], dg.IntMetadataValue)
    text = md["summary"].value
    assert "### System events of 2026-03-10" in text and "| Gaps | opened / closed / still open | 3 / 2 / 1 |" in text
    assert "torn last line" in md["note"].value and "| Backup | failed days | 2026-03-08, 2026-03-10 |" in text

    doc = json.loads(summary_path(data, DAY).read_text(encoding="utf-8"))
    assert doc["day"] == "2026-03-10" and doc["torn_lines"] == 1 and doc["events"] == expected["events"]
    assert doc["gaps"] == expected["gaps"] and doc["slots"]["overflow_ledger_rejected"] == 4
    assert not list(summary_path(data, DAY).parent.glob(".*.tmp"))  # written atomically, no leftovers

    assert emd["events"].value == 0 and "No events file" in emd["note"].value
    assert emd["events_files"].value == "none: no events recorded this day"
    edoc = json.loads(summary_path(data, empty_day).read_text(encoding="utf-8"))
    assert edoc["events_file_exists"] is False and edoc["events"] == 0


# --- ETL results from the assets ------------------------------------------------------------------------


def test_universe_and_track_a_results_are_events(sim, creds, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(data))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "100")  # the 600-listing exchange's universe is published
    key, secret = creds
    kis = KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(tmp_path / "state")
    )
    today = datetime.now(KST).date()
    past = today - timedelta(days=3)
    slot = calendar().slot_at(datetime.now(KST))
    past_slot = calendar().track_a_slots(past)[0]
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today), day_key(past)])
        inst.add_dynamic_partitions("track_a_slot", [slot_key(slot), slot_key(past_slot)])
        # failures first: a past day has no masters and no earlier universe; its slot has no universe at all
        bad = dg.materialize(
            [universe], partition_key=day_key(past), instance=inst, resources={"kis": kis}, raise_on_error=False
        )
        assert not bad.success
        bad_a = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=slot_key(past_slot),
            instance=inst,
            resources={"kis": kis},
            raise_on_error=False,
        )
        assert not bad_a.success
        ok = dg.materialize(
            [universe],
            partition_key=day_key(today),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {"min_master_codes": 100, "nxt_status": False}}}},
        )
        count = ok.asset_materializations_for_node("universe")[0].metadata["count"].value
        ok_a = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=slot_key(slot),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"track_a_snapshot": {"config": {"live_window_min": 1440}}}},
        )
        rows = ok_a.asset_materializations_for_node("track_a_snapshot")[0].metadata["rows"].value

    evs = all_events(data)
    by = {}
    for e in evs:
        by.setdefault(e["event_type"], []).append(e)
    (uf,) = by["universe_build_failed"]
    assert uf["day"] == day_key(past) and "no earlier universe" in uf["error"]
    (tf,) = by["track_a_slot_failed"]
    assert tf["slot"] == slot_key(past_slot) and "no universe" in tf["error"]
    (u,) = by["universe_built"]
    assert (u["day"], u["count"], u["fallback"]) == (day_key(today), count, False)
    (ta,) = by["track_a_slot"]
    assert (ta["slot"], ta["mode"], ta["ok"], ta["failed"]) == (slot_key(slot), "live", rows, 0)
    assert by["token_issued"][0]["issued_by"] == "this_process"  # the resource's events land in the same log
    e = summarize(evs)["etl"]
    assert (e["universe_built"], e["universe_failed"], e["track_a_slots"], e["track_a_slots_failed"]) == (1, 1, 1, 1)
