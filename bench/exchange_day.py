"""The local exchange as a market: its start-up, its memory, how busy its day is, and what one session streams.

1. Start-up: ``python -m local_exchange`` with the default listings, spawn to ready (it prints its URLs once both
   servers listen), three times; the process's resident memory once ready, and after a Track A-like sweep (one
   volume-rank call, which quotes every stock listing and so generates each one's day).
2. The day in trades, from the market model in-process: trades per listing on an ordinary KRX day, the whole
   market's count, how often an ordinary and a busy stock trade, the rush after the opening cross and before the
   closing auction, the chance a listing trades in a given minute, and what generating the whole day costs.
3. One session at its limit: 41 registrations of one app key, 21 trade feeds and 20 order books on the busiest
   symbols, on KRX's feeds (H0STCNT0, H0STASP0) and on the unified ones (H0UNCNT0, H0UNASP0), during the
   continuous session, in real time and at 10x: frames, records and bytes per second, and the exchange's peak
   memory afterwards.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import date, datetime

import httpx
import numpy as np
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


def _sweep(sim) -> float:
    """One volume-rank call: the exchange quotes every stock listing, generating each one's day; seconds taken."""
    key, secret = demo_credentials(951)
    with httpx.Client(base_url=sim.rest_url, timeout=120) as http:
        r = http.post("/oauth2/tokenP", json={"grant_type": "client_credentials", "appkey": key, "appsecret": secret})
        headers = {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {r.json()['access_token']}",
            "appkey": key,
            "appsecret": secret,
            "tr_id": "FHPST01710000",
            "custtype": "P",
        }
        t0 = time.perf_counter()
        r = http.get(
            "/uapi/domestic-stock/v1/quotations/volume-rank",
            params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "0000"},
            headers=headers,
        )
        took = time.perf_counter() - t0
        if r.status_code != 200 or r.json().get("rt_cd") != "0":
            raise RuntimeError(f"volume-rank sweep failed: {r.status_code} {r.text[:200]}")
    return took


def startup(runs: int = 3) -> dict:
    times, rss = [], []
    sweep_s, rss_swept = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        with local_exchange("--clock", "krx", "--start", START.isoformat(), "--speed", "0") as sim:
            times.append(time.perf_counter() - t0)
            rss.append(_mem_kib(sim.proc.pid)["VmRSS"])
            sweep_s.append(_sweep(sim))
            rss_swept.append(_mem_kib(sim.proc.pid)["VmRSS"])
    return {
        "bench": "exchange_startup",
        "listings": LISTINGS,
        "startup_s_median": round(statistics.median(times), 2),
        "startup_s_max": round(max(times), 2),
        "rss_mib_ready": round(statistics.median(rss) / 1024, 1),
        "sweep_s_median": round(statistics.median(sweep_s), 2),
        "rss_mib_after_sweep": round(statistics.median(rss_swept) / 1024, 1),
        "rss_mib_after_sweep_max": round(max(rss_swept) / 1024, 1),
    }


def day_in_trades() -> dict:
    m = Market(seed=0, listings=LISTINGS, clock_mode="krx", cache_mb=4096)  # keep every day for the figures below
    t0 = time.perf_counter()
    days = [m.day_ticks(lst.code, DAY) for lst in m.listings]
    gen_s = time.perf_counter() - t0
    session_s = 22_800  # continuous trading 09:00-15:20 (6 h 20 min)
    open_s = 9 * 3600
    close_auction_s = open_s + int(session_s)
    minutes = int(session_s) // 60
    counts = sorted(len(t) for t in days)
    # the share of continuous-session minutes holding at least one trade, per listing
    minute_share = sorted(len(np.unique((t.sec[1:-1] - open_s) // 60)) / minutes if len(t) > 2 else 0.0 for t in days)
    median = statistics.median(counts)
    top = counts[-5:]
    busiest = max(days, key=len)
    per_s = np.bincount(busiest.sec - open_s, minlength=int(session_s) + 1)
    common = [
        len(t)
        for lst, t in zip(m.listings, days)
        if lst.group == "ST" and lst.etp == 0 and not (lst.preferred or lst.spac or lst.halted)
    ]
    common_median = statistics.median(common)
    return {
        "bench": "exchange_day_trades",
        "listings": len(counts),
        "trades_total": sum(counts),
        "trades_median_listing": int(median),
        "median_listing_mean_gap_s": round(session_s / median, 1) if median else None,
        "trades_median_common": int(common_median),
        "median_common_mean_gap_s": round(session_s / common_median, 1) if common_median else None,
        "p90_listing_trades": counts[int(0.9 * len(counts))],
        "busiest5_trades_per_s": round(sum(top) / 5 / session_s, 2),
        "busiest_code": busiest.code,
        "busiest_trades_per_s": round(len(busiest) / session_s, 2),
        "busiest_first_minute_peak_per_s": int(per_s[:60].max()),
        "busiest_first_minute_mean_per_s": round(float(per_s[:60].mean()), 1),
        "busiest_last_minute_before_1520_mean_per_s": round(
            float(per_s[close_auction_s - open_s - 60 : close_auction_s - open_s].mean()), 1
        ),
        "busiest_midday_mean_per_s": round(float(per_s[3 * 3600 : 4 * 3600].mean()), 1),  # 12:00-13:00
        "p_trade_in_random_minute_all_listings": round(float(np.mean(minute_share)), 3),
        "p_trade_in_random_minute_median_listing": round(float(np.median(minute_share)), 3),
        "untraded_listings": sum(1 for c in counts if c == 0),
        "day_tick_bytes_mb": round(sum(t.nbytes for t in days) / 1e6),
        "generate_day_s": round(gen_s, 1),
    }


#: the 41 registrations: 21 trade feeds and 20 order books, on KRX alone or on the unified (KRX + NXT) feeds
MIXES = {"krx": ("H0STCNT0", "H0STASP0"), "unified": ("H0UNCNT0", "H0UNASP0")}


async def _session(sim, speed_note: str, seconds: float, mix: str = "krx") -> dict:
    key, secret = demo_credentials(950)
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=30) as http:
        r = await http.post(
            "/oauth2/Approval", json={"grant_type": "client_credentials", "appkey": key, "secretkey": secret}
        )
        approval = r.json()["approval_key"]
        busy = (await http.get("/__sim__/listings", params={"order": "activity", "limit": 41})).json()
    codes = [x["code"] for x in busy["listings"]][:41]
    trades, books = MIXES[mix]
    subs = [(trades, c) for c in codes[:21]] + [(books, c) for c in codes[21:41]]
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
        "mix": mix,
        "registrations": len(subs),
        "seconds": seconds,
        "frames_per_s": round(frames / seconds, 1),
        "records_per_s": round(records / seconds, 1),
        "kib_per_s": round(nbytes / seconds / 1024, 1),
        "records_by_tr_per_s": {k: round(v / seconds, 1) for k, v in sorted(by_tr.items())},
    }


def session(seconds: float = 60.0) -> list[dict]:
    out = []
    for mix in MIXES:
        for speed in ("1", "10"):
            with local_exchange("--clock", "krx", "--start", START.isoformat(), "--speed", speed) as sim:
                res = asyncio.run(_session(sim, speed, seconds if speed == "1" else seconds / 2, mix))
                res["exchange_rss_mib_peak"] = round(_mem_kib(sim.proc.pid)["VmHWM"] / 1024, 1)
                out.append(res)
    return out


def run() -> list[dict]:
    return [startup(), day_in_trades(), *session()]


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r, ensure_ascii=False))
