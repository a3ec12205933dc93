"""What every part of the gap report shares: the day's inputs, the thresholds and the gap row schema.

Its own module so the per-track rule modules and ``detect`` (which runs them and judges the day) all depend on it,
never on each other; importers use ``detect``, which re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from observer_resources.calendar import KST
from observer_resources.events import Gap

TS = pa.timestamp("us", tz="Asia/Seoul")
GAP_SCHEMA = pa.schema(
    [
        ("gap_id", pa.string()),
        ("kind", pa.string()),  # track_a_missing_slot | track_a_missing_symbol | track_a_late | track_b_loss |
        #                         track_b_silence | ws_disconnect | capture_restart | manual_stop | rate_limit | ...
        ("scope", pa.string()),  # swing | scalp | all
        ("symbol", pa.string()),  # null for slot- or connection-wide gaps
        ("slot_ts", TS),  # Track A slot the row is about
        ("start", TS),
        ("end", TS),  # null while a marker is still open
        ("seconds", pa.float64()),
        ("severity", pa.string()),  # minor | major | critical
        ("reason", pa.string()),  # docs/collector-rules.md §8.3 code
        ("data_lost", pa.bool_()),
        ("missing_volume", pa.int64()),
        ("missing_trades", pa.int64()),
        ("error_code", pa.string()),
        ("evidence", pa.string()),  # JSON
        ("restorable", pa.bool_()),
        ("restore_how", pa.string()),  # minute_bars_today | minute_bars_past | conclusions | null
        ("status", pa.string()),  # open | restored | unrecoverable | info
        ("restored_from", pa.string()),
        ("source_files", pa.string()),  # JSON list
    ]
)

LOSS_KINDS = frozenset(
    {
        "track_a_missing_slot",
        "track_a_missing_symbol",
        "track_b_loss",
        "ws_disconnect",
        "capture_restart",
        "manual_stop",
    }
)


@dataclass(frozen=True)
class Thresholds:
    grace_s: float = 120.0  # Track A: a snapshot is on time up to slot + 2 min
    critical_late_s: float = 600.0  # Track A: >= 10 min late is critical
    silence_s: tuple[float, float, float] = (10.0, 60.0, 300.0)  # Track B silence minor / major / critical
    loss_critical_s: float = 300.0  # a loss spanning this long is critical
    window_critical_s: float = 300.0  # a connection-wide gap longer than this is critical
    anomaly_reconnects: int = 20
    anomaly_disconnect_s: float = 600.0
    anomaly_long_gap_s: float = 60.0
    anomaly_long_gaps: int = 2


@dataclass
class DayInputs:
    """Everything the report needs for one day, already read. Tables may be missing (None/empty).

    ``snapshots``/``failures`` are keyed by slot instant; snapshot tables need ``code``, ``source``,
    ``restored_from`` and ``fetched_at``; failure tables ``code`` and ``error``. ``ticks`` needs ``code``,
    ``receive_ts``, ``acml_vol``, ``qty`` and optionally ``buy_cnt``, ``sell_cnt``, ``key_id``, ``source``,
    ``restored_from`` (restored ticks carry ``source = restored``); ``restored_ticks`` are the restore asset's rows
    (``code``, ``acml_vol``, ``qty``, ``restored_from``), judged whatever their time. ``today`` says whether KIS
    still serves the day's intraday endpoints (today's minute bars, conclusions)."""

    day: date
    as_of: datetime
    slots: Sequence[datetime]
    universe: Sequence[str] | None
    snapshots: Mapping[datetime, pa.Table] = field(default_factory=dict)
    failures: Mapping[datetime, pa.Table] = field(default_factory=dict)
    ticks: pa.Table | None = None
    restored_ticks: pa.Table | None = None  # track_b_restored rows: code, acml_vol, qty, restored_from
    gap_markers: Sequence[Gap] = ()
    events: Sequence[Mapping[str, Any]] = ()
    anomaly: Mapping[str, Any] | None = None
    today: bool = False
    files: Mapping[str, Sequence[str]] = field(default_factory=dict)  # "slot:HHMM", "track_b", "events", ...
    #: lines of the day's event files that could not be read: {"bad_lines": n, "torn_lines": n, "where": [...]}
    events_unreadable: Mapping[str, Any] = field(default_factory=dict)


def make_id(*parts: Any) -> str:
    return hashlib.sha1("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:16]


def make_row(**kw: Any) -> dict[str, Any]:
    r = {f.name: None for f in GAP_SCHEMA}
    r.update(kw)
    if isinstance(r["evidence"], (dict, list)):
        r["evidence"] = json.dumps(r["evidence"], ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(r["source_files"], (list, tuple)):
        r["source_files"] = json.dumps(list(r["source_files"]), ensure_ascii=False)
    return r


def as_kst(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: every time in the gap report carries its zone")
    return t.astimezone(KST)
