"""One access token per app key, shared by every process that uses the key (docs/collector-rules.md §6).

Dagster runs each step in its own process, and KIS issues at most one token a minute per app key
(a second issuance within the minute is refused with 403 EGW00133), so no process may simply ask
for its own token. :class:`SharedTokenProvider` reads the token from a shared :class:`TokenStore`;
when none is usable it takes the store's per-key lock, re-reads (another process may just have
issued), and only then issues — so exactly one process issues and the others read what it wrote.

Rules kept here:

* expiry comes from ``access_token_token_expired``; the token is refreshed when less than
  ``refresh_margin`` is left — but not within 6 h of its issuance, when KIS would hand back the same
  token (docs/kis-protocol.md §2.1 "Access token") — and at once when expired. A refresh ahead of expiry never makes
  callers wait: if KIS refuses or fails, the still-valid token is used and the refresh retried later;
* ``refresh(rejected)`` (after EGW00123/EGW00121) issues only if the store still holds the rejected
  token; otherwise the newer stored one is returned;
* issuances are at least ``too_soon_wait`` (60 s) apart, shared through the store's ``not_before``;
  on EGW00133 every process waits 60, 120, 240 s (bounded by ``max_issue_attempts``), logged;
* bad credentials raise at once, never retried; network errors are retried after 1 s, then 2 s;
* the lock is held for one HTTP call at most, never across a sleep.

Events go to ``logging.getLogger("observer.kis.token")`` without the token; counters are on
``provider.counters``. Given an :class:`~observer_resources.events.EventLog`, the provider also records
its story in the day's system events (docs/collector-rules.md §13, "Tokens"), never a token or key:

* ``token_issued`` / ``token_refreshed`` — this process took up an access token (``reason``, ``expires_at``,
  ``issued_at``; ``issued_by`` ``this_process`` when it asked KIS, ``shared_store`` when another process had);
  ``token_refreshed`` when it replaced one (expired, ahead of expiry, rejected by KIS);
* ``token_issue_refused`` — KIS answered EGW00133 and the provider waits (``retry_in_seconds``);
* ``token_refresh_deferred`` — a refresh ahead of expiry could not happen now; the current token stays;
* ``token_issue_failed`` — issuance gave up (``error``, ``code``, ``message``);
* ``approval_key_issued`` / ``approval_key_failed`` — the WebSocket approval key, likewise.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from observer_resources import clock
from observer_resources.clock import KST
from observer_resources.events import EventLog
from observer_resources.kis import protocol as p
from observer_resources.kis.auth import issue_access_token, issue_approval_key
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import BadCredentialsError, KisError, TokenIssueTooSoonError, TransientError
from observer_resources.shared.token_store import TokenLock, TokenLockTimeout, TokenRecord, TokenStore

log = logging.getLogger("observer.kis.token")

T = TypeVar("T")

SAME_TOKEN_WINDOW = timedelta(seconds=p.TOKEN_SAME_WITHIN_S)
APPROVAL_KEY_LIFETIME = timedelta(hours=24)  # not documented; practitioners' estimate (docs/kis-protocol.md §2.3)


def _now_kst() -> datetime:
    return clock.now()


@dataclass
class TokenCounters:
    """What one provider did. ``issued`` counts successful issuances (``refreshed`` those that
    replaced a stored token); ``reused`` tokens taken from the store that another process (or an
    earlier run) issued; ``waits`` pauses for another process's lock or for KIS's issuance limit."""

    issued: int = 0
    refreshed: int = 0
    reused: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    too_soon: int = 0  # EGW00133 answers received
    failures: int = 0  # issuance attempts that ended in an exception
    approval_keys: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wait_seconds"] = round(self.wait_seconds, 3)
        return d


class SharedTokenProvider:
    """``TokenProvider`` (observer_resources.kis.ports) over a shared :class:`TokenStore`."""

    def __init__(
        self,
        config: KisConfig,
        store: TokenStore,
        *,
        refresh_margin: timedelta = timedelta(hours=1),
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _now_kst,
        too_soon_wait: timedelta = timedelta(seconds=p.TOKEN_MIN_INTERVAL_S),
        max_issue_attempts: int = 4,
        transient_delays: Sequence[float] = (1.0, 2.0),
        lock_timeout: float = 120.0,
        http_timeout: float = 10.0,
        events: EventLog | None = None,
    ) -> None:
        if refresh_margin < timedelta(0):
            raise ValueError("refresh_margin must not be negative")
        if too_soon_wait < timedelta(0):
            raise ValueError("too_soon_wait must not be negative")
        if max_issue_attempts < 1:
            raise ValueError("max_issue_attempts must be at least 1")
        self.config = config
        self.store = store
        self.refresh_margin = refresh_margin
        self.too_soon_wait = too_soon_wait
        self.max_issue_attempts = max_issue_attempts
        self.transient_delays = tuple(transient_delays)
        self.lock_timeout = lock_timeout
        self.http_timeout = http_timeout
        self._http = http
        self._clock = clock
        self.events = events
        self._max_pause = too_soon_wait.total_seconds() * 2 ** (
            max_issue_attempts - 1
        )  # a clock step cannot stall us longer
        self.counters = TokenCounters()
        self._cached: TokenRecord | None = None
        self._next_check: datetime | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="token-store")
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"SharedTokenProvider(key_id={self.config.key_id!r}, store={self.store!r})"

    @property
    def key_id(self) -> str:
        return self.config.key_id

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    # --- TokenProvider ------------------------------------------------------------------------------

    async def access_token(self) -> str:
        now = self._clock()
        rec = self._cached
        if rec is not None and self._next_check is not None and now < self._next_check and now < rec.expires_at:
            return rec.value
        async with self._local_lock():
            now = self._clock()
            rec = self._cached
            if rec is not None and self._next_check is not None and now < self._next_check and now < rec.expires_at:
                return rec.value
            stored = await self._run(self.store.get, self.key_id, "access")
            if stored is not None and stored.expires_at > now and self._refresh_due(stored) > now:
                if self._adopt(stored, from_store=True):
                    self._token_event("token_issued", stored, "valid in the shared store", "shared_store")
                return stored.value
            if stored is not None and stored.expires_at > now:
                # Refresh ahead of expiry: the stored token still works, so never make callers wait
                # minutes for KIS's issuance limit — try once, else keep it and try again later.
                try:
                    fresh = await self._obtain(stale=stored.value, reason="ahead of expiry", can_wait=False)
                except KisError as exc:
                    log.warning(
                        "token refresh ahead of expiry failed key_id=%s (%s); the current token stays in use until %s",
                        self.key_id,
                        type(exc).__name__,
                        stored.expires_at.isoformat(),
                    )
                    self._event(
                        "token_refresh_deferred",
                        reason="ahead of expiry",
                        current_expires_at=stored.expires_at,
                        **_error_fields(exc),
                    )
                    fresh = None
                except Exception as exc:
                    self._event("token_issue_failed", reason="ahead of expiry", **_error_fields(exc))
                    raise
                else:
                    if fresh is None:
                        self._event(
                            "token_refresh_deferred",
                            reason="ahead of expiry",
                            current_expires_at=stored.expires_at,
                            error="no issuance possible now (KIS allows one a minute)",
                        )
                if fresh is None:
                    self._cached = stored
                    self._next_check = min(stored.expires_at, now + self.too_soon_wait)
                    return stored.value
            else:
                reason = "missing" if stored is None else "expired"
                fresh = await self._obtain_or_record(stale=stored.value if stored else None, reason=reason)
            self._adopt(fresh)
            return fresh.value

    async def refresh(self, rejected_token: str) -> str:
        async with self._local_lock():
            now = self._clock()
            rec = self._cached
            if rec is not None and rec.value != rejected_token and rec.expires_at > now:
                return rec.value  # another coroutine of this process already replaced it
            stored = await self._run(self.store.get, self.key_id, "access")
            if stored is not None and stored.value != rejected_token and stored.expires_at > now:
                if self._adopt(stored, from_store=True):
                    self._token_event("token_refreshed", stored, "rejected by KIS", "shared_store")
                return stored.value
            fresh = await self._obtain_or_record(stale=rejected_token, reason="rejected by KIS")
            self._adopt(fresh)
            return fresh.value

    async def approval_key(self) -> str:
        """A fresh approval key per call (one per WebSocket connection attempt), recorded in the store."""
        try:
            key = await self._with_http(lambda http: issue_approval_key(http, self.config))
        except Exception as exc:
            self.counters.failures += 1
            log.error("approval key request failed key_id=%s: %s", self.key_id, type(exc).__name__)
            self._event("approval_key_failed", **_error_fields(exc))
            raise
        now = self._clock()
        await self._run(self.store.put, self.key_id, TokenRecord("approval", key, now + APPROVAL_KEY_LIFETIME, now))
        self.counters.approval_keys += 1
        log.info("approval key issued key_id=%s", self.key_id)
        self._event(
            "approval_key_issued",
            issued_at=now,
            expires_at=now + APPROVAL_KEY_LIFETIME,
            expiry_basis="estimate: 24 h (KIS does not say)",
        )
        return key

    # --- internals ----------------------------------------------------------------------------------

    def _refresh_due(self, rec: TokenRecord) -> datetime:
        """When ``rec`` should be replaced: ``refresh_margin`` before expiry, but never within 6 h of
        its issuance (KIS would return the same token) — then at that 6-h mark, or at expiry."""
        due = rec.expires_at - self.refresh_margin
        same_until = rec.issued_at + SAME_TOKEN_WINDOW
        if due < same_until:
            due = min(same_until, rec.expires_at)
        return due

    def _adopt(self, rec: TokenRecord, *, from_store: bool = False) -> bool:
        """Use ``rec`` from now on; True when it came from the store and is new to this process."""
        new = from_store and (self._cached is None or self._cached.value != rec.value)
        if new:
            self.counters.reused += 1
        self._cached = rec
        self._next_check = self._refresh_due(rec)
        return new

    def _event(self, event_type: str, **fields: Any) -> None:
        """One system event (never the token); a failure to record it is logged, never raised into the caller."""
        if self.events is None:
            return
        try:
            self.events.emit(event_type, key_id=self.key_id, **fields)
        except Exception:
            log.exception("could not record the %s event key_id=%s", event_type, self.key_id)

    def _token_event(self, event_type: str, rec: TokenRecord, reason: str, issued_by: str) -> None:
        self._event(event_type, reason=reason, issued_by=issued_by, expires_at=rec.expires_at, issued_at=rec.issued_at)

    async def _obtain_or_record(self, *, stale: str | None, reason: str) -> TokenRecord:
        """``_obtain`` for callers that cannot go on without a token: a failure is a ``token_issue_failed`` event."""
        try:
            fresh = await self._obtain(stale=stale, reason=reason)
        except Exception as exc:
            self._event("token_issue_failed", reason=reason, **_error_fields(exc))
            raise
        assert fresh is not None  # can_wait=True never gives up without raising
        return fresh

    def _local_lock(self) -> asyncio.Lock:
        """One issuing coroutine per process and event loop (asyncio locks are bound to a loop)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _with_http(self, call: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        if self._http is not None:
            return await call(self._http)
        async with httpx.AsyncClient(timeout=self.http_timeout) as http:  # per call: loop-safe, rare
            return await call(http)

    async def _acquire(self) -> TokenLock:
        """The store's per-key lock, waited for in a worker thread so the event loop keeps running."""
        lock = await self._run(self.store.try_lock, self.key_id)
        if lock is not None:
            return lock
        self.counters.waits += 1
        log.info("waiting for another process issuing a token key_id=%s", self.key_id)
        started = asyncio.get_running_loop().time()
        fut = asyncio.get_running_loop().run_in_executor(
            self._executor, self.store.lock, self.key_id, self.lock_timeout
        )
        try:
            lock = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_release_if_granted)  # granted after we gave up: let others in
            raise
        except TokenLockTimeout:
            self.counters.failures += 1
            log.error("token store lock not obtained within %.0fs key_id=%s", self.lock_timeout, self.key_id)
            raise TransientError(f"token store lock for {self.key_id} busy for {self.lock_timeout:.0f}s") from None
        finally:
            self.counters.wait_seconds += asyncio.get_running_loop().time() - started
        return lock

    async def _obtain(self, *, stale: str | None, reason: str, can_wait: bool = True) -> TokenRecord | None:
        """A usable token other than ``stale``: one another process stored meanwhile, or a new one.
        With ``can_wait=False`` it returns None instead of pausing for KIS's issuance limit."""
        too_soon = transient = 0
        while True:
            pause = 0.0
            lock = await self._acquire()
            try:
                now = self._clock()
                current = lock.get("access")
                if current is not None and current.value != stale and current.expires_at > now:
                    self.counters.reused += 1
                    log.info(
                        "using the token another process issued key_id=%s expires_at=%s",
                        self.key_id,
                        current.expires_at.isoformat(),
                    )
                    self._token_event(
                        "token_refreshed" if stale is not None else "token_issued", current, reason, "shared_store"
                    )
                    return current
                real_now = datetime.now(KST)  # the issuance hold is physical time, whatever clock judges expiry
                not_before = lock.not_before()
                if not_before is not None and not_before > real_now:
                    pause = min((not_before - real_now).total_seconds(), self._max_pause)
                    log.info(
                        "token issuance for key_id=%s held until %s (KIS allows one a minute)",
                        self.key_id,
                        not_before.isoformat(),
                    )
                else:
                    try:
                        issued = await self._with_http(lambda http: issue_access_token(http, self.config, now=now))  # noqa: B023
                    except TokenIssueTooSoonError:
                        self.counters.too_soon += 1
                        too_soon += 1
                        pause = self.too_soon_wait.total_seconds() * 2 ** (too_soon - 1)
                        lock.set_not_before(real_now + timedelta(seconds=pause))
                        if not can_wait:
                            log.warning(
                                "token refresh ahead of expiry refused with EGW00133 key_id=%s; "
                                "keeping the current token, next try in %.0fs",
                                self.key_id,
                                pause,
                            )
                        elif too_soon >= self.max_issue_attempts:
                            self.counters.failures += 1
                            log.error(
                                "token issuance refused with EGW00133 %d times key_id=%s; giving up",
                                too_soon,
                                self.key_id,
                            )
                            raise
                        else:
                            log.warning(
                                "token issuance refused with EGW00133 key_id=%s; waiting %.0fs (attempt %d/%d)",
                                self.key_id,
                                pause,
                                too_soon,
                                self.max_issue_attempts,
                            )
                        self._event(
                            "token_issue_refused",
                            reason=reason,
                            code=p.EGW_TOKEN_TOO_OFTEN,
                            attempt=too_soon,
                            max_attempts=self.max_issue_attempts,
                            retry_in_seconds=round(pause, 3),
                            waits=can_wait,
                        )
                    except BadCredentialsError as exc:
                        self.counters.failures += 1
                        log.error("token issuance refused: bad credentials key_id=%s code=%s", self.key_id, exc.code)
                        raise
                    except TransientError as exc:
                        if transient >= len(self.transient_delays):
                            self.counters.failures += 1
                            log.error("token issuance failed key_id=%s: %s", self.key_id, exc)
                            raise
                        pause = self.transient_delays[transient]
                        transient += 1
                        log.warning("token issuance failed key_id=%s: %s; retrying in %.0fs", self.key_id, exc, pause)
                    except Exception as exc:
                        self.counters.failures += 1
                        log.error("token issuance failed key_id=%s: %s", self.key_id, type(exc).__name__)
                        raise
                    else:
                        record = TokenRecord("access", issued.access_token, issued.expires_at, issued.issued_at)
                        lock.put(record)
                        lock.set_not_before(real_now + self.too_soon_wait)
                        self.counters.issued += 1
                        if current is not None:
                            self.counters.refreshed += 1
                        log.info(
                            "access token %s key_id=%s reason=%s expires_at=%s",
                            "refreshed" if current is not None else "issued",
                            self.key_id,
                            reason,
                            issued.expires_at.isoformat(),
                        )
                        same = issued.access_token == stale
                        if same:
                            log.warning(
                                "KIS returned the token being replaced key_id=%s (same token within 6 h)", self.key_id
                            )
                        self._event(
                            "token_refreshed" if current is not None or stale is not None else "token_issued",
                            reason=reason,
                            issued_by="this_process",
                            expires_at=issued.expires_at,
                            issued_at=issued.issued_at,
                            same_as_replaced=same,
                        )
                        return record
            finally:
                lock.release()
            if not can_wait:
                return None
            self.counters.waits += 1
            self.counters.wait_seconds += pause
            await asyncio.sleep(pause)


def _error_fields(exc: BaseException) -> dict[str, Any]:
    """What went wrong, for an event: KIS errors carry their code and (secret-scrubbed) message; anything
    else only its type, since its text may hold what a request carried."""
    fields: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, KisError):
        code = getattr(exc, "code", "")
        if code:
            fields["code"] = code
        fields["message"] = str(getattr(exc, "message", "") or exc)[:300]
    return fields


def _release_if_granted(fut: asyncio.Future[TokenLock]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().release()
