"""Fetching a day's minute bars resumably: every ``PART_ASKS`` finished asks go to a part
(``observer_resources.storage.parts``, under ``_meta/minute_bars/date=D/parts/``, tagged with the endpoint), so a
killed run (kill -9 included) leaves whole parts and the next run asks only the rest.
"""

from __future__ import annotations

import asyncio
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
from observer_resources.storage import parts
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


def ask_key(ask: Ask) -> str:
    """An ask as a part records it."""
    return f"{ask.code}/{ask.market}"


def write_part(root: LakePath, day: date, endpoint: str, rows: list[dict], asks: Sequence[Ask]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=MINUTE_BARS_SCHEMA)
    parts.write_part(parts_dir(root, day), table, [ask_key(a) for a in asks], endpoint)
    return table


def read_parts(root: LakePath, day: date, endpoint: str) -> tuple[set[str], list[pa.Table]]:
    """The asks earlier runs finished with ``endpoint`` and their tables; parts of another endpoint are removed."""
    done, tables, stale = parts.read_parts(parts_dir(root, day), endpoint)
    for p in stale:
        p.unlink()
    return done, [t.cast(MINUTE_BARS_SCHEMA) for t in tables]


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
