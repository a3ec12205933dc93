"""A 2,500-symbol multi-quote sweep through the shared limiter against the local exchange in real mode,
compared with its bound: calls / rate (84 calls at 18 req/s = 4.67 s). Also reports EGW00201 at the exchange."""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from pathlib import Path

from bench.common import kis_resource, local_exchange


async def sweep(kis, codes: list[str], concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    async with kis.rest_client() as client:
        await client.inquire_price(codes[0])  # token issued outside the timed part
        client.stats.requests = 0
        t0 = time.perf_counter()

        async def one(chunk):
            async with sem:
                return await client.multi_price(chunk)

        rows = await asyncio.gather(*(one(codes[i : i + 30]) for i in range(0, len(codes), 30)))
        dt = time.perf_counter() - t0
        assert sum(len(r) for r in rows) == len(codes)
        return dt, client.stats.requests


def run(n_symbols: int = 2500, rate: float = 18.0, concurrency: int = 8) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, local_exchange("--clock", "open", "--listings", "2600") as sim:
        codes = [l["code"] for l in sim.admin("listings", params={"limit": "5000"})["listings"]][:n_symbols]
        kis = kis_resource(sim, Path(tmp), rate_per_s=rate)
        before = sim.admin("stats")
        dt, calls = asyncio.run(sweep(kis, codes, concurrency))
        after = sim.admin("stats")
    bound = calls / rate
    return [
        {
            "bench": "multiquote_sweep",
            "symbols": len(codes),
            "calls": calls,
            "expected_calls": math.ceil(len(codes) / 30),
            "rate_per_s": rate,
            "seconds": round(dt, 3),
            "bound_s": round(bound, 3),
            "ratio_to_bound": round(dt / bound, 3),
            "egw00201_at_exchange": after["rate_limited_total"] - before["rate_limited_total"],
        }
    ]


if __name__ == "__main__":
    for r in run():
        print(r)
