"""The shared token store in PostgreSQL, for processes on several hosts (docs/deploy.md).

Same contract as :class:`~observer_resources.shared.token_store.SqliteTokenStore`: lock-free reads of the
latest committed record, and an exclusive per-key lock scope inside which the holder re-reads, issues, writes
and sets ``not_before`` (KIS's one-issuance-a-minute rule); writes become visible when the lock is released,
and a holder that dies takes its uncommitted writes with it.

Tables (``observer_`` prefix, created if missing): ``observer_token`` (key_id, kind) → value, expires_at,
issued_at; ``observer_token_gate`` key_id → not_before. Times are ``timestamptz``; records come back in KST.
The token is stored in clear, as in the 0600 SQLite file: whoever can read ``observer_token`` can use the
key's token, so give the Observer role its own database or schema and nobody else ``SELECT`` on it. Our
errors carry only the server's primary message (its DETAIL may quote the row), but the *server's* log records
a failing statement with its values (``log_min_error_statement``, which only a superuser can lower): a token
write the server refused would leave the token there, so keep that log as private as the table.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from observer_resources.calendar import KST
from observer_resources.shared.pg import _ORPHANS, PgDatabase, PgSession, StateDbError, is_disconnect
from observer_resources.shared.token_store import (
    Kind,
    TokenLock,
    TokenLockTimeout,
    TokenRecord,
    TokenStore,
    TokenStoreError,
)

log = logging.getLogger("observer.kis.token")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS observer_token (
    key_id     text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('access', 'approval')),
    value      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    issued_at  timestamptz NOT NULL,
    PRIMARY KEY (key_id, kind)
);
CREATE TABLE IF NOT EXISTS observer_token_gate (
    key_id     text PRIMARY KEY,
    not_before timestamptz
);
"""

_GET = "SELECT value, expires_at, issued_at FROM observer_token WHERE key_id = %s AND kind = %s"
_PUT = (
    "INSERT INTO observer_token (key_id, kind, value, expires_at, issued_at) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (key_id, kind) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
    "issued_at = excluded.issued_at"
)
# One round trip: the whole lock attempt, bounded by lock_timeout (which also bounds the rare wait on another
# process inserting the same key's gate row for the first time).
_LOCK = (
    "BEGIN; SET LOCAL lock_timeout = %s; "
    "INSERT INTO observer_token_gate (key_id) VALUES (%s) ON CONFLICT (key_id) DO NOTHING; "
    "SELECT not_before FROM observer_token_gate WHERE key_id = %s FOR UPDATE"
)


def _record(row: tuple | None, kind: Kind) -> TokenRecord | None:
    if row is None:
        return None
    value, expires_at, issued_at = row
    return TokenRecord(kind, value, expires_at.astimezone(KST), issued_at.astimezone(KST))


def _put_args(key_id: str, record: TokenRecord) -> tuple:
    return key_id, record.kind, record.value, record.expires_at, record.issued_at


class PostgresTokenStore(TokenStore):
    """Token records in PostgreSQL, shared by every process on every host that uses the database.

    The lock is ``SELECT … FOR UPDATE`` on the key's row in ``observer_token_gate`` (the row that also holds
    ``not_before``), in a transaction kept open until :meth:`TokenLock.release` commits it. Chosen over
    ``pg_advisory_lock`` because

    * it is a lock on our own row: no 64-bit key derived from key_id that could collide with another user of
      advisory locks in a database shared with Dagster's storage, and it shows in ``pg_locks`` as that row;
    * its scope *is* the transaction, as with SQLite's ``BEGIN IMMEDIATE``: writes made under it are committed
      exactly when it is released, and rolled back with it when the holder's connection dies (the server
      ends the transaction as soon as it notices the socket gone: at once on a process crash, after the TCP
      keepalive probes (~30 s) when a host vanishes) — a session advisory lock would need the same
      transaction anyway to keep "lock released" and "writes visible" one event;
    * ``lock_timeout`` and ``NOWAIT`` bound the wait on the server, so ``timeout`` needs no client polling.

    Readers never wait for it (MVCC). A holder frozen with the lock (SIGSTOP, a hung host whose socket stays
    up) is cut off by ``idle_in_transaction_session_timeout`` = ``hold_limit_s`` — far above the one HTTP
    call the token provider makes under the lock — so one stuck process cannot block issuance for good.
    """

    def __init__(self, url: str, *, hold_limit_s: float = 60.0, application_name: str = "observer-tokens"):
        if hold_limit_s <= 0:
            raise ValueError("hold_limit_s must be positive")
        try:
            self.db = PgDatabase(url, application_name=application_name)
            self.db.ensure_schema("token store", _SCHEMA)
        except StateDbError as exc:
            raise TokenStoreError(str(exc)) from None
        self._lock_settings = {"idle_in_transaction_session_timeout": f"{int(hold_limit_s * 1000)}ms"}
        self._session = PgSession(self.db, what="token store")
        self._idle: list[Any] = []  # lock connections between holds
        self._idle_pid = os.getpid()
        self._pool_mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresTokenStore({self.db.redacted_url!r})"

    def get(self, key_id: str, kind: Kind) -> TokenRecord | None:
        def work(cur: Any) -> tuple | None:
            cur.execute(_GET, (key_id, kind))
            return cur.fetchone()

        try:
            return _record(self._session.run(work), kind)
        except StateDbError as exc:
            raise TokenStoreError(str(exc)) from None

    def put(self, key_id: str, record: TokenRecord) -> None:
        try:
            self._session.run(lambda cur: cur.execute(_PUT, _put_args(key_id, record)), secrets=[record.value])
        except StateDbError as exc:
            raise TokenStoreError(str(exc)) from None

    def lock(self, key_id: str, timeout: float) -> TokenLock:
        wait_ms = max(1, int(timeout * 1000))  # lock_timeout = 0 would mean "wait for ever"
        sql = _LOCK + (" NOWAIT" if timeout <= 0 else "")
        for attempt in (1, 2):
            conn = self._take()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, (f"{wait_ms}ms", key_id, key_id))
                    row = cur.fetchone()
            except psycopg2.errors.LockNotAvailable:
                self._give(conn, rollback=True)
                raise TokenLockTimeout(f"token store lock for {key_id} not obtained within {timeout:.1f}s") from None
            except psycopg2.Error as exc:
                dropped = is_disconnect(exc, conn)
                self._give(conn, rollback=True)
                if dropped and attempt == 1:  # nothing was written: a fresh connection may simply try again
                    log.warning("token store connection lost while locking (%s); reconnecting", self.db.describe(exc))
                    continue
                raise TokenStoreError(
                    f"token store lock for {key_id} ({self.db.redacted_url}): {self.db.describe(exc)}"
                ) from None
            except BaseException:
                self._give(conn, rollback=True)
                raise
            return _PgLock(self, key_id, conn, row[0].astimezone(KST) if row and row[0] else None)
        raise AssertionError("unreachable")

    # --- lock connections ---------------------------------------------------------------------------

    def _take(self) -> Any:
        with self._pool_mutex:
            if self._idle_pid != os.getpid():
                _ORPHANS.extend(self._idle)
                self._idle, self._idle_pid = [], os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        try:
            return self.db.connect(self._lock_settings)
        except StateDbError as exc:
            raise TokenStoreError(str(exc)) from None

    def _give(self, conn: Any, *, rollback: bool = False) -> None:
        """Back to the idle list if healthy and outside a transaction; closed otherwise."""
        if not conn.closed and rollback:
            try:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except psycopg2.Error:
                pass
        healthy = not conn.closed and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with self._pool_mutex:
            if healthy and self._idle_pid == os.getpid() and len(self._idle) < 2:
                self._idle.append(conn)
                return
        try:
            conn.close()
        except psycopg2.Error:
            pass

    def close(self) -> None:
        self._session.close()
        with self._pool_mutex:
            idle, self._idle = self._idle, []
            same = self._idle_pid == os.getpid()
        for conn in idle:
            if same:
                conn.close()
            else:
                _ORPHANS.append(conn)


class _PgLock(TokenLock):
    def __init__(self, store: PostgresTokenStore, key_id: str, conn: Any, not_before: datetime | None):
        self.key_id = key_id
        self._store = store
        self._conn: Any = conn
        self._not_before = not_before  # read under the lock; only this holder can change it until release
        self._dirty = False
        self._mutex = threading.Lock()  # acquired in one thread, released in another: guard the handle

    def __repr__(self) -> str:
        return f"_PgLock(key_id={self.key_id!r}, held={self._conn is not None})"

    def _execute(self, sql: str, args: tuple, secrets: tuple[str, ...] = ()) -> Any:
        conn = self._conn
        if conn is None:
            raise TokenStoreError("token lock already released")
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone() if cur.description else None
        except psycopg2.Error as exc:
            raise TokenStoreError(
                f"token store, under the lock for {self.key_id} ({self._store.db.redacted_url}): "
                f"{self._store.db.describe(exc, secrets)}"
            ) from None

    def get(self, kind: Kind) -> TokenRecord | None:
        return _record(self._execute(_GET, (self.key_id, kind)), kind)

    def put(self, record: TokenRecord) -> None:
        self._dirty = True
        self._execute(_PUT, _put_args(self.key_id, record), (record.value,))

    def not_before(self) -> datetime | None:
        return self._not_before

    def set_not_before(self, when: datetime | None) -> None:
        if when is not None and when.tzinfo is None:
            raise ValueError("not_before must be timezone-aware")
        self._dirty = True
        self._execute("UPDATE observer_token_gate SET not_before = %s WHERE key_id = %s", (when, self.key_id))
        self._not_before = when.astimezone(KST) if when else None

    def release(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            with conn.cursor() as cur:
                cur.execute("COMMIT")
        except psycopg2.Error as exc:
            self._store._give(conn, rollback=True)
            what = self._store.db.describe(exc)
            if self._dirty:
                raise TokenStoreError(
                    f"token store lock for {self.key_id} lost before release; what was "
                    f"written under it is not stored ({what})"
                ) from None
            log.warning(
                "token store lock for %s ended by the server before release (%s); nothing was written",
                self.key_id,
                what,
            )
            return
        self._store._give(conn)
