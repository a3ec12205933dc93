"""docs/data.md is the truth about the lake: its column tables match the schemas the writers use, every column is
described, and its one-liners and recipes run (here on a migrated earlier lake; the day in the life runs them all
on a lake its automation wrote)."""

from __future__ import annotations

import shutil
from pathlib import Path

import lake_reading as rd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from observer_assets import datadoc
from observer_assets.lake_migration import migrate

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lake_v1"
DAY = "2026-11-26"


def test_the_column_tables_are_generated_from_the_schemas_and_every_column_is_described():
    text = rd.DOC.read_text(encoding="utf-8")
    assert datadoc.rewrite(text) == text, "docs/data.md is out of date: run `make datadoc`"
    assert datadoc.undescribed() == {}


def test_the_documented_one_liners_are_the_ones_the_tests_use():
    text = rd.DOC.read_text(encoding="utf-8")
    for tool, line in rd.ONE_LINERS.items():
        assert line in text, tool
    assert "SET TimeZone = 'Asia/Seoul'" in text


def test_the_recipes_run_on_a_migrated_earlier_lake(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    assert not migrate(root).conflicts
    ticks = pq.read_table(root / "track_b", columns=["code", "qty"], partitioning=None)
    code = ticks["code"][0].as_py()
    with rd.as_data(root, tmp_path):
        recipes = rd.recipes()
        # the earlier lake has no coverage table until its gap report is re-run: every other recipe runs as written
        # and its tape is KRX's (track_b), as every lake's was before the unified tape became the default feed
        recipes["bars"] = recipes["bars"].replace('"data/track_b_unified"', '"data/track_b"')
        results = {n: rd.run_recipe(src, DAY, code, "T0910") for n, src in recipes.items() if n != "gaps"}
    path = results["path"]
    assert list(path["slot"]) == ["T0900", "T0910", "T1020", "T1530"] and set(path["source"]) == {"live", "restored"}
    top = results["top_value"]
    assert 0 < len(top) <= 10
    assert list(top["interval_trade_value"].dropna()) == sorted(top["interval_trade_value"].dropna(), reverse=True)
    bars = results["bars"]
    mine = ticks.filter(pc.equal(ticks["code"], code))
    assert int(bars["volume"].sum()) == pc.sum(mine["qty"]).as_py() and int(bars["trades"].sum()) == mine.num_rows
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    join = results["join"]
    assert set(join.columns) == {"market", "slot", "trade_value"} and join.height > 0
