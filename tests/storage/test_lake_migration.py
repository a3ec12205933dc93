"""A lake written before docs/data.md's layout: migrated by `observer lake migrate`, nothing lost, then read by the
four tools with the documented one-liners and filters (tests/fixtures/lake_v1 is such a lake, cut down)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lake_reading as rd
import pyarrow.parquet as pq
import pytest

from observer_assets.cli import main as observer
from observer_assets.lake_migration import needs_migration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lake_v1"
DAY = "2026-11-26"


def _files(root: Path) -> dict[str, int]:
    """Relative path -> rows (Parquet) or bytes (anything else), for every file of the lake."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            out[rel] = pq.read_metadata(p).num_rows if p.suffix == ".parquet" else p.stat().st_size
    return out


@pytest.fixture
def old_lake(env):
    root = env / "data"  # the env fixture's OBSERVER_DATA_DIR
    shutil.copytree(FIXTURE, root)
    return root


def test_dry_run_lists_every_move_and_changes_nothing(old_lake, capsys):
    before = _files(old_lake)
    assert needs_migration(old_lake)
    assert observer(["lake", "migrate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would move\ttrack_a/date=2026-11-26/slot=0900\ttrack_a/date=2026-11-26/slot=T0900" in out
    assert "would move\ttrack_b/date=2026-11-26/hour=09/_manifest.json\t_meta/track_b/date=2026-11-26/hour=T09/" in out
    assert _files(old_lake) == before


def test_migration_moves_everything_loses_nothing_and_is_idempotent(old_lake, capsys):
    before = _files(old_lake)
    assert observer(["lake", "migrate"]) == 0
    after = _files(old_lake)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["moved"] > 0 and summary["rewritten"] > 0 and summary["conflicts"] == []

    # no path of the earlier layout is left, and no dataset directory holds anything but Parquet
    assert not [p for p in after if "/slot=0" in p or "/slot=1" in p or "/hour=0" in p or "/hour=1" in p]
    assert not [p for p in after if p.startswith("universe_inputs/") or "/_manifest" in p or "/_state" in p]
    for ds in rd.datasets(old_lake):
        assert all(p.endswith(".parquet") for p in after if p.startswith(f"{ds}/")), ds

    # every table kept its rows; every other file its bytes, at its new place
    def new_place(rel: str) -> str:
        for old, new in (
            (
                "universe_inputs/date=2026-11-26/exclusions.parquet",
                "universe_exclusions/date=2026-11-26/exclusions.parquet",
            ),
            (
                "universe_inputs/date=2026-11-26/prev_close.parquet",
                "universe_prev_close/date=2026-11-26/prev_close.parquet",
            ),
            ("universe_inputs/date=2026-11-26/masters/", "raw/universe/date=2026-11-26/masters/"),
            ("gaps/date=2026-11-26/verdict.json", "_meta/gaps/date=2026-11-26/verdict.json"),
            ("gaps/date=2026-11-26/summary.json", "_meta/gaps/date=2026-11-26/summary.json"),
            ("system_events/date=2026-11-26/summary.json", "_meta/system_events/date=2026-11-26/summary.json"),
        ):
            if rel.startswith(old):
                return new + rel[len(old) :]
        for key in ("slot=", "hour="):
            if f"/{key}" in rel:
                head, tail = rel.split(f"/{key}", 1)
                rel = f"{head}/{key}T{tail}"
        if rel.endswith(("/_manifest.json", "/_state.json")):
            d, name = rel.rsplit("/", 1)
            rel = f"_meta/{d}/{name[1:]}"
        return rel

    for rel, size in before.items():
        if rel.startswith("track_a_failures/") and size == 0:  # a slot has a failures file only when it failed
            assert new_place(rel) not in after, rel
            continue
        assert new_place(rel) in after, rel
        if rel.endswith(".parquet"):
            assert after[new_place(rel)] == size, rel
        else:
            assert (FIXTURE / rel).read_bytes() == (old_lake / new_place(rel)).read_bytes(), rel

    # run again: nothing to move, nothing to rewrite
    assert not needs_migration(old_lake)
    assert observer(["lake", "migrate"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["moved"], again["rewritten"]) == (0, 0)
    assert _files(old_lake) == after


def test_a_clash_with_the_new_layout_leaves_both_files(old_lake, capsys):
    clash = old_lake / "track_a" / "date=2026-11-26" / "slot=T0900"
    clash.mkdir(parents=True)
    (clash / "snapshot.parquet").write_bytes(
        (old_lake / "track_a/date=2026-11-26/slot=0900/snapshot.parquet").read_bytes()
    )
    assert observer(["lake", "migrate"]) == 1
    err = capsys.readouterr().err
    assert "conflict\ttrack_a/date=2026-11-26/slot=0900\ttrack_a/date=2026-11-26/slot=T0900" in err
    assert (old_lake / "track_a/date=2026-11-26/slot=0900/snapshot.parquet").exists()
    assert needs_migration(old_lake)


def test_the_migrated_lake_reads_the_same_in_every_tool(old_lake, tmp_path):
    assert observer(["lake", "migrate"]) == 0
    with rd.as_data(old_lake, tmp_path):
        for ds in rd.datasets(old_lake):
            got = rd.read_all(ds)
            rows = {tool: n for tool, (n, _) in got.items()}
            assert len(set(rows.values())) == 1 and rows["pandas"] > 0, (ds, rows)
            for tool, (_, types) in got.items():
                assert types and types == {k: rd.KEY_TYPES[tool][k] for k in types}, (ds, tool, types)
            counts = rd.filtered_counts(ds, DAY, "T1020" if ds in ("track_a", "track_a_failures") else None)
            assert len(set(counts.values())) == 1 and counts["pandas"] > 0, (ds, counts)
