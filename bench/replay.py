"""`observer replay` and `observer relay`: start-up on a full day's journal, sustained frame rate at speed, and the
relay's added latency (journal append -> client receive) with 1 and 10 clients.

Workload: a full KRX day (09:00-15:30) of the 39 busiest codes of ``Market(seed=3, listings=400)`` — the capture's
39 symbols per key — written with the capture's own Journal, one code per frame (as KIS sends), received at the
exchange second of the frame. Clients are plain ``websockets`` clients in this process (one registration per code).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import websockets

from local_exchange.accounts import demo_credentials
from local_exchange.market import Market
from observer_assets.replay.process import run_observer
from observer_assets.track_b.journal import Journal
from observer_assets.track_b.journal_format import segments
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p

DAY = date(2026, 3, 10)
CODES = 39


def write_day(local: Path) -> tuple[int, int, float]:
    """A full day's journal under ``local``: (frames, records, seconds to write)."""
    m = Market(seed=3, listings=400, clock_mode="krx")
    busiest = [li for li in sorted(m.listings, key=lambda li: -li.activity) if not li.halted][:CODES]
    rows: list[tuple[int, int, str]] = []
    for li in busiest:
        t = m.day_ticks(li.code, DAY)
        i = 0
        while i < len(t):  # one frame per (code, second): what the stream sends a busy code
            j = i
            while j < len(t) and t.sec[j] == t.sec[i] and j - i < 99:
                j += 1
            recs = [m.trade_record(t, k) for k in range(i, j)]
            rows.append(
                (int(t.sec[i]), len(rows), f"0|{p.TR_WS_TRADE}|{j - i:03d}|" + "^".join("^".join(r) for r in recs))
            )
            i = j
    rows.sort()
    midnight = datetime(DAY.year, DAY.month, DAY.day, tzinfo=KST)
    t0 = time.perf_counter()
    j = Journal(local, "key-bench", fsync_interval=0.2, clock=lambda: midnight + timedelta(hours=16))
    for sec, order, text in rows:
        j.append(midnight + timedelta(seconds=sec, microseconds=order % 1_000_000), text, conn=1)
    j.close()
    records = sum(int(text.split("|")[2]) for _, _, text in rows)
    return len(rows), records, time.perf_counter() - t0


def _creds(i: int) -> tuple[str, str]:
    return demo_credentials(9300 + i)


def approval(rest: str, i: int) -> str:
    key, secret = _creds(i)
    httpx.post(rest + p.PATH_TOKEN, json={"grant_type": "client_credentials", "appkey": key, "appsecret": secret})
    r = httpx.post(
        rest + p.PATH_APPROVAL, json={"grant_type": "client_credentials", "appkey": key, "secretkey": secret}
    )
    return r.json()["approval_key"]


def _reg(approval_key: str, code: str) -> str:
    return json.dumps(
        {
            "header": {"approval_key": approval_key, "custtype": "P", "tr_type": "1", "content-type": "utf-8"},
            "body": {"input": {"tr_id": p.TR_WS_TRADE, "tr_key": code}},
        }
    )


async def _client(ws_url: str, approval_key: str, codes: list[str], sink: list, stop: asyncio.Event) -> None:
    async with websockets.connect(ws_url, max_size=None) as ws:
        for c in codes:
            await ws.send(_reg(approval_key, c))
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            if isinstance(msg, str) and msg.startswith("0|"):
                sink.append((time.time(), msg))
            elif '"PINGPONG"' in msg:
                await ws.send(msg)


def replay_rate(local: Path, codes: list[str], speed: float, seconds: float = 15.0) -> dict:
    t0 = time.perf_counter()
    proc = run_observer("replay", DAY.isoformat(), "--data-dir", str(local), "--speed", "0", "--from", "09:00",
                        timeout=600)  # fmt: skip
    startup = time.perf_counter() - t0
    try:
        key = approval(proc.rest_url, 0)
        sink: list = []

        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(_client(proc.ws_url, key, codes, sink, stop))
            await asyncio.sleep(1.0)
            proc.post("/admin/replay/clock", {"speed": speed})
            await asyncio.sleep(seconds)
            stop.set()
            await task

        asyncio.run(go())
        clock = proc.get("/admin/replay/clock")
    finally:
        proc.stop()
    frames = len(sink)
    records = sum(int(m.split("|")[2]) for _, m in sink)
    return {
        "bench": "replay",
        "startup_s": round(startup, 2),
        "speed": speed,
        "frames_per_s": round(frames / seconds),
        "records_per_s": round(records / seconds),
        "replayed_to": clock["now"],
    }


def relay_latency(clients: int, rate: float = 200.0, seconds: float = 10.0) -> dict:
    """Frames appended to today's journal at ``rate``/s, one code; every client registered to it; latency from
    the append call (receive time) to each client's receive."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        local = Path(tmp)
        code = "005930"
        j = Journal(local, "key-bench", fsync_interval=0.02)
        ack = json.dumps({"header": {"tr_id": p.TR_WS_TRADE, "tr_key": code, "encrypt": "N"},
                          "body": {"rt_cd": "0", "msg_cd": p.OPSP_SUBSCRIBED, "msg1": "SUBSCRIBE SUCCESS"}})  # fmt: skip
        j.append(datetime.now(KST), ack, conn=1)
        j.flush()
        proc = run_observer("relay", "--data-dir", str(local))
        sent: dict[str, float] = {}
        sinks: list[list] = [[] for _ in range(clients)]
        try:
            keys = [approval(proc.rest_url, i) for i in range(clients)]

            async def go() -> None:
                stop = asyncio.Event()
                tasks = [
                    asyncio.create_task(_client(proc.ws_url, keys[i], [code], sinks[i], stop)) for i in range(clients)
                ]
                await asyncio.sleep(1.0)
                n = 0
                t_end = time.time() + seconds
                while time.time() < t_end:
                    fields = [code, "090000", "70000"] + [str(n)] * 43
                    text = f"0|{p.TR_WS_TRADE}|001|" + "^".join(fields)
                    sent[text] = time.time()
                    j.append(datetime.now(KST), text, conn=1)
                    n += 1
                    await asyncio.sleep(1 / rate)
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*tasks)

            asyncio.run(go())
        finally:
            proc.stop()
            j.close()
        lat = sorted((t - sent[m]) * 1000 for s in sinks for t, m in s if m in sent)
        got = [sum(1 for _, m in s if m in sent) for s in sinks]
        return {
            "bench": "relay",
            "clients": clients,
            "frames_sent": len(sent),
            "frames_received_min": min(got),
            "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1),
            "max_ms": round(lat[-1], 1),
        }


def run() -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        local = Path(tmp)
        frames, records, wrote = write_day(local)
        size = sum(f.stat().st_size for f in segments(local, DAY))
        out.append({"bench": "replay_day", "frames": frames, "records": records, "journal_mb": round(size / 2**20),
                    "write_s": round(wrote, 1)})  # fmt: skip
        m = Market(seed=3, listings=400, clock_mode="krx")
        codes = [li.code for li in sorted(m.listings, key=lambda li: -li.activity) if not li.halted][:CODES]
        for speed in (60.0, 600.0):
            out.append(replay_rate(local, codes, speed))
    for clients in (1, 10):
        out.append(relay_latency(clients))
    return out


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
