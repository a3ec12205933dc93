"""Where the shared token and rate-limit state lives: SQLite on this host, or PostgreSQL for several hosts.

Selection is by environment, read in the process that builds the stores (a Dagster step, the Track B
capture), so the URL and its password never enter Dagster's config, run records or UI:

* ``OBSERVER_STATE_DB_URL`` unset (the default): ``tokens.sqlite`` and ``ratelimit.sqlite`` under the state
  directory (``$OBSERVER_DATA_DIR/state``), shared by the processes of this host.
* ``OBSERVER_STATE_DB_URL=postgresql://user:password@host:5432/dbname`` (``?sslmode=require`` etc. allowed):
  :class:`~observer_resources.shared.token_store_pg.PostgresTokenStore` and
  :class:`~observer_resources.shared.rate_limit_pg.PostgresPermitStore`, so processes on different hosts
  (each with its own ``DAGSTER_HOME`` and disk) share one token and one request budget per app key. It may
  be the database of Dagster's PostgreSQL storage: the tables are prefixed ``observer_``. Every process of
  every host using a key must point at the same database — one left on SQLite would keep a budget of its own.

The URL is shown only redacted (``postgresql://user:***@host:5432/dbname``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from observer_resources import settings
from observer_resources.events import EventLog
from observer_resources.kis.config import KisConfig
from observer_resources.shared.rate_limit import PermitStore, SqlitePermitStore
from observer_resources.shared.token_store import TOKEN_STORE_FILE, SqliteTokenStore, TokenStore
from observer_resources.shared.tokens import SharedTokenProvider

STATE_DB_URL_ENV = "OBSERVER_STATE_DB_URL"
#: file name of the shared rate-limit store under the state directory (SQLite backend)
RATE_LIMIT_FILE = "ratelimit.sqlite"


def state_db_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``$OBSERVER_STATE_DB_URL`` stripped, or None when unset or blank."""
    return settings.get(STATE_DB_URL_ENV, environ)


def open_token_store(state_dir: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> TokenStore:
    """The token store this deployment shares: PostgreSQL when ``OBSERVER_STATE_DB_URL`` is set, else the
    SQLite file under ``state_dir``."""
    url = state_db_url(environ)
    if url:
        from observer_resources.shared.token_store_pg import PostgresTokenStore  # psycopg2 only when used

        return PostgresTokenStore(url)
    return SqliteTokenStore(Path(state_dir) / TOKEN_STORE_FILE)


def open_permit_store(
    state_dir: str | os.PathLike[str], environ: Mapping[str, str] | None = None, *, events: EventLog | None = None
) -> PermitStore:
    """The rate-limit state this deployment shares, chosen like :func:`open_token_store`. ``events`` records a
    corrupt SQLite file being recreated."""
    url = state_db_url(environ)
    if url:
        from observer_resources.shared.rate_limit_pg import PostgresPermitStore

        return PostgresPermitStore(url)
    return SqlitePermitStore(Path(state_dir) / RATE_LIMIT_FILE, events=events)


def open_token_provider(
    config: KisConfig,
    state_dir: str | os.PathLike[str],
    *,
    events: EventLog | None,
    refresh_margin: timedelta = timedelta(hours=1),
) -> SharedTokenProvider:
    """The one way a process builds its token provider over the shared store: the KIS resource's runs and the
    Track B capture alike, so both write the token and approval-key events to the host's event log."""
    return SharedTokenProvider(config, open_token_store(state_dir), refresh_margin=refresh_margin, events=events)
