"""Track A's live fetch: the universe cut into one block per app key, each block through its own key's token and
limiter. Apart from the asset so the KIS side (sharding, token turns, key-level failures) reads without Dagster."""

import asyncio
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from observer_assets.track_a import snapshot
from observer_resources import clock
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    KisError,
    RateLimitedError,
    TokenExpiredError,
    TokenIssueTooSoonError,
)
from observer_resources.resources import KisResource, kis_members, kis_rest_clients
from observer_resources.shared.token_store import SqliteTokenStore

if TYPE_CHECKING:
    from observer_resources.kis.rest import KisRestClient

TOKEN_TURN_S = 2.0  # longest a key waits for another key's token (its turn, or the start of the requests)


def shard_codes(codes: list[str], n_keys: int, batch: int) -> list[list[str]]:
    """The sorted universe cut into ``n_keys`` contiguous blocks of whole ``batch``-code requests, as even as whole
    batches allow (the first keys take one batch more). Pure and stable: the same universe and number of keys give
    the same blocks every slot, so a failing key always costs the same, nameable symbols."""
    if n_keys < 1 or batch < 1:
        raise ValueError(f"need at least one key and a batch of at least one code, got {n_keys} keys, batch {batch}")
    ordered = sorted(codes)
    n_batches = -(-len(ordered) // batch)
    q, r = divmod(n_batches, n_keys)
    out, at = [], 0
    for i in range(n_keys):
        take = (q + (1 if i < r else 0)) * batch
        out.append(ordered[at : at + take])
        at += take
    return out


@dataclass
class KeyShard:
    """One app key's share of a slot: what it was asked, what it got, and the key-level error that stopped it."""

    key_id: str
    codes: list[str]
    lines: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    degraded: str | None = None  # e.g. "BadCredentialsError EGW00105": the key failed, not a symbol
    error_detail: str | None = None  # the error's full text (KIS's message; never a key or token)

    @property
    def collected(self) -> int:
        return len(self.codes) - len(self.failures)


def _key_level(e: KisError) -> bool:
    """Errors of the key rather than of a symbol: credentials, its token, its budget, any EGW gateway answer."""
    if isinstance(e, (BadCredentialsError, TokenExpiredError, TokenIssueTooSoonError, RateLimitedError)):
        return True
    return isinstance(e, KisApiError) and e.code.startswith("EGW")


def _err(e: KisError) -> str:
    return f"{type(e).__name__} {getattr(e, 'code', '')}".strip()


class _Turns:
    """The order in which a slot's keys take their tokens. On a store whose lock is store-wide (SQLite: one
    ``BEGIN IMMEDIATE`` held across the issuance call) issuances are serial anyway, so the keys take turns rather than
    poll the lock; on a store locked per key (PostgreSQL) they all go at once. Requests start when every key has its
    token (:meth:`all_ready`). Nobody waits longer than ``TOKEN_TURN_S`` for a key stuck on its token."""

    def __init__(self, n: int, serial: bool):
        self.done = [asyncio.Event() for _ in range(n)]
        self.serial = serial
        self._left = n
        self._all = asyncio.Event()
        if n == 0:
            self._all.set()

    async def wait_mine(self, i: int, deadline: float) -> None:
        if self.serial and i > 0:
            await _wait(self.done[i - 1], deadline)

    def finished(self, i: int) -> None:
        if not self.done[i].is_set():
            self.done[i].set()
            self._left -= 1
            if self._left == 0:
                self._all.set()

    async def all_ready(self, deadline: float) -> None:
        await _wait(self._all, deadline)


async def _wait(event: asyncio.Event, deadline: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), max(0.0, min(TOKEN_TURN_S, deadline - _time.monotonic())))
    except TimeoutError:
        pass  # a key stuck on its token: the others do not wait for it any longer


async def _fetch_shard(
    kis: KisResource,
    client: "KisRestClient",
    codes: list[str],
    deadline: float,
    concurrency: int,
    turns: _Turns | None = None,
    index: int = 0,
    markets: Mapping[str, str] | None = None,
) -> KeyShard:
    """One key's shard through its own token and limiter. Stops at ``deadline`` (monotonic) and records what it
    missed. A key-level error marks the shard degraded: the batches not yet sent are not sent (a broken key is not
    retried into a storm) and every symbol left is recorded with the key and the error.

    The key's token is taken first, once, in its turn (:class:`_Turns`), and the requests start when every key has
    its token: the slot ends when the last key's shard does, so an early start gains nothing, while requests sent
    during the other keys' issuance get bunched by its CPU stalls into KIS's window (measured: an occasional EGW00201
    on a cold run)."""
    shard = KeyShard(kis.kis_config().key_id, list(codes))
    market = (markets or {}).get
    lines, failures = shard.lines, shard.failures
    collected: set[str] = set()
    sem = asyncio.Semaphore(concurrency)

    def degraded_text() -> str:
        return f"key {shard.key_id} degraded: {shard.degraded}"

    def failed(batch: list[str], e: KisError) -> None:
        if _key_level(e) and shard.degraded is None:
            shard.degraded, shard.error_detail = _err(e), str(e)[:300]
        text = degraded_text() if _key_level(e) else _err(e)
        failures.update({c: text for c in batch})

    turns = turns or _Turns(1, serial=False)
    try:
        await turns.wait_mine(index, deadline)
        if codes:  # a key with an empty shard (fewer requests than keys) passes its turn on
            await kis.token_provider().access_token()
    except KisError as e:
        if _key_level(e):  # no token for this key: its whole shard is lost, and no request is sent
            failed(codes, e)
        # anything else (the token endpoint unreachable): the requests below retry it
    finally:
        turns.finished(index)
    if codes:
        await turns.all_ready(deadline)
    if kis.env == "real":
        batches = [codes[i : i + p.MULTPRICE_MAX] for i in range(0, len(codes), p.MULTPRICE_MAX)]

        async def one(batch: list[str]) -> None:
            async with sem:
                if _time.monotonic() > deadline:
                    failures.update({c: "deadline: next slot" for c in batch})
                    return
                if shard.degraded is not None:
                    failures.update({c: degraded_text() for c in batch})
                    return
                try:
                    rows = await client.multi_price(batch, [market(c, "J") for c in batch])
                except KisError as e:
                    failed(batch, e)
                    return
                now = clock.now()
                got = {r.code: r for r in rows}
                for c in batch:
                    if c in got:
                        lines.append(
                            snapshot.raw_line(p.TR_MULTPRICE, c, got[c].raw, now, shard.key_id, market(c, "J"))
                        )
                        collected.add(c)
                    else:
                        failures[c] = "missing from multi-quote answer"
    else:
        batches = [[c] for c in codes]

        async def one(batch: list[str]) -> None:
            (c,) = batch
            async with sem:
                if _time.monotonic() > deadline:
                    failures[c] = "deadline: next slot"
                    return
                if shard.degraded is not None:
                    failures[c] = degraded_text()
                    return
                try:
                    q = await client.inquire_price(c, market(c, "J"))
                except KisError as e:
                    failed(batch, e)
                    return
                lines.append(snapshot.raw_line(p.TR_INQUIRE_PRICE, c, q.raw, clock.now(), shard.key_id, market(c, "J")))
                collected.add(c)

    tasks = [asyncio.create_task(one(b)) for b in batches]
    remaining = deadline - _time.monotonic()
    done, pending = await asyncio.wait(tasks, timeout=max(remaining, 0.0)) if tasks else (set(), set())
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if t.exception() is not None:  # a bug, not a KIS error: surface it
            raise t.exception()  # type: ignore[misc]
    for c in codes:
        if c not in collected and c not in failures:
            failures[c] = "deadline: next slot"
    shard.requests = client.stats.requests
    return shard


async def fetch_shards(
    kis: KisResource,
    codes: list[str],
    deadline: float,
    concurrency: int,
    markets: Mapping[str, str] | None = None,
) -> list[KeyShard]:
    """Every key's shard at once (``concurrency`` requests in flight per key; each key's limiter sets its pace), each
    code on its ``markets`` code (default J)."""
    members = kis_members(kis)
    batch = p.MULTPRICE_MAX if kis.env == "real" else 1
    shards = shard_codes(codes, len(members), batch)
    turns = _Turns(len(members), serial=isinstance(members[0].token_provider().store, SqliteTokenStore))
    async with kis_rest_clients(kis) as clients:
        return list(
            await asyncio.gather(
                *(
                    _fetch_shard(m, c, s, deadline, concurrency, turns, i, markets)
                    for i, (m, c, s) in enumerate(zip(members, clients, shards, strict=True))
                )
            )
        )
