"""``minute_bars``: KIS's 1-minute bars of every universe member for one trading day, fetched after its last phase.

Track A sees the market every 10 minutes and Track B tick by tick for 39 symbols; the minute bars are the whole
universe's day minute by minute, and the independent source the gap report's completeness proof compares the
captured tapes with (gaps/detect_proof.py). The tape of each member is the one Track A quoted (fetch.py); the
permits are taken at background priority (BackgroundLimiter), so a Track A slot or a restore that starts meanwhile
is served first; the work is resumable (work.py). Layout and columns: docs/data.md.
"""

import asyncio
from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets import catalog
from observer_assets.minute_bars.fetch import MINUTE_BARS_SCHEMA, plan
from observer_assets.minute_bars.work import (
    Progress,
    ask_key,
    choose_endpoint,
    fetch_day,
    parts_dir,
    read_parts,
    write_part,
)
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_assets.orchestration.runs import HISTORY_POOL
from observer_assets.track_b.restore import TAPES
from observer_assets.universe.dataset import read_universe
from observer_resources.resources import KisResource, kis_members, kis_rest_clients
from observer_resources.storage import lake, parts
from observer_resources.storage.lake import LakePath
from observer_resources.storage.layout import minute_bars_path, tick_files

SORT_KEYS = [("code", "ascending"), ("venue", "ascending"), ("minute", "ascending")]


def captured_markets(root: LakePath, day: date) -> dict[str, list[str]]:
    """code -> the KIS markets of the tapes Track B recorded it on that day (from the compacted tick files)."""
    out: dict[str, set[str]] = {}
    for tape in TAPES:
        for path in tick_files(root, day, tape.ticks):
            for code in pc.unique(lake.read_table(path, columns=["code"])["code"]).to_pylist():
                out.setdefault(code, set()).add(tape.market)
    return {c: sorted(ms) for c, ms in out.items()}


def _same_tape(universe: pa.Table, captured: dict[str, list[str]]) -> dict[str, list[str]]:
    """The unified tape of a stock NXT does not trade is KRX's: asking its bars on J covers it."""
    nxt = dict(
        zip(
            universe["code"].to_pylist(),
            universe["nxt_tradable"].to_pylist() if "nxt_tradable" in universe.column_names else [],
            strict=False,
        )
    )
    return {c: sorted({"J" if m == "UN" and not nxt.get(c) else m for m in ms}) for c, ms in captured.items()}


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="history",
    kinds={"python", "parquet"},
    pool=HISTORY_POOL,
    deps=[dg.AssetKey("universe")],
    description=(
        "KIS's 1-minute bars (OHLCV) of every universe member for the trading day, on the tape Track A quoted it on "
        "(unified for NXT's stocks on the two-venue day, else KRX), plus every code Track B streamed on another tape. "
        "Fetched after the day's last phase at background priority, resumable, idempotent; the gap report proves the "
        "captured tapes complete against them. Partition key YYYY-MM-DD."
    ),
    metadata=catalog.definition_metadata(
        MINUTE_BARS_SCHEMA, catalog.MINUTE_BAR_COLUMNS, "minute_bars/date=YYYY-MM-DD/minute_bars.parquet"
    ),
    owners=catalog.OWNERS,
)
def minute_bars(context: dg.AssetExecutionContext, kis: KisResource) -> dg.MaterializeResult:
    cal = calendar()
    day = parse_day_key(context.partition_key, cal)
    root = lake.data_dir()
    universe = read_universe(root, day)
    if universe is None:
        raise dg.Failure(f"no universe for {day}: materialize universe {day} first (its members are what is fetched)")
    try:
        endpoint = choose_endpoint([m.kis_config().env for m in kis_members(kis)], day)
    except ValueError as e:
        raise dg.Failure(str(e)) from None
    asks = plan(universe, cal, day, captured=_same_tape(universe, captured_markets(root, day)))
    done, tables = read_parts(root, day, endpoint)
    todo = [a for a in asks if ask_key(a) not in done]
    progress = Progress(asks=len(asks), done_before=len(asks) - len(todo))
    bound = sum(a.bound for a in todo)
    context.log.info(
        f"minute bars of {day}: {len(asks)} asks ({progress.done_before} done by an earlier run), "
        f"{bound} calls at most via {endpoint}"
    )

    def report(p: Progress) -> None:
        context.log.info(
            f"minute bars of {day}: {p.done_before + p.asks_done}/{p.asks} asks done, {p.rows} rows, "
            f"{p.calls} calls in {p.seconds:.0f} s"
        )

    async def run() -> None:
        async with kis_rest_clients(kis, background=True) as clients:
            await fetch_day(
                clients,
                todo,
                day,
                endpoint=endpoint,
                write_part=lambda rows, got: tables.append(write_part(root, day, endpoint, rows, got)),
                progress=progress,
                report=report,
            )

    asyncio.run(run())
    if progress.failures:
        raise dg.Failure(
            f"minute bars of {day}: {len(progress.failures)} of {len(todo)} asks failed; what was fetched is kept "
            "and a re-run asks only the rest",
            metadata={"failures": dg.MetadataValue.json(progress.failures[:50]), "calls": progress.calls},
        )
    table = pa.concat_tables(tables).sort_by(SORT_KEYS).combine_chunks() if tables else MINUTE_BARS_SCHEMA.empty_table()
    out = minute_bars_path(root, day)
    lake.write_table_atomic(out, table)
    parts.clear_parts(parts_dir(root, day))
    seconds = progress.seconds
    return dg.MaterializeResult(
        metadata={
            **catalog.materialized(table.num_rows, out),
            "asks": len(asks),
            "asks_resumed": progress.done_before,
            "codes": pc.count_distinct(table["code"]).as_py() if table.num_rows else 0,
            "calls": progress.calls,
            "call_bound": bound,  # the asks this run made
            "call_bound_day": sum(a.bound for a in asks),
            "seconds": round(seconds, 1),
            "endpoint": endpoint,
            "by_venue": dg.MetadataValue.json(_counts(table)),
        }
    )


def _counts(table: pa.Table) -> dict[str, int]:
    return {v["values"]: v["counts"] for v in pc.value_counts(table["venue"]).to_pylist()} if table.num_rows else {}
