"""A small PostgreSQL helper for the state shared across hosts (token store, rate-limit bucket).

Why not a pool library: the stores need three things only — connect from one URL without ever showing its
password, create their ``observer_*`` tables once, and survive a dropped connection — and psycopg2 (shipped
with dagster-postgres) does the rest.

* :func:`parse_url` / :func:`redact_url`: ``postgresql://user:password@host:port/db?sslmode=...``. The password
  never reaches a repr, a log line or an exception: errors name the URL with ``***`` in its place, and the
  server's text is scrubbed of it.
* :class:`PgDatabase`: one URL; :meth:`~PgDatabase.connect` opens an autocommit connection (TCP keepalives,
  so a vanished host is noticed), :meth:`~PgDatabase.ensure_schema` runs ``CREATE TABLE IF NOT EXISTS`` DDL
  once per process, tolerating the race of several processes doing it at once.
* :class:`PgSession`: one reusable connection for short transactions, serialized between threads, replaced
  when it was dropped (server restart, network cut, ``idle_in_transaction_session_timeout``) and the work
  retried once, and never reused across ``fork``.

Every table this project creates is prefixed ``observer_`` so it can share a database (e.g. Dagster's own).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from observer_resources import secrets as secret_rules

log = logging.getLogger("observer.state_db")

T = TypeVar("T")

TABLE_PREFIX = "observer_"

#: connection errors (SQLSTATE class 08) and server shutdown/termination (57P01..57P03): reconnect and retry
_RECONNECT_CODES_PREFIX = ("08", "57P")

# Connections created before a fork are kept referenced in the child, never closed there: closing would send
# the server a Terminate message on the socket the parent still uses.
_ORPHANS: list[Any] = []


class StateDbError(Exception):
    """The shared-state database cannot be used. The message never holds the URL's password."""


class StateDbUrlError(StateDbError, ValueError):
    """``OBSERVER_STATE_DB_URL`` (or a given URL) is not a usable PostgreSQL URL."""


@dataclass(frozen=True)
class PgUrl:
    """A parsed connection URL. ``password`` is hidden from repr."""

    user: str
    password: str = field(repr=False)
    host: str
    port: int
    dbname: str
    params: tuple[tuple[str, str], ...] = ()

    def redacted(self) -> str:
        auth = quote(self.user, safe="") + (":***" if self.password else "") + "@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "&".join(f"{k}={'***' if secret_rules.is_secret_param(k) else v}" for k, v in self.params)
        return f"postgresql://{auth}{host}:{self.port}/{quote(self.dbname, safe='')}" + (f"?{query}" if query else "")

    def connect_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname}
        if self.user:
            kw["user"] = self.user
        if self.password:
            kw["password"] = self.password
        kw.update(self.params)
        return kw


def parse_url(url: str) -> PgUrl:
    """Parse ``postgresql://user:pw@host[:port]/db[?param=value&...]`` (``postgres://`` too).

    Parsed here rather than handed to libpq, whose "invalid dsn" errors echo the string, password and all.
    """
    if not isinstance(url, str) or not url.strip():
        raise StateDbUrlError("empty PostgreSQL URL")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise StateDbUrlError(f"not a PostgreSQL URL: {_shape(url)}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise StateDbUrlError(
            f"a PostgreSQL URL starts with postgresql://, got {parts.scheme or 'no'} scheme: {_shape(url)}"
        )
    dbname = unquote(parts.path.lstrip("/"))
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    host = parts.hostname or dict(params).get("host", "")
    if not host:
        raise StateDbUrlError(f"the PostgreSQL URL names no host: {_shape(url)}")
    if not dbname:
        raise StateDbUrlError(f"the PostgreSQL URL names no database (…/dbname): {_shape(url)}")
    password = unquote(parts.password or "") or dict(params).get("password", "")
    params = tuple((k, v) for k, v in params if k not in ("host", "password"))
    return PgUrl(unquote(parts.username or ""), password, host, port or 5432, dbname, params)


def _shape(url: str) -> str:
    """The URL with anything between ``://`` and ``@`` hidden (for errors about a URL that did not parse)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return "***"
    creds, at, tail = rest.rpartition("@")
    return f"{head}://{'***@' if at else ''}{tail}"


def redact_url(url: str) -> str:
    """The URL for logs and errors: password replaced by ``***`` (the user name kept when the URL parses; else
    the general rule of observer_resources/secrets.py, which hides the whole userinfo)."""
    try:
        return parse_url(url).redacted()
    except StateDbUrlError:
        return secret_rules.redact_url(url)


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with each given secret (the password, a token being written) replaced by ``***``."""
    return secret_rules.scrub(text, values=values)


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A psycopg2 error for an exception message: SQLSTATE and the primary message only.

    The server's DETAIL may quote a whole row ("Failing row contains (…, <token>, …)"), so it is left out;
    what remains is scrubbed of the given secrets (the password, a token being written).
    """
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    code = getattr(exc, "pgcode", None)
    text = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return scrub(f"{type(exc).__name__}{f' [{code}]' if code else ''}: {text}", secrets)


def is_disconnect(exc: BaseException, conn: Any) -> bool:
    """Did ``exc`` come from a connection that is gone (so a fresh one may retry the work)?"""
    if conn is not None and getattr(conn, "closed", 0):
        return True
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    code = getattr(exc, "pgcode", None) or ""
    return isinstance(exc, psycopg2.OperationalError) and (not code or code.startswith(_RECONNECT_CODES_PREFIX))


class PgDatabase:
    """One PostgreSQL database given by URL; repr and errors show it redacted."""

    _schemas_done: set[tuple[int, str, str]] = set()
    _schemas_lock = threading.Lock()

    def __init__(
        self, url: str, *, application_name: str = "observer", connect_timeout: int = 10, keepalive_idle_s: int = 15
    ):
        self._url = parse_url(url)
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self.keepalive_idle_s = keepalive_idle_s

    @property
    def redacted_url(self) -> str:
        return self._url.redacted()

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a message about this database (the password)."""
        return (self._url.password,) if self._url.password else ()

    def __repr__(self) -> str:
        return f"PgDatabase({self.redacted_url!r})"

    def describe(self, exc: BaseException, secrets: Iterable[str] = ()) -> str:
        return describe_error(exc, [*self.secrets, *secrets])

    def error(self, what: str, exc: BaseException, secrets: Iterable[str] = ()) -> StateDbError:
        return StateDbError(f"{what} ({self.redacted_url}): {self.describe(exc, secrets)}")

    def connect(self, settings: dict[str, str] | None = None) -> psycopg2.extensions.connection:
        """A new autocommit connection with the given session settings (``SET name = value``)."""
        kw = {
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle_s,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            **self._url.connect_kwargs(),
        }
        try:
            conn = psycopg2.connect(**kw)
        except psycopg2.Error as exc:
            raise self.error("cannot connect to the state database", exc) from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                for name, value in (settings or {}).items():
                    cur.execute(f"SET {name} = %s", (value,))
        except psycopg2.Error as exc:
            conn.close()
            raise self.error("cannot set up a state database connection", exc) from None
        return conn

    def ensure_schema(self, name: str, ddl: str) -> None:
        """Run ``ddl`` (idempotent ``CREATE … IF NOT EXISTS``) once per process for this database.

        Two processes creating the same table at once can collide in the catalog (unique violation on
        ``pg_type``); the loser simply retries and finds it there.
        """
        key = (os.getpid(), self._url.redacted(), name)
        with self._schemas_lock:
            if key in self._schemas_done:
                return
            for attempt in range(5):
                conn = self.connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute(ddl)
                    break
                except (
                    psycopg2.errors.UniqueViolation,
                    psycopg2.errors.DuplicateTable,
                    psycopg2.errors.DuplicateObject,
                ) as exc:
                    if attempt == 4:
                        raise self.error(f"cannot create the {name} tables", exc) from None
                except psycopg2.Error as exc:
                    raise self.error(f"cannot create the {name} tables", exc) from None
                finally:
                    conn.close()
            self._schemas_done.add(key)


class PgSession:
    """One connection for short transactions, shared by the threads of a process.

    :meth:`run` calls ``work(cursor)`` under a mutex; when the connection turns out dropped it opens a new
    one and calls ``work`` once more (``work`` must be a whole transaction, or a single statement, so a
    retry can never apply half of it twice). Other database errors are raised as :class:`StateDbError`.
    """

    def __init__(self, db: PgDatabase, settings: dict[str, str] | None = None, *, what: str = "state database"):
        self.db = db
        self.settings = dict(settings or {})
        self.what = what
        self.reconnects = 0
        self._conn: Any = None
        self._pid = os.getpid()
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"PgSession({self.db.redacted_url!r})"

    def _connection(self) -> Any:
        if self._pid != os.getpid():
            if self._conn is not None:
                _ORPHANS.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        if self._conn is None or self._conn.closed:
            self._conn = self.db.connect(self.settings)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def run(self, work: Callable[[Any], T], *, secrets: Iterable[str] = ()) -> T:
        with self._mutex:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        return work(cur)
                except psycopg2.Error as exc:
                    if is_disconnect(exc, conn):
                        self._drop()
                        if attempt == 1:
                            self.reconnects += 1
                            log.warning(
                                "%s connection lost (%s); reconnecting", self.what, self.db.describe(exc, secrets)
                            )
                            continue
                        raise self.db.error(f"{self.what}: connection lost twice", exc, secrets) from None
                    _rollback(conn)
                    raise self.db.error(self.what, exc, secrets) from None
                except BaseException:
                    _rollback(conn)
                    raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._mutex:
            if self._pid == os.getpid():
                self._drop()
            else:
                if self._conn is not None:
                    _ORPHANS.append(self._conn)
                self._conn = None


def _rollback(conn: Any) -> None:
    """End a transaction a failed ``work`` may have left open (autocommit connection: send ROLLBACK)."""
    if conn.closed:
        return
    try:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
    except psycopg2.Error:
        try:
            conn.close()
        except psycopg2.Error:
            pass
