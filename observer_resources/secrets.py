"""Secrets: the one list of what is secret, and the one way to keep it out of files, logs, events and alerts.

Every place that writes something an operator or a backup can read (event log, alert text, exporter log, backup
manifest) asks this module. Which of Observer's settings are secret, URL-valued or fit for a manifest is declared
with each setting in ``observer_resources.settings``; this module applies those declarations, plus a naming rule
for variables Observer does not declare (a storage backend's own ``AWS_SECRET_ACCESS_KEY`` …). Pure functions over
a mapping (``os.environ`` by default); no I/O, no project import but the settings registry, so any layer can use it.

* :func:`is_secret_name`: a variable whose whole value is a secret (app keys and secrets, passwords, tokens,
  webhook URLs, which embed their token).
* :data:`URL_SETTINGS`: settings holding a URL or path whose *parts* may be secret (``user:password@``, a
  ``?password=`` query); :func:`redact_url` shows such a URL with those parts as ``***``.
* :func:`secret_values` / :func:`scrub`: the concrete values to remove from any text, and their removal.
* :data:`SNAPSHOT_SETTINGS` / :func:`config_snapshot_settings`: an allow-list (never a deny-list: a new setting is
  left out until its declaration says it is safe) of what a backup manifest may record.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from observer_resources import settings

#: an undeclared variable whose name contains one of these holds a secret (declared ones carry their own flag)
SECRET_NAME_WORDS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "APPKEY",
    "APP_KEY",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "APPROVAL_KEY",
    "WEBHOOK",
)
#: OBSERVER_ALERT* settings holding one of these are secret too (a chat URL or bot token is a credential)
_ALERT_PREFIX = "OBSERVER_ALERT"
_ALERT_SECRET_WORDS = ("URL", "WEBHOOK", "TOKEN")
#: a URL query parameter or storage option whose name contains one of these holds a secret value
SECRET_PARAM_WORDS = ("pass", "pwd", "token", "secret", "key", "sig", "credential", "auth")
#: settings holding a URL (or a path that may be one) whose userinfo and secret query values are secret
URL_SETTINGS = tuple(s.name for s in settings.SETTINGS if s.kind.redact and not s.secret and not s.pattern)
BACKUP_OPTIONS_ENV = "OBSERVER_BACKUP_OPTIONS"
#: what a backup manifest may record of the configuration (values of URL_SETTINGS redacted; the backup options
#: as their names only): the settings declared ``snapshot``. Anything else is left out, whatever its name.
SNAPSHOT_SETTINGS = tuple(sorted(s.name for s in settings.SETTINGS if s.snapshot and not s.secret and not s.pattern))
MIN_SECRET_LEN = 6  # shorter values are not scrubbed from free text: they would mangle ordinary words
#: a path segment of a secret URL this long is a token on its own (Slack's last segment, Telegram's bot<token>);
#: shorter ones are words like "services" or "sendMessage"
MIN_TOKEN_SEGMENT = 16
MASK = "***"

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)")
# userinfo of any URL inside free text: scheme://<anything but / @ and space>@
_TEXT_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_TEXT_QUERY_SECRET = re.compile(
    r"([?&;][^=&;#\s]*(?:%s)[^=&;#\s]*=)[^&;#\s]+" % "|".join(SECRET_PARAM_WORDS), re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """Does the variable ``name`` hold a secret as its whole value? A declared setting's own flag decides; any other
    name the naming rule (:func:`name_looks_secret`)."""
    n = name.strip().upper()
    declared = settings.lookup(n)
    return declared.secret if declared is not None else name_looks_secret(n)


def name_looks_secret(name: str) -> bool:
    """The naming rule: a name holding a secret word (an ``OBSERVER_ALERT*`` one a URL, webhook or token) holds a
    secret; ``*_FILE`` names a file holding one, not the secret."""
    n = name.strip().upper()
    if n.endswith("_FILE"):
        return False
    if any(w in n for w in SECRET_NAME_WORDS):
        return True
    return n.startswith(_ALERT_PREFIX) and any(w in n for w in _ALERT_SECRET_WORDS)


def is_secret_param(name: str) -> bool:
    """Does a URL query parameter or storage option called ``name`` carry a secret (password, key, token, sig …)?"""
    n = name.strip().lower()
    return any(w in n for w in SECRET_PARAM_WORDS)


def _split_url(url: str) -> tuple[str, str, str, str] | None:
    """(``scheme://``, userinfo with its ``@`` or '', host and path, ``?query#fragment`` or '') of a URL; None when
    ``url`` has no scheme. The userinfo runs to the last ``@`` before the query, so an unencoded ``/``, ``#`` or
    ``@`` in a password stays inside it (an ``@`` in a path over-redacts, never under-redacts)."""
    m = _SCHEME.match(url)
    if not m:
        return None
    scheme, rest = m.group(1), url[m.end() :]
    q = rest.find("?")
    head, tail = (rest[:q], rest[q:]) if q >= 0 else (rest, "")
    userinfo, at, hostpath = head.rpartition("@")
    return (scheme, userinfo + at, hostpath, tail) if at else (scheme, "", head, tail)


def _redact_query(tail: str) -> str:
    """``?a=1&password=x#f`` → ``?a=1&password=***#f`` (order and encoding of everything else kept)."""
    if not tail.startswith("?"):
        return tail
    body, hsh, frag = tail[1:].partition("#")
    parts = []
    for part in re.split(r"([&;])", body):
        k, eq, v = part.partition("=")
        parts.append(f"{k}={MASK}" if eq and v and is_secret_param(unquote(k)) else part)
    return "?" + "".join(parts) + hsh + frag


def redact_url(url: str) -> str:
    """The URL fit for logs, events and manifests: userinfo (``user:pw@`` or ``user@``) as ``***@``, values of
    secret-named query parameters as ``***``. A string without a scheme (a local path) is returned as it is, but
    for a leading ``user:pw@host`` (a scheme-less DSN)."""
    url = str(url)
    parts = _split_url(url)
    if parts is None:
        head, q, query = url.partition("?")
        if re.match(r"^[^/@\s]+@", head):
            head = MASK + "@" + head.split("@")[-1]
        return head + (_redact_query(q + query) if q else "")
    scheme, userinfo, rest, query = parts
    return scheme + (MASK + "@" if userinfo else "") + rest + _redact_query(query)


def _url_secrets(url: str) -> list[str]:
    """The secret parts of one URL: the whole userinfo, its password (or its user when alone, a token), and the
    values of secret-named query parameters; each raw and percent-decoded."""
    out: list[str] = []
    parts = _split_url(url.strip())
    if parts is None:
        return out
    _, userinfo, _, query = parts
    if userinfo:
        info = userinfo[:-1]
        user, colon, pw = info.partition(":")
        out += [info, pw] if colon else [info]
    if query.startswith("?"):
        for part in re.split(r"[&;]", query[1:].partition("#")[0]):
            k, eq, v = part.partition("=")
            if eq and v and is_secret_param(unquote(k)):
                out.append(v)
    return out + [unquote(s) for s in out]


def _option_secrets(obj: Any, secret_key: bool = False) -> list[str]:
    """Values of secret-named keys anywhere in a JSON value, and secret parts of any URL in it."""
    out: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out += _option_secrets(v, secret_key or is_secret_param(str(k)))
    elif isinstance(obj, list):
        for v in obj:
            out += _option_secrets(v, secret_key)
    elif isinstance(obj, (str, int, float)) and not isinstance(obj, bool):
        s = str(obj)
        if secret_key:
            out.append(s)
        out += _url_secrets(s)
    return out


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every concrete secret in ``environ``, longest first (so a longer secret is masked before a part of it):
    values of secret-named variables, secret parts of URL-valued settings and of ``OBSERVER_BACKUP_OPTIONS``.
    Values shorter than :data:`MIN_SECRET_LEN` are left out."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        if is_secret_name(name):
            v = value.strip()
            found += [value, v]
            parts = _split_url(v)
            if parts is not None:  # a secret URL: what follows the scheme, its path, and its token-like segments
                hostpath, tail = parts[2], parts[3]
                slash = hostpath.find("/")
                if slash >= 0:
                    found += [hostpath[slash:] + tail] + [
                        seg for seg in hostpath[slash:].split("/") if len(seg) >= MIN_TOKEN_SEGMENT
                    ]
                found.append(hostpath + tail)
            found += _url_secrets(v)
        elif name in URL_SETTINGS:
            found += _url_secrets(value)
    raw = (settings.raw(BACKUP_OPTIONS_ENV, env) or "").strip()
    if raw:
        try:
            found += _option_secrets(json.loads(raw))
        except ValueError:
            pass
    uniq = {s for s in found if len(s) >= MIN_SECRET_LEN}
    return sorted(uniq, key=lambda s: (-len(s), s))


def scrub(text: str, environ: Mapping[str, str] | None = None, *, values: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``, then any ``scheme://userinfo@`` and secret query value
    in it masked too. ``values`` (e.g. a cached :func:`secret_values`) replaces the lookup in ``environ``; each
    given value is masked whatever its length."""
    vals = secret_values(environ) if values is None else sorted({v for v in values if v}, key=lambda s: -len(s))
    for v in vals:
        if v in text:
            text = text.replace(v, MASK)
    text = _TEXT_USERINFO.sub(r"\1" + MASK + "@", text)
    return _TEXT_QUERY_SECRET.sub(r"\1" + MASK, text)


def config_snapshot_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The allow-listed settings that are set, for a backup manifest: URL-valued ones redacted, the backup options
    as their sorted names (never their values)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name in SNAPSHOT_SETTINGS:
        value = env.get(name)
        if value is None or is_secret_name(name):
            continue
        if name == BACKUP_OPTIONS_ENV:
            try:
                opts = json.loads(value) if value.strip() else {}
            except ValueError:
                opts = None
            out[name] = sorted(str(k) for k in opts) if isinstance(opts, dict) else "(not a JSON object)"
        elif name in URL_SETTINGS:
            out[name] = redact_url(value)
        else:
            out[name] = value
    return out


class ScrubFilter(logging.Filter):
    """A logging filter that masks the given secrets (plus URL userinfo) in each record's message, for a library
    logger that may print a secret URL (httpx logs every request's full URL at INFO)."""

    def __init__(self, values: Iterable[str]):
        super().__init__()
        self.values = sorted({v for v in values if v}, key=lambda s: -len(s))

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg, values=self.values)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
