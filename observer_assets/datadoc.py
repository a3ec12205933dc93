"""docs/data.md's column tables, generated from the schemas the writers use and the catalog's descriptions.

One source for what a column is: the ``pa.Schema`` a dataset is written with and its description in
``catalog.py`` (which the Dagster UI shows too). ``make datadoc`` rewrites the tables between
``<!-- columns:<dataset>:begin -->`` and ``<!-- columns:<dataset>:end -->``; a test fails when they drift or when a
column has no description.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa


@dataclass(frozen=True)
class Dataset:
    name: str  # the top-level directory (``raw/...`` for archives)
    path: str  # the file pattern under the lake root
    schema: str  # "module:NAME" of its pa.Schema
    columns: str  # "module:NAME" of its {column: description}

    def resolve(self) -> tuple[pa.Schema, Mapping[str, str]]:
        return _ref(self.schema), _ref(self.columns)


def _ref(ref: str):  # noqa: ANN202 - a schema or a mapping
    mod, name = ref.split(":")
    return getattr(importlib.import_module(mod), name)


DATASETS: tuple[Dataset, ...] = (
    Dataset(
        "universe",
        "universe/date=YYYY-MM-DD/universe.parquet",
        "observer_assets.universe.rules:UNIVERSE_SCHEMA",
        "observer_assets.catalog:UNIVERSE_COLUMNS",
    ),
    Dataset(
        "universe_exclusions",
        "universe_exclusions/date=YYYY-MM-DD/exclusions.parquet",
        "observer_assets.universe.rules:EXCLUSION_SCHEMA",
        "observer_assets.catalog:EXCLUSION_COLUMNS",
    ),
    Dataset(
        "universe_prev_close",
        "universe_prev_close/date=YYYY-MM-DD/prev_close.parquet",
        "observer_assets.universe.rules:PREV_CLOSE_SCHEMA",
        "observer_assets.catalog:PREV_CLOSE_COLUMNS",
    ),
    Dataset(
        "universe_nxt",
        "universe_nxt/date=YYYY-MM-DD/nxt_status.parquet",
        "observer_assets.universe.rules:NXT_STATUS_SCHEMA",
        "observer_assets.catalog:NXT_STATUS_COLUMNS",
    ),
    Dataset(
        "track_a",
        "track_a/date=YYYY-MM-DD/slot=THHMM/snapshot.parquet",
        "observer_assets.track_a.snapshot:SNAPSHOT_SCHEMA",
        "observer_assets.catalog:SNAPSHOT_COLUMNS",
    ),
    Dataset(
        "track_a_daily",
        "track_a_daily/date=YYYY-MM-DD/track_a.parquet",
        "observer_assets.track_a.daily:DAILY_SCHEMA",
        "observer_assets.catalog:DAILY_COLUMNS",
    ),
    Dataset(
        "minute_bars",
        "minute_bars/date=YYYY-MM-DD/minute_bars.parquet",
        "observer_assets.minute_bars.fetch:MINUTE_BARS_SCHEMA",
        "observer_assets.catalog:MINUTE_BAR_COLUMNS",
    ),
    Dataset(
        "daily_bars",
        "daily_bars/year=YYYY/daily_bars.parquet",
        "observer_assets.daily_bars.bars:SCHEMA",
        "observer_assets.daily_bars.bars:COLUMNS",
    ),
    Dataset(
        "minute_bars_proof",
        "minute_bars_proof/date=YYYY-MM-DD/proof.parquet",
        "observer_assets.gaps.detect_proof:PROOF_SCHEMA",
        "observer_assets.catalog:PROOF_COLUMNS",
    ),
    Dataset(
        "track_a_failures",
        "track_a_failures/date=YYYY-MM-DD/slot=THHMM/failures.parquet",
        "observer_assets.track_a.assets:FAILURE_SCHEMA",
        "observer_assets.catalog:FAILURE_COLUMNS",
    ),
    Dataset(
        "track_b",
        "track_b/date=YYYY-MM-DD/hour=THH/ticks.parquet",
        "observer_assets.track_b.compaction_ticks:TICK_SCHEMA",
        "observer_assets.catalog:TICK_COLUMNS",
    ),
    Dataset(
        "track_b_unified",
        "track_b_unified/date=YYYY-MM-DD/hour=THH/ticks.parquet",
        "observer_assets.track_b.compaction_ticks:TICK_SCHEMA",
        "observer_assets.catalog:TICK_COLUMNS",
    ),
    Dataset(
        "track_b_nxt",
        "track_b_nxt/date=YYYY-MM-DD/hour=THH/ticks.parquet",
        "observer_assets.track_b.compaction_ticks:TICK_SCHEMA",
        "observer_assets.catalog:TICK_COLUMNS",
    ),
    Dataset(
        "track_b_unified_restored",
        "track_b_unified_restored/date=YYYY-MM-DD/restored.parquet",
        "observer_assets.track_b.restore:RESTORED_SCHEMA",
        "observer_assets.catalog:RESTORED_COLUMNS",
    ),
    Dataset(
        "track_b_nxt_restored",
        "track_b_nxt_restored/date=YYYY-MM-DD/restored.parquet",
        "observer_assets.track_b.restore:RESTORED_SCHEMA",
        "observer_assets.catalog:RESTORED_COLUMNS",
    ),
    Dataset(
        "track_b_books",
        "track_b_books/date=YYYY-MM-DD/hour=THH/books.parquet",
        "observer_assets.track_b.compaction_feeds:BOOK_SCHEMA",
        "observer_assets.catalog:BOOK_COLUMNS",
    ),
    Dataset(
        "track_b_books_sampled",
        "track_b_books_sampled/date=YYYY-MM-DD/hour=THH/books_sampled.parquet",
        "observer_assets.track_b.compaction_feeds:BOOK_SAMPLE_SCHEMA",
        "observer_assets.catalog:BOOK_SAMPLE_COLUMNS",
    ),
    Dataset(
        "track_b_expected",
        "track_b_expected/date=YYYY-MM-DD/hour=THH/expected.parquet",
        "observer_assets.track_b.compaction_feeds:EXPECTED_SCHEMA",
        "observer_assets.catalog:EXPECTED_COLUMNS",
    ),
    Dataset(
        "track_b_status",
        "track_b_status/date=YYYY-MM-DD/hour=THH/status.parquet",
        "observer_assets.track_b.compaction_feeds:STATUS_SCHEMA",
        "observer_assets.catalog:STATUS_COLUMNS",
    ),
    Dataset(
        "track_b_sampled",
        "track_b_sampled/date=YYYY-MM-DD/hour=THH/sampled.parquet",
        "observer_assets.track_b.compaction_sampling:SAMPLE_SCHEMA",
        "observer_assets.catalog:SAMPLE_COLUMNS",
    ),
    Dataset(
        "track_b_restored",
        "track_b_restored/date=YYYY-MM-DD/restored.parquet",
        "observer_assets.track_b.restore:RESTORED_SCHEMA",
        "observer_assets.catalog:RESTORED_COLUMNS",
    ),
    Dataset(
        "gaps",
        "gaps/date=YYYY-MM-DD/gap_report.parquet",
        "observer_assets.gaps.report:GAP_SCHEMA",
        "observer_assets.catalog:GAP_COLUMNS",
    ),
    Dataset(
        "gap_coverage",
        "gap_coverage/date=YYYY-MM-DD/coverage.parquet",
        "observer_assets.gaps.report:COVERAGE_SCHEMA",
        "observer_assets.catalog:COVERAGE_COLUMNS",
    ),
    Dataset(
        "gap_verdict",
        "gap_verdict/date=YYYY-MM-DD/verdict.parquet",
        "observer_assets.gaps.report:VERDICT_SCHEMA",
        "observer_assets.catalog:VERDICT_COLUMNS",
    ),
)


def undescribed() -> dict[str, list[str]]:
    """Columns without a description, per dataset (the test wants none)."""
    out: dict[str, list[str]] = {}
    for ds in DATASETS:
        schema, cols = ds.resolve()
        missing = [f.name for f in schema if not cols.get(f.name)]
        if missing:
            out[ds.name] = missing
    return out


def _cell(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")


def table(ds: Dataset) -> str:
    schema, cols = ds.resolve()
    lines = [f"`{ds.path}`", "", "| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{f.name}` | `{f.type}` | {_cell(cols.get(f.name, '—'))} |" for f in schema]
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- columns:{name}:begin -->", f"<!-- columns:{name}:end -->"


def rewrite(text: str) -> str:
    """``text`` with every dataset's column table replaced; a dataset without markers is an error."""
    for ds in DATASETS:
        begin, end = _markers(ds.name)
        pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pat.search(text):
            raise ValueError(f"docs/data.md has no {begin} ... {end} block")
        text = pat.sub(lambda _m, ds=ds: f"{_markers(ds.name)[0]}\n{table(ds)}\n{_markers(ds.name)[1]}", text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--write":
        p = Path(args[1])
        p.write_text(rewrite(p.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print("usage: python -m observer_assets.datadoc --write docs/data.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
