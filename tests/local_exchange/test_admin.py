"""The ``/__sim__`` admin API: stats, clock, ground truth, and every fault kind observable from a
client's side of the wire (docs/kis-protocol.md §10.5 "Fault injection")."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import httpx
import pytest

from ._wire import Kis, WsClient, busy_codes, parse_data_frame, run

# Pinned start: the same ticks every run (open mode trades around the clock, at a rate that varies by hour).
STREAM = (
    "--clock",
    "open",
    "--listings",
    "80",
    "--speed",
    "10",
    "--start",
    "2026-03-04T10:00:00+09:00",
    "--ping-interval",
    "0.25",
    "--ping-grace",
    "30",
)


def P(code: str) -> dict[str, str]:  # noqa: N802
    return {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code}


async def subscribed(sim, kis: Kis, *codes: str) -> WsClient:
    c = WsClient(sim.ws_url, kis.approval())
    await c.__aenter__()
    for code in codes:
        await c.send("H0STCNT0", code)
        assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
    return c


# --- stats / clock / truth ---------------------------------------------------------------------
def test_stats_clock_and_truth_routes(sim_factory, make_creds):
    sim = sim_factory("--clock", "krx", "--start", "2026-03-04T10:00:00+09:00", "--speed", "0", "--listings", "60")
    clock = sim.admin("clock")
    assert clock["now"].startswith("2026-03-04T10:00:00") and clock["speed"] == 0 and clock["trading_day"]
    moved = sim.admin("clock", {"at": "2026-03-07T11:00:00+09:00"})  # a Saturday
    assert moved["trading_day"] is False and moved["session"] is None
    sim.admin("clock", {"at": "2026-03-04T10:00:00+09:00", "speed": 2})
    assert sim.admin("clock")["speed"] == 2
    with pytest.raises(RuntimeError, match="offset"):
        sim.admin("clock", {"at": "2026-03-04T10:00:00"})
    code = sim.admin("listings", params={"order": "activity", "limit": "1"})["listings"][0]["code"]
    ticks = sim.admin("truth/ticks", params={"code": code, "day": "20260304", "from": "090000", "to": "090500"})
    assert ticks["count"] > 0 and all("090000" <= t["time"] <= "090500" for t in ticks["ticks"])
    assert len(ticks["ticks"][0]["record"]) == 46 and ticks["ticks"][0]["record"][13] == str(
        ticks["ticks"][0]["acml_vol"]
    )
    q = sim.admin("truth/quote", params={"code": code, "at": "2026-03-04T09:05:00+09:00"})
    assert q["acml_vol"] == ticks["ticks"][-1]["acml_vol"] and q["price"] == ticks["ticks"][-1]["price"]
    closed = sim.admin("truth/ticks", params={"code": code, "day": "20260307"})
    assert closed["trading_day"] is False and closed["count"] == 0  # no ticks on a Saturday
    with pytest.raises(RuntimeError, match="unknown code"):
        sim.admin("truth/ticks", params={"code": "nope"})

    kis = Kis(sim, make_creds(30))
    kis.ok("inquire-price", "FHKST01010100", P(code))
    stats = sim.admin("stats", params={"appkey": kis.key})
    assert stats["requests_total"] == 1 and stats["tokens_issued_total"] == 1
    assert stats["by_appkey"][kis.key]["requests_total"] == 1  # per app key, as the admin API promises
    assert kis.secret not in str(stats) and "access_token" not in str(stats)  # never a secret or a token
    assert stats["for_appkey"]["requests_total"] == 1
    sim.admin("reset-stats", {})
    assert sim.admin("stats")["requests_total"] == 0
    with pytest.raises(RuntimeError, match="unknown fault kind"):
        sim.admin("faults", {"kind": "nonsense"})


# --- REST and token faults ---------------------------------------------------------------------
def test_rest_faults(sim, creds):
    kis = Kis(sim, creds)
    kis.token()
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]

    sim.admin("faults", {"kind": "rest_5xx", "n": 2, "status": 502, "appkey": kis.key})
    bad = [kis.get("inquire-price", "FHKST01010100", P(code)) for _ in range(2)]
    assert [r.status_code for r in bad] == [502, 502] and not bad[0].text.startswith("{")
    assert kis.get("inquire-price", "FHKST01010100", P(code)).status_code == 200

    sim.admin("faults", {"kind": "rest_rate_limit", "n": 3, "appkey": kis.key})
    before = sim.admin("stats", params={"appkey": kis.key})["for_appkey"]["rate_limited_total"]
    codes = [kis.get("inquire-price", "FHKST01010100", P(code)).json()["msg_cd"] for _ in range(4)]
    assert codes == ["EGW00201"] * 3 + ["MCA00000"]
    assert sim.admin("stats", params={"appkey": kis.key})["for_appkey"]["rate_limited_total"] == before + 3

    sim.admin("faults", {"kind": "rest_slow", "seconds": 0.6, "n": 1, "appkey": kis.key})
    t0 = time.monotonic()
    assert kis.get("inquire-price", "FHKST01010100", P(code)).status_code == 200
    assert time.monotonic() - t0 >= 0.6

    log = sim.admin("faults")["log"]
    mine = [f for f in log if f["kind"] in ("rest_5xx", "rest_rate_limit", "rest_slow")]
    assert [f["status"] for f in mine] == ["done"] * 3 and [f["applied"] for f in mine] == [2, 3, 1]
    assert all(f["start_sim"] and f["end_sim"] for f in mine)


def test_token_faults(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "40")
    kis = Kis(sim, make_creds(31))
    tok = kis.token()
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    sim.admin("faults", {"kind": "token_expire_now"})
    assert kis.get("inquire-price", "FHKST01010100", P(code), token=tok).json()["msg_cd"] == "EGW00123"
    now = datetime.fromisoformat(sim.admin("clock")["now"])
    sim.admin("clock", {"at": (now + timedelta(seconds=61)).isoformat()})
    sim.admin("faults", {"kind": "token_refuse", "n": 1})
    refused = kis.token_response()
    assert refused.status_code == 403 and refused.json()["error_code"] == "EGW00133"
    fresh = kis.token_response().json()["access_token"]
    assert fresh != tok  # the expired token is not handed out again
    assert kis.get("inquire-price", "FHKST01010100", P(code), token=fresh).status_code == 200
    assert sim.admin("stats")["token_refused_total"] == 1


# --- WebSocket faults --------------------------------------------------------------------------
@pytest.mark.parametrize("close_frame", [True, False])
def test_ws_drop_with_and_without_close_frame(sim_factory, make_creds, close_frame):
    sim = sim_factory(*STREAM)
    kis = Kis(sim, make_creds(32))
    code = busy_codes(sim, 1)[0]

    async def scenario() -> WsClient:
        c = await subscribed(sim, kis, code)
        await c.until(lambda g: g.data, 3.0)
        sim.admin("faults", {"kind": "ws_drop", "close_frame": close_frame, "appkey": kis.key})
        await c.collect(2.0)
        await c.__aexit__()
        return c

    c = run(scenario())
    assert c.closed_clean is close_frame
    assert (c.close_code == 1000) if close_frame else (c.close_code is None)
    fault = sim.admin("faults")["log"][-1]
    assert fault["kind"] == "ws_drop" and len(fault["sessions"]) == 1 and fault["events"][0]["at_sim"]
    assert sim.admin("stats")["ws_sessions_active"] == 0


def test_ws_silent_then_resumes(sim_factory, make_creds):
    sim = sim_factory(*STREAM)
    kis = Kis(sim, make_creds(33))
    code = busy_codes(sim, 1)[0]

    async def scenario() -> tuple[list[float], WsClient]:
        c = await subscribed(sim, kis, code)
        await c.until(lambda g: g.data and g.pings, 3.0)
        arrivals: list[float] = []
        t0 = time.monotonic()
        sim.admin("faults", {"kind": "ws_silent", "seconds": 1.0, "appkey": kis.key})
        while time.monotonic() - t0 < 2.0:
            if await c.recv(0.1) is not None:
                arrivals.append(time.monotonic() - t0)
        await c.__aexit__()
        return arrivals, c

    arrivals, c = run(scenario())
    assert all(not (0.1 < a < 0.95) for a in arrivals)  # nothing at all during the window
    assert any(a > 1.0 for a in arrivals)  # and the stream resumes after it
    sent = sim.admin("truth/sent", params={"appkey": kis.key, "code": code})
    assert sent["by_status"].get("lost_silent", 0) > 0


def test_ws_stall_stops_one_code_while_pingpong_continues(sim_factory, make_creds):
    sim = sim_factory(*STREAM)
    kis = Kis(sim, make_creds(34))
    a, b = busy_codes(sim, 2)

    async def scenario() -> WsClient:
        c = await subscribed(sim, kis, a, b)
        await c.until(lambda g: g.records(code=a) and g.records(code=b), 3.0)
        sim.admin("faults", {"kind": "ws_stall", "code": a, "appkey": kis.key})
        await asyncio.sleep(0.15)
        c.got.data.clear()
        c.got.pings.clear()
        await c.collect(1.0)
        await c.__aexit__()
        return c

    c = run(scenario())
    assert not c.got.records(code=a) and c.got.records(code=b) and len(c.got.pings) >= 2
    assert sim.admin("truth/sent", params={"appkey": kis.key, "code": a})["by_status"]["lost_stall"] > 0


def test_ws_duplicate_skip_burst_malformed_encrypted(sim_factory, make_creds):
    sim = sim_factory(*STREAM)
    kis = Kis(sim, make_creds(35))
    code = busy_codes(sim, 1)[0]

    def duplicated(g) -> int:  # noqa: ANN001
        return sum(
            1 for i in range(1, len(g.data)) if g.data[i] == g.data[i - 1] and g.data[i].startswith("0|H0STCNT0|")
        )

    async def scenario() -> WsClient:
        c = await subscribed(sim, kis, code)
        await c.until(lambda g: g.data, 3.0)
        sim.admin("faults", {"kind": "ws_duplicate", "n": 2, "appkey": kis.key})
        sim.admin("faults", {"kind": "ws_skip", "code": code, "n": 3, "appkey": kis.key})
        sim.admin("faults", {"kind": "ws_malformed", "n": 4, "appkey": kis.key})
        sim.admin("faults", {"kind": "ws_encrypted", "n": 2, "appkey": kis.key})
        await c.until(lambda g: duplicated(g) >= 2 and sum(f.startswith("1|") for f in g.data) >= 2, 8.0)
        sim.admin("clock", {"speed": 60})  # 19 ticks accumulate quickly
        sim.admin("faults", {"kind": "ws_burst", "code": code, "records": 19, "appkey": kis.key})
        await c.until(lambda g: any(f.startswith("0|H0STCNT0|019|") for f in g.data), 8.0)
        await c.collect(0.3)
        await c.__aexit__()
        return c

    c = run(scenario())
    data = c.got.data
    assert duplicated(c.got) == 2
    assert sum(1 for f in data if f.startswith("1|")) == 2
    assert any(f.startswith("0|H0ZZZZZ0|") for f in data)  # unknown TR
    assert any(o.startswith('{"header":{"tr_id":"H0STCNT0"') for o in c.got.other)  # truncated JSON

    def misfit(f: str) -> bool:
        _, _, count, payload = f.split("|", 3)
        return len(payload.split("^")) % int(count) != 0

    bad_count = [f for f in data if f.startswith("0|H0STCNT0|") and misfit(f)]
    assert len(bad_count) == 1  # the record count does not divide the field count
    assert any("x?" in f for f in data)  # non-numeric fields
    assert any(f.startswith("0|H0STCNT0|019|") for f in data)  # the burst
    good = [
        r
        for f in data
        if f.startswith("0|H0STCNT0|") and "x?" not in f and not misfit(f)
        for r in parse_data_frame(f)[2]
    ]
    breaks = sum(1 for x, y in zip(good, good[1:]) if int(y[13]) != int(x[13]) + int(y[12]) and y[13] != x[13])
    assert breaks >= 1  # the skip breaks ACML_VOL(n) = ACML_VOL(n-1) + CNTG_VOL(n)
    sent = sim.admin("truth/sent", params={"appkey": kis.key, "code": code})
    assert sent["by_status"]["skipped"] == 3 and sent["by_status"]["duplicate"] > 0
    statuses = {f["kind"]: f["status"] for f in sim.admin("faults")["log"]}
    assert set(statuses.values()) == {"done"}


def test_ws_key_in_use_window(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "40")
    kis = Kis(sim, make_creds(36))
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    sim.admin("faults", {"kind": "ws_key_in_use", "seconds": 0.8, "appkey": kis.key})

    async def scenario() -> list[str]:
        out = []
        for pause in (0.0, 1.0):
            await asyncio.sleep(pause)
            async with WsClient(sim.ws_url, kis.approval()) as c:
                await c.send("H0STCNT0", code)
                out.append((await c.control())["body"]["msg_cd"])
        return out

    assert run(scenario()) == ["OPSP8996", "OPSP0000"]
    fault = sim.admin("faults")["log"][-1]
    assert fault["status"] == "done" and fault["end_real"] - fault["start_real"] == pytest.approx(0.8, abs=0.01)


def test_fault_validation_and_clear(sim):
    for bad in (
        {"kind": "ws_skip", "n": 2},
        {"kind": "ws_burst", "code": "x", "records": 0},
        {"kind": "rest_5xx", "n": 0},
        {"kind": "ws_silent"},
    ):
        r = httpx.post(sim.rest_url + "/__sim__/faults", json=bad)
        assert r.status_code == 400 and r.json()["error"]
    sim.admin("faults", {"kind": "rest_5xx", "n": 5, "appkey": "PSDEMO999999999999999999999999999999"})
    assert any(f["kind"] == "rest_5xx" for f in sim.admin("faults")["active"])
    assert sim.admin("faults", method="DELETE")["cleared"] >= 1
    assert not sim.admin("faults")["active"]


# --- the process ---------------------------------------------------------------------------------
def test_cli_ready_line_and_clean_shutdown(sim_factory, make_creds):
    import re
    import shutil
    import subprocess
    import sys

    from local_exchange.server import SimStartError, run_sim_process

    sim = sim_factory("--mode", "paper", "--clock", "open", "--seed", "3", "--listings", "20")
    assert re.fullmatch(
        r"observer-sim ready rest=http://127\.0\.0\.1:\d+ ws=ws://127\.0\.0\.1:\d+ "
        r"mode=paper clock=open seed=3",
        sim.ready_line,
    )
    info = sim.admin("info")
    assert (info["mode"], info["seed"], info["listings"], info["rest_url"]) == ("paper", 3, 20, sim.rest_url)
    kis = Kis(sim, make_creds(37))
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]

    async def scenario() -> WsClient:
        c = await subscribed(sim, kis, code)
        assert sim.stop() == 0  # SIGTERM: clean exit
        await c.collect(2.0)
        return c

    c = run(scenario())
    assert c.closed_clean is True and c.close_code == 1001  # sessions are closed with a close frame
    with pytest.raises(SimStartError, match="--fields"):
        run_sim_process("--fields", "48", timeout=20)
    script = shutil.which("observer-sim", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "console script missing: pip install -e . --no-deps"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--hold-after-disconnect" in out.stdout
