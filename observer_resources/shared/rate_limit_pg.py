"""The shared REST budget's GCRA state in PostgreSQL, for processes on several hosts (docs/deploy.md).

Same semantics as :class:`~observer_resources.shared.rate_limit.SqlitePermitStore` — the pure
:func:`~observer_resources.shared.rate_limit.gcra_reserve` and :func:`~observer_resources.shared.rate_limit.window_admit`
applied atomically — over **one row per app key** in ``observer_rate_limit``: the theoretical arrival time
``tat`` and the recent hand-out times ``handouts`` (an array that never holds more than about one window's
worth). Each step is one short transaction: ``SELECT … FOR UPDATE`` of the row, the pure rule in Python,
``UPDATE`` and ``COMMIT`` — two round trips, because ``BEGIN`` rides with the select and ``COMMIT`` with the
update.

Time comes from the database server (``clock_timestamp()``, read after the row lock is granted), not from
each host: hosts' clocks differ by milliseconds to seconds, and a schedule kept in one clock cannot be
skewed by them. The slot and the "now" it is measured against come from the same clock, so a caller
sleeps ``slot - now`` however far its own clock is off.

Per-permit cost on loopback: see docs/benchmarks.md ("Rate limit on PostgreSQL"). A frozen process
holding the row is cut off after ``hold_limit_s`` (``idle_in_transaction_session_timeout``), so it cannot
stall the key's budget for everyone; commits do not wait for the WAL flush (``synchronous_commit = off``):
the schedule need not survive a database crash.
"""

from __future__ import annotations

import logging
from typing import Any

from observer_resources.shared.pg import PgDatabase, PgSession, StateDbError
from observer_resources.shared.rate_limit import (
    PermitStore,
    RateLimiterError,
    gcra_reserve,
    gcra_reserve_idle,
    window_admit,
)

log = logging.getLogger("observer.kis.ratelimit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS observer_rate_limit (
    key_id   text PRIMARY KEY,
    tat      double precision,
    handouts double precision[] NOT NULL DEFAULT '{}'
);
"""

# The row lock first, then the clock: MATERIALIZED keeps the locking scan from being folded into the outer
# query, so clock_timestamp() is evaluated once the lock is ours, never before a wait.
_LOCKED = (
    "WITH locked AS MATERIALIZED (SELECT tat, handouts FROM observer_rate_limit WHERE key_id = %s FOR UPDATE) "
    "SELECT tat, handouts, extract(epoch FROM clock_timestamp())::float8 FROM locked"
)


class PostgresPermitStore(PermitStore):
    """GCRA state per key in PostgreSQL, shared by every process on every host using the database."""

    def __init__(
        self,
        url: str,
        *,
        hold_limit_s: float = 5.0,
        lock_wait_s: float = 30.0,
        application_name: str = "observer-ratelimit",
    ):
        try:
            self.db = PgDatabase(url, application_name=application_name)
            self.db.ensure_schema("rate-limit", _SCHEMA)
        except StateDbError as exc:
            raise RateLimiterError(str(exc)) from None
        self._session = PgSession(
            self.db,
            {
                "idle_in_transaction_session_timeout": f"{int(hold_limit_s * 1000)}ms",
                "lock_timeout": f"{int(lock_wait_s * 1000)}ms",
                "synchronous_commit": "off",
            },
            what="rate-limit store",
        )

    def __repr__(self) -> str:
        return f"PostgresPermitStore({self.db.redacted_url!r})"

    @property
    def reconnects(self) -> int:
        return self._session.reconnects

    def _step(self, key_id: str, rule: Any) -> tuple[float, float]:
        """One transaction: lock the key's row, ``rule(tat, handouts, now) -> (result, tat, handouts)``, write."""

        def work(cur: Any) -> tuple[float, float]:
            cur.execute("BEGIN; " + _LOCKED, (key_id,))
            row = cur.fetchone()
            if row is None:  # the key's first use: create its row, then lock it like any other
                cur.execute(
                    "INSERT INTO observer_rate_limit (key_id) VALUES (%s) ON CONFLICT (key_id) DO NOTHING; " + _LOCKED,
                    (key_id, key_id),
                )
                row = cur.fetchone()
            tat, handouts, now = row
            result, new_tat, new_handouts = rule(tat, list(handouts or ()), now)
            cur.execute(
                "UPDATE observer_rate_limit SET tat = %s, handouts = %s::float8[] WHERE key_id = %s; COMMIT",
                (new_tat, new_handouts, key_id),
            )
            return result, now

        try:
            return self._session.run(work)
        except StateDbError as exc:
            raise RateLimiterError(str(exc)) from None

    def reserve(
        self, key_id: str, interval: float, burst: int, max_ahead: float, queue_s: float | None = None
    ) -> tuple[float | None, float]:
        def rule(
            tat: float | None, handouts: list[float], now: float
        ) -> tuple[float | None, float | None, list[float]]:
            if tat is not None and tat - now > max_ahead:
                log.warning(
                    "rate-limit schedule of %s was %.0fs ahead (clock stepped back?); restarting it", key_id, tat - now
                )
            if queue_s is None:
                slot, new_tat = gcra_reserve(tat, now, interval, burst, max_ahead)
            else:
                slot, new_tat = gcra_reserve_idle(tat, now, interval, burst, max_ahead, queue_s)
            return slot, new_tat, handouts

        return self._step(key_id, rule)

    def admit(self, key_id: str, cap: int, window: float) -> tuple[float, float]:
        def rule(tat: float | None, handouts: list[float], now: float) -> tuple[float, float | None, list[float]]:
            # forget hand-outs that left the window, and any "from the future" (the clock stepped back)
            recent = sorted(t for t in handouts if now - window < t <= now + 1.0)
            wait = window_admit(recent, now, cap, window)
            if wait == 0:
                recent.append(now)
            return wait, tat, recent

        return self._step(key_id, rule)

    def close(self) -> None:
        self._session.close()
