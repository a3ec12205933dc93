"""The rate-limit bucket on PostgreSQL against SQLite (docs/deploy.md): what a permit costs, and what rate a few
processes sharing one key actually get.

    .venv/bin/python -m bench rate_limit_pg            # one JSON line per measurement
    .venv/bin/python -m bench.rate_limit_pg [--url postgresql://…] [--procs 4] [--n 60]

Without ``--url`` (or ``OBSERVER_STATE_DB_URL``) a private PostgreSQL server is started from the Debian
binaries (tests/pgserver.py; fsync off, as in the tests — a production server's commit flush does not
matter here because the store commits with ``synchronous_commit = off``).

* ``permit_cost``: one process, the store's two steps of a permit (reserve + admit) with nothing to wait
  for — the price of sharing the state, paid on every request; p50/p99/max over ``--ops`` permits.
* ``contended``: ``--procs`` processes doing the same at once — the most permits per second the store can
  hand out for one key (the budget needs 18).
* ``shared_rate``: ``--procs`` processes x ``--n`` ``acquire_sync`` at 18/s through ``SharedRateLimiter``: the
  achieved rate, the most permits in any second, and the longest wait.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = 18.0


def _store(kind: str, target: str):
    if kind == "postgres":
        from observer_resources.shared.rate_limit_pg import PostgresPermitStore

        return PostgresPermitStore(target)
    from observer_resources.shared.rate_limit import SqlitePermitStore

    return SqlitePermitStore(Path(target) / "ratelimit.sqlite")


def _percentiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 3),
        "p99_ms": round(s[int(len(s) * 0.99)] * 1000, 3),
        "max_ms": round(s[-1] * 1000, 3),
    }


def _permit_costs(store, key: str, ops: int) -> list[float]:
    """reserve + admit without waiting: an interval of 1 µs, and the real window check (19 in 1.05 s) whose
    answer is not acted on — so the stored state has its production size (at most 19 hand-outs)."""
    costs = []
    for _ in range(ops):
        t0 = time.perf_counter()
        store.reserve(key, 1e-6, 1, 600.0)
        store.admit(key, 19, 1.05)
        costs.append(time.perf_counter() - t0)
    return costs


def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    ts, best, lo = sorted(stamps), 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- worker (a separate process) ---------------------------------------------------------------------------


def worker(mode: str, kind: str, n: int) -> dict:
    from observer_resources.shared.rate_limit import SharedRateLimiter

    target = sys.stdin.readline().strip()
    store = _store(kind, target)
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "contended":
        t0 = time.time()
        costs = _permit_costs(store, "bench-contended", n)
        return {"started": t0, "finished": time.time(), "costs": costs}
    lim = SharedRateLimiter("bench-shared", RATE, store=store)
    granted = []
    t0 = time.time()
    for _ in range(n):
        lim.acquire_sync()
        granted.append(time.time())
    return {"started": t0, "granted": granted, "max_wait": lim.counters.max_wait_seconds, "held": lim.counters.held}


def _fleet(mode: str, kind: str, target: str, procs: int, n: int) -> list[dict]:
    cmd = [sys.executable, "-m", "bench.rate_limit_pg", "--worker", mode, "--kind", kind, "--n", str(n)]
    children = [
        subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(procs)
    ]
    for c in children:  # the URL (it holds a password) on stdin, never on the command line
        c.stdin.write(target + "\n")
        c.stdin.flush()
    for c in children:
        assert c.stdout.readline().strip() == "ready"
    for c in children:
        c.stdin.write("go\n")
        c.stdin.flush()
    return [json.loads(c.communicate(timeout=600)[0].strip().splitlines()[-1]) for c in children]


# --- parent ---------------------------------------------------------------------------------------------------


@contextmanager
def _postgres(url: str | None):
    if url:
        yield url
        return
    sys.path.insert(0, str(REPO / "tests"))
    import pgserver  # noqa: PLC0415 - the tests' private server

    srv = pgserver.start()
    try:
        yield srv.create_database("bench_rate_limit")
    finally:
        srv.stop()


def run(url: str | None = None, procs: int = 4, n: int = 60, ops: int = 1000) -> list[dict]:
    rows: list[dict] = []
    url = url or os.environ.get("OBSERVER_STATE_DB_URL") or None
    with _postgres(url) as pg_url, tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        for kind, target in (("sqlite", tmp), ("postgres", pg_url)):
            store = _store(kind, target)
            _permit_costs(store, "bench-warm", 20)
            costs = _permit_costs(store, "bench-cost", ops)
            store.close()
            rows.append(
                {
                    "bench": "rate_limit_pg",
                    "measure": "permit_cost",
                    "store": kind,
                    "permits": ops,
                    **_percentiles(costs),
                }
            )

            res = _fleet("contended", kind, target, procs, ops // 2)
            start = min(r["started"] for r in res)
            elapsed = max(r["finished"] for r in res) - start
            rows.append(
                {
                    "bench": "rate_limit_pg",
                    "measure": "contended",
                    "store": kind,
                    "processes": procs,
                    "permits_per_s": round(procs * (ops // 2) / elapsed, 1),
                    **_percentiles([c for r in res for c in r["costs"]]),
                }
            )

            res = _fleet("shared_rate", kind, target, procs, n)
            stamps = [t for r in res for t in r["granted"]]
            rows.append(
                {
                    "bench": "rate_limit_pg",
                    "measure": "shared_rate",
                    "store": kind,
                    "processes": procs,
                    "permits": len(stamps),
                    "rate_per_s": RATE,
                    "achieved_per_s": round((len(stamps) - 1) / (max(stamps) - min(stamps)), 2),
                    "max_in_any_1s": max_in_window(stamps),
                    "max_wait_s": round(max(r["max_wait"] for r in res), 3),
                    "held": sum(r["held"] for r in res),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--url", default=None, help="PostgreSQL URL (default $OBSERVER_STATE_DB_URL, else a private server)"
    )
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.kind, args.n)), flush=True)
        return
    from bench.common import machine

    print(json.dumps({"machine": machine()}), flush=True)
    for row in run(args.url, args.procs, args.n, args.ops):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
