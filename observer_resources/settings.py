"""Every environment variable Observer reads, declared once: its type, default, meaning, group and secrecy.

The code asks :func:`get` (or :func:`is_set` / :func:`raw`) instead of reading the environment, so a bad value fails
the same way wherever it is read (naming the variable, showing the value unless it is a secret, saying what was
expected), a new setting cannot go undocumented, and the README's table is generated from here
(``python -m observer_resources.settings --markdown``; ``make settings`` rewrites it). ``secrets`` takes its secret
list, its URL-valued settings and the backup manifest's allow-list from these declarations.

An unset or blank variable means its default. Every reader takes an optional ``environ`` mapping (``os.environ``
when None) so tests and child-process environments are read by the same rules. Pure: no Dagster, no I/O, and no
project import but ``dates``, so every layer can import it.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any

from observer_resources.dates import DateFormatError, parse_day_window, parse_iso_date
from observer_resources.kis.feeds import FeedPlan, parse_feeds

__all__ = [
    "GROUPS",
    "SETTINGS",
    "Kind",
    "Setting",
    "SettingsError",
    "get",
    "is_set",
    "lookup",
    "markdown",
    "raw",
    "setting",
]


class SettingsError(ValueError):
    """A setting whose value cannot be used; the message names the variable and what it expects."""

    def __init__(self, message: str, name: str = "") -> None:
        super().__init__(message)
        self.name = name


class _Invalid(ValueError):
    """A parser's refusal; its text (if any) is a detail safe to show next to the expectation."""


# --- kinds: how a value's text becomes a value ----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """``parse`` turns the text into the value or raises ValueError. ``redact``: a URL (or a path that may be one)
    whose userinfo and secret query values are hidden wherever it is shown. ``echo=False``: the value may carry a
    credential in some part, so an error never quotes it."""

    expected: str
    parse: Callable[[str], Any]
    redact: bool = False
    echo: bool = True


def _as_set(text: str) -> str:
    return text


def _stripped(text: str) -> str:
    return text.strip()


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if not isinstance(value, dict):
        raise _Invalid(f"got a JSON {type(value).__name__}")
    return value


def _date(text: str) -> date:
    try:
        return parse_iso_date(text.strip())
    except DateFormatError:
        raise _Invalid() from None


def integer(minimum: int | None = None, *, unit: str = "") -> Kind:
    """A whole number (``int()``'s syntax), at least ``minimum``."""
    expected = "a whole number" + (f" of {unit}" if unit else "") + (f" >= {minimum}" if minimum is not None else "")

    def parse(text: str) -> int:
        n = int(text)
        if minimum is not None and n < minimum:
            raise _Invalid()
        return n

    return Kind(expected, parse)


def number(minimum: float | None = None, *, strict: bool = False) -> Kind:
    """A finite number, at least (``strict``: above) ``minimum``."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> float:
        x = float(text)
        if not math.isfinite(x) or (minimum is not None and (x <= minimum if strict else x < minimum)):
            raise _Invalid()
        return x

    return Kind("a number" + bound, parse)


def choice(*options: str) -> Kind:
    """One of ``options``, case and surrounding blanks ignored."""

    def parse(text: str) -> str:
        v = text.strip().lower()
        if v not in options:
            raise _Invalid()
        return v

    return Kind("one of " + ", ".join(repr(o) for o in options), parse)


def _seconds_list(text: str) -> tuple[float, ...]:
    parse = number(0, strict=True).parse
    return tuple(parse(part) for part in text.split(",") if part.strip())


def _day_window(text: str) -> tuple[time, time] | str:
    """``session`` (KRX's regular session, as it stands) or ``HH:MM-HH:MM`` within one day, start before end."""
    v = text.strip().lower()
    if v == "session":
        return v
    try:
        return parse_day_window(v)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _feeds(text: str) -> FeedPlan:
    try:
        return parse_feeds(text)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _codes(text: str) -> tuple[str, ...]:
    out = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in out if not (len(c) <= 12 and c.isascii() and c.isalnum())]
    if bad:
        raise _Invalid(f"not symbol codes: {bad[:5]}")
    return tuple(dict.fromkeys(out))


#: the value exactly as set: keys and secrets are never trimmed, so a check sees what Dagster's EnvVar resolves
RAW = Kind("text", _as_set)
TEXT = Kind("text", _stripped)
PATH = Kind("a path", _stripped)
URL = Kind("a URL", _stripped, redact=True)
LOCATION = Kind("a path or URL", _stripped, redact=True)
DATE = Kind("a date (YYYY-MM-DD)", _date)
JSON_OBJECT = Kind("a JSON object", _json_object, echo=False)
SECONDS_LIST = Kind("comma-separated seconds > 0", _seconds_list)
CODES = Kind("comma-separated symbol codes", _codes)
DAY_WINDOW = Kind("'session' or a window HH:MM-HH:MM", _day_window)
FEEDS = Kind("comma-separated kind:venue feeds (trades, book, expected, status : KRX, NXT, UN)", _feeds)
CODE = Kind("a symbol code", lambda text: _one_code(_codes(text)))


def _one_code(codes: tuple[str, ...]) -> str:
    if len(codes) != 1:
        raise _Invalid()
    return codes[0]


# --- declarations -------------------------------------------------------------------------------------------------

KIS, LAKE, BACKUP, UNIVERSE, TRACK_A, TRACK_B, ALERTS, DEPLOYMENT, DEMO = (
    "KIS",
    "Lake",
    "Backup and retention",
    "Universe",
    "Track A",
    "Track B",
    "Alerts",
    "Deployment",
    "Tests and demo",
)
GROUPS = (KIS, LAKE, BACKUP, UNIVERSE, TRACK_A, TRACK_B, ALERTS, DEPLOYMENT, DEMO)


@dataclass(frozen=True)
class Setting:
    """One variable. ``pattern`` (a regular expression) makes it a family such as ``KIS_APP_KEY_<n>``, ``name`` then
    being how the family is written. ``snapshot``: safe to record in a backup manifest (URLs redacted).
    ``default_doc``: the default in words, where it is computed rather than fixed."""

    name: str
    kind: Kind
    default: Any
    meaning: str
    group: str
    secret: bool = False
    snapshot: bool = False
    default_doc: str = ""
    pattern: str = ""

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None if self.pattern else name == self.name

    def parse(self, text: str, name: str | None = None) -> Any:
        """The value of ``text``; :class:`SettingsError` naming the variable when it is not one."""
        var = name or self.name
        try:
            return self.kind.parse(text)
        except (ValueError, TypeError) as e:
            detail = str(e) if isinstance(e, _Invalid) else ""
            message = f"{var} must be {self.kind.expected}"
            if self.secret:
                message, detail = message + ", got a value not shown here (a secret)", ""
            elif not self.kind.echo:
                message += " (the value is not shown: it may hold a credential)"
            else:
                value = text.strip()
                message += f", got {value if len(value) <= 80 else value[:80] + '…'!r}"
            raise SettingsError(message + (f": {detail}" if detail else ""), var) from None


_S = Setting
SETTINGS: tuple[Setting, ...] = (
    # KIS
    _S(
        "KIS_APP_KEY",
        RAW,
        None,
        "your app key (36 characters); unset: the local exchange with its demo keys",
        KIS,
        secret=True,
    ),
    _S(
        "KIS_APP_SECRET",
        RAW,
        None,
        "your app secret (180 characters), set together with `KIS_APP_KEY`",
        KIS,
        secret=True,
    ),
    _S(
        "KIS_APP_KEY_<n>",
        RAW,
        None,
        "more app keys (accounts), numbered 2, 3, … without gaps: Track A sharded "
        "across them, 41 more Track B slots each ([docs/multi-key.md](docs/multi-key.md))",
        KIS,
        secret=True,
        pattern=r"KIS_APP_KEY_[0-9]+",
    ),
    _S(
        "KIS_APP_SECRET_<n>",
        RAW,
        None,
        "the secret of `KIS_APP_KEY_<n>` (a half-set pair is refused)",
        KIS,
        secret=True,
        pattern=r"KIS_APP_SECRET_[0-9]+",
    ),
    _S(
        "KIS_ENV",
        choice("real", "paper"),
        "real",
        "`paper` for paper-trading keys (2 req/s and no multi-quote, so Track A reports partial coverage)",
        KIS,
        snapshot=True,
    ),
    _S(
        "KIS_REST_URL",
        URL,
        None,
        "KIS's REST host",
        KIS,
        snapshot=True,
        default_doc="KIS's real or paper host with a key, else the local exchange (`http://127.0.0.1:18700`)",
    ),
    _S(
        "KIS_WS_URL",
        URL,
        None,
        "KIS's WebSocket host",
        KIS,
        snapshot=True,
        default_doc="KIS's real or paper host with a key, else the local exchange (`ws://127.0.0.1:18701`)",
    ),
    # lake
    _S(
        "OBSERVER_DATA_DIR",
        LOCATION,
        "./data",
        "the data lake: a directory or any fsspec URL such as `s3://…` (then set `OBSERVER_LOCAL_DIR`)",
        LAKE,
        snapshot=True,
    ),
    _S(
        "OBSERVER_LOCAL_DIR",
        Kind("a local path", _stripped, redact=True),
        None,
        "with a lake on a URL only: a "
        "local (or NFS) directory for the Track B journal, the event log, the token cache and metrics",
        LAKE,
        snapshot=True,
        default_doc="the lake itself",
    ),
    _S(
        "OBSERVER_STATE_DB_URL",
        URL,
        None,
        "PostgreSQL (`postgresql://user:pw@host:5432/db`) holding the token and "
        "rate-limit state every host shares ([docs/deploy.md](docs/deploy.md))",
        LAKE,
        snapshot=True,
        default_doc="SQLite files under `<local dir>/state`",
    ),
    _S(
        "OBSERVER_HOST_ID",
        TEXT,
        None,
        "this host's name in the event log's file names (set it when two hosts share one)",
        LAKE,
        snapshot=True,
        default_doc="the host name",
    ),
    # backup and retention
    _S(
        "OBSERVER_BACKUP_URL",
        LOCATION,
        None,
        "where daily backups go: a directory outside the lake or any fsspec URL",
        BACKUP,
        snapshot=True,
        default_doc="`backups` beside the local directory (`./backups`)",
    ),
    _S(
        "OBSERVER_BACKUP_OPTIONS",
        JSON_OBJECT,
        None,
        'fsspec options of the backup destination (`{"endpoint_url": '
        "…}`), never credentials ([docs/backup.md](docs/backup.md))",
        BACKUP,
        snapshot=True,
    ),
    _S(
        "OBSERVER_RETENTION_DAYS",
        integer(1, unit="days"),
        3,
        "sessions a day's local files are kept",
        BACKUP,
        snapshot=True,
    ),
    _S(
        "OBSERVER_RETENTION_ANOMALY_DAYS",
        integer(1, unit="days"),
        7,
        "sessions an anomaly day's local files are kept",
        BACKUP,
        snapshot=True,
    ),
    _S(
        "OBSERVER_RETENTION_MAX_DAYS",
        integer(1, unit="days"),
        10,
        "sessions after which a day still without a committed backup raises `retention_blocked` (it is never deleted)",
        BACKUP,
        snapshot=True,
    ),
    _S(
        "OBSERVER_RETENTION_UNIVERSE_DAYS",
        integer(1, unit="days"),
        14,
        "sessions universe files are kept",
        BACKUP,
        snapshot=True,
    ),
    # universe
    _S(
        "OBSERVER_UNIVERSE_MIN_COUNT",
        integer(),
        1000,
        "the universe gate's floor: a smaller universe is not published",
        UNIVERSE,
        snapshot=True,
    ),
    _S(
        "OBSERVER_UNIVERSE_MAX_CHANGE",
        number(),
        0.30,
        "the largest day-on-day change of the universe's size (a fraction) the gate lets through",
        UNIVERSE,
        snapshot=True,
    ),
    _S(
        "OBSERVER_UNIVERSE_MIN_MASTER_CODES",
        integer(1),
        2500,
        "the fewest stock codes a master file may hold (a local exchange with fewer listings lowers it)",
        UNIVERSE,
        snapshot=True,
    ),
    # Track A
    _S(
        "OBSERVER_TRACK_A_WINDOW",
        DAY_WINDOW,
        parse_day_window("08:00-20:00"),
        "the part of the day Track A snapshots (KST): `session`, KRX's regular session on KRX quotes; or a window "
        "such as `08:00-20:00`, every slot in it where some venue is in a phase, NXT's stocks on the unified quote",
        TRACK_A,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_A_MIN_COVERAGE",
        number(),
        99.5,
        "the coverage check's floor: % of the universe in a slot's snapshot",
        TRACK_A,
        snapshot=True,
    ),
    # Track B
    _S(
        "OBSERVER_TRACK_B_MIN_RECORD_RATE",
        number(),
        97.0,
        "the record-rate check's floor: % of a minute's trades recorded",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_WINDOW",
        Kind("a window HH:MM-HH:MM, or phases [HH:MM-HH:MM]", _stripped),
        "phases",
        "the daily capture window (KST): `HH:MM-HH:MM` moves with KRX's regular session and ends at its close; "
        "`phases` (or `phases HH:MM-HH:MM`, default 08:00-20:00) runs from the first venue phase to the last, "
        "cut to those times",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_PINS",
        CODES,
        None,
        "codes that always hold a subscription slot (the capture's `--pins` overrides)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_FEEDS",
        FEEDS,
        parse_feeds("trades:UN,status:KRX,status:NXT"),
        "the real-time feeds each capture slot holds, each (TR, code) pair one of a session's 41 registrations: "
        "`trades`, `book`, `expected` per symbol, `status` once per session on the anchor code "
        "(docs/collector-rules.md §4.7)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_STATUS_CODE",
        CODE,
        "005930",
        "the code a session's `status:VENUE` feeds are registered on (it must trade on each such venue)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_EVAL_S",
        number(0, strict=True),
        30.0,
        "seconds between the capture's slot evaluations (`--eval-interval` overrides)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_SAMPLE_S",
        number(0, strict=True),
        10.0,
        "seconds between the capture's load samples (`--sample-interval` overrides)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_FAILURE_S",
        number(0, strict=True),
        300.0,
        "seconds of continuous failure before the capture's critical rule (`--failure-after` overrides)",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S",
        number(0),
        5.0,
        "seconds before a WebSocket session retries an app key KIS reports in use",
        TRACK_B,
        snapshot=True,
    ),
    _S(
        "OBSERVER_TRACK_B_BACKOFF",
        SECONDS_LIST,
        None,
        "the WebSocket reconnect back-off steps",
        TRACK_B,
        snapshot=True,
        default_doc="`1,2,5,10,20,30,60`",
    ),
    _S(
        "OBSERVER_TRACK_B_MITIGATION",
        JSON_OBJECT,
        None,
        "the load mitigation's holds and thresholds (`hold_enter_s`, `hold_recover_s`, per-metric levels)",
        TRACK_B,
        snapshot=True,
        default_doc="built in (holds 300 s and 600 s)",
    ),
    # alerts
    _S(
        "OBSERVER_ALERT_WEBHOOK",
        RAW,
        None,
        'where failed runs and checks are posted as `{"text": …}` (a Slack '
        "incoming webhook, or Telegram's sendMessage URL)",
        ALERTS,
        secret=True,
    ),
    _S(
        "OBSERVER_ALERT_TELEGRAM_CHAT_ID",
        TEXT,
        None,
        "Telegram's chat id, sent with every post (Telegram needs it); Alertmanager's Telegram receiver reads it too",
        ALERTS,
    ),
    _S(
        "OBSERVER_ALERT_SLACK_URL",
        RAW,
        None,
        "Alertmanager's Slack receiver (an incoming webhook; `monitoring/alertmanager/run.sh`)",
        ALERTS,
        secret=True,
    ),
    _S(
        "OBSERVER_ALERT_TELEGRAM_BOT_TOKEN",
        RAW,
        None,
        "Alertmanager's Telegram receiver (with `OBSERVER_ALERT_TELEGRAM_CHAT_ID`)",
        ALERTS,
        secret=True,
    ),
    _S(
        "OBSERVER_ALERTMANAGER_WEBHOOK", RAW, None, "a receiver of Alertmanager's own webhook JSON", ALERTS, secret=True
    ),
    _S(
        "<name>_FILE",
        PATH,
        None,
        "a file holding `OBSERVER_ALERT_SLACK_URL`, `OBSERVER_ALERT_TELEGRAM_BOT_TOKEN` or "
        "`OBSERVER_ALERTMANAGER_WEBHOOK` instead (a mounted secret)",
        ALERTS,
        pattern=r"(OBSERVER_ALERT_SLACK_URL|OBSERVER_ALERT_TELEGRAM_BOT_TOKEN|OBSERVER_ALERTMANAGER_WEBHOOK)_FILE",
    ),
    # read by run.sh's shell only: host details, not configuration of the data, so left out of backup manifests
    _S(
        "OBSERVER_ALERTMANAGER_DIR",
        PATH,
        "/var/lib/observer-alertmanager",
        "where `run.sh` writes Alertmanager's rendered config and data",
        ALERTS,
    ),
    _S("OBSERVER_ALERTMANAGER_LISTEN", TEXT, "127.0.0.1:9093", "Alertmanager's listen address", ALERTS),
    # deployment
    _S(
        "OBSERVER_INSTANCE",
        choice("embedded", "postgres"),
        "embedded",
        "the Dagster instance `make run` installs: "
        "SQLite under `DAGSTER_HOME`, or `deploy/dagster.postgres.yaml` with `DAGSTER_PG_*`",
        DEPLOYMENT,
        snapshot=True,
    ),
    _S(
        "OBSERVER_HISTORY_START",
        DATE,
        None,
        "the first trading day whose days and Track A slots exist as partitions",
        DEPLOYMENT,
        snapshot=True,
        default_doc="the oldest one the instance holds; a fresh instance starts at its current slot",
    ),
    _S(
        "OBSERVER_DAILY_BARS_FROM_YEAR",
        integer(2018),
        2018,
        "the first calendar year of daily history (`daily_bars`) that exists as a partition, up to the current year",
        DEPLOYMENT,
        snapshot=True,
    ),
    _S(
        "OBSERVER_IMAGE",
        TEXT,
        "observer:local",
        "the image Docker Compose runs and advertises to run containers",
        DEPLOYMENT,
    ),
    _S(
        "OBSERVER_POSTGRES_IMAGE",
        TEXT,
        "postgres:15-bookworm",
        "the PostgreSQL image of the Docker Compose stack (observer-postgres:15 from deploy/docker/postgres.Dockerfile "
        "where Docker Hub is out of reach)",
        DEPLOYMENT,
    ),
    _S(
        "DAGSTER_HOME",
        PATH,
        None,
        "Dagster's instance directory (Dagster's own; the exporter reads it)",
        DEPLOYMENT,
        default_doc="`./.dagster_home` under `make run`",
    ),
    _S("DAGSTER_PG_HOST", TEXT, None, "the `postgres` profile's server", DEPLOYMENT),
    _S("DAGSTER_PG_PORT", integer(1), 5432, "the `postgres` profile's port", DEPLOYMENT),
    _S("DAGSTER_PG_USER", TEXT, None, "the `postgres` profile's user", DEPLOYMENT),
    _S("DAGSTER_PG_PASSWORD", RAW, None, "the `postgres` profile's password", DEPLOYMENT, secret=True),
    _S("DAGSTER_PG_DB", TEXT, None, "the `postgres` profile's database", DEPLOYMENT),
    _S("DAGSTER_PORT", integer(1), 3000, "the Dagster UI's port (`make run`, Docker Compose)", DEPLOYMENT),
    _S(
        "DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT",
        integer(),
        5,
        "runs Dagster hands one tick of a run-status sensor "
        "(Dagster's own); the failure alerts share a tick's time budget among them",
        DEPLOYMENT,
    ),
    _S(
        "PROMETHEUS_MULTIPROC_DIR",
        PATH,
        None,
        "where processes record prometheus_client's multiprocess metrics",
        DEPLOYMENT,
        default_doc="`<local dir>/metrics`",
    ),
    _S(
        "OBSERVER_CALENDAR_PHASES",
        PATH,
        None,
        "an edited copy of the venues' phase table (`observer_resources/calendar/phases.toml`), for a schedule "
        "change announced before Observer ships it; `make calendar` checks a file, and the capture's "
        "market-status check tells when the exchange disagrees with the table in use",
        DEPLOYMENT,
        snapshot=True,
        default_doc="the shipped table",
    ),
    # tests and demo
    _S(
        "OBSERVER_CALENDAR",
        choice("krx", "open"),
        "krx",
        "`open`: an always-open demo market (what `make run` uses without keys)",
        DEMO,
        snapshot=True,
    ),
    _S(
        "OBSERVER_CLOCK_FILE",
        PATH,
        None,
        "every Observer process reads the time from this file instead of the wall "
        'clock ([docs/architecture.md](docs/architecture.md), "One clock")',
        DEMO,
        snapshot=True,
    ),
    _S(
        "OBSERVER_DEMO_KEYS",
        integer(1),
        1,
        "without `KIS_APP_KEY`: demo accounts on the local exchange",
        DEMO,
        snapshot=True,
    ),
)
del _S

_BY_NAME = {s.name: s for s in SETTINGS if not s.pattern}
_FAMILIES = tuple(s for s in SETTINGS if s.pattern)


# --- reading --------------------------------------------------------------------------------------------------------


def lookup(name: str) -> Setting | None:
    """The declaration of variable ``name`` (a numbered one through its family), None when undeclared."""
    s = _BY_NAME.get(name)
    if s is not None:
        return s
    return next((f for f in _FAMILIES if f.matches(name)), None)


def setting(name: str) -> Setting:
    """The declaration of ``name``; an undeclared name is a programming error (declare it above first)."""
    s = lookup(name)
    if s is None:
        raise KeyError(f"{name} is not a declared setting (observer_resources/settings.py)")
    return s


def raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The text of a declared setting exactly as set, None when unset or blank: for recording what was configured."""
    setting(name)
    value = (os.environ if environ is None else environ).get(name)
    return value if value is not None and value.strip() else None


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Is the setting given (not unset, not blank)? Where its absence, not its default, decides."""
    return raw(name, environ) is not None


def get(name: str, environ: Mapping[str, str] | None = None, *, error: Callable[[str], Exception] | None = None) -> Any:
    """The parsed value of ``name``, or its default when unset or blank. A bad value raises :class:`SettingsError`,
    or ``error(message)`` when given (a caller whose callers expect its own error type)."""
    s = setting(name)
    text = raw(name, environ)
    if text is None:
        return s.default
    try:
        return s.parse(text, name)
    except SettingsError as e:
        if error is None:
            raise
        raise error(str(e)) from None


# --- the README's table ---------------------------------------------------------------------------------------------

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default_cell(s: Setting) -> str:
    if s.default_doc:
        return s.default_doc
    if s.default is None:
        return "—"
    return f"`{format(s.default, 'g') if isinstance(s.default, float) else s.default}`"


def markdown() -> str:
    """Every setting, a table per group, for the README."""
    out: list[str] = []
    for group in GROUPS:
        out += [f"**{group}**", "", "| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        for s in SETTINGS:
            if s.group == group:
                kind = s.kind.expected + (", secret" if s.secret else "")
                out.append(f"| `{s.name}` | {kind} | {_default_cell(s)} | {s.meaning} |")
        out.append("")
    return "\n".join(out)


def with_table(text: str) -> str:
    """``text`` (the README) with the part between the settings markers replaced by :func:`markdown`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the settings markers {BEGIN} … {END} are missing")
    return text[: start + len(BEGIN)] + "\n" + markdown() + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    if len(args) == 2 and args[0] == "--write":
        path = Path(args[1])
        try:
            path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        except (OSError, ValueError) as e:
            print(f"settings: {path}: {e}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m observer_resources.settings --markdown | --write README.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
