"""Where the access token (and the last approval key) of each app key lives, shared by every process.

KIS issues at most one token per minute per app key and returns the same token for 6 h, so all
processes using a key must read one stored token, and only one of them may issue at a time. The
store offers exactly that: lock-free reads, and an exclusive per-key lock scope inside which the
holder re-reads, issues and writes. Records are keyed by ``config.key_id`` (a hash), never by the
app key. ``SqliteTokenStore`` is the embedded implementation (one host); a PostgreSQL one can
implement the same small interface (``pg_advisory_xact_lock`` per key) for several hosts.

The store file holds live tokens: it is created 0600 (its directory 0700 when the store creates
it), and so are SQLite's ``-wal`` / ``-shm`` side files.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

log = logging.getLogger("observer.kis.token")

Kind = Literal["access", "approval"]
KINDS: tuple[Kind, ...] = ("access", "approval")


#: file name of the shared token store under the state directory ($OBSERVER_DATA_DIR/state)
TOKEN_STORE_FILE = "tokens.sqlite"


class TokenStoreError(Exception):
    """The store cannot be used (unreadable file, lock not obtained in time)."""


class TokenLockTimeout(TokenStoreError):
    """Another process held the key's lock for longer than the caller was willing to wait."""


@dataclass(frozen=True)
class TokenRecord:
    """One stored credential. ``value`` is secret: never shown by repr."""

    kind: Kind
    value: str = field(repr=False)
    expires_at: datetime
    issued_at: datetime

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.expires_at.tzinfo is None or self.issued_at.tzinfo is None:
            raise ValueError("expires_at and issued_at must be timezone-aware")


class TokenLock(ABC):
    """An exclusive hold on one key_id across processes and threads, until :meth:`release`.

    Inside it the holder sees the latest committed records and may write new ones; writes become
    visible to others when the lock is released. ``not_before`` is a shared "do not issue before"
    time for the key (KIS's one-issuance-per-minute rule), so a backoff one process learned binds
    every process, restarted ones included.
    """

    key_id: str

    @abstractmethod
    def get(self, kind: Kind) -> TokenRecord | None: ...

    @abstractmethod
    def put(self, record: TokenRecord) -> None: ...

    @abstractmethod
    def not_before(self) -> datetime | None: ...

    @abstractmethod
    def set_not_before(self, when: datetime | None) -> None: ...

    @abstractmethod
    def release(self) -> None:
        """Commit what was written and let the next holder in. Idempotent."""

    def __enter__(self) -> TokenLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class TokenStore(ABC):
    """Shared, persistent token records per key_id."""

    @abstractmethod
    def get(self, key_id: str, kind: Kind) -> TokenRecord | None:
        """The latest committed record, without waiting for a lock holder."""

    @abstractmethod
    def put(self, key_id: str, record: TokenRecord) -> None:
        """Write one record outside any lock scope (approval keys: no issuance limit to guard)."""

    @abstractmethod
    def lock(self, key_id: str, timeout: float) -> TokenLock:
        """Block up to ``timeout`` seconds for the exclusive hold on ``key_id``; TokenLockTimeout otherwise.

        ``timeout=0`` tries once. A caller that gives up on a lock it may still be granted (a cancelled
        wait) must release the returned hold.
        """

    def try_lock(self, key_id: str) -> TokenLock | None:
        """The hold if free right now, else None (used to count waits)."""
        try:
            return self.lock(key_id, 0)
        except TokenLockTimeout:
            return None

    def close(self) -> None:  # noqa: B027 - optional
        """Release resources held by the store object."""


# --- SQLite ------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS token (
    key_id     TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'approval')),
    value      TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    issued_at  TEXT NOT NULL,
    PRIMARY KEY (key_id, kind)
);
CREATE TABLE IF NOT EXISTS issue_gate (
    key_id     TEXT PRIMARY KEY,
    not_before TEXT
);
"""


def private_file(path: Path) -> None:
    """Create ``path`` (and missing parent directories, 0700) as an empty 0600 file, or tighten an
    existing one to 0600 — before SQLite opens it, so no secret is ever written to a wider file."""
    parent = path.parent
    if not parent.exists():
        missing = []
        d = parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in missing:  # mkdir's mode is subject to the umask; make it exact
            os.chmod(d, 0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode != 0o600:
            if mode & 0o077:
                log.warning("token store %s had mode %o; tightening to 600", path, mode)
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def init_sqlite(path: Path, schema: str, *, timeout: float = 30.0) -> None:
    """Switch ``path`` to WAL and create ``schema``, safe when several processes do it at once.

    Changing the journal mode needs an exclusive lock for which SQLite may answer "database is
    locked" at once, without its busy handler; so retry for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(schema)
            finally:
                conn.close()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    _tighten_side_files(path)


def _tighten_side_files(path: Path) -> None:
    """SQLite creates -wal/-shm/-journal with the database file's mode; make sure of it."""
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(str(path) + suffix)
        try:
            if stat.S_IMODE(side.stat().st_mode) != 0o600:
                os.chmod(side, 0o600)
        except FileNotFoundError:
            pass


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def _row_record(row: tuple | None, kind: Kind) -> TokenRecord | None:
    if row is None:
        return None
    value, expires_at, issued_at = row
    return TokenRecord(kind, value, datetime.fromisoformat(expires_at), datetime.fromisoformat(issued_at))


class SqliteTokenStore(TokenStore):
    """Token records in one SQLite file (WAL), for every process on this host.

    The lock scope is a ``BEGIN IMMEDIATE`` transaction: SQLite's write lock, released by the OS if
    the holder dies. It locks the whole file, so holds must stay short — the token provider holds it
    for one HTTP call at most, never across a backoff sleep. Reads never wait for it (WAL).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        private_file(self.path)
        try:
            init_sqlite(self.path, _SCHEMA)
        except sqlite3.Error as exc:
            raise TokenStoreError(f"cannot open token store {self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"SqliteTokenStore({str(self.path)!r})"

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        # One connection per operation: cheap, and safe to use from whichever thread runs it.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def get(self, key_id: str, kind: Kind) -> TokenRecord | None:
        conn = self._connect(busy_ms=5_000)
        try:
            row = conn.execute(
                "SELECT value, expires_at, issued_at FROM token WHERE key_id=? AND kind=?", (key_id, kind)
            ).fetchone()
        finally:
            conn.close()
        return _row_record(row, kind)

    def put(self, key_id: str, record: TokenRecord) -> None:
        conn = self._connect(busy_ms=30_000)
        try:
            conn.execute("BEGIN IMMEDIATE")
            _write(conn, key_id, record)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def lock(self, key_id: str, timeout: float) -> TokenLock:
        conn = None
        try:  # opening counts too: with a zero busy timeout even the connection's PRAGMAs can meet the lock
            conn = self._connect(busy_ms=max(0, int(timeout * 1000)))
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise TokenLockTimeout(f"token store lock for {key_id} not obtained within {timeout:.1f}s") from None
            raise TokenStoreError(f"token store {self.path}: {exc}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        _tighten_side_files(self.path)
        return _SqliteLock(key_id, conn)


def _write(conn: sqlite3.Connection, key_id: str, record: TokenRecord) -> None:
    conn.execute(
        "INSERT INTO token (key_id, kind, value, expires_at, issued_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (key_id, kind) DO UPDATE SET value=excluded.value, expires_at=excluded.expires_at, "
        "issued_at=excluded.issued_at",
        (key_id, record.kind, record.value, _iso(record.expires_at), _iso(record.issued_at)),
    )


class _SqliteLock(TokenLock):
    def __init__(self, key_id: str, conn: sqlite3.Connection):
        self.key_id = key_id
        self._conn: sqlite3.Connection | None = conn
        self._mutex = threading.Lock()  # acquired in one thread, released in another: guard the handle

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TokenStoreError("token lock already released")
        return self._conn

    def get(self, kind: Kind) -> TokenRecord | None:
        row = (
            self._c()
            .execute("SELECT value, expires_at, issued_at FROM token WHERE key_id=? AND kind=?", (self.key_id, kind))
            .fetchone()
        )
        return _row_record(row, kind)

    def put(self, record: TokenRecord) -> None:
        _write(self._c(), self.key_id, record)

    def not_before(self) -> datetime | None:
        row = self._c().execute("SELECT not_before FROM issue_gate WHERE key_id=?", (self.key_id,)).fetchone()
        return _dt(row[0]) if row else None

    def set_not_before(self, when: datetime | None) -> None:
        self._c().execute(
            "INSERT INTO issue_gate (key_id, not_before) VALUES (?, ?) "
            "ON CONFLICT (key_id) DO UPDATE SET not_before=excluded.not_before",
            (self.key_id, _iso(when) if when else None),
        )

    def release(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        finally:
            conn.close()
