"""Where to reach KIS and with which key, from the environment (declared in observer_resources/settings.py).

``KIS_APP_KEY``, ``KIS_APP_SECRET``, ``KIS_ENV`` (real|paper), ``KIS_REST_URL``, ``KIS_WS_URL``.
With no key set, Observer talks to the local exchange (``observer-sim``) with demo credentials,
which are not secrets: the local exchange accepts any key of KIS's shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

from observer_resources import settings
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisConfigError

Env = Literal["real", "paper"]

LOCAL_REST_URL = "http://127.0.0.1:18700"
LOCAL_WS_URL = "ws://127.0.0.1:18701"
DEMO_APP_KEY = "PSOBSERVERDEMOKEY0000000000000000001"  # 36 characters, not a secret
DEMO_APP_SECRET = ("OBSERVERDEMOSECRET" * 10)[: p.APP_SECRET_LEN]


@dataclass(frozen=True)
class KisConfig:
    app_key: str = field(repr=False)
    app_secret: str = field(repr=False)
    env: Env = "real"
    rest_url: str = LOCAL_REST_URL
    ws_url: str = LOCAL_WS_URL
    local: bool = True  # True when talking to the embedded local exchange

    def __post_init__(self) -> None:
        if self.env not in ("real", "paper"):
            raise KisConfigError(f"KIS_ENV must be 'real' or 'paper', got {self.env!r}")
        if len(self.app_key) != p.APP_KEY_LEN:
            raise KisConfigError(f"KIS_APP_KEY must be {p.APP_KEY_LEN} characters (got {len(self.app_key)})")
        if len(self.app_secret) != p.APP_SECRET_LEN:
            raise KisConfigError(f"KIS_APP_SECRET must be {p.APP_SECRET_LEN} characters (got {len(self.app_secret)})")
        for name, url, schemes in (
            ("KIS_REST_URL", self.rest_url, ("http", "https")),
            ("KIS_WS_URL", self.ws_url, ("ws", "wss")),
        ):
            u = urlparse(url)
            if u.scheme not in schemes or not u.netloc or not u.hostname:
                raise KisConfigError(f"{name} must be a {'/'.join(schemes)} URL with a host, got {url!r}")
            try:  # urlparse checks the port only when asked: a typo would surface later, as a connection error
                port = u.port
            except ValueError as e:
                raise KisConfigError(f"{name} has an invalid port ({e}): {url!r}") from None
            if port == 0:
                raise KisConfigError(f"{name} port must be 1..65535, got 0: {url!r}")

    @property
    def key_id(self) -> str:
        """A stable, non-secret identifier of (app key, host) for stores, logs and metrics."""
        digest = hashlib.sha256(f"{self.app_key}|{self.rest_url}".encode()).hexdigest()
        return f"key-{digest[:12]}"

    def __repr__(self) -> str:  # never show the key or the secret
        return f"KisConfig(key_id={self.key_id!r}, env={self.env!r}, rest_url={self.rest_url!r}, ws_url={self.ws_url!r}, local={self.local})"


#: the hosts of KIS itself (real and paper); a REST URL on any other host is a local exchange (on loopback, a
#: compose service such as ``sim``, a replay server), which also serves the master files KIS keeps on a host of its own
KIS_HOSTS = frozenset(urlparse(u).hostname for u in (p.REAL_REST_URL, p.PAPER_REST_URL))


def is_local_exchange(rest_url: str) -> bool:
    """Whether ``rest_url`` is a local exchange rather than KIS (docs/deploy.md: the Docker demo's ``sim``)."""
    return urlparse(rest_url).hostname not in KIS_HOSTS


def kis_env(environ: Mapping[str, str] | None = None) -> Env:
    """``KIS_ENV``, refused with KisConfigError unless real or paper."""
    return settings.get("KIS_ENV", environ, error=KisConfigError)


def from_env(environ: Mapping[str, str] | None = None) -> KisConfig:
    key, secret = settings.get("KIS_APP_KEY", environ) or "", settings.get("KIS_APP_SECRET", environ) or ""
    mode = kis_env(environ)
    if bool(key) != bool(secret):
        raise KisConfigError("set both KIS_APP_KEY and KIS_APP_SECRET, or neither (local exchange)")
    rest, ws = settings.get("KIS_REST_URL", environ), settings.get("KIS_WS_URL", environ)
    if not key:
        return KisConfig(DEMO_APP_KEY, DEMO_APP_SECRET, mode, rest or LOCAL_REST_URL, ws or LOCAL_WS_URL, local=True)
    real = mode == "real"
    rest = rest or (p.REAL_REST_URL if real else p.PAPER_REST_URL)
    ws = ws or (p.REAL_WS_URL if real else p.PAPER_WS_URL)
    return KisConfig(key, secret, mode, rest, ws, local=is_local_exchange(rest))


def demo_config(i: int, environ: Mapping[str, str] | None = None) -> KisConfig:
    """Demo account ``i`` on the local exchange (index 0 is the default demo key)."""
    if i == 0:
        key, secret = DEMO_APP_KEY, DEMO_APP_SECRET
    else:
        digest = hashlib.sha256(f"observer-demo:{i}".encode()).hexdigest()
        key = f"PSOBSERVERDEMOKEX{i:019d}"
        secret = (digest * 3)[: p.APP_SECRET_LEN]
    return KisConfig(
        key,
        secret,
        kis_env(environ),
        settings.get("KIS_REST_URL", environ) or LOCAL_REST_URL,
        settings.get("KIS_WS_URL", environ) or LOCAL_WS_URL,
        local=True,
    )


def configs_from_env(environ: Mapping[str, str] | None = None) -> list[KisConfig]:
    """Every app key configured: ``KIS_APP_KEY``/``KIS_APP_SECRET`` then ``KIS_APP_KEY_2``/``KIS_APP_SECRET_2`` … (no
    gaps in the numbering; a half-set pair is an error). With no key, ``OBSERVER_DEMO_KEYS`` (default 1) demo
    accounts on the local exchange. Each key is its own KIS account: its own token, request budget, WebSocket
    session and 41 registrations."""
    first = from_env(environ)
    if first.local and not settings.is_set("KIS_APP_KEY", environ):
        n = settings.get("OBSERVER_DEMO_KEYS", environ, error=KisConfigError)
        return [first] + [demo_config(i, environ) for i in range(1, n)]
    out = [first]
    i = 2
    while settings.is_set(f"KIS_APP_KEY_{i}", environ) or settings.is_set(f"KIS_APP_SECRET_{i}", environ):
        key = settings.get(f"KIS_APP_KEY_{i}", environ) or ""
        secret = settings.get(f"KIS_APP_SECRET_{i}", environ) or ""
        if not key or not secret:
            raise KisConfigError(f"set both KIS_APP_KEY_{i} and KIS_APP_SECRET_{i}")
        out.append(KisConfig(key, secret, first.env, first.rest_url, first.ws_url, first.local))
        i += 1
    if len({c.app_key for c in out}) != len(out):
        raise KisConfigError("the same app key is configured twice")
    return out
