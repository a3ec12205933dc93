"""The day's Track A in one file: every slot's snapshot, sorted by (code, slot_ts), as ``track_a_daily``.

A per-slot file answers "the market at 10:40"; a symbol's day (or month) means opening every slot file of every day,
40 a day, to read one row from each. The daily table holds the same rows sorted by code, in row groups of
``ROW_GROUP_ROWS`` whose code statistics let a reader skip every group that cannot hold the symbol
(docs/benchmarks.md, "Track A scan"). The slot files stay the source: the daily table is derived, rebuilt whole from
them after the session and again whenever a slot of the day is re-materialized (a backfill or restore; the sensor is
in sensors.py), written atomically, and the same slot files always give the same bytes.

A rebuild never loses rows silently: when a slot the existing daily table holds has no file any more (retention
removed the day's files after its backup, or someone deleted one) the run refuses, unless told to drop them.
"""

import io
from collections.abc import Mapping
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from observer_assets import catalog
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA, upgrade_snapshot_table
from observer_resources.storage import lake
from observer_resources.storage.layout import daily_path, slot_dir, slot_label

#: The slot files' schema with ``slot`` (``T0150``) after ``slot_ts`` (only ``date=`` is in the daily path, so the
#: column cannot clash with a Hive key) and what traded since the previous slot after the cumulative totals.
DAILY_SCHEMA = (
    SNAPSHOT_SCHEMA.insert(1, pa.field("slot", pa.string()))
    .insert(SNAPSHOT_SCHEMA.get_field_index("trade_value") + 2, pa.field("interval_volume", pa.int64()))
    .insert(SNAPSHOT_SCHEMA.get_field_index("trade_value") + 3, pa.field("interval_trade_value", pa.int64()))
)
SLOT_STEP_US = 10 * 60 * 1_000_000  # slots are 10 minutes apart within a session
SORT_KEYS = [("code", "ascending"), ("slot_ts", "ascending")]
#: A row group is what a reader skips by its code min/max: a one-symbol read decodes only the group(s) holding the
#: symbol, so smaller groups read less for it; each group also costs footer metadata and per-column-chunk overhead
#: and compresses a little worse, so whole-table reads and aggregates get slower as groups shrink. 20,000 rows (five
#: groups on a day of 2,500 symbols x 40 slots) read one symbol about twice as fast as 50,000, for whole reads up to
#: a quarter slower and 2 % more bytes; 10,000 lost more on whole reads and aggregates than it gained
#: (docs/benchmarks.md, "Track A scan").
ROW_GROUP_ROWS = 20_000


def _intervals(table: pa.Table) -> pa.Table:
    """``interval_volume`` / ``interval_trade_value``: the cumulative totals minus the same code's at the slot 10
    minutes before; null for a code's first slot of the day and where that slot has no row for it (the difference
    would span more than one slot). ``table`` is sorted by (code, slot_ts)."""
    n = table.num_rows
    if n == 0:
        return table
    code, ts = table["code"], pc.cast(table["slot_ts"], pa.int64())
    prev_code = pa.concat_arrays([pa.nulls(1, pa.string()), code.slice(0, n - 1).combine_chunks()])
    prev_ts = pa.concat_arrays([pa.nulls(1, pa.int64()), ts.slice(0, n - 1).combine_chunks()])
    follows = pc.and_(pc.equal(code, prev_code), pc.equal(pc.subtract(ts, prev_ts), SLOT_STEP_US))
    for total in ("volume", "trade_value"):
        col = table[total].combine_chunks()
        prev = pa.concat_arrays([pa.nulls(1, pa.int64()), col.slice(0, n - 1)])
        diff = pc.if_else(follows, pc.subtract(col, prev), pa.scalar(None, pa.int64()))
        name = f"interval_{total}"
        table = table.add_column(DAILY_SCHEMA.get_field_index(name), DAILY_SCHEMA.field(name), diff)
    return table


def compact_day(slots: Mapping[datetime, pa.Table]) -> pa.Table:
    """The daily table of ``{slot instant: its snapshot table}`` (pure). A table written with an earlier schema is
    upgraded first; a table whose rows name another slot than its own is refused (a file in the wrong directory)."""
    parts = []
    for t in sorted(slots):
        table = upgrade_snapshot_table(slots[t])
        wrong = pc.sum(pc.not_equal(table["slot_ts"], pa.scalar(t, SNAPSHOT_SCHEMA.field("slot_ts").type))).as_py()
        if wrong:
            raise ValueError(f"the snapshot of slot {slot_label(t)} holds {wrong} rows of another slot")
        label = pa.chunked_array([pa.array([slot_label(t)] * table.num_rows, pa.string())], pa.string())
        parts.append(table.add_column(1, DAILY_SCHEMA.field("slot"), label))
    if not parts:
        return DAILY_SCHEMA.empty_table()
    return _intervals(pa.concat_tables(parts).sort_by(SORT_KEYS).combine_chunks())


def parquet_bytes(table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> bytes:
    """The daily file's bytes: zstd, statistics on, row groups of ``row_group_rows``, the sort order declared."""
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        row_group_size=row_group_rows,
        sorting_columns=[pq.SortingColumn(table.schema.get_field_index(n)) for n, _ in SORT_KEYS],
    )
    return buf.getvalue()


class TrackADailyConfig(dg.Config):
    drop_missing_slots: bool = False  # rebuild even when slots the existing daily table holds have no file any more


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="track_a",
    kinds={"python", "parquet"},
    # slot keys are not day keys: every slot is an input of every day (as the gap report has it)
    deps=[dg.AssetDep(dg.AssetKey("track_a_snapshot"), partition_mapping=dg.AllPartitionMapping())],
    description=(
        "The trading day's Track A snapshots in one Parquet file, sorted by (code, slot_ts), with the slot as a "
        "string column (THHMM): for reading one symbol or a few over many days. Built after the session and "
        "rebuilt when a slot of the day is re-materialized. Partition key YYYY-MM-DD."
    ),
    metadata=catalog.definition_metadata(
        DAILY_SCHEMA, catalog.DAILY_COLUMNS, "track_a_daily/date=YYYY-MM-DD/track_a.parquet"
    ),
    owners=catalog.OWNERS,
)
def track_a_daily(context: dg.AssetExecutionContext, config: TrackADailyConfig) -> dg.MaterializeResult:
    cal = calendar()
    day = parse_day_key(context.partition_key, cal)
    root = lake.data_dir()
    expected = cal.track_a_slots(day)
    tables = {}
    for t in expected:
        path = slot_dir(root, t) / "snapshot.parquet"
        if path.exists():
            tables[t] = lake.read_table(path)
    if not tables:
        raise dg.Failure(f"no Track A slot file for {day}: nothing to compact")
    out = daily_path(root, day)
    if out.exists() and not config.drop_missing_slots:
        had = set(pc.unique(lake.read_table(out, columns=["slot"])["slot"]).to_pylist())
        gone = sorted(had - {slot_label(t) for t in tables})
        if gone:
            raise dg.Failure(
                f"{out} holds slots whose files are gone ({', '.join(gone)}): a rebuild would drop their rows. "
                "Restore the slot files (observer restore) or run with drop_missing_slots: true.",
                metadata={"slots_gone": gone},
            )
    table = compact_day(tables)
    data = parquet_bytes(table)
    lake.write_bytes_atomic(out, data)
    missing = [slot_label(t) for t in expected if t not in tables]
    live = table.filter(pc.equal(table["source"], "live"))["late_s"].drop_null()
    md = {
        "slots": len(tables),
        "slots_expected": len(expected),
        "slots_missing": dg.MetadataValue.json(missing),
        "codes": pc.count_distinct(table["code"]).as_py(),
        "restored_rows": int(pc.sum(pc.equal(table["source"], "restored")).as_py() or 0),
        "row_groups": -(-table.num_rows // ROW_GROUP_ROWS),
        "bytes": len(data),
        **catalog.materialized(table.num_rows, out),
    }
    if len(live):
        md["late_s_median"] = round(pc.quantile(live, q=[0.5]).to_pylist()[0], 3)
        md["late_s_max"] = round(pc.max(live).as_py(), 3)
    if missing:
        context.log.warning(f"track_a_daily {day}: {len(missing)} slots without a file: {', '.join(missing[:10])}")
    return dg.MaterializeResult(metadata=md)
