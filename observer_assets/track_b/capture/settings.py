"""The capture's settings: command line and environment, checked once at start (a bad value exits 2, not later)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from observer_assets.track_b.mitigation import METRICS, Thresholds
from observer_assets.track_b.window import ENV_WINDOW, parse_window
from observer_resources import settings as settings_mod
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.dates import parse_iso_datetime
from observer_resources.kis.config import KisConfig, configs_from_env
from observer_resources.kis.errors import KisConfigError
from observer_resources.kis.feeds import FeedPlan
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS
from observer_resources.kis.ws import DEFAULT_BACKOFF
from observer_resources.storage import lake


class ConfigError(ValueError):
    """Bad configuration: exit 2 with the message."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path  # local: the journal, events, status (appends and fsync)
    calendar: MarketCalendar
    window: str
    pins: tuple[str, ...] = ()
    until: datetime | None = None
    status_interval: float = 2.0
    eval_interval: float = 30.0
    sample_interval: float = 10.0
    failure_after: float = 300.0
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    key_in_use_backoff: float = 5.0
    stop_timeout: float = 10.0
    mitigation_hold_enter: float = 300.0
    mitigation_hold_recover: float = 600.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    lake_dir: Any = None  # the lake (Track A snapshots), a Path or a URL's UPath; default: data_dir
    feeds: FeedPlan = field(default_factory=lambda: settings_mod.setting("OBSERVER_TRACK_B_FEEDS").default)
    status_code: str = field(default_factory=lambda: settings_mod.setting("OBSERVER_TRACK_B_STATUS_CODE").default)

    @property
    def capacity(self) -> int:
        """Symbols one session follows: its 41 registrations over the feeds each holds."""
        return self.feeds.capacity()

    @property
    def anchors(self) -> tuple[tuple[str, str], ...]:
        """The (TR, code) registrations a session holds besides its symbols' feeds."""
        return tuple((tr, self.status_code) for tr in self.feeds.anchored)


def _codes(text: str, what: str) -> tuple[str, ...]:
    out = [c.strip() for c in (text or "").split(",") if c.strip()]
    bad = [c for c in out if not (len(c) <= 12 and c.isascii() and c.isalnum())]
    if bad:
        raise ConfigError(f"{what}: not symbol codes: {bad[:5]}")
    return tuple(dict.fromkeys(out))


def _positive(v: str | float, what: str, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ConfigError(f"{what} must be a positive number, got {v!r}")
    return f


def parse_until(text: str) -> datetime:
    try:
        dt = parse_iso_datetime(text.strip(), "--until")
    except ValueError:
        raise ConfigError(
            f"--until must be an ISO 8601 instant (e.g. 2026-03-10T15:00:00+09:00), got {text!r}"
        ) from None
    return dt.replace(tzinfo=KST) if dt.tzinfo is None else dt.astimezone(KST)


def _thresholds(spec: Mapping[str, Any]) -> Thresholds:
    base = Thresholds()
    parts = {}
    for name in ("enter1", "enter2", "recover1"):
        m = dict(getattr(base, name))
        over = spec.get(name) or {}
        if not isinstance(over, Mapping) or set(over) - set(METRICS):
            raise ConfigError(f"OBSERVER_TRACK_B_MITIGATION.{name} takes {METRICS}, got {over!r}")
        m.update({k: float(v) for k, v in over.items()})
        parts[name] = m
    return Thresholds(**parts)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m observer_assets.track_b.capture",
        description="Track B capture: one KIS WebSocket session per app key.",
    )
    ap.add_argument("--until", help="stop at this instant (ISO 8601; no offset = KST); default: the window's end")
    ap.add_argument("--pins", help="comma-separated codes that always hold a slot (default OBSERVER_TRACK_B_PINS)")
    ap.add_argument("--status-interval", type=float, default=2.0, help="seconds between status file writes")
    ap.add_argument("--eval-interval", type=float, help="seconds between slot evaluations (default 30)")
    ap.add_argument("--sample-interval", type=float, help="seconds between load samples (default 10)")
    ap.add_argument("--failure-after", type=float, help="continuous failure before the critical rule (default 300)")
    return ap


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[Settings, list[KisConfig]]:
    """Parse the command line and environment; raises ConfigError (exit 2) with a clear message."""
    args = build_parser().parse_args(argv)
    try:
        configs = configs_from_env(environ)
        cal = calendar_from_env(dict(environ))
    except (KisConfigError, ValueError) as exc:
        raise ConfigError(str(exc)) from None

    def setting(name: str):  # noqa: ANN202 - the declared type
        return settings_mod.get(name, environ, error=ConfigError)

    window = setting(ENV_WINDOW)
    try:
        parse_window(window)
    except ValueError as exc:
        raise ConfigError(f"{ENV_WINDOW}: {exc}") from None
    pins = _codes(args.pins, "pins") if args.pins is not None else tuple(setting("OBSERVER_TRACK_B_PINS") or ())
    feeds: FeedPlan = setting("OBSERVER_TRACK_B_FEEDS")
    per_key = feeds.capacity(WS_MAX_REGISTRATIONS)
    if len(pins) > per_key * len(configs):
        raise ConfigError(
            f"{len(pins)} pins but {len(configs)} key(s) x {per_key} slots hold {per_key * len(configs)} "
            f"(OBSERVER_TRACK_B_FEEDS={feeds.text}: {len(feeds.per_code)} registration(s) per symbol"
            f"{f' and {len(feeds.anchored)} status' if feeds.anchored else ''} of {WS_MAX_REGISTRATIONS})"
        )
    until = parse_until(args.until) if args.until else None

    def num(flag: float | None, env: str, opt: str) -> float:
        return _positive(flag, opt) if flag is not None else setting(env)

    backoff = setting("OBSERVER_TRACK_B_BACKOFF") or DEFAULT_BACKOFF
    spec = setting("OBSERVER_TRACK_B_MITIGATION")
    hold_enter, hold_recover, thresholds = 300.0, 600.0, Thresholds()
    if spec is not None:
        hold_enter = _positive(spec.get("hold_enter_s", 300.0), "hold_enter_s", allow_zero=True)
        hold_recover = _positive(spec.get("hold_recover_s", 600.0), "hold_recover_s", allow_zero=True)
        thresholds = _thresholds(spec)
    settings = Settings(
        data_dir=lake.local_dir(dict(environ)),  # journal, events, status: appends and fsync
        lake_dir=lake.data_dir(dict(environ)),
        calendar=cal,
        window=window,
        pins=pins,
        until=until,
        status_interval=_positive(args.status_interval, "--status-interval"),
        eval_interval=num(args.eval_interval, "OBSERVER_TRACK_B_EVAL_S", "--eval-interval"),
        sample_interval=num(args.sample_interval, "OBSERVER_TRACK_B_SAMPLE_S", "--sample-interval"),
        failure_after=num(args.failure_after, "OBSERVER_TRACK_B_FAILURE_S", "--failure-after"),
        backoff=backoff,
        key_in_use_backoff=setting("OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S"),
        mitigation_hold_enter=hold_enter,
        mitigation_hold_recover=hold_recover,
        thresholds=thresholds,
        feeds=feeds,
        status_code=setting("OBSERVER_TRACK_B_STATUS_CODE"),
    )
    return settings, configs
