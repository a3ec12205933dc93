"""Alert delivery: always a log line; a webhook post when OBSERVER_ALERT_WEBHOOK is set.

One JSON shape serves both Slack incoming webhooks and Telegram's `sendMessage`: `{"text": ...}`, plus `chat_id`
when OBSERVER_ALERT_TELEGRAM_CHAT_ID is set (Telegram requires it). The webhook URL itself is a secret (Slack's path
and Telegram's bot token are credentials), so it is never logged, and the text is scrubbed of every configured
secret before it leaves. A failed post is logged as an error and counted, never raised: the alert sensor must keep
evaluating, and the log line already holds the alert.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import httpx

log = logging.getLogger("observer.alerts")

WEBHOOK_ENV = "OBSERVER_ALERT_WEBHOOK"
CHAT_ID_ENV = "OBSERVER_ALERT_TELEGRAM_CHAT_ID"
SECRET_ENVS = ("KIS_APP_KEY", "KIS_APP_SECRET", WEBHOOK_ENV)
MAX_TEXT = 3500  # Telegram caps a message at 4,096 characters; Slack truncates long text


@dataclass
class Delivery:
    text: str
    posted: bool = False
    status: int | None = None
    error: str | None = None
    payload: dict = field(default_factory=dict)


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """The text with every configured secret value replaced (a message must never carry one)."""
    env = os.environ if environ is None else environ
    for name in SECRET_ENVS:
        v = env.get(name)
        if v and len(v) >= 6:
            text = text.replace(v, "***")
    return text


def payload(text: str, environ: dict[str, str] | None = None) -> dict:
    env = os.environ if environ is None else environ
    body: dict = {"text": text}
    chat = env.get(CHAT_ID_ENV)
    if chat:
        body["chat_id"] = chat
    return body


def send(text: str, *, environ: dict[str, str] | None = None, logger: logging.Logger | None = None,
         timeout_s: float = 5.0) -> Delivery:
    """Log the alert, then post it when a webhook is configured. Returns what happened (for metadata and tests)."""
    env = os.environ if environ is None else environ
    lg = logger or log
    text = scrub(text, env)[:MAX_TEXT]
    lg.error("ALERT %s", text)
    d = Delivery(text=text)
    url = env.get(WEBHOOK_ENV)
    if not url:
        return d
    d.payload = payload(text, env)
    try:
        resp = httpx.post(url, json=d.payload, timeout=timeout_s)
        d.status = resp.status_code
        d.posted = resp.is_success
        if not d.posted:
            d.error = f"webhook answered HTTP {resp.status_code}"
    except httpx.HTTPError as e:
        d.error = f"webhook post failed: {type(e).__name__}"
    if d.error:
        lg.error("alert not delivered to the webhook (%s); the alert is in this log", d.error)
    return d
