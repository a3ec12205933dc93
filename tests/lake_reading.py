"""Reading a lake as its users do: the four tools' documented one-liners and the recipes of docs/data.md.

Shared by the test on a migrated earlier lake (tests/storage/test_reading.py) and the day in the life (a lake the
pipeline wrote under its own automation). No Observer code reads the lake here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "data.md"
DOC_DAY, DOC_CODE, DOC_SLOT = "2026-12-04", "005930", "T1000"
ONE_LINERS = {
    "pandas": 'pd.read_parquet("data/track_a")',
    "pyarrow": 'pq.read_table("data/track_a")',
    "polars": 'pl.scan_parquet("data/track_a")',
    "duckdb": "read_parquet('data/track_a/**/*.parquet')",
}
# the partition columns' types per tool, as docs/data.md's table states them
KEY_TYPES = {
    "pandas": {"date": "category", "slot": "category", "hour": "category", "year": "category"},
    "pyarrow": {
        **{k: "dictionary<values=string, indices=int32, ordered=0>" for k in ("date", "slot", "hour")},
        "year": "dictionary<values=int32, indices=int32, ordered=0>",  # daily_bars: a year reads as a number
    },
    "polars": {"date": "Date", "slot": "String", "hour": "String", "year": "Int64"},
    "duckdb": {"date": "DATE", "slot": "VARCHAR", "hour": "VARCHAR", "year": "BIGINT"},
}
_RECIPE = re.compile(r"```python\n# recipe: (\w+)\n(.*?)```", re.S)


@contextmanager
def as_data(root: Path, tmp: Path) -> Iterator[None]:
    """Run with ``data`` (the docs' path) naming ``root``, as a user in the directory above their lake would."""
    link = tmp / "cwd" / "data"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    old = os.getcwd()
    os.chdir(link.parent)
    try:
        yield
    finally:
        os.chdir(old)


def datasets(root: Path) -> list[str]:
    """The top-level Parquet datasets present (``raw``, ``_meta`` and ``system`` are not tables)."""
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and p.name not in ("raw", "_meta", "system", "state", "metrics") and any(p.rglob("*.parquet"))
    )


def read_all(ds: str) -> dict[str, tuple[int, dict[str, str]]]:
    """Rows and the partition columns' types, per tool, with the documented one-liner for ``data/<ds>``."""
    d = f"data/{ds}"
    out: dict[str, tuple[int, dict[str, str]]] = {}
    df = pd.read_parquet(d)
    first = next(Path(d).rglob("*.parquet")).relative_to(d)
    keys = [part.split("=", 1)[0] for part in first.parts[:-1]]  # the Hive keys of its path
    out["pandas"] = (len(df), {k: str(df[k].dtype) for k in keys})
    t = pq.read_table(d)
    out["pyarrow"] = (t.num_rows, {k: str(t.schema.field(k).type) for k in keys})
    lf = pl.scan_parquet(d)
    schema = lf.collect_schema()
    out["polars"] = (lf.select(pl.len()).collect().item(), {k: str(schema[k]) for k in keys})
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{d}/**/*.parquet')")
    types = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    out["duckdb"] = (
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/**/*.parquet')").fetchall()[0][0],
        {k: types[k] for k in keys},
    )
    return out


def filtered_counts(ds: str, day: str, slot: str | None = None) -> dict[str, int]:
    """Rows of one day (and slot) with each tool's documented filter."""
    d = f"data/{ds}"
    f_pd = [("date", "=", day)] + ([("slot", "=", slot)] if slot else [])
    expr = pl.col("date") == date.fromisoformat(day)
    if slot:
        expr = expr & (pl.col("slot") == slot)
    where = f"date = '{day}'" + (f" AND slot = '{slot}'" if slot else "")
    return {
        "pandas": len(pd.read_parquet(d, filters=f_pd)),
        "pyarrow": pq.read_table(d, filters=f_pd).num_rows,
        "polars": pl.scan_parquet(d).filter(expr).select(pl.len()).collect().item(),
        "duckdb": duckdb.sql(f"SELECT count(*) FROM read_parquet('{d}/**/*.parquet') WHERE {where}").fetchall()[0][0],
    }


def recipes(text: str | None = None) -> dict[str, str]:
    return dict(_RECIPE.findall(text if text is not None else DOC.read_text(encoding="utf-8")))


def run_recipe(source: str, day: str, code: str, slot: str) -> object:
    """One recipe with the lake's own day, code and slot in place of the docs' examples; returns its ``result``."""
    y, m, d = (int(x) for x in day.split("-"))
    src = (
        source.replace(f'"{DOC_DAY}"', f'"{day}"')
        .replace("date(2026, 12, 4)", f"date({y}, {m}, {d})")
        .replace(f'"{DOC_CODE}"', f'"{code}"')
        .replace(f'"{DOC_SLOT}"', f'"{slot}"')
    )
    ns: dict[str, object] = {}
    exec(compile(src, "<docs/data.md recipe>", "exec"), ns)  # noqa: S102 - the docs' own code, run as a user would
    return ns["result"]
