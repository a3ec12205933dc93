"""The daily history's fetch: every symbol's raw and adjusted bars of a span, across every app key, at background
priority, checkpointed in parts so that a killed run resumes where it stopped. Apart from the asset so the KIS side
reads (and is tested) without Dagster.

Parts (``observer_resources.storage.parts``) live under ``_meta/daily_bars/year=YYYY/``, tagged with the span asked:
a part of another span (yesterday's refresh of the current year) is dropped, never mistaken for this run's.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.daily_bars import bars
from observer_resources import clock
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    KisError,
    RateLimitedError,
    TokenExpiredError,
    TokenIssueTooSoonError,
)
from observer_resources.resources import KisResource, kis_members, kis_rest_clients
from observer_resources.storage import parts

if TYPE_CHECKING:
    from observer_resources.kis.rest import KisRestClient

CHUNK = 50  # symbols a part holds: what a kill -9 can cost at most (plus those in flight)
CONCURRENCY = 4  # symbols in flight per key: enough to keep a key's 18/s busy over loopback or the internet


def span_text(start: date, end: date) -> str:
    return f"{start.isoformat()}..{end.isoformat()}"


def read_parts(parts_dir: Path, span: str) -> tuple[set[str], list[pa.Table], list[Path]]:
    """The symbols finished by earlier attempts at ``span``, their rows, and the stale parts (another span) found."""
    done, tables, stale = parts.read_parts(parts_dir, span)
    return done, [t.cast(bars.SCHEMA) for t in tables], stale


def write_part(parts_dir: Path, span: str, codes: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    return parts.write_part(parts_dir, bars.to_table(rows), codes, span)


def _key_level(e: KisError) -> bool:
    """Errors of the key rather than of a symbol: its credentials, token or budget, any EGW gateway answer."""
    if isinstance(e, (BadCredentialsError, TokenExpiredError, TokenIssueTooSoonError, RateLimitedError)):
        return True
    return isinstance(e, KisApiError) and e.code.startswith("EGW")


async def fetch_symbol(
    client: KisRestClient, code: str, start: date, end: date, stored: Sequence[Mapping[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """A symbol's rows of [start, end]. With ``stored`` rows (the current year's earlier table) only the days after
    them are asked, in one adjusted call that repeats the newest stored day: when that day's adjusted bar is
    unchanged and no new row carries a marker, no event happened since, so the new days' raw bars are the adjusted
    ones; otherwise the whole span is asked again (an adjusted series changes backwards on an event). Returns the
    rows and whether the stored adjusted series had moved (a corporate action since the stored rows)."""
    if stored:
        last = max(r["day"] for r in stored)
        if last >= end:
            return list(stored), False
        adj = await client.daily_chart(code, last, end, adjusted=True)
        prev = {b.day: b for b in adj}.get(last)
        old = next(r for r in stored if r["day"] == last)
        new = [b for b in adj if b.day > last]
        quiet = all(
            (b.raw or {}).get("flng_cls_code", "00") in ("00", "") and (b.raw or {}).get("mod_yn", "N") != "Y"
            for b in new
        )
        same = prev is not None and (prev.open, prev.high, prev.low, prev.close, prev.volume) == (
            old["adj_open"],
            old["adj_high"],
            old["adj_low"],
            old["adj_close"],
            old["adj_volume"],
        )
        if same and quiet:
            return [*stored, *bars.join_rows(code, new, new, clock.now())], False
    raw = await client.daily_chart(code, start, end, adjusted=False)
    adj = await client.daily_chart(code, start, end, adjusted=True)
    return bars.join_rows(code, raw, adj, clock.now()), bool(stored)


@dataclass
class YearFetch:
    """What one run did: symbols asked, resumed from parts, fetched now, failed (with why), calls per key."""

    total: int
    resumed: int = 0
    fetched: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)  # refreshed symbols whose adjusted series moved (an event)
    calls_by_key: dict[str, int] = field(default_factory=dict)
    parts_written: int = 0
    seconds: float = 0.0
    tables: list[pa.Table] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.calls_by_key.values())

    @property
    def done(self) -> int:
        return self.resumed + self.fetched


async def fetch_year(
    kis: KisResource,
    codes: Sequence[str],
    start: date,
    end: date,
    parts_dir: Path,
    *,
    stored: Mapping[str, list[dict[str, Any]]] | None = None,
    chunk: int = CHUNK,
    concurrency: int = CONCURRENCY,
    log: Callable[[str], None] = lambda _m: None,
    progress_every_s: float = 30.0,
) -> YearFetch:
    """Every code not already in a part of this span, through every key of ``kis`` at background priority (a key's
    workers take symbols from one queue, so a slow or broken key's share flows to the others), a part written per
    ``chunk`` finished symbols. Failures are recorded per symbol and never written, so a re-run asks them again."""
    t0 = _time.monotonic()
    span = span_text(start, end)
    done, tables, stale = read_parts(parts_dir, span)
    for p in stale:  # an earlier span's attempt (e.g. yesterday's refresh of the current year): not this run's data
        p.unlink(missing_ok=True)
    wanted = pa.array(sorted(set(codes)), pa.string())
    tables = [t.filter(pc.is_in(t["code"], value_set=wanted)) for t in tables]  # the universe may have changed since
    out = YearFetch(total=len(set(codes)), resumed=len(done & set(codes)), tables=tables)
    todo = [c for c in sorted(set(codes)) if c not in done]
    log(
        f"daily_bars {span}: {len(todo)} symbols to fetch, {out.resumed} resumed from parts, {len(stale)} stale parts dropped"
    )
    queue: asyncio.Queue[str] = asyncio.Queue()
    for c in todo:
        queue.put_nowait(c)
    pending_codes: list[str] = []
    pending_rows: list[dict[str, Any]] = []
    lock = asyncio.Lock()
    members = kis_members(kis)
    last_log = [_time.monotonic()]

    async def flush(force: bool) -> None:
        async with lock:
            if not pending_codes or (len(pending_codes) < chunk and not force):
                return
            codes_now, rows_now = list(pending_codes), list(pending_rows)
            pending_codes.clear()
            pending_rows.clear()
            await asyncio.to_thread(write_part, parts_dir, span, codes_now, rows_now)
            out.tables.append(bars.to_table(rows_now))
            out.parts_written += 1
            out.fetched += len(codes_now)
            now = _time.monotonic()
            if force or now - last_log[0] >= progress_every_s:
                last_log[0] = now
                log(
                    f"daily_bars {span}: {out.done}/{out.total} symbols done, {sum(c.stats.requests for c in clients)} calls, "
                    f"{now - t0:.0f} s"
                )

    async def worker(client: KisRestClient, key_id: str, broken: list[str]) -> None:
        while not broken:
            try:
                code = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                rows, moved = await fetch_symbol(client, code, start, end, (stored or {}).get(code))
            except KisError as e:
                if _key_level(e):
                    broken.append(f"{type(e).__name__} {getattr(e, 'code', '')}".strip())
                    queue.put_nowait(code)  # another key takes it
                    log(f"daily_bars: key {key_id} stopped: {broken[0]}")
                    return
                out.failed[code] = f"{type(e).__name__} {getattr(e, 'code', '')}: {str(e)[:160]}"
                continue
            except ValueError as e:  # inconsistent answers (join_rows): the symbol fails, the run goes on
                out.failed[code] = str(e)[:200]
                continue
            if moved:
                out.moved.append(code)
            async with lock:
                pending_codes.append(code)
                pending_rows.extend(rows)
            await flush(False)

    async with kis_rest_clients(kis, background=True) as clients:
        broken_by_key: list[list[str]] = [[] for _ in members]
        await asyncio.gather(
            *(
                worker(c, m.kis_config().key_id, broken_by_key[i])
                for i, (m, c) in enumerate(zip(members, clients, strict=True))
                for _ in range(concurrency)
            )
        )
        await flush(True)
        for m, c in zip(members, clients, strict=True):
            out.calls_by_key[m.kis_config().key_id] = c.stats.requests
    while not queue.empty():  # left by a key that stopped after the others had finished, or by every key stopping
        code = queue.get_nowait()
        out.failed[code] = "not asked: its app key stopped (" + "; ".join(b[0] for b in broken_by_key if b) + ")"
    out.seconds = _time.monotonic() - t0
    return out


def last_complete_day(cal: Any, now: datetime) -> date:
    """The newest trading day whose session (KRX's closing print) is over at ``now``: a year never stores a
    partial bar."""
    d = now.date()
    sess = cal.session(d)
    if sess is not None and now > sess.close:
        return d
    return cal.previous_trading_day(d)
