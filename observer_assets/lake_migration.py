"""Bring a lake written before docs/data.md's layout up to it, losing nothing (``observer lake migrate``).

The earlier layout spelt slots ``slot=0150`` and hours ``hour=09`` (read as integers by three of the four tools),
kept JSON beside the Parquet (polars and DuckDB refuse such directories) and mixed the universe's inputs in one
directory; its tables lack the columns added since. Migrating is two passes, both idempotent:

1. **Moves**: every old path is renamed to its new one (``os.replace`` on one filesystem, so a file is always in
   exactly one of the two places). A new path that already exists is never overwritten: the old file stays where
   it is and the move is reported as a conflict (exit 1), for a person to decide — except a sidecar its writer
   derives again (a verdict, a summary, a compaction manifest), which a newer run has already replaced.
2. **Rewrites**: empty failure files are removed (a slot has one now only when something failed), and every
   Parquet file of a dataset whose schema has changed is read, upgraded by its owner's
   ``upgrade_*`` function (new columns null or derived, renamed columns renamed) and written back atomically.
   Track B ticks are walked hour by hour so the per-code ``seq`` continues across hours. A day with slot files
   gets its ``track_a_daily`` table.

A ``_meta/lake.json`` records the layout version. Only a local lake is migrated: on an object store a rename is a
copy, so sync the lake to a local directory, migrate, and sync it back.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from observer_resources import clock
from observer_resources.secrets import redact_url
from observer_resources.storage import lake, layout

LAYOUT_VERSION = 2
MARKER = (layout.META, "lake.json")

_OLD_SLOT = re.compile(r"^slot=(\d{4})$")
_OLD_HOUR = re.compile(r"^hour=(\d{2})$")
_DATE = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")
SLOT_DATASETS = (layout.TRACK_A, layout.TRACK_A_FAILURES, layout.TRACK_A_RAW)
HOUR_DATASETS = (layout.TRACK_B, layout.TRACK_B_SAMPLED)
# (old dataset, old file name) -> (new dataset, new file name) for JSON that sat beside the Parquet of a day
DAY_SIDECARS = {
    (layout.GAPS, "verdict.json"): (f"{layout.META}/{layout.GAPS}", "verdict.json"),
    (layout.GAPS, "summary.json"): (f"{layout.META}/{layout.GAPS}", "summary.json"),
    (layout.SYSTEM_EVENTS, "summary.json"): (f"{layout.META}/{layout.SYSTEM_EVENTS}", "summary.json"),
    (layout.UNIVERSE_REJECTED, "rejection.json"): (f"{layout.META}/{layout.UNIVERSE_REJECTED}", "rejection.json"),
    (layout.UNIVERSE_INPUTS_OLD, "exclusions.parquet"): (layout.UNIVERSE_EXCLUSIONS, "exclusions.parquet"),
    (layout.UNIVERSE_INPUTS_OLD, "prev_close.parquet"): (layout.UNIVERSE_PREV_CLOSE, "prev_close.parquet"),
    (layout.UNIVERSE_INPUTS_OLD, "FALLBACK.json"): (layout.UNIVERSE_RAW, "fallback.json"),
    (layout.UNIVERSE_INPUTS_OLD, "masters"): (layout.UNIVERSE_RAW, "masters"),
}
HOUR_SIDECARS = {"_manifest.json": "manifest.json", "_state.json": "state.json"}
# sidecars a writer derives again on its next run: when the new layout already has one, the old is stale, not a clash
DERIVED = frozenset({"verdict.json", "summary.json", "_manifest.json", "_state.json"})


class MigrationError(Exception):
    """The lake cannot be migrated here (not local, not a directory)."""


@dataclass
class MigrationReport:
    moved: list[tuple[str, str]] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # empty failure files: a slot now has one only when it failed
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.moved or self.rewritten or self.removed)

    def summary(self) -> dict:
        return {
            "layout": LAYOUT_VERSION,
            "dry_run": self.dry_run,
            "moved": len(self.moved),
            "rewritten": len(self.rewritten),
            "removed": len(self.removed),
            "conflicts": [f"{a} -> {b}" for a, b in self.conflicts],
        }


# --- pass 1: moves ----------------------------------------------------------------------------------------------------
def _day_dirs(root: Path, dataset: str) -> Iterator[Path]:
    base = root / dataset
    if base.is_dir():
        yield from sorted(d for d in base.iterdir() if d.is_dir() and _DATE.match(d.name))


def planned_moves(root: Path) -> list[tuple[Path, Path]]:
    """Every (old, new) path pair of the earlier layout present under ``root``, in a stable order."""
    moves: list[tuple[Path, Path]] = []
    for ds in SLOT_DATASETS:
        for day in _day_dirs(root, ds):
            for d in sorted(day.iterdir()):
                m = _OLD_SLOT.match(d.name)
                if m and d.is_dir():
                    moves.append((d, day / f"slot=T{m[1]}"))
    for ds in HOUR_DATASETS:
        for day in _day_dirs(root, ds):
            for d in sorted(day.iterdir()):
                m = _OLD_HOUR.match(d.name)
                if not d.is_dir() or not (m or d.name.startswith("hour=T")):
                    continue
                new_name = f"hour=T{m[1]}" if m else d.name
                meta = root / layout.META / ds / day.name / new_name
                # the sidecars first: the directory they leave is then moved (or pruned) as a whole
                moves += [(d / o, meta / n) for o, n in HOUR_SIDECARS.items() if (d / o).exists()]
                if m:
                    moves.append((d, day / new_name))
    for (ds, name), (new_ds, new_name) in DAY_SIDECARS.items():
        for day in _day_dirs(root, ds):
            if (day / name).exists():
                moves.append((day / name, root / new_ds / day.name / new_name))
    return moves


def _move(src: Path, dst: Path, rep: MigrationReport, root: Path) -> None:
    rel = (str(src.relative_to(root)), str(dst.relative_to(root)))
    if dst.exists():
        if src.name in DERIVED and src.is_file():
            rep.removed.append(rel[0])
            if not rep.dry_run:
                src.unlink()
            return
        rep.conflicts.append(rel)
        return
    rep.moved.append(rel)
    if rep.dry_run:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    lake.fsync_dir(dst.parent)


def _prune_empty(root: Path, datasets: tuple[str, ...]) -> None:
    """Directories the moves emptied (an old slot directory whose sidecars left, an emptied ``universe_inputs``)."""
    for ds in datasets:
        base = root / ds
        if not base.is_dir():
            continue
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(base.iterdir()):
            base.rmdir()


# --- pass 2: rewrites -------------------------------------------------------------------------------------------------
Upgrade = Callable[[pa.Table], pa.Table]


def _upgraders() -> dict[str, tuple[str, Upgrade]]:
    """dataset -> (file glob under a day, upgrade function); imported on use (the domains' modules are heavy)."""
    from observer_assets.gaps.report import upgrade_gap_report_table
    from observer_assets.track_a.snapshot import upgrade_snapshot_table
    from observer_assets.track_b.compaction_sampling import upgrade_sampled_table
    from observer_assets.track_b.restore import upgrade_restored_table
    from observer_assets.universe.rules import upgrade_exclusions_table, upgrade_universe_table

    return {
        layout.UNIVERSE: ("universe.parquet", upgrade_universe_table),
        layout.UNIVERSE_REJECTED: ("universe.parquet", upgrade_universe_table),
        layout.UNIVERSE_EXCLUSIONS: ("exclusions.parquet", upgrade_exclusions_table),
        layout.TRACK_A: ("slot=T*/snapshot.parquet", upgrade_snapshot_table),
        layout.TRACK_B_SAMPLED: ("hour=T*/sampled.parquet", upgrade_sampled_table),
        layout.TRACK_B_RESTORED: ("restored.parquet", upgrade_restored_table),
        layout.GAPS: (layout.GAP_REPORT_NAME, upgrade_gap_report_table),
    }


def _rewrite(path: Path, table: pa.Table, upgraded: pa.Table, rep: MigrationReport, root: Path) -> None:
    if upgraded.schema.equals(table.schema) and upgraded.equals(table):
        return
    rep.rewritten.append(str(path.relative_to(root)))
    if not rep.dry_run:
        lake.write_table_atomic(path, upgraded)


def _rewrite_ticks(root: Path, rep: MigrationReport) -> None:
    """Track B ticks, day by day and hour by hour: ``seq`` per code continues from the hour before."""
    from observer_assets.track_b.compaction_ticks import seq_end, upgrade_ticks_table

    for day in _day_dirs(root, layout.TRACK_B):
        seq_start: dict[str, int] = {}
        for f in sorted(day.glob("hour=T*/ticks.parquet")):
            t = pq.read_table(f, partitioning=None)
            up = upgrade_ticks_table(t, seq_start=seq_start)
            seq_start.update(seq_end(up))
            _rewrite(f, t, up, rep, root)


def _rewrite_tables(root: Path, rep: MigrationReport) -> None:
    for ds, (pattern, upgrade) in _upgraders().items():
        for day in _day_dirs(root, ds):
            for f in sorted(day.glob(pattern)):
                t = pq.read_table(f, partitioning=None)
                _rewrite(f, t, upgrade(t), rep, root)
    _rewrite_ticks(root, rep)
    _build_daily(root, rep)
    for day in _day_dirs(root, layout.TRACK_A_FAILURES):
        for f in sorted(day.glob("slot=T*/failures.parquet")):
            if pq.read_metadata(f).num_rows == 0:
                rep.removed.append(str(f.relative_to(root)))
                f.unlink()
                if not any(f.parent.iterdir()):
                    f.parent.rmdir()


def _build_daily(root: Path, rep: MigrationReport) -> None:
    """``track_a_daily`` for every day with slot files and no daily table yet (the earlier layout had none); the
    daily sensor would build the same from the instance's history, this makes the lake whole without Dagster."""
    from datetime import date, datetime, time

    from observer_assets.track_a.daily import compact_day, parquet_bytes
    from observer_resources.calendar import KST

    for day in _day_dirs(root, layout.TRACK_A):
        d = date.fromisoformat(day.name.removeprefix("date="))
        out = Path(layout.daily_path(root, d))
        if out.exists():
            continue
        slots = {}
        for f in sorted(day.glob("slot=T*/snapshot.parquet")):
            hhmm = f.parent.name.removeprefix("slot=T")
            slots[datetime.combine(d, time(int(hhmm[:2]), int(hhmm[2:])), KST)] = pq.read_table(f, partitioning=None)
        if slots:
            rep.rewritten.append(str(out.relative_to(root)))
            lake.write_bytes_atomic(out, parquet_bytes(compact_day(slots)))


# --- the command ------------------------------------------------------------------------------------------------------
def needs_migration(root: Path) -> bool:
    """True when ``root`` holds anything of the earlier layout (cheap: directory names only)."""
    marker = root.joinpath(*MARKER)
    if marker.exists():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("layout", 0) >= LAYOUT_VERSION:
                return False
        except (OSError, ValueError):
            pass
    return bool(planned_moves(root))


def migrate(root: lake.LakePath, *, dry_run: bool = False) -> MigrationReport:
    """Move and upgrade everything of the earlier layout under ``root``; safe to run again at any time."""
    if not lake.is_local(root):
        raise MigrationError(
            f"{redact_url(str(root))} is not a local directory: sync it to one, migrate there, and sync it back"
        )
    root = Path(root)
    if not root.is_dir():
        raise MigrationError(f"{root} is not a directory")
    rep = MigrationReport(dry_run=dry_run)
    for src, dst in planned_moves(root):
        _move(src, dst, rep, root)
    if not dry_run:
        _prune_empty(root, (*SLOT_DATASETS, *HOUR_DATASETS, layout.UNIVERSE_INPUTS_OLD, layout.SYSTEM_EVENTS))
        _rewrite_tables(root, rep)
        if not rep.conflicts:
            lake.write_json_atomic(
                root.joinpath(*MARKER), {"layout": LAYOUT_VERSION, "migrated_at": clock.now().isoformat()}
            )
    return rep
