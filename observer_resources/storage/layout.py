"""Where every dataset lives: one home for the lake's paths (docs/architecture.md, "The storage layer").

The writers (the asset modules, the capture) and the readers (the gap report, metrics, backups, retention) take
their paths from here, so a reader never imports another domain's asset module to find a file. Pure functions of
a root and a day, slot or hour; no I/O. Tables are Hive-style (``<dataset>/date=YYYY-MM-DD[/slot=HHMM|/hour=HH]``);
the small files of the running system live under ``system/`` on the local directory (``lake.local_dir``).
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

from observer_resources.clock import KST
from observer_resources.storage.lake import LakePath, partition_dir

# --- dataset names -------------------------------------------------------------------------------------------------
UNIVERSE = "universe"
UNIVERSE_INPUTS = (
    "universe_inputs"  # master zips, previous closes, exclusions: kept apart so `universe/` is one clean dataset
)
UNIVERSE_REJECTED = "universe_rejected"  # universes the count check refused: evidence only, read by nothing
TRACK_A = "track_a"
TRACK_A_FAILURES = "track_a_failures"
TRACK_A_RAW = "raw/track_a"  # the archive the tables derive from (JSON lines, uncompressed)
TRACK_B = "track_b"
TRACK_B_SAMPLED = "track_b_sampled"
TRACK_B_RESTORED = "track_b_restored"
TRACK_B_JOURNAL = ("raw", "track_b")  # the capture's durable journal (JSON lines per key and hour)
GAPS = "gaps"
GAP_REPORT_NAME = "gap_report.parquet"
SYSTEM_EVENTS = "system_events"  # the day's event summary (derived from system/events)


# --- universe --------------------------------------------------------------------------------------------------------
def universe_dir(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE, d)


def inputs_dir(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_INPUTS, d)


def universe_path(root: LakePath, d: date) -> LakePath:
    return universe_dir(root, d) / "universe.parquet"


def rejected_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_REJECTED, d) / "universe.parquet"


def rejection_path(root: LakePath, d: date) -> LakePath:
    return partition_dir(root, UNIVERSE_REJECTED, d) / "rejection.json"


# --- Track A ---------------------------------------------------------------------------------------------------------
def slot_label(t: datetime) -> str:
    """``HHMM`` of a slot instant in KST: the ``slot=`` directory and the key's suffix."""
    return t.astimezone(KST).strftime("%H%M")


def slot_dir(root: LakePath, slot_ts: datetime, dataset: str = TRACK_A) -> LakePath:
    return partition_dir(root, dataset, slot_ts.astimezone(KST).date(), slot_label(slot_ts))


# --- Track B ---------------------------------------------------------------------------------------------------------
def hour_dir(root: LakePath, start: datetime, dataset: str = TRACK_B) -> LakePath:
    return root / dataset / f"date={start.date().isoformat()}" / f"hour={start.hour:02d}"


def ticks_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start) / "ticks.parquet"


def sampled_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start, TRACK_B_SAMPLED) / "sampled.parquet"


def manifest_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start) / "_manifest.json"


def state_path(root: LakePath, start: datetime) -> LakePath:
    return hour_dir(root, start) / "_state.json"


def tick_files(root: Path, day: date) -> list[Path]:
    return sorted((root / TRACK_B / f"date={day.isoformat()}").glob("hour=*/ticks.parquet"))


def restored_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, TRACK_B_RESTORED, day) / "restored.parquet"


def journal_root(local: str | os.PathLike) -> Path:
    return Path(local).joinpath(*TRACK_B_JOURNAL)


def segment_path(local: str | os.PathLike, key_id: str, day: date, hour: int) -> Path:
    """``<local>/raw/track_b/date=YYYY-MM-DD/key=<key_id>/HH.jsonl``."""
    return journal_root(local) / f"date={day.isoformat()}" / f"key={key_id}" / f"{hour:02d}.jsonl"


# --- the running system's small files (local directory) --------------------------------------------------------------
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
    return report_dir(root, day) / "verdict.json"


def events_summary_path(root: LakePath, day: date) -> LakePath:
    return partition_dir(root, SYSTEM_EVENTS, day) / "summary.json"
