"""The local exchange as a market: its start-up, its memory, how busy its day is, and what one session streams.

1. Start-up: ``python -m local_exchange`` with the default listings, spawn to ready (it prints its URLs once both
   servers listen), three times; the process's resident memory once ready.
2. The day in trades, from the market model in-process: trades per listing on an ordinary KRX day, the whole
   market's count, how often an ordinary and a busy stock trade, and what generating the whole day costs.
3. One session at its limit: 41 registrations of one app key, 21 trade feeds (H0STCNT0) and 20 order books
   (H0STASP0) on the busiest symbols, during the continuous session, in real time and at 10x: frames, records
   and bytes per second, and the exchange's peak memory afterwards.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import date, datetime

import httpx
import websockets

from bench.common import local_exchange
from local_exchange.accounts import demo_credentials
from local_exchange.market import Market
from observer_resources.calendar import KST

DAY = date(2026, 3, 10)  # an ordinary Tuesday
LISTINGS = 2600  # the exchange's default
START = datetime(2026, 3, 10, 10, 0, tzinfo=KST)


def _mem_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def startup(runs: int = 3) -> dict:
    times, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        with local_exchange("--clock", "krx", "--start", START.isoformat(), "--speed", "0") as sim:
            times.append(time.perf_counter() - t0)
            rss.append(_mem_kib(sim.proc.pid)["VmRSS"])
    return {
        "bench": "exchange_startup",
        "listings": LISTINGS,
        "startup_s_median": round(statistics.median(times), 2),
        "startup_s_max": round(max(times), 2),
        "rss_mib_ready": round(statistics.median(rss) / 1024, 1),
    }


def day_in_trades() -> dict:
    m = Market(seed=0, listings=LISTINGS, clock_mode="krx")
    t0 = time.perf_counter()
    counts = sorted(len(m.day_ticks(lst.code, DAY)) for lst in m.listings)
    gen_s = time.perf_counter() - t0
    session_s = 6.5 * 3600 - 20 * 60  # continuous trading 09:00-15:20
    median = statistics.median(counts)
    top = counts[-5:]
    return {
        "bench": "exchange_day_trades",
        "listings": len(counts),
        "trades_total": sum(counts),
        "trades_median_listing": int(median),
        "median_listing_mean_gap_s": round(session_s / median, 1) if median else None,
        "p90_listing_trades": counts[int(0.9 * len(counts))],
        "busiest5_trades_per_s": round(sum(top) / 5 / session_s, 2),
        "untraded_listings": sum(1 for c in counts if c == 0),
        "generate_day_s": round(gen_s, 1),
    }


async def _session(sim, speed_note: str, seconds: float) -> dict:
    key, secret = demo_credentials(950)
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=30) as http:
        r = await http.post(
            "/oauth2/Approval", json={"grant_type": "client_credentials", "appkey": key, "secretkey": secret}
        )
        approval = r.json()["approval_key"]
        busy = (await http.get("/__sim__/listings", params={"order": "activity", "limit": 41})).json()
    codes = [x["code"] for x in busy["listings"]][:41]
    subs = [("H0STCNT0", c) for c in codes[:21]] + [("H0STASP0", c) for c in codes[21:41]]
    frames = records = nbytes = 0
    by_tr: dict[str, int] = {}
    async with websockets.connect(sim.ws_url.rstrip("/") + "/tryitout", ping_interval=None, max_size=None) as ws:
        for tr, code in subs:
            body = {"header": {"approval_key": approval, "custtype": "P", "tr_type": "1", "content-type": "utf-8"}}
            body["body"] = {"input": {"tr_id": tr, "tr_key": code}}
            await ws.send(json.dumps(body))
        t_end = time.monotonic() + seconds
        while (left := t_end - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=left)
            except TimeoutError:
                break
            if isinstance(msg, bytes) or msg[:1] not in ("0", "1"):
                if isinstance(msg, str) and '"PINGPONG"' in msg:
                    await ws.send(msg)
                continue
            _, tr, n, _ = msg.split("|", 3)
            frames += 1
            records += int(n)
            nbytes += len(msg.encode())
            by_tr[tr] = by_tr.get(tr, 0) + int(n)
    return {
        "bench": "exchange_session",
        "speed": speed_note,
        "registrations": len(subs),
        "seconds": seconds,
        "frames_per_s": round(frames / seconds, 1),
        "records_per_s": round(records / seconds, 1),
        "kib_per_s": round(nbytes / seconds / 1024, 1),
        "records_by_tr_per_s": {k: round(v / seconds, 1) for k, v in sorted(by_tr.items())},
    }


def session(seconds: float = 60.0) -> list[dict]:
    out = []
    for speed in ("1", "10"):
        with local_exchange("--clock", "krx", "--start", START.isoformat(), "--speed", speed) as sim:
            res = asyncio.run(_session(sim, speed, seconds if speed == "1" else seconds / 2))
            res["exchange_rss_mib_peak"] = round(_mem_kib(sim.proc.pid)["VmHWM"] / 1024, 1)
            out.append(res)
    return out


def run() -> list[dict]:
    return [startup(), day_in_trades(), *session()]


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r, ensure_ascii=False))
