"""One REST request budget per app key, shared by every process on the host (docs/collector-rules.md §7).

KIS allows about 20 REST requests per second per app key (2 on paper) and answers ``EGW00201``
above it; the earlier system ran three independent limiters whose sum broke the budget. Here every
process that uses a key draws from one GCRA schedule kept in a shared store.

Algorithm: GCRA (a token bucket kept as one number, the *theoretical arrival time*) in two steps.

1. *Reserve*: ``acquire()`` atomically claims the next free send slot and sleeps until it. Nobody
   polls, so callers are served in arrival order (fair across processes) and the schedule is exact.
2. *Admit*: on waking, a sliding-window check over the times permits were actually handed out:
   at most ``cap`` in any ``window`` (1.05 s), ``cap`` being what the schedule itself can put into
   such a window (19 at 18/s). Punctual traffic always passes at once; it only holds a permit
   when processes that were descheduled past their slots wake together with punctual ones.

``burst`` (1 or 2) is the bucket capacity: with KIS's window believed to be a sliding second, a
bucket of capacity b at rate r lets about b + r requests into one second, so b stays tiny. A
cancelled waiter's slot is simply unused (errs on the safe side).

Why not pyrate-limiter (installed, 4.5.1): measured on 2 cores against the local exchange (20 in
any sliding second), 8 processes x 200 inquire-price calls at 18/s (``tests/shared/bench_limiters.py``):
its file-locked SQLite bucket (a sliding-window log) admits the whole second's 18 at once, and
in-flight jitter then puts more than 20 into one of the exchange's seconds — 13 EGW00201 (8 with
blocking acquire, which also let 21 through in one second and kept one process waiting 74 s while
another finished 60 s early). Its GCRA avoids the bursts, but pyrate ships no SQLite store for it,
and with one written for it, it still serves by polling: waits up to 5.5 s (p99 2.5 s) against
0.45 s here, 17.7/s against 18.0/s, and 1.7x the CPU.

Stores are pluggable (:class:`PermitStore`); :class:`SqlitePermitStore` serves one host, a
PostgreSQL store (one row per key, ``SELECT … FOR UPDATE``) can serve several. Times are wall-clock
epoch seconds so that a store shared by hosts compares like with like.

The SQLite file holds nothing worth keeping (a schedule that restarts at "now" within a second), so a corrupt
one ("file is not a database", "database disk image is malformed") is moved aside as
``<name>.corrupt-<UTC time>`` and recreated on the spot, with a ``rate_limit_store_recreated`` system event,
instead of stopping every process until someone deletes it. One process moves it, under an ``flock`` on
``<name>.lock``; the others, finding a healthy file when they get the lock, just reconnect.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from observer_resources.events import EventLog
from observer_resources.shared.token_store import init_sqlite, private_file

log = logging.getLogger("observer.kis.ratelimit")

#: Default budgets: below KIS's 20/s (real) and 2/s (paper) with room for one request of burst.
DEFAULT_RATE_PER_S: dict[str, float] = {"real": 18.0, "paper": 1.8}
MAX_BURST = 2


class RateLimiterError(Exception):
    """The shared limiter's store cannot be used."""


def gcra_reserve(tat: float | None, now: float, interval: float, burst: int, max_ahead: float) -> tuple[float, float]:
    """Claim one slot (pure). Returns ``(slot, new_tat)``: the caller may send at ``slot``.

    ``tat`` is the stored theoretical arrival time (None: never used). A ``tat`` more than
    ``max_ahead`` in the future cannot come from queued callers; it means the clock stepped back,
    so the schedule restarts at ``now`` rather than stalling everyone.
    """
    if tat is None or tat < now or tat - now > max_ahead:
        tat = now
    slot = max(now, tat - (burst - 1) * interval)
    return slot, tat + interval


def gcra_reserve_idle(
    tat: float | None, now: float, interval: float, burst: int, max_ahead: float, queue_s: float
) -> tuple[float | None, float | None]:
    """Claim a slot only when at most ``queue_s`` of the schedule is already claimed (pure): background work.

    Returns ``(slot, new_tat)`` like :func:`gcra_reserve`, or ``(None, tat)`` when foreground callers have queued
    more than ``queue_s`` ahead: the background caller then waits and asks again, so it never stands in front of a
    live collector's burst by more than ``queue_s`` (docs/collector-rules.md §7, "Background priority")."""
    if tat is not None and now < tat <= now + max_ahead and tat - now > queue_s:
        return None, tat
    return gcra_reserve(tat, now, interval, burst, max_ahead)


def window_cap(rate_per_s: float, burst: int, window: float) -> int:
    """Most permits the GCRA schedule itself hands out within ``window`` (19 at 18/s, 2 at 1.8/s)."""
    return math.ceil(rate_per_s * window - 1e-9) + burst - 1


def window_admit(recent: list[float], now: float, cap: int, window: float) -> float:
    """Seconds to wait before handing out a permit at ``now`` (pure); 0 admits.

    ``recent`` holds earlier hand-out times (any order). Admits while fewer than ``cap`` fall in
    ``(now - window, now]``; times in the future (the clock stepped back) are ignored.
    """
    inside = sorted(t for t in recent if now - window < t <= now)
    if len(inside) < cap:
        return 0.0
    return inside[-cap] + window - now


class PermitStore(ABC):
    """Shared GCRA state per key: one atomic read-modify-write per step."""

    @abstractmethod
    def reserve(
        self, key_id: str, interval: float, burst: int, max_ahead: float, queue_s: float | None = None
    ) -> tuple[float | None, float]:
        """Atomically claim the next slot of ``key_id``; returns ``(slot, now)`` in epoch seconds. With ``queue_s``
        (background work) the slot is None when more than ``queue_s`` of the schedule is already claimed."""

    @abstractmethod
    def admit(self, key_id: str, cap: int, window: float) -> tuple[float, float]:
        """Atomically apply :func:`window_admit` at the current time, recording the hand-out when it
        admits; returns ``(wait, now)``."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS gcra (key_id TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS handout (key_id TEXT NOT NULL, t REAL NOT NULL);
CREATE INDEX IF NOT EXISTS handout_key_t ON handout (key_id, t);
"""


def is_corrupt(exc: BaseException) -> bool:
    """An SQLite error that says the file itself is bad (not a lock, not a full disk)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    msg = str(exc).lower()
    return "file is not a database" in msg or "malformed" in msg


class SqlitePermitStore(PermitStore):
    """GCRA state in a SQLite file (WAL) shared by the processes of one host; file mode 0600. A corrupt file is
    recreated (module doc); ``events`` records that in the system event log."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, events: EventLog | None = None):
        self.path = Path(path)
        self.events = events
        self._busy_ms = int(busy_timeout * 1000)
        self._mutex = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ino: int | None = None
        self._pid = os.getpid()
        private_file(self.path)
        try:
            self._check()
        except sqlite3.Error as exc:
            if not is_corrupt(exc):
                raise RateLimiterError(f"cannot open rate-limit store {self.path}: {exc}") from None
            self._recreate(exc)

    def __repr__(self) -> str:
        return f"SqlitePermitStore({str(self.path)!r})"

    def _check(self) -> None:
        """Create the schema if missing and verify the file (``PRAGMA quick_check``: milliseconds on these few
        rows); a bad file raises a corrupt-class ``sqlite3.DatabaseError``."""
        init_sqlite(self.path, _SCHEMA, timeout=self._busy_ms / 1000)
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
        if rows != ["ok"]:
            raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(map(str, rows))[:300]}")

    def _connection(self) -> sqlite3.Connection:
        try:  # a file replaced under us (recreated by another process): drop the handle on the old one
            ino: int | None = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = None
        if self._conn is not None and (self._pid != os.getpid() or ino != self._ino):  # never reuse across fork
            self._close()
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_ms / 1000
            )
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA synchronous=OFF")  # the schedule need not survive a power cut
            self._conn, self._pid, self._ino = conn, os.getpid(), ino
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass  # a handle on a bad file: nothing left to save
            self._conn = None

    def _recreate(self, exc: BaseException) -> None:
        """Move a corrupt file aside and create a fresh one; one process does it, the others find it done.

        Runs with this process's connection closed. Under an exclusive ``flock`` on ``<name>.lock``, the file is
        checked again: a healthy file means another process already replaced it. Else the bad bytes are kept
        (hard link) as ``<name>.corrupt-<time>`` with its ``-wal``, and a fresh database built beside it is
        renamed over the name, so the name never points at a missing or half-made file."""
        self._close()
        lock_path = Path(f"{self.path}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._check()
                log.warning(
                    "rate-limit store %s was recreated by another process (%s); using the new file", self.path, exc
                )
                return
            except sqlite3.Error as again:
                if not is_corrupt(again):
                    raise RateLimiterError(f"rate-limit store {self.path}: {again}") from None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            aside: Path | None = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            fresh = self.path.with_name(f".{self.path.name}.new-{os.getpid()}")
            try:
                for side in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm")):
                    side.unlink(missing_ok=True)
                private_file(fresh)
                init_sqlite(fresh, _SCHEMA, timeout=self._busy_ms / 1000)
                try:
                    os.link(self.path, aside)
                except FileNotFoundError:
                    aside = None  # gone meanwhile (deleted by hand): nothing to keep
                except OSError:  # no hard links on this filesystem: keep a copy
                    shutil.copyfile(self.path, aside)  # type: ignore[arg-type]
                for suffix in ("-wal", "-journal"):  # the bad file's log would be replayed into the new one
                    side = Path(f"{self.path}{suffix}")
                    if side.exists():
                        os.replace(side, f"{aside}{suffix}" if aside else f"{side}.corrupt-{stamp}")
                Path(f"{self.path}-shm").unlink(missing_ok=True)
                os.replace(fresh, self.path)
            except (OSError, sqlite3.Error) as e:
                raise RateLimiterError(
                    f"rate-limit store {self.path} is corrupt ({exc}) and could not be "
                    f"recreated: {type(e).__name__}: {e}"
                ) from None
        finally:
            os.close(fd)  # releases the flock
        log.error(
            "rate-limit store %s was corrupt (%s): moved to %s and recreated; the schedule restarts now",
            self.path,
            exc,
            aside,
        )
        if self.events is not None:
            try:
                self.events.emit(
                    "rate_limit_store_recreated",
                    path=str(self.path),
                    error=str(exc),
                    moved_to=str(aside) if aside else None,
                )
            except Exception:  # noqa: BLE001 - the store works again; a failed record is logged, not raised
                log.exception("could not record the rate_limit_store_recreated event for %s", self.path)

    def _transaction(self, body: Any) -> tuple[float, float]:
        """Run ``body(conn, now) -> result`` under SQLite's write lock; returns ``(result, now)``. A corrupt file
        is recreated and the transaction tried once more on the fresh one."""
        with self._mutex:
            for attempt in (1, 2):
                try:
                    return self._attempt(body)
                except sqlite3.Error as exc:
                    if attempt == 1 and is_corrupt(exc):
                        self._recreate(exc)
                        continue
                    raise RateLimiterError(f"rate-limit store {self.path}: {exc}") from None
            raise AssertionError("unreachable")

    def _attempt(self, body: Any) -> tuple[float, float]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()  # read inside the write lock: slots are handed out in time order
            result = body(conn, now)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error says more (a corrupt file may refuse the rollback too)
            raise
        return result, now

    def reserve(
        self, key_id: str, interval: float, burst: int, max_ahead: float, queue_s: float | None = None
    ) -> tuple[float | None, float]:
        def body(conn: sqlite3.Connection, now: float) -> float | None:
            row = conn.execute("SELECT tat FROM gcra WHERE key_id=?", (key_id,)).fetchone()
            if row and row[0] - now > max_ahead:
                log.warning(
                    "rate-limit schedule of %s was %.0fs ahead (clock stepped back?); restarting it",
                    key_id,
                    row[0] - now,
                )
            if queue_s is None:
                slot, tat = gcra_reserve(row[0] if row else None, now, interval, burst, max_ahead)
            else:
                slot, tat = gcra_reserve_idle(row[0] if row else None, now, interval, burst, max_ahead, queue_s)
                if slot is None:
                    return None
            conn.execute(
                "INSERT INTO gcra (key_id, tat) VALUES (?, ?) ON CONFLICT (key_id) DO UPDATE SET tat=excluded.tat",
                (key_id, tat),
            )
            return slot

        return self._transaction(body)

    def admit(self, key_id: str, cap: int, window: float) -> tuple[float, float]:
        def body(conn: sqlite3.Connection, now: float) -> float:
            # forget hand-outs that left the window, and any "from the future" (the clock stepped back)
            conn.execute("DELETE FROM handout WHERE key_id=? AND (t <= ? OR t > ?)", (key_id, now - window, now + 1.0))
            recent = [
                r[0]
                for r in conn.execute("SELECT t FROM handout WHERE key_id=? ORDER BY t DESC LIMIT ?", (key_id, cap))
            ]
            wait = window_admit(recent, now, cap, window)
            if wait == 0:
                conn.execute("INSERT INTO handout (key_id, t) VALUES (?, ?)", (key_id, now))
            return wait

        return self._transaction(body)

    def close(self) -> None:
        with self._mutex:
            self._close()


@dataclass
class LimiterCounters:
    permits: int = 0
    waits: int = 0  # permits that had to wait for their slot
    wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0
    held: int = 0  # permits held back at admission because hand-outs had clustered
    max_late_seconds: float = 0.0  # worst wake-up after the reserved slot (scheduler stalls)
    yielded: int = 0  # times a background permit stood aside for queued foreground callers

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("wait_seconds", "max_wait_seconds", "max_late_seconds"):
            d[k] = round(d[k], 3)
        return d


class SharedRateLimiter:
    """``RateLimiter`` (observer_resources.kis.ports): one budget of ``rate_per_s`` for ``key_id``,
    shared by every limiter built on the same store (file ``path``, or a given ``store``). ``events`` records a
    recreated store file in the system event log."""

    #: the admission window: KIS's believed sliding second, plus a margin for in-flight jitter
    WINDOW_S = 1.05

    def __init__(
        self,
        key_id: str,
        rate_per_s: float,
        path: str | os.PathLike[str] | None = None,
        *,
        burst: int = 1,
        store: PermitStore | None = None,
        max_ahead: float = 600.0,
        events: EventLog | None = None,
    ) -> None:
        if not rate_per_s or rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
        if not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
            raise ValueError(f"burst must be 1 or 2 (KIS counts a sliding second), got {burst!r}")
        if (path is None) == (store is None):
            raise ValueError("give exactly one of path or store")
        self.key_id = key_id
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self.interval = 1.0 / self.rate_per_s
        self.max_ahead = max_ahead
        self.cap = window_cap(self.rate_per_s, burst, self.WINDOW_S)
        self.store: PermitStore = store if store is not None else SqlitePermitStore(path, events=events)  # type: ignore[arg-type]
        self.counters = LimiterCounters()
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SharedRateLimiter(key_id={self.key_id!r}, rate_per_s={self.rate_per_s}, burst={self.burst}, store={self.store!r})"

    def _reserve(self) -> tuple[float, float]:
        """Claim a slot: (seconds until it, the slot's wall time)."""
        slot, now = self.store.reserve(self.key_id, self.interval, self.burst, self.max_ahead)
        assert slot is not None  # only a background reservation is refused
        return max(0.0, slot - now), slot

    def _reserve_idle(self, queue_s: float) -> tuple[float, float] | None:
        slot, now = self.store.reserve(self.key_id, self.interval, self.burst, self.max_ahead, queue_s)
        return None if slot is None else (max(0.0, slot - now), slot)

    async def acquire_background(self, queue_s: float, poll_s: float = 0.1) -> float:
        """Wait for one permit at background priority: claim only while at most ``queue_s`` of the schedule is
        claimed by others, else stand aside and ask again in ``poll_s``. Returns the seconds waited."""
        start = time.monotonic()
        while (got := await asyncio.to_thread(self._reserve_idle, queue_s)) is None:
            with self._count_lock:
                self.counters.yielded += 1
            await asyncio.sleep(poll_s)
        return await self._take(start, *got)

    def _admit(self) -> float:
        wait, _ = self.store.admit(self.key_id, self.cap, self.WINDOW_S)
        return wait

    def _count(self, waited: float, delay: float, late: float, held: int) -> None:
        with self._count_lock:
            c = self.counters
            c.permits += 1
            c.waits += delay > 0 or held > 0
            c.held += held > 0
            c.wait_seconds += waited
            c.max_wait_seconds = max(c.max_wait_seconds, waited)
            c.max_late_seconds = max(c.max_late_seconds, late)

    async def acquire(self) -> float:
        """Wait for one permit; returns the seconds waited (store access included)."""
        start = time.monotonic()
        # SQLite may busy-wait: keep that off the event loop.
        return await self._take(start, *await asyncio.to_thread(self._reserve))

    async def _take(self, start: float, delay: float, slot: float) -> float:
        """Sleep until the reserved slot, pass admission, count; returns the seconds waited since ``start``."""
        if delay > 0:
            await asyncio.sleep(delay)
        late = time.time() - slot
        held = 0
        while (hold := await asyncio.to_thread(self._admit)) > 0:
            held += 1
            await asyncio.sleep(hold)
        waited = time.monotonic() - start
        self._count(waited, delay, late, held)
        return waited

    def acquire_sync(self) -> float:
        """Blocking variant for synchronous callers."""
        start = time.monotonic()
        delay, slot = self._reserve()
        if delay > 0:
            time.sleep(delay)
        late = time.time() - slot
        held = 0
        while (hold := self._admit()) > 0:
            held += 1
            time.sleep(hold)
        waited = time.monotonic() - start
        self._count(waited, delay, late, held)
        return waited

    def close(self) -> None:
        self.store.close()


class BackgroundLimiter:
    """``RateLimiter`` for work that may wait (history fetches, the minute bars after the day): the same key's
    budget as ``limiter``, but a permit is only claimed while live collectors have at most ``queue_s`` queued, so a
    Track A slot or a restore starting mid-fetch waits behind at most that much background work."""

    def __init__(self, limiter: SharedRateLimiter, queue_s: float | None = None) -> None:
        self.limiter = limiter
        # three permits' worth: room for a few background requests in flight, and a live burst waits < 0.2 s at 18/s
        self.queue_s = queue_s if queue_s is not None else 3 * limiter.interval

    def __repr__(self) -> str:
        return f"BackgroundLimiter({self.limiter!r}, queue_s={self.queue_s:.3f})"

    @property
    def counters(self) -> LimiterCounters:
        return self.limiter.counters

    async def acquire(self) -> float:
        return await self.limiter.acquire_background(self.queue_s)
