"""Dagster resources for KIS (dagster-notes.md §4.1, §5.2).

Dagster builds a resource instance in every step process, so nothing here fetches a token per
process: :class:`KisResource` hands out a :class:`SharedTokenProvider` and a
:class:`SharedRateLimiter` over files in ``state_dir`` that every process on the host shares —
one token and one request budget per app key, however many steps run.

Secrets: give ``app_key`` / ``app_secret`` as ``EnvVar("KIS_APP_KEY")`` / ``EnvVar("KIS_APP_SECRET")``.
Dagster then keeps only the variable *names* in definitions, run config and the UI, and resolves
the values in the process that runs the step. The resource's repr never shows them either.
:func:`kis_resource_from_env` builds it that way (or, with no key set, for the local exchange and
its demo credentials, which are not secrets).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field, PrivateAttr

from observer_resources.kis import protocol as p
from observer_resources.kis.config import DEMO_APP_KEY, DEMO_APP_SECRET, LOCAL_REST_URL, LOCAL_WS_URL, KisConfig
from observer_resources.kis.errors import KisConfigError
from observer_resources.shared.rate_limit import DEFAULT_RATE_PER_S, SharedRateLimiter
from observer_resources.shared.token_store import TOKEN_STORE_FILE, SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

if TYPE_CHECKING:
    from observer_resources.kis.rest import KisRestClient

SECRET_FIELDS = ("app_key", "app_secret")
RATE_LIMIT_FILE = "ratelimit.sqlite"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$OBSERVER_DATA_DIR/state`` (``OBSERVER_DATA_DIR`` defaults to ``./data``)."""
    env = os.environ if environ is None else environ
    return Path(env.get("OBSERVER_DATA_DIR") or "./data") / "state"


class KisResource(dg.ConfigurableResource):
    """One KIS app key: its config, the shared token provider and rate limiter, a REST client."""

    app_key: str = Field(description="KIS app key. Pass EnvVar('KIS_APP_KEY'), never a literal.")
    app_secret: str = Field(description="KIS app secret. Pass EnvVar('KIS_APP_SECRET'), never a literal.")
    env: str = Field(default="real", description="'real' or 'paper' (separate keys, hosts and limits)")
    rest_url: str = Field(default=LOCAL_REST_URL, description="REST base URL (default: the local exchange)")
    ws_url: str = Field(default=LOCAL_WS_URL, description="WebSocket URL (default: the local exchange)")
    state_dir: Optional[str] = Field(
        default=None, description="token store and rate-limit files; default $OBSERVER_DATA_DIR/state"
    )
    rate_per_s: Optional[float] = Field(
        default=None, description="REST budget per second for this key, shared by all processes; default 18 real / 1.8 paper"
    )
    refresh_margin_s: float = Field(default=3600.0, description="refresh the token when less than this is left")

    _tokens: Optional[SharedTokenProvider] = PrivateAttr(default=None)
    _limiter: Optional[SharedRateLimiter] = PrivateAttr(default=None)

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
        host = urlparse(self.rest_url).hostname
        return KisConfig(
            self.app_key, self.app_secret, self.env,  # type: ignore[arg-type]  # validated by KisConfig
            self.rest_url, self.ws_url, local=host in ("127.0.0.1", "localhost", "::1"),
        )

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    def effective_rate_per_s(self) -> float:
        if self.rate_per_s is not None:
            return self.rate_per_s
        if self.env not in DEFAULT_RATE_PER_S:
            raise KisConfigError(f"env must be 'real' or 'paper', got {self.env!r}")
        return DEFAULT_RATE_PER_S[self.env]

    def token_provider(self) -> SharedTokenProvider:
        """This process's provider over the shared token store (built once per resource instance)."""
        if self._tokens is None:
            store = SqliteTokenStore(self.resolved_state_dir() / TOKEN_STORE_FILE)
            self._tokens = SharedTokenProvider(
                self.kis_config(), store, refresh_margin=timedelta(seconds=self.refresh_margin_s)
            )
        return self._tokens

    def rate_limiter(self) -> SharedRateLimiter:
        """This process's handle on the key's shared request budget."""
        if self._limiter is None:
            config = self.kis_config()
            self._limiter = SharedRateLimiter(
                config.key_id, self.effective_rate_per_s(), self.resolved_state_dir() / RATE_LIMIT_FILE
            )
        return self._limiter

    @asynccontextmanager
    async def rest_client(self) -> AsyncIterator[KisRestClient]:
        """A REST client using the shared token and budget; closed on exit."""
        from observer_resources.kis.rest import KisRestClient  # the client module is heavy; import on use

        async with KisRestClient(self.kis_config(), self.token_provider(), self.rate_limiter()) as client:
            yield client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._tokens is not None:
            self._tokens.close()
            self._tokens = None
        if self._limiter is not None:
            self._limiter.close()
            self._limiter = None


def kis_resource_from_env(environ: Mapping[str, str] | None = None) -> KisResource:
    """The KIS resource for this deployment.

    With ``KIS_APP_KEY`` set: key and secret as ``EnvVar`` (resolved at run time, never stored),
    ``KIS_ENV`` (real|paper) and the host of that environment unless ``KIS_REST_URL`` /
    ``KIS_WS_URL`` say otherwise. With no key: the local exchange and its demo credentials.
    """
    env = os.environ if environ is None else environ
    key, secret = env.get("KIS_APP_KEY", ""), env.get("KIS_APP_SECRET", "")
    mode = (env.get("KIS_ENV") or "real").strip().lower()
    if mode not in ("real", "paper"):
        raise KisConfigError(f"KIS_ENV must be 'real' or 'paper', got {mode!r}")
    if bool(key) != bool(secret):
        raise KisConfigError("set both KIS_APP_KEY and KIS_APP_SECRET, or neither (local exchange)")
    common: dict[str, Any] = {"env": mode}
    if not key:
        return KisResource(
            app_key=DEMO_APP_KEY, app_secret=DEMO_APP_SECRET,
            rest_url=env.get("KIS_REST_URL") or LOCAL_REST_URL, ws_url=env.get("KIS_WS_URL") or LOCAL_WS_URL,
            **common,
        )
    real = mode == "real"
    return KisResource(
        app_key=dg.EnvVar("KIS_APP_KEY"), app_secret=dg.EnvVar("KIS_APP_SECRET"),
        rest_url=env.get("KIS_REST_URL") or (p.REAL_REST_URL if real else p.PAPER_REST_URL),
        ws_url=env.get("KIS_WS_URL") or (p.REAL_WS_URL if real else p.PAPER_WS_URL),
        **common,
    )
