"""``daily_bars``: KIS's daily bars, raw and adjusted, of every member of the latest universe, one table per year.

A partition is a calendar year (``bar_year`` key ``YYYY``). A run asks each symbol's raw and adjusted series of the
year (``inquire-daily-itemchartprice``, 100 rows a call: 6 calls a symbol for a KRX year) through every app key at
background priority, checkpoints finished symbols in parts under ``_meta/daily_bars/year=YYYY/`` (a killed run
resumes from them), then writes the year atomically and removes the parts. The current year stops at the last
trading day whose session is over, and its later runs ask only the new days (fetch.fetch_symbol).
"""

import asyncio
import time as _time
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from observer_assets import catalog
from observer_assets.daily_bars import bars, fetch
from observer_assets.orchestration.partitions import calendar
from observer_assets.orchestration.runs import HISTORY_POOL
from observer_resources import clock, settings
from observer_resources.events import record
from observer_resources.resources import KisResource, kis_members
from observer_resources.storage import lake, parts
from observer_resources.storage.layout import UNIVERSE, daily_bars_parts_dir, daily_bars_path, universe_path

bar_year_partitions = dg.DynamicPartitionsDefinition(name="bar_year")
FROM_YEAR_ENV = "OBSERVER_DAILY_BARS_FROM_YEAR"
THROUGH_META = b"observer.daily_bars.through"


class DailyBarsConfig(dg.Config):
    full: bool = False  # ask the whole year again even when the current year's table only needs its new days
    concurrency: int = fetch.CONCURRENCY  # symbols in flight per app key
    chunk: int = fetch.CHUNK  # symbols per checkpointed part
    max_symbols: int | None = None  # the first N members only (a trial run); None: the whole universe


def first_year() -> int:
    return settings.get(FROM_YEAR_ENV, error=dg.Failure)


def latest_universe(root: Path) -> tuple[date, list[str]] | None:
    """The newest stored universe (its day and sorted codes). Survivorship: a year's history covers today's members
    only; a symbol delisted since is absent from every year (docs/data.md)."""
    base = root / UNIVERSE
    days = sorted(
        (date.fromisoformat(p.name[5:]) for p in base.glob("date=*") if p.name[5:15].count("-") == 2),
        reverse=True,
    )
    for d in days:
        path = universe_path(root, d)
        if path.exists():
            return d, sorted(lake.read_table(path, columns=["code"])["code"].to_pylist())
    return None


def _stored(path: Path, start: date) -> tuple[dict[str, list[dict[str, Any]]], date | None]:
    """The year's stored rows by code and the day they run through, when they were asked from ``start``."""
    if not path.exists():
        return {}, None
    t = lake.read_table(path).cast(bars.SCHEMA)
    meta = lake.read_schema(path).metadata or {}
    through = meta.get(THROUGH_META)
    if not through:
        return {}, None
    by_code: dict[str, list[dict[str, Any]]] = {}
    for r in t.to_pylist():
        by_code.setdefault(r["code"], []).append(r)
    return by_code, date.fromisoformat(through.decode())


@dg.asset(
    partitions_def=bar_year_partitions,
    group_name="daily_bars",
    pool=HISTORY_POOL,  # its own pool: a year-long fetch never holds a slot live collectors need
    kinds={"python", "parquet"},
    deps=[dg.AssetDep(dg.AssetKey("universe"), partition_mapping=dg.AllPartitionMapping())],
    description=(
        "KIS's daily bars of every member of the latest universe for one calendar year: raw and adjusted OHLCV, the "
        "day's corporate-action marker fields, fetched_at (KST). Partition key YYYY. Backfill years from the UI."
    ),
    metadata=catalog.definition_metadata(
        bars.SCHEMA, bars.COLUMNS, "daily_bars/year=YYYY/daily_bars.parquet", parts="_meta/daily_bars/year=YYYY/"
    ),
    owners=catalog.OWNERS,
)
def daily_bars(context: dg.AssetExecutionContext, config: DailyBarsConfig, kis: KisResource) -> dg.MaterializeResult:
    started = _time.monotonic()
    now = clock.now()
    try:
        year = bars.parse_year_key(context.partition_key, first_year(), now.date())
    except bars.YearKeyError as e:
        raise dg.Failure(str(e)) from None
    if config.chunk < 1 or config.concurrency < 1:
        raise dg.Failure(f"chunk and concurrency must be >= 1, got {config.chunk} and {config.concurrency}")
    root = lake.data_dir()
    uni = latest_universe(root)
    if uni is None:
        raise dg.Failure("daily_bars: no universe is stored yet; materialize `universe` first")
    uni_day, codes = uni
    if config.max_symbols is not None:
        codes = codes[: config.max_symbols]
    span = bars.asked_span(year, fetch.last_complete_day(calendar(), now))
    if span is None:
        raise dg.Failure(f"daily_bars {year}: no trading day of {year} has closed yet")
    start, end = span
    path = daily_bars_path(root, year)
    stored, through = ({}, None) if config.full else _stored(path, start)
    incremental = bool(stored) and through is not None and through < end and end.year == year
    if not incremental:
        stored = {}
    parts_dir = daily_bars_parts_dir(root, year)
    context.log.info(
        f"daily_bars {year}: {len(codes)} symbols of the universe of {uni_day}, {start}..{end}, "
        f"{len(kis_members(kis))} app keys, {'new days only' if incremental else 'whole span'}"
    )
    res = asyncio.run(
        fetch.fetch_year(
            kis,
            codes,
            start,
            end,
            parts_dir,
            stored=stored,
            chunk=config.chunk,
            concurrency=config.concurrency,
            log=context.log.info,
        )
    )
    if res.failed:
        sample = "; ".join(f"{c}: {why}" for c, why in sorted(res.failed.items())[:5])
        record(
            "daily_bars_failed",
            source="daily_bars",
            logger=context.log,
            year=year,
            failed=len(res.failed),
            done=res.done,
            total=res.total,
        )
        raise dg.Failure(
            f"daily_bars {year}: {len(res.failed)} of {res.total} symbols failed (kept: {res.done} done in parts, a "
            f"re-run asks only the rest): {sample}",
            metadata={"symbols_failed": len(res.failed), "symbols_done": res.done, "calls": res.calls},
        )
    table = bars.sort_table(pa.concat_tables([bars.to_table([]), *[t.cast(bars.SCHEMA) for t in res.tables]]))
    kept_from_before = [c for c in stored if c not in set(codes)]  # members that left: their rows stay true
    if kept_from_before:
        table = bars.sort_table(
            pa.concat_tables([table, bars.to_table(r for c in kept_from_before for r in stored[c])])
        )
    table = table.replace_schema_metadata({THROUGH_META: end.isoformat().encode()})
    lake.write_table_atomic(path, table)
    parts.clear_parts(parts_dir)
    if res.moved:  # earlier years' adjusted columns of these symbols are on the basis before the event
        context.log.warning(
            f"daily_bars {year}: the adjusted series of {len(res.moved)} symbols moved (a corporate action): "
            f"{', '.join(sorted(res.moved)[:20])}; earlier years keep their old basis until re-materialized "
            "(docs/data.md, daily_bars traps)"
        )
        record("daily_bars_adjusted_moved", source="daily_bars", logger=context.log, year=year, codes=sorted(res.moved))
    events = bars.events_in(table)
    seconds = _time.monotonic() - started
    context.log.info(
        f"daily_bars {year}: {table.num_rows} rows, {res.done}/{res.total} symbols ({res.resumed} resumed), "
        f"{res.calls} calls in {seconds:.0f} s, {len(events)} corporate actions visible"
    )
    return dg.MaterializeResult(
        metadata={
            **catalog.materialized(table.num_rows, path),
            "span": f"{start}..{end}",
            "universe_day": str(uni_day),
            "symbols_total": res.total,
            "symbols_done": res.done,
            "symbols_resumed": res.resumed,
            "calls": res.calls,
            "calls_by_key": dg.MetadataValue.json(res.calls_by_key),
            "mode": "new days only" if incremental else "whole span",
            "duration_s": round(seconds, 1),
            "corporate_actions": len(events),
            "adjusted_moved": dg.MetadataValue.json(sorted(res.moved)),
        }
    )
