"""Readers of the stored universe, without Dagster: Track A, the gap report and the checks read the day's universe
through these rather than through the universe asset's module."""

import json
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from observer_assets.orchestration.partitions import calendar
from observer_resources.storage import lake
from observer_resources.storage.layout import rejected_path, rejection_path, universe_path

FALLBACK_DAYS = 14


def read_rejection(root: Path, d: date) -> dict[str, Any] | None:
    """Why the day's universe was refused, when it was refused and has not been published since (else None)."""
    if universe_path(root, d).exists() or not rejected_path(root, d).exists():
        return None
    try:
        return json.loads(rejection_path(root, d).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {"problems": ["(rejection.json unreadable)"]}


def read_universe(root: Path, d: date) -> pa.Table | None:
    path = universe_path(root, d)
    return lake.read_table(path) if path.exists() else None


def latest_universe_before(root: Path, d: date, max_days: int = FALLBACK_DAYS) -> tuple[date, pa.Table] | None:
    """The newest stored universe strictly before `d`, at most `max_days` trading days back."""
    cal = calendar()
    day = d
    for _ in range(max_days):
        day = cal.previous_trading_day(day)
        t = read_universe(root, day)
        if t is not None:
            return day, t
    return None
