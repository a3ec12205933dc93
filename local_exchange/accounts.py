"""App keys, access tokens, approval keys and the per-key REST rate limit of the local exchange.

KIS's token rules (docs/kis-protocol.md §2, §5.1) are what clients get wrong, so they are modelled
exactly and by the *simulated* clock: 24 h lifetime, the same token again within 6 h of the last
issuance, at most one issuance a minute per key (403 EGW00133), revocation. The REST rate limit is
the one thing measured in *real* monotonic time, because it protects (and tests) wall-clock pacing.

Nothing here logs or reprs a key, secret or token; stats and logs use :func:`appkey_id`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from observer_resources.kis import protocol as p

Mode = Literal["real", "paper"]

_KEY_RE = re.compile(r"^[A-Za-z0-9]{%d}$" % p.APP_KEY_LEN)
_SECRET_RE = re.compile(r"^[A-Za-z0-9+/=]{%d}$" % p.APP_SECRET_LEN)

# Credential-error codes of the token endpoints (body shape error_code / error_description, HTTP 403).
# EGW00105 and EGW00133 are documented; the others follow KIS's EGW001xx numbering (the sim's choice,
# listed in docs/local-exchange.md).
EGW_BAD_REQUEST = "EGW00101"
EGW_KEY_MISSING = "EGW00102"
EGW_BAD_KEY = "EGW00103"
EGW_SECRET_MISSING = "EGW00104"
CREDENTIAL_MESSAGES: dict[str, str] = {
    EGW_BAD_REQUEST: "유효하지 않은 요청입니다.",
    EGW_KEY_MISSING: "AppKey는 필수입니다.",
    EGW_BAD_KEY: "유효하지 않은 AppKey입니다.",
    EGW_SECRET_MISSING: "AppSecret는 필수입니다.",
    p.EGW_BAD_SECRET: p.ERROR_MESSAGES[p.EGW_BAD_SECRET],
    p.EGW_TOKEN_TOO_OFTEN: p.ERROR_MESSAGES[p.EGW_TOKEN_TOO_OFTEN],
}


@functools.lru_cache(maxsize=4096)
def appkey_id(appkey: str) -> str:
    """A stable non-secret id of an app key, used in stats, fault logs and server logs."""
    return "app-" + hashlib.sha256(appkey.encode("utf-8", "replace")).hexdigest()[:12]


class CredentialError(Exception):
    """A token/approval endpoint refusal: HTTP 403 with ``error_code`` / ``error_description``."""

    def __init__(self, code: str, http_status: int = 403):
        self.code = code
        self.description = CREDENTIAL_MESSAGES.get(code) or p.ERROR_MESSAGES.get(code, code)
        self.http_status = http_status
        super().__init__(f"{code} {self.description}")


class TokenError(Exception):
    """A ``/uapi`` call with a bad token: EGW00121 (unknown/revoked) or EGW00123 (expired)."""

    def __init__(self, code: str):
        self.code = code
        super().__init__(f"{code} {p.ERROR_MESSAGES[code]}")


@dataclass
class Account:
    appkey: str = field(repr=False)
    secret: str | None = field(repr=False)  # None until the first call binds it (open registry)
    mode: Mode

    @property
    def id(self) -> str:
        return appkey_id(self.appkey)


@dataclass
class Token:
    value: str = field(repr=False)
    appkey: str = field(repr=False)
    issued_at: datetime  # sim clock, KST
    expires_at: datetime  # sim clock, KST
    revoked: bool = False

    def expired_str(self) -> str:
        return self.expires_at.strftime(p.TOKEN_EXPIRED_FMT)


@dataclass(frozen=True)
class AccountSpec:
    appkey: str = field(repr=False)
    appsecret: str = field(repr=False)
    mode: Mode | None = None


def load_accounts_file(path: str | Path) -> list[AccountSpec]:
    """Read ``--accounts FILE``: a JSON list of {appkey, appsecret, mode}. Clear errors, no secrets in them."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read accounts file {path}: {type(exc).__name__}") from None
    if not isinstance(raw, list):
        raise ValueError(f"accounts file {path} must hold a JSON list of objects")
    specs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"accounts file {path}: entry {i} is not an object")
        key, secret, mode = item.get("appkey"), item.get("appsecret"), item.get("mode")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"accounts file {path}: entry {i} appkey must be {p.APP_KEY_LEN} letters/digits")
        if not isinstance(secret, str) or not _SECRET_RE.match(secret):
            raise ValueError(f"accounts file {path}: entry {i} appsecret must be {p.APP_SECRET_LEN} base64 characters")
        if mode not in (None, "real", "paper"):
            raise ValueError(f"accounts file {path}: entry {i} mode must be 'real' or 'paper'")
        specs.append(AccountSpec(key, secret, mode))
    return specs


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds of real monotonic time (refusals do not count)."""

    def __init__(self, limit: float, window: float = 1.0):
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self._events and self._events[0] <= now - self.window:
            self._events.popleft()
        if len(self._events) >= self.limit:
            return False
        self._events.append(now)
        return True


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class AccountBook:
    """Every app key the exchange knows, with its tokens, approval keys and rate window."""

    def __init__(
        self,
        *,
        mode: Mode = "real",
        accounts: Iterable[AccountSpec] | None = None,
        rate_real: float = 20.0,
        rate_paper: float = 2.0,
    ):
        self.default_mode: Mode = mode
        self.restricted = accounts is not None
        self.rates: dict[str, float] = {"real": rate_real, "paper": rate_paper}
        self._accounts: dict[str, Account] = {}
        for spec in accounts or ():
            self._accounts[spec.appkey] = Account(spec.appkey, spec.appsecret, spec.mode or mode)
        self._tokens: dict[str, Token] = {}  # value -> token
        self._current: dict[str, Token] = {}  # appkey -> last issued token
        self._last_issue: dict[str, datetime] = {}  # appkey -> sim time of the last successful tokenP
        self._approvals: dict[str, str] = {}  # approval key -> appkey
        self._windows: dict[str, SlidingWindow] = {}
        self._signing_key = secrets.token_bytes(32)

    # --- credentials ------------------------------------------------------------------------
    def authenticate(self, appkey: object, secret: object) -> Account:
        """The account for (appkey, secret), binding the secret on first use in the open registry."""
        if not isinstance(appkey, str) or not appkey:
            raise CredentialError(EGW_KEY_MISSING)
        if not isinstance(secret, str) or not secret:
            raise CredentialError(EGW_SECRET_MISSING)
        if not _KEY_RE.match(appkey):
            raise CredentialError(EGW_BAD_KEY)
        account = self._accounts.get(appkey)
        if account is None:
            if self.restricted:
                raise CredentialError(EGW_BAD_KEY)
            if not _SECRET_RE.match(secret):
                raise CredentialError(p.EGW_BAD_SECRET)
            account = self._accounts[appkey] = Account(appkey, secret, self.default_mode)
            return account
        if account.secret is None:
            account.secret = secret
        if not hmac.compare_digest(account.secret.encode(), secret.encode()):
            raise CredentialError(p.EGW_BAD_SECRET)
        return account

    def account(self, appkey: str) -> Account | None:
        return self._accounts.get(appkey)

    def accounts(self) -> list[Account]:
        return list(self._accounts.values())

    # --- access tokens ----------------------------------------------------------------------
    def issue_token(self, appkey: object, secret: object, now: datetime) -> tuple[Token, bool]:
        """(token, is_new). The same token within 6 h of the last issuance; one answer a minute per key."""
        account = self.authenticate(appkey, secret)
        key = account.appkey
        last = self._last_issue.get(key)
        if last is not None and last <= now < last + timedelta(seconds=p.TOKEN_MIN_INTERVAL_S):
            raise CredentialError(p.EGW_TOKEN_TOO_OFTEN)
        cur = self._current.get(key)
        if (
            cur is not None
            and not cur.revoked
            and now < cur.expires_at
            and cur.issued_at <= now < cur.issued_at + timedelta(seconds=p.TOKEN_SAME_WITHIN_S)
        ):
            self._last_issue[key] = now
            return cur, False
        token = Token(self._new_token_value(key, now), key, now, now + timedelta(seconds=p.TOKEN_LIFETIME_S))
        self._tokens[token.value] = token
        self._current[key] = token
        self._last_issue[key] = now
        return token, True

    def _new_token_value(self, appkey: str, now: datetime) -> str:
        """A JWT-shaped opaque string (clients never decode it; some log its length)."""
        header = _b64url(json.dumps({"typ": "JWT", "alg": "HS512"}).encode())
        claims = {
            "sub": "token",
            "aud": str(uuid.uuid4()),
            "prdt_cd": "",
            "iss": "unogw",
            "exp": int(now.timestamp()) + p.TOKEN_LIFETIME_S,
            "iat": int(now.timestamp()),
            "jti": appkey_id(appkey) + "-" + secrets.token_hex(8),
        }
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64url(hmac.new(self._signing_key, f"{header}.{body}".encode(), hashlib.sha512).digest())
        return f"{header}.{body}.{sig}"

    def revoke(self, appkey: object, secret: object, token_value: object) -> bool:
        """Invalidate a token of this key; True when one was revoked."""
        account = self.authenticate(appkey, secret)
        tok = self._tokens.get(token_value) if isinstance(token_value, str) else None
        if tok is None or tok.appkey != account.appkey or tok.revoked:
            return False
        tok.revoked = True
        return True

    def check_token(self, authorization: str | None, now: datetime) -> Token:
        """The live token named by an ``authorization: Bearer <token>`` header, or TokenError."""
        value = (authorization or "").strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        else:
            value = ""
        tok = self._tokens.get(value)
        if tok is None or tok.revoked:
            raise TokenError(p.EGW_INVALID_TOKEN)
        if now >= tok.expires_at:
            raise TokenError(p.EGW_EXPIRED)
        return tok

    def expire_tokens(self, now: datetime, appkey: str | None = None) -> int:
        """Fault ``token_expire_now``: every issued (matching) token expires at ``now``."""
        n = 0
        for tok in self._tokens.values():
            if (appkey is None or tok.appkey == appkey) and not tok.revoked and tok.expires_at > now:
                tok.expires_at = now
                n += 1
        return n

    # --- approval keys ----------------------------------------------------------------------
    def issue_approval(self, appkey: object, secret: object) -> str:
        account = self.authenticate(appkey, secret)
        key = str(uuid.uuid4())
        self._approvals[key] = account.appkey
        return key

    def approval_owner(self, approval_key: object) -> str | None:
        return self._approvals.get(approval_key) if isinstance(approval_key, str) else None

    # --- REST rate limit --------------------------------------------------------------------
    def rate_allow(self, appkey: str, now: float | None = None) -> bool:
        account = self._accounts.get(appkey)
        mode = account.mode if account else self.default_mode
        win = self._windows.get(appkey)
        if win is None or win.limit != self.rates[mode]:
            win = self._windows[appkey] = SlidingWindow(self.rates[mode])
        return win.allow(now)

    def mode_of(self, appkey: str) -> Mode:
        account = self._accounts.get(appkey)
        return account.mode if account else self.default_mode


def spec_list(items: Iterable[Mapping[str, str]]) -> list[AccountSpec]:
    """AccountSpecs from plain dicts (tests and embedding)."""
    return [AccountSpec(i["appkey"], i["appsecret"], i.get("mode")) for i in items]  # type: ignore[arg-type]


def demo_credentials(i: int) -> tuple[str, str]:
    """(app key, app secret) of KIS's shape for demo/test account ``i``; distinct per ``i``, not secrets.

    The local exchange accepts any such pair (first secret seen binds the key), so tests and demos
    get independent accounts — independent tokens, rate windows and WebSocket slots — by index.
    """
    if i < 0:
        raise ValueError("account index must be >= 0")
    key = f"PSDEMO{i:030d}"
    digest = b"".join(hashlib.sha256(f"observer-demo-secret:{i}:{k}".encode()).digest() for k in range(6))
    secret = base64.b64encode(digest).decode("ascii").replace("+", "A").replace("/", "B")[: p.APP_SECRET_LEN]
    return key, secret
