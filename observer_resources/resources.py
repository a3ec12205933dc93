"""Dagster resources for KIS (docs/architecture.md, "Shared token and rate limit").

Dagster builds a resource instance in every step process, so nothing here fetches a token per
process: :class:`KisResource` hands out a :class:`SharedTokenProvider` and a
:class:`SharedRateLimiter` over files in ``state_dir`` that every process on the host shares —
one token and one request budget per app key, however many steps run. With ``OBSERVER_STATE_DB_URL``
set they live in that PostgreSQL database instead, shared by every host (observer_resources/shared/stores.py).

Secrets: give ``app_key`` / ``app_secret`` as ``EnvVar("KIS_APP_KEY")`` / ``EnvVar("KIS_APP_SECRET")``.
Dagster then keeps only the variable *names* in definitions, run config and the UI, and resolves
the values in the process that runs the step. The resource's repr never shows them either.
:func:`kis_resource_from_env` builds it that way (or, with no key set, for the local exchange and
its demo credentials, which are not secrets).

Token issuance, approval keys, EGW00201 answers and the limiter's waits go to the system event log under
``$OBSERVER_DATA_DIR/system/events/`` (never a token or key), so the day's story shows them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from observer_resources import settings
from observer_resources.events import EventLog
from observer_resources.kis import protocol as p
from observer_resources.kis.config import (
    DEMO_APP_KEY,
    DEMO_APP_SECRET,
    LOCAL_REST_URL,
    LOCAL_WS_URL,
    KisConfig,
    is_local_exchange,
    kis_env,
)
from observer_resources.kis.errors import KisConfigError
from observer_resources.shared.rate_limit import DEFAULT_RATE_PER_S, BackgroundLimiter, SharedRateLimiter
from observer_resources.shared.stores import RATE_LIMIT_FILE, open_permit_store, open_token_provider, open_token_store  # noqa: F401
from observer_resources.shared.token_store import TOKEN_STORE_FILE  # noqa: F401 - re-exported (Track B uses it)
from observer_resources.shared.tokens import SharedTokenProvider
from observer_resources.storage import dirs

if TYPE_CHECKING:
    from observer_resources.kis.rest import KisRestClient

SECRET_FIELDS = ("app_key", "app_secret")


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The host's local directory for appends (system events, the token cache): ``dirs.local_dir``'s rule."""
    return dirs.local_dir(environ)


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``<local dir>/state``: the token cache and the rate-limit bucket need a local file (see default_data_dir)."""
    return default_data_dir(environ) / "state"


class KisResource(dg.ConfigurableResource):
    """One KIS app key: its config, the shared token provider and rate limiter, a REST client."""

    app_key: str = Field(description="KIS app key. Pass EnvVar('KIS_APP_KEY'), never a literal.")
    app_secret: str = Field(description="KIS app secret. Pass EnvVar('KIS_APP_SECRET'), never a literal.")
    env: str = Field(default="real", description="'real' or 'paper' (separate keys, hosts and limits)")
    rest_url: str = Field(default=LOCAL_REST_URL, description="REST base URL (default: the local exchange)")
    ws_url: str = Field(default=LOCAL_WS_URL, description="WebSocket URL (default: the local exchange)")
    state_dir: str | None = Field(
        default=None, description="token store and rate-limit files; default $OBSERVER_DATA_DIR/state"
    )
    rate_per_s: float | None = Field(
        default=None,
        description="REST budget per second for this key, shared by all processes; default 18 real / 1.8 paper",
    )
    refresh_margin_s: float = Field(default=3600.0, description="refresh the token when less than this is left")

    _tokens: SharedTokenProvider | None = PrivateAttr(default=None)
    _limiter: SharedRateLimiter | None = PrivateAttr(default=None)
    _events: EventLog | None = PrivateAttr(default=None)

    # --- never show the secrets ------------------------------------------------------------------
    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, ("***" if name in SECRET_FIELDS else value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" if v != "***" else f"{k}=***" for k, v in self.__repr_args__())
        return f"{type(self).__name__}({args})"

    def __str__(self) -> str:
        return self.__repr__()

    # --- building blocks ---------------------------------------------------------------------------
    def kis_config(self) -> KisConfig:
        return KisConfig(
            self.app_key,
            self.app_secret,
            self.env,  # type: ignore[arg-type]  # validated by KisConfig
            self.rest_url,
            self.ws_url,
            local=is_local_exchange(self.rest_url),
        )

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    def effective_rate_per_s(self) -> float:
        if self.rate_per_s is not None:
            return self.rate_per_s
        if self.env not in DEFAULT_RATE_PER_S:
            raise KisConfigError(f"env must be 'real' or 'paper', got {self.env!r}")
        return DEFAULT_RATE_PER_S[self.env]

    def event_log(self) -> EventLog:
        """The system event log of ``$OBSERVER_DATA_DIR`` (token, approval-key and rate-limit events)."""
        if self._events is None:
            self._events = EventLog(default_data_dir(), source="kis")
        return self._events

    def token_provider(self) -> SharedTokenProvider:
        """This process's provider over the shared token store (built once per resource instance)."""
        if self._tokens is None:
            self._tokens = open_token_provider(
                self.kis_config(),
                self.resolved_state_dir(),
                events=self.event_log(),
                refresh_margin=timedelta(seconds=self.refresh_margin_s),
            )
        return self._tokens

    def rate_limiter(self) -> SharedRateLimiter:
        """This process's handle on the key's shared request budget."""
        if self._limiter is None:
            config = self.kis_config()
            self._limiter = SharedRateLimiter(
                config.key_id,
                self.effective_rate_per_s(),
                store=open_permit_store(self.resolved_state_dir(), events=self.event_log()),
            )
        return self._limiter

    def request_budget(self, *, background: bool = False) -> SharedRateLimiter | BackgroundLimiter:
        """The key's shared budget, or the same budget at background priority (it yields to live collectors)."""
        return BackgroundLimiter(self.rate_limiter()) if background else self.rate_limiter()

    @asynccontextmanager
    async def rest_client(self, *, background: bool = False) -> AsyncIterator[KisRestClient]:
        """A REST client using the shared token and budget; closed on exit. ``background`` work (history, the
        day's minute bars) takes its permits only when no live collector is queued for them."""
        from observer_resources.kis.rest import KisRestClient  # the client module is heavy; import on use

        async with KisRestClient(
            self.kis_config(),
            self.token_provider(),
            self.request_budget(background=background),
            events=self.event_log(),
        ) as client:
            yield client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._tokens is not None:
            self._tokens.close()
            self._tokens = None
        if self._limiter is not None:
            self._limiter.close()
            self._limiter = None
        self._events = None


def kis_resource_from_env(environ: Mapping[str, str] | None = None) -> KisResource:
    """The KIS resource for this deployment.

    With ``KIS_APP_KEY`` set: key and secret as ``EnvVar`` (resolved at run time, never stored),
    ``KIS_ENV`` (real|paper) and the host of that environment unless ``KIS_REST_URL`` /
    ``KIS_WS_URL`` say otherwise. With no key: the local exchange and its demo credentials.
    """
    mode = kis_env(environ)
    key, secret = settings.is_set("KIS_APP_KEY", environ), settings.is_set("KIS_APP_SECRET", environ)
    if key != secret:
        raise KisConfigError("set both KIS_APP_KEY and KIS_APP_SECRET, or neither (local exchange)")
    common: dict[str, Any] = {"env": mode}
    rest, ws = settings.get("KIS_REST_URL", environ), settings.get("KIS_WS_URL", environ)
    if not key:
        return KisResource(
            app_key=DEMO_APP_KEY,
            app_secret=DEMO_APP_SECRET,
            rest_url=rest or LOCAL_REST_URL,
            ws_url=ws or LOCAL_WS_URL,
            **common,
        )
    real = mode == "real"
    return KisResource(
        app_key=dg.EnvVar("KIS_APP_KEY"),
        app_secret=dg.EnvVar("KIS_APP_SECRET"),
        rest_url=rest or (p.REAL_REST_URL if real else p.PAPER_REST_URL),
        ws_url=ws or (p.REAL_WS_URL if real else p.PAPER_WS_URL),
        **common,
    )


# =====================================================================================================================
# Several app keys (docs/multi-key.md). Each key is its own KIS account: its own token, request budget (≈ 18/s), WebSocket
# session and 41 registrations. Track A shards its universe across the keys; Track B gives each key 41 slots.
# =====================================================================================================================

from observer_resources.kis.config import configs_from_env  # noqa: E402 - kept with the section that uses it

#: the fields that differ between a pool's members (every other field is copied from the pool)
_KEY_FIELDS = ("app_key", "app_secret")


class KisKey(dg.Config):
    """One more app key. Give both as ``EnvVar("KIS_APP_KEY_2")`` / ``EnvVar("KIS_APP_SECRET_2")`` …, never literals
    (demo accounts of the local exchange are the exception: they are not secrets)."""

    app_key: str = Field(description="KIS app key. Pass EnvVar('KIS_APP_KEY_<n>'), never a literal.")
    app_secret: str = Field(description="KIS app secret. Pass EnvVar('KIS_APP_SECRET_<n>'), never a literal.")

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, ("***" if name in SECRET_FIELDS else value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(app_key=***, app_secret=***)"

    def __str__(self) -> str:
        return self.__repr__()


class KisPool(KisResource):
    """Several app keys. The resource's own ``app_key``/``app_secret`` are the first key (what single-key users such
    as the universe asset use); ``more_keys`` are the others. :meth:`members` gives one :class:`KisResource` per key,
    all sharing this resource's hosts, mode, state directory and rate settings, each with its own token and budget."""

    more_keys: list[KisKey] = Field(
        default_factory=list, description="app keys beyond the first (KIS_APP_KEY_2/KIS_APP_SECRET_2 …), as EnvVar"
    )

    _members: list[KisResource] | None = PrivateAttr(default=None)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}=***" if k in SECRET_FIELDS else f"{k}={v!r}" for k, v in self.__repr_args__() if k != "more_keys"
        )
        return f"{type(self).__name__}({args}, more_keys=[{len(self.more_keys)} keys])"

    def members(self) -> list[KisResource]:
        """One resource per key, the first being this one; built once per resource instance."""
        if self._members is None:
            shared = {n: getattr(self, n) for n in KisResource.model_fields if n not in _KEY_FIELDS}
            self._members = [self] + [
                KisResource(app_key=k.app_key, app_secret=k.app_secret, **shared) for k in self.more_keys
            ]
            ids = [m.kis_config().key_id for m in self._members]
            if len(set(ids)) != len(ids):
                raise KisConfigError("the same app key is configured twice")
        return self._members

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for m in (self._members or [])[1:]:
            m.teardown_after_execution(context)
        self._members = None
        super().teardown_after_execution(context)


def kis_members(kis: KisResource) -> list[KisResource]:
    """The keys a resource holds, first key first: ``[kis]`` for a single-key resource."""
    return kis.members() if isinstance(kis, KisPool) else [kis]


def kis_pool_from_env(environ: Mapping[str, str] | None = None) -> KisResource:
    """The KIS resource with every configured key: ``KIS_APP_KEY``/``KIS_APP_SECRET`` then ``KIS_APP_KEY_2``/
    ``KIS_APP_SECRET_2`` … (as ``EnvVar``: names only in definitions, values resolved in the step's process), or with
    no key ``OBSERVER_DEMO_KEYS`` demo accounts on the local exchange. One key gives exactly
    :func:`kis_resource_from_env`'s resource; several give a :class:`KisPool` with the same settings."""
    base = kis_resource_from_env(environ)
    configs = configs_from_env(environ)  # validates the numbering, half-set pairs and duplicates
    if len(configs) == 1:
        return base
    if settings.is_set("KIS_APP_KEY", environ):
        more = [
            KisKey(app_key=dg.EnvVar(f"KIS_APP_KEY_{i}"), app_secret=dg.EnvVar(f"KIS_APP_SECRET_{i}"))
            for i in range(2, len(configs) + 1)
        ]
    else:  # demo accounts of the local exchange: not secrets
        more = [KisKey(app_key=c.app_key, app_secret=c.app_secret) for c in configs[1:]]
    fields = {n: getattr(base, n) for n in type(base).model_fields}
    return KisPool(**fields, more_keys=more)


@asynccontextmanager
async def kis_rest_clients(
    kis: KisResource, *, timeout: float = 10.0, background: bool = False
) -> AsyncIterator[list[KisRestClient]]:
    """One REST client per key of ``kis`` (first key first), each with its key's shared token and budget, over one
    HTTP connection pool: building an httpx client costs 25-50 ms of CPU (its TLS context), which N keys starting a
    Track A slot together would otherwise pay N times in a row. Closed on exit."""
    import httpx

    from observer_resources.kis.rest import KisRestClient  # the client module is heavy; import on use

    async with httpx.AsyncClient(timeout=timeout) as http:
        clients = [
            KisRestClient(
                m.kis_config(),
                m.token_provider(),
                m.request_budget(background=background),
                http=http,
                timeout=timeout,
                events=m.event_log(),
            )
            for m in kis_members(kis)
        ]
        try:
            yield clients
        finally:
            for c in clients:
                await c.aclose()
