"""Where every dataset lives: one home for the lake's paths (docs/architecture.md, "The storage layer").

The writers (the asset modules, the capture) and the readers (the gap report, metrics, backups, retention) take
their paths from here, so a reader never imports another domain's asset module to find a file. Pure functions of
a root and a day, slot or hour; no I/O. The layout is docs/data.md's:

- Tables are Hive-style, ``<dataset>/date=YYYY-MM-DD[/slot=THHMM|/hour=THH]/<name>.parquet``. A slot is spelt
  ``T0150`` everywhere (lake, events, docs; the Dagster key is the day and the slot, ``2026-12-04T0150``): an ISO
  8601 basic time no reader mistakes for an integer. A bare ``0150`` read as the integer 150 in pandas, pyarrow and
  polars and as a string in DuckDB; an hour ``T09`` likewise.
- A dataset directory holds Parquet and nothing else: polars and DuckDB refuse a directory with other files in it,
  even ``_``-prefixed ones. The JSON the writers keep beside a table (compaction manifests and carries, the
  verdict, the event summary, a refusal) lives under ``_meta/<dataset>/`` with the same partition path; the raw
  inputs (master zips) under ``raw/``.
- The small files of the running system live under ``system/`` on the local directory (``lake.local_dir``).
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

from observer_resources.clock import KST
from observer_resources.storage.lake import LakePath, partition_dir

# --- dataset names -------------------------------------------------------------------------------------------------
UNIVERSE = "universe"
UNIVERSE_EXCLUSIONS = "universe_exclusions"  # every master row left out, with its reason: one table per day
UNIVERSE_PREV_CLOSE = "universe_prev_close"  # the previous closes the day's universe was built from
UNIVERSE_NXT = "universe_nxt"  # the NXT status (search-stock-info) of each member the day's universe was built with
UNIVERSE_RAW = "raw/universe"  # the day's master zips and a fallback marker, as downloaded
UNIVERSE_INPUTS_OLD = "universe_inputs"  # the layout before docs/data.md's: read by `observer lake migrate` only
UNIVERSE_REJECTED = "universe_rejected"  # universes the count check refused: evidence only, read by nothing
TRACK_A = "track_a"
TRACK_A_FAILURES = "track_a_failures"  # written only for a slot with failures
TRACK_A_DAILY = "track_a_daily"  # the day's slots in one file, sorted by code (built after the day)
TRACK_A_RAW = "raw/track_a"  # the archive the tables derive from (JSON lines, uncompressed)
TRACK_B = "track_b"
TRACK_B_SAMPLED = "track_b_sampled"
TRACK_B_RESTORED = "track_b_restored"
#: the tapes of the other trade feeds, one dataset each (same schema as track_b's KRX tape)
TRACK_B_TAPES = {"H0NXCNT0": "track_b_nxt", "H0UNCNT0": "track_b_unified"}
#: the trades restored into each of those tapes' holes (KRX's go to track_b_restored)
TRACK_B_TAPES_RESTORED = {"H0NXCNT0": "track_b_nxt_restored", "H0UNCNT0": "track_b_unified_restored"}
#: the other real-time feeds: dataset and file name per kind
TRACK_B_FEEDS = {
    "books": "track_b_books",
    "books_sampled": "track_b_books_sampled",
    "expected": "track_b_expected",
    "status": "track_b_status",
}
TRACK_B_JOURNAL = ("raw", "track_b")  # the capture's durable journal (JSON lines per key and hour)
GAPS = "gaps"
GAP_REPORT_NAME = "gap_report.parquet"
GAP_VERDICT = "gap_verdict"  # the anomaly-day verdict, one row per rule
GAP_COVERAGE = "gap_coverage"  # per slot: symbols expected, live, restored, missing
META = "_meta"  # JSON kept beside tables, out of the Parquet directories
SYSTEM_EVENTS = "system_events"  # the day's event summary (derived from system/events)
MINUTE_BARS = "minute_bars"  # KIS's 1-minute bars of every universe member, one table per trading day
MINUTE_BARS_PROOF = "minute_bars_proof"  # per captured code and minute: the tape's bar against KIS's, and the verdict
DAILY_BARS = "daily_bars"  # KIS's daily bars, raw and adjusted, one table per calendar year (``year=YYYY``)
#: every top-level directory that holds one Hive-partitioned Parquet table: ``observer sql`` makes a view of each.
#: A new dataset is added here too (tests/storage/test_lake_sql.py fails on a dataset constant this leaves out).
TABLE_DATASETS: tuple[str, ...] = (
    UNIVERSE,
    UNIVERSE_EXCLUSIONS,
    UNIVERSE_PREV_CLOSE,
    UNIVERSE_NXT,
    UNIVERSE_REJECTED,
    TRACK_A,
    TRACK_A_FAILURES,
    TRACK_A_DAILY,
    TRACK_B,
    TRACK_B_SAMPLED,
    TRACK_B_RESTORED,
    *TRACK_B_TAPES.values(),
    *TRACK_B_TAPES_RESTORED.values(),
    *TRACK_B_FEEDS.values(),
    GAPS,
    GAP_VERDICT,
    GAP_COVERAGE,
    MINUTE_BARS,
    MINUTE_BARS_PROOF,
    DAILY_BARS,
)


# --- universe --------------------------------------------------------------------------------------------------------
def meta_dir(root: LakePath, dataset: str, d: date) -> LakePath:
    """``_meta/<dataset>/date=D``: where a dataset's JSON sidecars live."""
    return partition_dir(root / META, dataset, d)


def universe_dir(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE, d)


def exclusions_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_EXCLUSIONS, d) / "exclusions.parquet"


def prev_close_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_PREV_CLOSE, d) / "prev_close.parquet"


def nxt_status_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_NXT, d) / "nxt_status.parquet"


def universe_raw_dir(root: LakePath, d: date) -> LakePath:
    """``raw/universe/date=D``: ``masters/<market>_code.mst.zip`` and ``fallback.json``."""
    return partition_dir(root, UNIVERSE_RAW, d)


def universe_path(root: LakePath, d: date) -> LakePath:
    return universe_dir(root, d) / "universe.parquet"


def rejected_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_REJECTED, d) / "universe.parquet"


def rejection_path(root: LakePath, d: date) -> LakePath:
    return meta_dir(root, UNIVERSE_REJECTED, d) / "rejection.json"


# --- Track A ---------------------------------------------------------------------------------------------------------
def slot_label(t: datetime) -> str:
    """``THHMM`` of a slot instant in KST: the ``slot=`` directory, the events' ``slot`` and the key's suffix."""
    return t.astimezone(KST).strftime("T%H%M")


def slot_dir(root: LakePath, slot_ts: datetime, dataset: str = TRACK_A) -> LakePath:
    return partition_dir(root, dataset, slot_ts.astimezone(KST).date(), slot_label(slot_ts))


def daily_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, TRACK_A_DAILY, d) / "track_a.parquet"


# --- Track B ---------------------------------------------------------------------------------------------------------
def hour_label(hour: int) -> str:
    """``THH``: the ``hour=`` directory and the hour key's suffix (``2026-12-04T09``)."""
    return f"T{hour:02d}"


def hour_dir(root: LakePath, start: datetime, dataset: str = TRACK_B) -> LakePath:
    return root / dataset / f"date={start.date().isoformat()}" / f"hour={hour_label(start.hour)}"


def ticks_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start) / "ticks.parquet"


def venue_ticks_path(root: LakePath, start: datetime, tr_id: str) -> LakePath:
    """The hour's tape of one trade feed: KRX's in ``track_b``, NXT's and the unified one in their own datasets."""
    return hour_dir(root, start, TRACK_B_TAPES.get(tr_id, TRACK_B)) / "ticks.parquet"


def feed_path(root: LakePath, start: datetime, kind: str) -> LakePath:
    """The hour's rows of one feed kind (``books``, ``expected``, ``status``)."""
    return hour_dir(root, start, TRACK_B_FEEDS[kind]) / f"{kind}.parquet"


def sampled_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start, TRACK_B_SAMPLED) / "sampled.parquet"


def manifest_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root / META, start) / "manifest.json"


def state_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root / META, start) / "state.json"


def tick_files(root: Path, day: date, dataset: str = TRACK_B) -> list[Path]:
    """The day's hourly tick files of one tape (``track_b``: KRX's; a value of ``TRACK_B_TAPES`` for the others)."""
    return sorted((root / dataset / f"date={day.isoformat()}").glob("hour=T*/ticks.parquet"))


def restored_path(root: LakePath, day: date, dataset: str = TRACK_B_RESTORED) -> LakePath:
    return partition_dir(root, dataset, day) / "restored.parquet"


def edge_holes_path(root: LakePath, day: date, dataset: str = TRACK_B_RESTORED) -> LakePath:
    """``_meta/<restored dataset>/date=D/edge_holes.json``: what each edge hole's fetch found (the end that no
    tick gave), the evidence that one which lost nothing was looked at."""
    return meta_dir(root, dataset, day) / "edge_holes.json"


def journal_root(local: str | os.PathLike) -> Path:
    return Path(local).joinpath(*TRACK_B_JOURNAL)


def segment_path(local: str | os.PathLike, key_id: str, day: date, hour: int) -> Path:
    """``<local>/raw/track_b/date=YYYY-MM-DD/key=<key_id>/HH.jsonl``."""
    return journal_root(local) / f"date={day.isoformat()}" / f"key={key_id}" / f"{hour:02d}.jsonl"


# --- the running system's small files (local directory) --------------------------------------------------------------
#: What lives on the local directory even when the lake is on a URL (appends and fsync, or secrets): the journal, the
#: system files, the token cache. Everything else is the lake's.
LOCAL_ONLY: tuple[tuple[str, ...], ...] = (TRACK_B_JOURNAL, ("system",), ("state",))


def on_local_dir(rel: str) -> bool:
    """Whether a path relative to the lake (posix) is one of ``LOCAL_ONLY``'s."""
    parts = tuple(rel.split("/"))
    return any(parts[: len(p)] == p for p in LOCAL_ONLY)


def capture_dir(local: Path) -> Path:
    return local / "system" / "capture"


def status_path(local: Path) -> Path:
    """Written by the capture process (contract): pid, started_at, updated_at, updated_wall, per key state."""
    return capture_dir(local) / "status.json"


def heartbeat_path(local: Path) -> Path:
    """Written by the capture's supervisor: its run, state, restarts, updated_at, updated_wall."""
    return capture_dir(local) / "supervisor.json"


def overflow_path(local: Path, day: date) -> Path:
    return local / "system" / "overflow" / f"{day:%Y%m%d}.jsonl"


def anomaly_path(local: Path, day: date) -> Path:
    return local / "system" / "anomaly" / f"{day:%Y%m%d}.json"


# --- gaps and events -------------------------------------------------------------------------------------------------
def report_dir(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, GAPS, day)


def report_path(root: LakePath, day: date) -> LakePath:
    return report_dir(root, day) / GAP_REPORT_NAME


def verdict_path(root: LakePath, day: date) -> LakePath:
    """The verdict as the report wrote it (JSON, nested); ``verdict_table_path`` is the same as a table."""
    return meta_dir(root, GAPS, day) / "verdict.json"


def report_summary_path(root: LakePath, day: date) -> LakePath:
    return meta_dir(root, GAPS, day) / "summary.json"


def verdict_table_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, GAP_VERDICT, day) / "verdict.parquet"


def coverage_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, GAP_COVERAGE, day) / "coverage.parquet"


def events_summary_path(root: LakePath, day: date) -> LakePath:
    return meta_dir(root, SYSTEM_EVENTS, day) / "summary.json"


# --- history ---------------------------------------------------------------------------------------------------------
def minute_bars_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, MINUTE_BARS, day) / "minute_bars.parquet"


def minute_bars_proof_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, MINUTE_BARS_PROOF, day) / "proof.parquet"


def daily_bars_path(root: LakePath, year: int) -> LakePath:
    """``daily_bars/year=YYYY/daily_bars.parquet``: a year, not a day, is the unit a history backfill asks for."""
    return root / DAILY_BARS / f"year={year:04d}" / "daily_bars.parquet"


def daily_bars_parts_dir(root: LakePath, year: int) -> LakePath:
    """``_meta/daily_bars/year=YYYY``: a running year's checkpointed parts (Parquet), removed once the year is
    assembled; outside the dataset directory, which holds the assembled tables only."""
    return root / META / DAILY_BARS / f"year={year:04d}"
