"""Fetching a day's minute bars resumably: the asks done so far are kept as parts and skipped on the next run.

A run writes what it fetched every ``PART_ASKS`` asks as one Parquet part plus a JSON list of the asks it covers
(an ask with no bars is done too), both under ``_meta/minute_bars/date=D/parts/`` and each written atomically: the
JSON goes last, so a part counts only once both are whole. A killed run (kill -9 included) leaves whole parts; the
next run reads them, asks only the rest, then writes the day's table atomically and removes the parts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa

from observer_assets.minute_bars.fetch import (
    ENDPOINT_PAST,
    ENDPOINT_TODAY,
    MINUTE_BARS_SCHEMA,
    ROWS,
    Ask,
    last_hour,
    next_hour,
    rows_of,
)
from observer_resources import clock
from observer_resources.kis.errors import KisError
from observer_resources.kis.rest import KisRestClient
from observer_resources.storage import lake
from observer_resources.storage.lake import LakePath
from observer_resources.storage.layout import MINUTE_BARS, meta_dir

log = logging.getLogger("observer.minute_bars")

PART_ASKS = 50  # asks per part: a kill loses at most this many asks' calls (about 250 at 5 calls an ask)
WORKERS_PER_KEY = 4  # requests in flight per key: the limiter paces them; more only hides the exchange's latency


def parts_dir(root: LakePath, day: date) -> LakePath:
    return meta_dir(root, MINUTE_BARS, day) / "parts"


@dataclass
class Progress:
    asks: int = 0
    done_before: int = 0  # asks found done in parts a previous run left
    asks_done: int = 0  # by this run
    calls: int = 0
    rows: int = 0
    failures: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def read_parts(root: LakePath, day: date) -> tuple[list[pa.Table], set[tuple[str, str]], list[LakePath]]:
    """The whole parts a previous run left: their tables, the asks they cover, and every file to remove later."""
    d = parts_dir(root, day)
    if not d.exists():
        return [], set(), []
    tables, done, files = [], set(), []
    for js in sorted(d.glob("part-*.json")):
        pq_path = d / (js.name[: -len(".json")] + ".parquet")
        if not pq_path.exists():
            continue
        asks = json.loads(js.read_text(encoding="utf-8"))["asks"]
        tables.append(lake.read_table(pq_path).cast(MINUTE_BARS_SCHEMA))
        done |= {(a["code"], a["market"]) for a in asks}
    files = [p for p in d.iterdir() if p.name.startswith("part-")]
    return tables, done, files


async def fetch_ask(client: KisRestClient, ask: Ask, day: date, endpoint: str) -> tuple[list[dict], int]:
    """Every bar of ``ask`` on ``day`` (oldest first) and the calls it took: pages from the tape's last minute
    back to its first (fetch.py's paging rule); stops early at ``4 * bound`` calls so a server that ignores the
    hour cannot loop."""
    hour, calls, rows = last_hour(ask), 0, []
    rows_asked = ROWS[endpoint]
    while hour is not None and calls < 4 * max(ask.bound, 1) + 4:
        if endpoint == ENDPOINT_PAST:
            page = await client.past_minute_bars(ask.code, day, hour, market=ask.market)
        else:
            page = await client.minute_bars(ask.code, hour, market=ask.market)
        calls += 1
        rows += rows_of(ask, page.bars, source=endpoint, fetched_at=clock.now(), day=day)
        nxt = next_hour(page.bars, day, ask, rows_asked)
        if nxt is not None and nxt >= hour:
            log.warning("minute bars of %s/%s: paging made no progress at %s; stopping", ask.code, ask.market, hour)
            break
        hour = nxt
    return rows, calls


async def fetch_day(
    clients: Sequence[KisRestClient],
    asks: Sequence[Ask],
    day: date,
    *,
    endpoint: str,
    write_part: Callable[[list[dict], list[Ask]], None],
    progress: Progress,
    report: Callable[[Progress], None] = lambda _p: None,
) -> None:
    """Fetch ``asks`` with every client (one queue, ``WORKERS_PER_KEY`` workers per key), handing each
    ``PART_ASKS`` finished asks to ``write_part``; a failed ask is recorded in ``progress.failures`` and left
    for the next run."""
    queue: asyncio.Queue[Ask] = asyncio.Queue()
    for a in asks:
        queue.put_nowait(a)
    pending_rows: list[dict] = []
    pending_asks: list[Ask] = []
    lock = asyncio.Lock()

    async def flush() -> None:
        nonlocal pending_rows, pending_asks
        if pending_asks:
            rows, done = pending_rows, pending_asks
            pending_rows, pending_asks = [], []
            await asyncio.to_thread(write_part, rows, done)
            report(progress)

    async def worker(client: KisRestClient) -> None:
        while True:
            try:
                ask = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                rows, calls = await fetch_ask(client, ask, day, endpoint)
            except KisError as e:
                progress.failures.append({"code": ask.code, "market": ask.market, "error": str(e)[:300]})
                continue
            async with lock:
                progress.calls += calls
                progress.rows += len(rows)
                pending_rows.extend(rows)
                pending_asks.append(ask)
                progress.asks_done += 1
                if len(pending_asks) >= PART_ASKS:
                    await flush()

    await asyncio.gather(*(worker(c) for c in clients for _ in range(WORKERS_PER_KEY)))
    async with lock:
        await flush()


def choose_endpoint(envs: Sequence[str], day: date) -> str:
    """The chart TR for ``day``: the past-day TR (120 bars a call) on real keys; on paper keys today's TR, and an
    earlier day cannot be fetched (ValueError)."""
    if all(e == "real" for e in envs):
        return ENDPOINT_PAST
    if day != clock.now().date():
        raise ValueError(
            f"minute bars of {day}: a paper key serves today's minute bars only (inquire-time-dailychartprice is "
            "offered on real keys); fetch the day on the day, or with real keys"
        )
    return ENDPOINT_TODAY
