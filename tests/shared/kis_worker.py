"""A separate process using one app key through the shared token store and rate limiter.

The multi-process tests start several of these (``python tests/shared/kis_worker.py MODE ...``),
because what must hold is sharing *between processes*: each worker builds its own provider and
limiter on the same files, exactly as Dagster step processes do.

Protocol: the worker does its setup, prints ``ready`` on stdout, waits for a line on stdin (the
parent starts everyone at once), runs, and prints one JSON line with its results. Tokens are
reported only as a short SHA-256 digest.

Modes:
  token    — ``access_token()`` once.
  refresh  — ``access_token()`` before ``ready``; after ``go``, one ``inquire_price`` (which sees
             the rejected token, calls ``refresh`` and retries).
  requests — ``N`` ``inquire_price`` calls through the shared limiter; reports send times.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import time
from datetime import timedelta
from pathlib import Path

from observer_resources.kis.config import KisConfig
from observer_resources.kis.rest import KisRestClient
from observer_resources.shared.rate_limit import SharedRateLimiter
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class _Timed:
    """Limiter wrapper recording when each permit was granted (wall clock, comparable across processes)."""

    def __init__(self, inner: SharedRateLimiter):
        self.inner = inner
        self.granted: list[float] = []

    async def acquire(self) -> float:
        waited = await self.inner.acquire()
        self.granted.append(time.time())
        return waited


async def run(args: argparse.Namespace) -> dict:
    # Credentials come on stdin's first line, never on the command line (visible in `ps`).
    appkey, secret = sys.stdin.readline().split()
    config = KisConfig(appkey, secret, "real", args.rest_url, "ws://127.0.0.1:9", local=True)
    store = SqliteTokenStore(Path(args.state) / "tokens.sqlite")
    provider = SharedTokenProvider(config, store, too_soon_wait=timedelta(seconds=args.too_soon_wait))
    limiter = SharedRateLimiter(config.key_id, args.rate, Path(args.state) / "ratelimit.sqlite")
    out: dict = {"mode": args.mode}

    if args.mode == "refresh":
        out["before"] = digest(await provider.access_token())

    print("ready", flush=True)
    sys.stdin.readline()  # go
    t0 = time.time()

    if args.mode == "token":
        out["token"] = digest(await provider.access_token())
    elif args.mode == "refresh":
        timed = _Timed(limiter)
        async with KisRestClient(config, provider, timed) as client:
            quote = await client.inquire_price(args.code)
            out["price"] = quote.price
            out["rest"] = client.stats.as_dict()
        out["after"] = digest(await provider.access_token())
    elif args.mode == "requests":
        timed = _Timed(limiter)
        async with KisRestClient(config, provider, timed) as client:
            for _ in range(args.n):
                await client.inquire_price(args.code)
            out["rest"] = client.stats.as_dict()
        out["granted"] = timed.granted
    out["started"] = t0
    out["finished"] = time.time()
    out["tokens"] = provider.counters.as_dict()
    out["limiter"] = limiter.counters.as_dict()
    provider.close()
    limiter.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("token", "refresh", "requests"))
    ap.add_argument("--rest-url", required=True)
    ap.add_argument("--state", required=True, help="directory of tokens.sqlite and ratelimit.sqlite")
    ap.add_argument("--rate", type=float, default=18.0)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--code", default="005930")
    ap.add_argument("--too-soon-wait", type=float, default=60.0)
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(process)d %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
