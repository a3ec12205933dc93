"""Alert delivery: always a log line; a webhook post when OBSERVER_ALERT_WEBHOOK is set.

One JSON shape serves both Slack incoming webhooks and Telegram's `sendMessage`: `{"text": ...}`, plus `chat_id`
when OBSERVER_ALERT_TELEGRAM_CHAT_ID is set (Telegram requires it). The webhook URL itself is a secret (Slack's path
and Telegram's bot token are credentials), so it is never logged, and the text is scrubbed of every configured
secret (observer_resources/secrets.py) before it leaves. A failed post is logged as an error and counted, never
raised: the alert sensor must keep evaluating, and the log line already holds the alert.

Nothing here can hold a sensor past Dagster's 60 s tick limit (a tick that times out keeps its old cursor, so its
alerts would repeat forever and later ones never be seen): each post has an overall deadline (POST_DEADLINE_S) for
the whole exchange, a server trickling its answer byte by byte included, and a batch shares one time budget
(TICK_BUDGET_S): alerts past it are logged, not posted, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from observer_resources import secrets, settings

log = logging.getLogger("observer.alerts")

WEBHOOK_ENV = "OBSERVER_ALERT_WEBHOOK"
CHAT_ID_ENV = "OBSERVER_ALERT_TELEGRAM_CHAT_ID"
MAX_TEXT = 3500  # Telegram caps a message at 4,096 characters; Slack truncates long text
POST_DEADLINE_S = 10.0  # one post, connect to last byte
TICK_BUDGET_S = 40.0  # one sensor tick's posts together: well inside Dagster's 60 s tick limit
MIN_POST_S = 1.0  # less budget than this left: do not start a post
BUDGET_SPENT = "not posted: the tick's alert time budget is spent"


@dataclass
class Delivery:
    text: str
    posted: bool = False
    status: int | None = None
    error: str | None = None
    payload: dict = field(default_factory=dict)


class Budget:
    """The time one sensor tick may spend posting (monotonic clock)."""

    def __init__(self, seconds: float | None = None):
        self.seconds = TICK_BUDGET_S if seconds is None else seconds
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """The text with every configured secret value replaced (a message must never carry one)."""
    return secrets.scrub(text, environ)


def payload(text: str, environ: Mapping[str, str] | None = None) -> dict:
    body: dict = {"text": text}
    chat = settings.get(CHAT_ID_ENV, environ)
    if chat:
        body["chat_id"] = chat
    return body


async def _apost(url: str, body: dict, deadline_s: float) -> httpx.Response:
    # asyncio cancellation aborts the request wherever it is (connect, TLS, a header trickled byte by byte) and
    # closes the socket; httpx's own timeouts are per read and would let a trickle run forever.
    async with httpx.AsyncClient(timeout=deadline_s) as client:
        return await asyncio.wait_for(client.post(url, json=body), deadline_s)


def post(url: str, body: dict, deadline_s: float | None = None, *, hide: Iterable[str] = ()) -> httpx.Response:
    """POST ``body`` as JSON, the whole exchange within ``deadline_s``; raises httpx.HTTPError or TimeoutError.

    Runs on its own thread and event loop, so it works from any caller (a sensor's thread, or code already inside
    an event loop); the thread always ends by itself shortly after the deadline. httpx logs each request's URL:
    while this post runs, the URL and ``hide`` are masked in httpx's log records."""
    deadline_s = POST_DEADLINE_S if deadline_s is None else deadline_s
    masker = secrets.ScrubFilter([url, *hide])
    httpx_log = logging.getLogger("httpx")
    httpx_log.addFilter(masker)
    try:
        return _post(url, body, deadline_s)
    finally:
        httpx_log.removeFilter(masker)


def _post(url: str, body: dict, deadline_s: float) -> httpx.Response:
    out: dict = {}

    def work() -> None:
        try:
            out["resp"] = asyncio.run(_apost(url, body, deadline_s))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    th = threading.Thread(target=work, name="observer-alert-post", daemon=True)
    th.start()
    th.join(deadline_s + 2.0)  # cancellation and close take milliseconds; the margin covers a loaded host
    if th.is_alive():
        raise TimeoutError(f"no answer within {deadline_s:g} s")
    if "error" in out:
        err = out["error"]
        if isinstance(err, asyncio.TimeoutError):
            raise TimeoutError(f"no answer within {deadline_s:g} s") from None
        raise err
    return out["resp"]


def _log_alert(text: str, env: Mapping[str, str], lg: logging.Logger) -> str:
    text = scrub(text, env)[:MAX_TEXT]
    lg.error("ALERT %s", text)
    return text


def _deliver(
    text: str, env: Mapping[str, str], lg: logging.Logger, deadline_s: float, budget: Budget | None
) -> Delivery:
    """Post an already logged and scrubbed alert when a webhook is configured, within the deadline and budget."""
    d = Delivery(text=text)
    url = settings.get(WEBHOOK_ENV, env)
    if not url:
        return d
    d.payload = payload(text, env)
    if budget is not None:
        deadline_s = min(deadline_s, budget.remaining())
        if deadline_s < MIN_POST_S:
            d.error = BUDGET_SPENT
            return d
    try:
        resp = post(url, d.payload, deadline_s, hide=secrets.secret_values(env))
        d.status = resp.status_code
        d.posted = resp.is_success
        if not d.posted:
            d.error = f"webhook answered HTTP {resp.status_code}"
    except TimeoutError:
        d.error = f"webhook post failed: no complete answer within {deadline_s:.1f} s"
    except httpx.HTTPError as e:
        d.error = f"webhook post failed: {type(e).__name__}"
    except Exception as e:  # noqa: BLE001 - an alert must never break its sensor; the type is enough (no URL)
        d.error = f"webhook post failed: {type(e).__name__}"
    if d.error:
        lg.error("alert not delivered to the webhook (%s); the alert is in this log", d.error)
    return d


def send(
    text: str,
    *,
    environ: Mapping[str, str] | None = None,
    logger: logging.Logger | None = None,
    timeout_s: float | None = None,
    budget: Budget | None = None,
) -> Delivery:
    """Log the alert, then post it when a webhook is configured (within ``timeout_s``, default POST_DEADLINE_S,
    and what is left of ``budget``). Returns what happened (for metadata and tests)."""
    env = os.environ if environ is None else environ
    lg = logger or log
    return _deliver(_log_alert(text, env, lg), env, lg, POST_DEADLINE_S if timeout_s is None else timeout_s, budget)


def send_all(
    texts: Iterable[str],
    *,
    environ: Mapping[str, str] | None = None,
    logger: logging.Logger | None = None,
    budget_s: float | None = None,
    timeout_s: float | None = None,
) -> list[Delivery]:
    """A tick's alerts: every one logged first, then posted in order while the ``budget_s`` lasts. Those left over
    are reported in one log line (they are in the log already, and counted as not delivered)."""
    env = os.environ if environ is None else environ
    lg = logger or log
    logged = [_log_alert(t, env, lg) for t in texts]
    budget = Budget(budget_s)
    deadline = POST_DEADLINE_S if timeout_s is None else timeout_s
    out = [_deliver(t, env, lg, deadline, budget) for t in logged]
    over = sum(1 for d in out if d.error == BUDGET_SPENT)
    if over:
        lg.error(
            "%d of %d alert(s) not posted: this tick's %g s alert budget ran out (each is logged above)",
            over,
            len(out),
            budget.seconds,
        )
    return out
