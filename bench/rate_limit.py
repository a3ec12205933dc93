"""Benchmark behind the rate-limiter decision (not a test; run by hand, ~90 s per candidate at n=200):

    .venv/bin/python -m bench.rate_limit [--procs 8] [--n 200] [candidate ...]

Starts the local exchange (real mode: at most 20 requests in any sliding second per key), then for
each candidate ``--procs`` processes send ``--n`` inquire-price calls each through that candidate,
all on one app key, and reports what the exchange and the clients saw:

* ``shared_gcra``     — observer_resources.shared.rate_limit.SharedRateLimiter (18/s, burst 1)
* ``pyrate_sqlite``   — pyrate-limiter 4.5.1 as documented for processes: ``create_sqlite_limiter(18,
                        SECOND, db_path, use_file_lock=True)`` (sliding-window log), async acquire
* ``pyrate_sqlite_sync`` — the same, blocking ``try_acquire``
* ``pyrate_gcra``     — pyrate-limiter's own GCRA (``StateBucket`` + ``TokenBucket``, 18/s, burst 1)
                        over a SQLite ``StateStore`` (pyrate ships none; a minimal one is below)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = 18


# --- candidates (built inside each worker process) ----------------------------------------------------


class _PyrateAsync:
    def __init__(self, limiter):
        self.limiter = limiter

    async def acquire(self) -> float:
        t0 = time.monotonic()
        assert await self.limiter.try_acquire_async("kis")
        return time.monotonic() - t0


class _PyrateSync(_PyrateAsync):
    async def acquire(self) -> float:  # as a sync caller would: blocks its thread (here: the loop)
        t0 = time.monotonic()
        assert self.limiter.try_acquire("kis")
        return time.monotonic() - t0


def _sqlite_state_store(path: str):
    from pyrate_limiter import StateStore, WallClock

    class SqliteStateStore(StateStore):
        is_async = False
        default_clock = WallClock()

        def __init__(self) -> None:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS st (k TEXT PRIMARY KEY, v TEXT)")

        def _load(self, algorithm, rates):
            row = self.conn.execute("SELECT v FROM st WHERE k='kis'").fetchone()
            return algorithm.decode(row[0].split(",")) if row else algorithm.initial(rates)

        def check(self, algorithm, rates, now, weight):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                new, decision = algorithm.step(rates, self._load(algorithm, rates), now, weight)
                if decision.allowed:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO st VALUES ('kis', ?)", (",".join(str(int(x)) for x in new),)
                    )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return decision

        def read(self, algorithm, rates):
            return self._load(algorithm, rates)

        def reset(self) -> None:
            self.conn.execute("DELETE FROM st")

    return SqliteStateStore()


def build(candidate: str, key_id: str, state: Path):
    if candidate == "shared_gcra":
        from observer_resources.shared.rate_limit import SharedRateLimiter

        return SharedRateLimiter(key_id, RATE, state / "ratelimit.sqlite")
    from pyrate_limiter import Duration, Limiter, Rate, StateBucket, TokenBucket
    from pyrate_limiter.limiter_factory import create_sqlite_limiter

    if candidate in ("pyrate_sqlite", "pyrate_sqlite_sync"):
        lim = create_sqlite_limiter(
            rate_per_duration=RATE, duration=Duration.SECOND, db_path=str(state / "pyrate.sqlite"), use_file_lock=True
        )
        return _PyrateAsync(lim) if candidate == "pyrate_sqlite" else _PyrateSync(lim)
    if candidate == "pyrate_gcra":
        bucket = StateBucket(
            [Rate(RATE, Duration.SECOND, burst=1)],
            algorithm=TokenBucket(),
            store=_sqlite_state_store(str(state / "pyrate_gcra.sqlite")),
        )
        return _PyrateAsync(Limiter(bucket, buffer_ms=0))
    raise SystemExit(f"unknown candidate {candidate}")


# --- worker -------------------------------------------------------------------------------------------


async def worker(args: argparse.Namespace) -> dict:
    from observer_resources.kis.config import KisConfig
    from observer_resources.kis.rest import KisRestClient
    from observer_resources.shared.token_store import SqliteTokenStore
    from observer_resources.shared.tokens import SharedTokenProvider

    key, secret = sys.stdin.readline().split()
    config = KisConfig(key, secret, "real", args.rest_url, "ws://127.0.0.1:9")
    state = Path(args.state)
    tokens = SharedTokenProvider(config, SqliteTokenStore(state / "tokens.sqlite"))
    inner = build(args.candidate, config.key_id, state)
    granted: list[float] = []
    waits: list[float] = []

    class Timed:
        async def acquire(self) -> float:
            w = await inner.acquire()
            granted.append(time.time())
            waits.append(w)
            return w

    await tokens.access_token()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    async with KisRestClient(config, tokens, Timed()) as client:
        for _ in range(args.n):
            await client.inquire_price(args.code)
        retries = dict(client.stats.retries)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "started": t0,
        "finished": time.time(),
        "granted": granted,
        "waits": waits,
        "retries": retries,
        "cpu": ru.ru_utime + ru.ru_stime,
    }


# --- parent -------------------------------------------------------------------------------------------


def max_in_window(stamps: list[float], window: float) -> int:
    ts, best, lo = sorted(stamps), 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_candidate(sim, candidate: str, creds: tuple[str, str], procs: int, n: int, code: str) -> dict:

    state = Path(tempfile.mkdtemp(prefix=f"bench-{candidate}-"))
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        candidate,
        "--rest-url",
        sim.rest_url,
        "--state",
        str(state),
        "--n",
        str(n),
        "--code",
        code,
    ]
    children = [
        subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(procs)
    ]
    for c in children:
        c.stdin.write(f"{creds[0]} {creds[1]}\n")
        c.stdin.flush()
    for c in children:
        assert c.stdout.readline().strip() == "ready"
    for c in children:
        c.stdin.write("go\n")
        c.stdin.flush()
    results = [json.loads(c.communicate(timeout=3600)[0].strip().splitlines()[-1]) for c in children]
    st = sim.admin("stats")["by_appkey"][creds[0]]
    stamps = [t for r in results for t in r["granted"]]
    waits = sorted(w for r in results for w in r["waits"])
    start = min(r["started"] for r in results)
    finish = sorted(r["finished"] - start for r in results)
    return {
        "candidate": candidate,
        "throughput_per_s": round(procs * n / (finish[-1]), 2),
        "egw00201_at_exchange": st["rate_limited_total"],
        "client_rate_retries": sum(r["retries"].get("rate_limit", 0) for r in results),
        "max_in_any_1s": max_in_window(stamps, 1.0),
        "max_in_any_0.25s": max_in_window(stamps, 0.25),
        "wait_mean_s": round(statistics.mean(waits), 3),
        "wait_p99_s": round(waits[int(len(waits) * 0.99)], 3),
        "wait_max_s": round(waits[-1], 3),
        "first_finish_s": round(finish[0], 1),
        "last_finish_s": round(finish[-1], 1),
        "cpu_s_all_workers": round(sum(r["cpu"] for r in results), 1),
    }


def run(
    candidates: tuple[str, ...] = ("shared_gcra", "pyrate_sqlite", "pyrate_sqlite_sync", "pyrate_gcra"),
    procs: int = 8,
    n: int = 200,
) -> list[dict]:
    from local_exchange.accounts import demo_credentials
    from local_exchange.server import run_sim_process

    sim = run_sim_process(
        "--mode", "real", "--clock", "open", "--seed", "7", "--listings", "600", "--log-level", "WARNING"
    )
    try:
        code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
        return [
            {"bench": "rate_limit_8x200", **run_candidate(sim, c, demo_credentials(900 + i), procs, n, code)}
            for i, c in enumerate(candidates)
        ]
    finally:
        sim.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "candidates", nargs="*", default=["shared_gcra", "pyrate_sqlite", "pyrate_sqlite_sync", "pyrate_gcra"]
    )
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rest-url", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--code", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.candidate = args.worker
        print(json.dumps(asyncio.run(worker(args))), flush=True)
        return

    for row in run(tuple(args.candidates), args.procs, args.n):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
