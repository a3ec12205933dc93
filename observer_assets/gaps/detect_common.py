"""What every part of the gap report shares: the day's inputs, the thresholds, the schemas of its three tables
(gap rows, per-slot coverage, verdict rules) and the reason codes.

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
from observer_resources.calendar.phases import Phase
from observer_resources.events import Gap

TS = pa.timestamp("us", tz="Asia/Seoul")
GAP_SCHEMA = pa.schema(
    [
        ("gap_id", pa.string()),
        ("kind", pa.string()),  # KINDS
        ("scope", pa.string()),  # swing | scalp | all
        ("symbol", pa.string()),  # null for slot- or connection-wide gaps
        ("key_id", pa.string()),  # the app key's session of a Track B row, when known
        ("slot_ts", TS),  # Track A slot the row is about
        ("start", TS),
        ("end", TS),  # null while a marker is still open
        ("seconds", pa.float64()),
        ("severity", pa.string()),  # minor | major | critical
        ("reason", pa.string()),  # REASONS
        ("data_lost", pa.bool_()),
        ("subscribed_codes", pa.int64()),  # Track B windows: codes held on the session then; null when not known
        ("missing_volume", pa.int64()),
        ("missing_trades", pa.int64()),
        ("error_code", pa.string()),
        ("evidence", pa.string()),  # JSON
        ("restorable", pa.bool_()),
        ("restore_how", pa.string()),  # minute_bars_today | minute_bars_past | conclusions | null
        ("status", pa.string()),  # open | restored | unrecoverable | info
        ("restored_from", pa.string()),
        ("source_files", pa.string()),  # JSON list
        # added with the two-venue day: null in reports written before (re-materialize the day to fill them)
        ("venue", pa.string()),  # KRX | NXT | unified, or two joined by + for a slot that quoted both kinds
        ("phase", pa.string()),  # each venue's phase at the row's instant, VENUE:name joined by +; break | closed
    ]
)

#: per Track A slot of the day up to the report's as-of time (``gap_coverage/date=D/coverage.parquet``)
COVERAGE_SCHEMA = pa.schema(
    [
        ("slot", pa.string()),  # T0910
        ("slot_ts", TS),
        ("state", pa.string()),  # live | restored | missing | pending
        ("expected", pa.int64()),
        ("live", pa.int64()),
        ("restored", pa.int64()),
        ("missing", pa.int64()),
        ("coverage_ratio", pa.float64()),
        ("live_ratio", pa.float64()),
        ("failures", pa.int64()),
        ("first_fetched_at", TS),
        ("late_seconds", pa.float64()),
        ("reason", pa.string()),
        ("restored_from", pa.string()),
    ]
)

#: one row per anomaly-day rule (``gap_verdict/date=D/verdict.parquet``)
VERDICT_SCHEMA = pa.schema(
    [
        ("rule", pa.string()),
        ("decided", pa.bool_()),
        ("fired", pa.bool_()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("unit", pa.string()),
        ("detail", pa.string()),  # JSON
        ("anomaly_day", pa.bool_()),
        ("as_of", TS),
    ]
)

KINDS = (
    "track_a_missing_slot",
    "track_a_missing_symbol",
    "track_a_late",
    "track_b_loss",
    "track_b_silence",
    "track_b_phase_missing",
    "ws_disconnect",
    "capture_restart",
    "manual_stop",
    "rate_limit",
    "track_b_unproven",
)

#: every ``reason`` the report writes, and the evidence it rests on (the catalog and docs/data.md say the same)
REASONS = {
    "rate_limit": "KIS answered EGW00201: the slot's failures, or rejections recorded while the run fetched",
    "api_error": "KIS answered another error (a failure's error text, a run that failed on a KIS error)",
    "no_data_received": "asked and answered without it (missing from the multi-quote answer); Track B: trades "
    "that never arrived (a cumulative-volume break) or a silence",
    "deadline": "the slot's run reached the next slot before asking for it (its failures say deadline)",
    "system_error": "Observer failed: the slot's run failed on a non-KIS error; the capture died (restart)",
    "launched_late": "the slot's run was created after the grace: nothing launched it at the slot, the catch-up "
    "sensor or a person did later (the run's record)",
    "started_late": "the slot's run was created in time but began after the grace (queued, or its process slow "
    "to start: the run's record)",
    "not_run": "no run of the slot exists in the Dagster instance",
    "ws_disconnect": "the capture's gap marker: the WebSocket dropped or never connected",
    "ws_timeout": "the capture's gap marker: no traffic within the watchdog timeout",
    "manual_stop": "the capture's gap marker: stopped inside its window",
    "unknown": "late or missing, and nothing on record says why",
    "minute_bars_disagree": "KIS's own minute bars of the tape disagree with the captured ticks in minutes the code was "
    "held and no recorded gap covers (the completeness proof)",
}

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


@dataclass(frozen=True)
class SlotRun:
    """One Dagster run of a Track A slot as the instance recorded it: the evidence of why a slot was late or absent
    (when the run was created, when it began, how it was launched)."""

    run_id: str
    status: str  # DagsterRunStatus name
    created: datetime
    started: datetime | None = None
    ended: datetime | None = None
    launched_by: str = "manual"  # schedule | catch_up | backfill | manual


@dataclass
class DayInputs:
    """Everything the report needs for one day, already read. Tables may be missing (None/empty).

    ``snapshots``/``failures`` are keyed by slot instant; snapshot tables need ``code``, ``source``,
    ``restored_from`` and ``fetched_at``; failure tables ``code`` and ``error``. ``ticks`` needs ``code``,
    ``receive_ts``, ``acml_vol``, ``qty`` and optionally ``buy_cnt``, ``sell_cnt``, ``key_id``, ``source``,
    ``restored_from`` (restored ticks carry ``source = restored``); ``restored_ticks`` are the restore asset's rows
    (``code``, ``acml_vol``, ``qty``, ``restored_from``), judged whatever their time. ``today`` says whether KIS
    still serves the day's intraday endpoints (today's minute bars, conclusions). ``runs`` are the Track A runs per
    slot from the Dagster instance; None when they were not looked up (the reasons they alone prove are then not
    given)."""

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
    runs: Mapping[datetime, Sequence[SlotRun]] | None = None
    files: Mapping[str, Sequence[str]] = field(default_factory=dict)  # "slot:T0910", "track_b", "events", ...
    #: lines of the day's event files that could not be read: {"bad_lines": n, "torn_lines": n, "where": [...]}
    events_unreadable: Mapping[str, Any] = field(default_factory=dict)
    #: the members each slot quotes, with the KIS market code of each (J, UN): on the two-venue day outside KRX's
    #: phases only NXT's stocks trade; a slot missing here expects the whole ``universe``, on KRX
    slot_universe: Mapping[datetime, Mapping[str, str]] = field(default_factory=dict)
    #: every venue's phases of the day (the calendar's), for the venue and phase each row is about
    phases: Sequence[Phase] = ()
    #: the other tapes Track B streamed (``unified``, ``NXT``), each judged like ``ticks`` by its own volume
    venue_ticks: Mapping[str, pa.Table] = field(default_factory=dict)
    #: their restored trades (``track_b_unified_restored``, ``track_b_nxt_restored``), as ``restored_ticks``
    venue_restored: Mapping[str, pa.Table] = field(default_factory=dict)
    #: per tape (``KRX``, ``unified``, ``NXT``): each fetched edge hole (``observer_assets.track_b.restore``),
    #: (edge, code, the end a tick gave) -> the other end its fetch found
    edge_holes: Mapping[str, Mapping[tuple[str, str, int], int]] = field(default_factory=dict)
    #: the configured Track B window of the day (KRX calendar only): a phase in it no capture ran through is a gap
    track_b_window: tuple[datetime, datetime] | None = None
    #: KIS's minute bars of the day (``minute_bars``): the completeness proof's independent source; None until fetched
    minute_bars: pa.Table | None = None

    def universe_at(self, slot: datetime) -> Sequence[str]:
        """The codes slot ``slot`` should hold."""
        got = self.slot_universe.get(slot)
        return list(got) if got is not None else list(self.universe or ())


#: the venues behind each name a gap row gives (the unified view is both)
VENUES_OF = {"KRX": ("KRX",), "NXT": ("NXT",), "unified": ("KRX", "NXT")}


def phase_label(phases: Sequence[Phase], venue: str, at: datetime) -> str:
    """The phase of each venue behind ``venue`` (``KRX``, ``NXT``, ``unified``, or two joined by ``+``) at ``at``:
    ``VENUE:name`` joined by ``+``. A phase running at ``at`` wins over one ending at it (a slot at 15:30 is the
    closing auction's end). ``break`` between a venue's phases, ``closed`` outside them all (pure)."""
    venues = [v for part in venue.split("+") for v in VENUES_OF.get(part, (part,))]
    venues = sorted(set(venues), key=venues.index)
    out: list[str] = []
    inside = False
    for v in venues:
        own = [p for p in phases if p.venue == v]
        if own and own[0].start <= at <= own[-1].end:
            inside = True
        hit = next((p for p in own if p.start <= at < p.end), None) or next((p for p in own if p.end == at), None)
        if hit is not None:
            out.append(f"{v}:{hit.name}")
    return "+".join(out) if out else "break" if inside else "closed"


def cut(pieces: list[tuple[Any, Any]], a: Any, b: Any) -> list[tuple[Any, Any]]:
    """``pieces`` (spans) without the span (a, b): what stays uncovered (µs or instants alike)."""
    out = []
    for pa_, pb_ in pieces:
        if b <= pa_ or a >= pb_:
            out.append((pa_, pb_))
            continue
        if a > pa_:
            out.append((pa_, a))
        if b < pb_:
            out.append((b, pb_))
    return out


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


def upgrade_gap_report_table(t: pa.Table) -> pa.Table:
    """A gap report in ``GAP_SCHEMA``'s columns and order: columns added since it was written come back null (a
    row's evidence cannot be re-judged from the table: re-materialize the day for that); a current table is
    returned equal. Columns the schema does not know are kept at the end, so nothing is lost."""
    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in GAP_SCHEMA]
    extra = [n for n in t.column_names if n not in GAP_SCHEMA.names]
    schema = pa.schema(list(GAP_SCHEMA) + [t.schema.field(n) for n in extra])
    return pa.Table.from_arrays(cols + [t[n] for n in extra], schema=schema)
