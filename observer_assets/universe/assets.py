"""The day's universe: listed stocks (common + preferred) whose previous close is >= 4,000 KRW.

Built before the open from the KOSPI/KOSDAQ master files and the exchange's previous closes, and fixed for the
day: the inputs it used (both master zips and the previous closes) are kept beside it, so re-materializing the
partition recomputes the identical table from them instead of asking KIS again.

Gated: the count rules (checks.py) are judged before the table is published at ``universe_path``. A universe
they refuse goes to ``universe_rejected/date=D/`` (its own dataset: no reader, glob or Hive scan of ``universe/``
sees it, and the backup still carries it by its ``date=`` part), the ``universe_count`` result fails with the
numbers and the run fails. ``accept_anyway`` (operator override) publishes it, recorded as a WARN result, in the
metadata and as a ``universe_accepted_anyway`` event.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import httpx
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets import catalog
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_assets.orchestration.runs import KIS_REST_POOL
from observer_assets.universe import checks, rules
from observer_assets.universe.dataset import FALLBACK_DAYS, latest_universe_before, read_universe
from observer_resources import clock, settings
from observer_resources.events import record
from observer_resources.kis import masters
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisError
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    exclusions_path,
    nxt_status_path,
    prev_close_path,
    rejected_path,
    rejection_path,
    universe_path,
    universe_raw_dir,
)

T = TypeVar("T")
K = TypeVar("K")


NXT_PENDING = "pending: asked once the members are published"  # the flags' source until the lookup runs


MASTER_RETRIES = 3  # with nothing to fall back on, an unreachable KIS is asked again this many times,
MASTER_RETRY_S = 20  # after this many seconds, doubling


class UniverseConfig(dg.Config):
    min_prev_close: int = 4_000
    # a master with fewer stock codes than this is refused (docs/collector-rules.md §2.1); None: the
    # OBSERVER_UNIVERSE_MIN_MASTER_CODES setting, default 2,500 (a local exchange with fewer listings lowers it)
    min_master_codes: int | None = None
    quote_concurrency: int = 8
    # ask search-stock-info for each member's NXT status (real keys only: one call per member, docs/data.md); None:
    # when the two-venue day is configured (OBSERVER_TRACK_A_WINDOW), which uses the flags
    nxt_status: bool | None = None
    accept_anyway: bool = False  # operator override: publish a universe the count check refuses (recorded)


def min_master_codes_from_env() -> int:
    return settings.get("OBSERVER_UNIVERSE_MIN_MASTER_CODES", error=dg.Failure)


def _error_text(e: KisError) -> str:
    return f"{type(e).__name__}: {getattr(e, 'code', '') or e}"


async def _per_code(
    codes: Sequence[K], concurrency: int, ask: Callable[[K], Awaitable[T]]
) -> tuple[dict[K, T], dict[K, str]]:
    """``ask`` for each code (or batch), ``concurrency`` at a time: the answers, and the KIS error of each that
    failed."""
    got: dict[K, T] = {}
    failed: dict[K, str] = {}
    sem = asyncio.Semaphore(concurrency)

    async def one(code: K) -> None:
        async with sem:
            try:
                got[code] = await ask(code)
            except KisError as e:
                failed[code] = _error_text(e)

    await asyncio.gather(*(one(c) for c in codes))
    return got, failed


async def _fetch_prev_closes(
    kis: KisResource, codes: list[str], prev_day: date, concurrency: int
) -> tuple[dict[str, int], dict[str, str], int]:
    """Previous closes from the exchange: the 30-symbol multi-quote on real keys (its `inter2_prdy_clpr`), the
    daily-price row of the previous trading day on paper keys (never row 0 blindly). Returns closes, per-code
    failures and requests used."""
    closes: dict[str, int] = {}
    failures: dict[str, str] = {}
    async with kis.rest_client() as client:
        if kis.env == "real":
            chunks = [codes[i : i + p.MULTPRICE_MAX] for i in range(0, len(codes), p.MULTPRICE_MAX)]
            answers, failed = await _per_code(
                list(range(len(chunks))), concurrency, lambda i: client.multi_price(chunks[i])
            )
            for i, chunk in enumerate(chunks):
                if i in failed:
                    failures.update(dict.fromkeys(chunk, failed[i]))
                    continue
                got = {r.code: r.prev_close for r in answers[i]}
                for c in chunk:
                    if got.get(c):
                        closes[c] = got[c]
                    else:
                        failures[c] = "missing from multi-quote answer"
        else:
            answers, failures = await _per_code(codes, concurrency, client.daily_price)
            for code, bars in answers.items():
                row = next((b for b in bars if b.day == prev_day), None)
                if row is None:
                    failures[code] = f"no daily row for {prev_day}"
                else:
                    closes[code] = row.close
        return closes, failures, client.stats.requests


async def _fetch_nxt_status(kis: KisResource, codes: list[str], concurrency: int) -> tuple[dict[str, Any], int]:
    """Each code's NXT flags from search-stock-info, or the error that left them unknown; and requests used."""
    async with kis.rest_client() as client:
        answers, failed = await _per_code(codes, concurrency, client.search_stock_info)
        status: dict[str, tuple[bool, bool] | str] = {c: (i.nxt_tradable, i.nxt_halted) for c, i in answers.items()}
        return {**status, **failed}, client.stats.requests


async def _download_masters(kis: KisResource) -> dict[str, bytes]:
    cfg = kis.kis_config()
    base = cfg.rest_url if cfg.local else p.MASTER_DOWNLOAD_URL
    async with httpx.AsyncClient() as http:
        return {w: await masters.download_master(http, base, w) for w in ("kospi", "kosdaq")}


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="universe",
    pool=KIS_REST_POOL,
    kinds={"python", "parquet"},
    description=(
        "Stocks Observer tracks on a trading day: KOSPI + KOSDAQ common and preferred shares (no ETF, ETN, ELW, "
        "fund, REIT, SPAC; not halted or in liquidation trading) whose previous close is >= 4,000 KRW. Fixed for "
        "the day: the master files and previous closes it used are kept with it."
    ),
    metadata=catalog.definition_metadata(
        rules.UNIVERSE_SCHEMA,
        catalog.UNIVERSE_COLUMNS,
        "universe/date=YYYY-MM-DD/universe.parquet",
        exclusions="universe_exclusions/date=YYYY-MM-DD/exclusions.parquet",
        exclusions_schema=catalog.table_schema(rules.EXCLUSION_SCHEMA, catalog.EXCLUSION_COLUMNS),
        prev_close="universe_prev_close/date=YYYY-MM-DD/prev_close.parquet",
        masters="raw/universe/date=YYYY-MM-DD/masters/",
        rejected="universe_rejected/date=YYYY-MM-DD/universe.parquet",
    ),
    owners=catalog.OWNERS,
    check_specs=[checks.universe_count],
)
def universe(
    context: dg.AssetExecutionContext, config: UniverseConfig, kis: KisResource
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    # The build result is a system event (docs/collector-rules.md §13 "Universe", "ETL"); a failure is recorded before it raises.
    try:
        built = _build(context, config, kis)
    except Exception as e:
        record(
            "universe_build_failed",
            source="universe",
            logger=context.log,
            day=context.partition_key,
            error=f"{type(e).__name__}: {e}"[:500],
        )
        raise
    verdict = checks.judge(built.table.num_rows, built.previous_count, built.previous_day.isoformat())
    root, day = built.root, built.day
    if not verdict.passed and not config.accept_anyway:
        where = _reject(root, day, built.table, verdict, context.run.run_id)
        msg = (
            f"universe {day} rejected by its check ({'; '.join(verdict.problems)}): not published, so Track A "
            f"will not use it; kept at {where}. Re-run the partition with accept_anyway: true to publish it."
        )
        record(
            "universe_build_failed",
            source="universe",
            logger=context.log,
            day=context.partition_key,
            rejected=True,
            error=msg[:500],
            **verdict.metadata(),
        )
        yield dg.AssetCheckResult(
            check_name=checks.CHECK_NAME,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"rejected, not published: {'; '.join(verdict.problems)}",
            metadata={**verdict.metadata(), "rejected_path": dg.MetadataValue.path(str(where))},
        )
        raise dg.Failure(description=msg, metadata=verdict.metadata())
    path = lake.write_table_atomic(universe_path(root, day), built.table)
    if built.metadata.get("nxt_status") == NXT_PENDING:
        # The members are published first, so a Track A slot waiting for the day's universe starts now rather than
        # after one search-stock-info call per member; the flags follow in place, the members unchanged
        # (docs/architecture.md, "The universe is fixed for its day"). A slot taken in between quotes every member
        # on KRX and counts them as unknown (nxt_status_unknown).
        built = _with_nxt_status(context, config, kis, built, ask_now=True)
        if built.metadata["nxt_status"] == "asked":
            path = lake.write_table_atomic(universe_path(root, day), built.table)
    accepted_anyway = not verdict.passed
    if accepted_anyway:
        context.log.warning(
            f"universe {day}: published although its check failed ({'; '.join(verdict.problems)}): accept_anyway"
        )
        record(
            "universe_accepted_anyway",
            source="universe",
            logger=context.log,
            day=context.partition_key,
            problems="; ".join(verdict.problems),
            run_id=context.run.run_id,
            **verdict.metadata(),
        )
    md = {**built.metadata, "accepted_anyway": accepted_anyway, **catalog.materialized(built.table.num_rows, path)}
    src = str(md.get("source", ""))
    record(
        "universe_built",
        source="universe",
        logger=context.log,
        day=context.partition_key,
        count=md.get("count"),
        fallback=src.startswith("fallback"),
        source_detail=src,
        fallback_reason=md.get("fallback_reason"),
        quote_failures=md.get("quote_failures"),
        requests_used=md.get("requests_used"),
        accepted_anyway=accepted_anyway,
    )
    yield dg.MaterializeResult(
        metadata=md,
        check_results=[
            dg.AssetCheckResult(
                check_name=checks.CHECK_NAME,
                passed=verdict.passed,
                severity=dg.AssetCheckSeverity.WARN if accepted_anyway else dg.AssetCheckSeverity.ERROR,
                description=("accepted anyway by the operator: " + "; ".join(verdict.problems))
                if accepted_anyway
                else "count within bounds",
                metadata={**verdict.metadata(), "accepted_anyway": accepted_anyway},
            )
        ],
    )


@dataclass(frozen=True)
class _Built:
    """A universe table ready to be judged, with the metadata of how it was made."""

    root: Path
    day: date
    previous_day: date
    previous_count: int | None
    table: pa.Table
    metadata: dict[str, Any]


def _reject(root: Path, day: date, table: pa.Table, verdict: checks.CountVerdict, run_id: str) -> Path:
    """Set a refused universe aside (evidence), and withdraw any earlier published one: nothing may read it."""
    where = lake.write_table_atomic(rejected_path(root, day), table)
    lake.write_json_atomic(
        rejection_path(root, day),
        {
            "day": day.isoformat(),
            "problems": list(verdict.problems),
            **verdict.metadata(),
            "run_id": run_id,
            "at": clock.now().isoformat(),
        },
    )
    published = universe_path(root, day)
    if published.exists():
        published.unlink()
    return where


def _build(context: dg.AssetExecutionContext, config: UniverseConfig, kis: KisResource) -> _Built:
    """The day's table and its metadata, with the NXT flags when the day kept them (a re-run); publishing is the
    caller's decision (the count check's), and asking for flags not kept is ``_with_nxt_status``'s, after it."""
    return _with_nxt_status(context, config, kis, _build_members(context, config, kis), ask_now=False)


def nxt_status_pending(config: UniverseConfig, kis: KisResource, built: _Built) -> bool:
    """Whether the members' flags are still to be asked of search-stock-info (after the members are published)."""
    # By default the lookup follows the two-venue day: it costs one call per member (about 80 s for a full universe
    # at the rate bound), which the KRX-only day would pay for flags nothing reads.
    ask = config.nxt_status if config.nxt_status is not None else calendar().two_venue_day
    # A day rebuilt from inputs kept before the flags were is left as it was (asking later would give a later day's
    # answer), unless it is today: a build cut short between publishing and asking is asked on its re-run.
    return (
        bool(ask)
        and kis.env == "real"
        and (built.metadata.get("source") != "rebuilt from kept inputs" or built.day == clock.now().date())
        and not nxt_status_path(built.root, built.day).exists()
    )


def _with_nxt_status(
    context: dg.AssetExecutionContext, config: UniverseConfig, kis: KisResource, built: _Built, *, ask_now: bool
) -> _Built:
    """The members' NXT flags, fixed for the day like the rest: from the kept answers when the day has them, else
    (``ask_now``) asked now (real keys; a fallback universe is asked too, its flags would be another day's) and
    kept."""
    kept = nxt_status_path(built.root, built.day)
    requests = 0
    ask = config.nxt_status if config.nxt_status is not None else calendar().two_venue_day
    if kept.exists():
        status, source = lake.read_table(kept), "kept"
    elif not ask_now:
        status, source = None, NXT_PENDING
    elif not nxt_status_pending(config, kis, built):
        # paper keys have no search-stock-info; a day rebuilt from inputs kept before this column existed stays as
        # it was (asking today would give today's answer)
        why = (
            "not asked (config)"
            if config.nxt_status is False
            else "not asked: the KRX-only day (OBSERVER_TRACK_A_WINDOW=session)"
            if not ask
            else "paper keys: search-stock-info is real-only"
            if kis.env != "real"
            else "day built before NXT status was kept"
        )
        status, source = None, f"unknown: {why}"
    else:
        context.log.info(f"universe {built.day}: {built.table.num_rows} members published; asking their NXT status")
        answers, requests = asyncio.run(
            _fetch_nxt_status(kis, built.table["code"].to_pylist(), config.quote_concurrency)
        )
        status = rules.nxt_status_table(answers)
        lake.write_table_atomic(kept, status)
        source = "asked"
    table = rules.with_nxt_status(built.table, status)
    failures = (
        {}
        if status is None
        else {c: e for c, e in zip(status["code"].to_pylist(), status["error"].to_pylist(), strict=True) if e}
    )
    if failures:
        context.log.warning(
            f"universe {built.day}: NXT status unknown for {len(failures)} members (null, not false): "
            + ", ".join(f"{c} ({e})" for c, e in sorted(failures.items())[:20])
        )
    md: dict[str, Any] = {"nxt_status": source}
    if status is not None:
        md |= {
            "nxt_tradable": pc.sum(table["nxt_tradable"]).as_py() or 0,
            "nxt_halted": pc.sum(table["nxt_halted"]).as_py() or 0,
            "nxt_status_failures": len(failures),
        }
    if requests:
        md["requests_used"] = int(built.metadata.get("requests_used", 0)) + requests
    return _Built(built.root, built.day, built.previous_day, built.previous_count, table, {**built.metadata, **md})


def _build_members(context: dg.AssetExecutionContext, config: UniverseConfig, kis: KisResource) -> _Built:
    """The members from the masters and previous closes (or an earlier day's universe when the masters fail)."""
    cal = calendar()
    day = parse_day_key(context.partition_key, cal)
    prev_day = cal.previous_trading_day(day)
    root = lake.data_dir()
    ddir = universe_raw_dir(root, day)
    inputs_path = prev_close_path(root, day)
    master_paths = {w: ddir / "masters" / f"{w}_code.mst.zip" for w in ("kospi", "kosdaq")}
    source = "built"
    requests_used = 0
    quote_failures: dict[str, str] = {}

    if all(mp.exists() for mp in master_paths.values()) and inputs_path.exists():
        # Fixed for the day: rebuild from the kept inputs, byte for byte the same table.
        source = "rebuilt from kept inputs"
        zips = {w: mp.read_bytes() for w, mp in master_paths.items()}
        pc = lake.read_table(inputs_path)
        closes = dict(zip(pc["code"].to_pylist(), pc["prev_close"].to_pylist()))
    else:
        try:
            today = clock.now().date()
            if day != today:
                raise RuntimeError(f"master files are published for today ({today}) only; {day} has no kept inputs")
            zips = asyncio.run(_download_masters(kis))
            rows_check = [r for w in zips for r in masters.parse_master_zip(zips[w], w)]  # type: ignore[arg-type]
            n_stock = sum(1 for r in rows_check if r.group == "ST")
            floor = config.min_master_codes if config.min_master_codes is not None else min_master_codes_from_env()
            if n_stock < floor:
                raise masters.MasterFormatError(f"masters hold {n_stock} stock codes (< {floor}): refused")
        except Exception as e:  # noqa: BLE001 - any failure to get masters -> fallback, recorded
            fb = latest_universe_before(root, day)
            if fb is None and isinstance(e, httpx.TransportError) and context.retry_number < MASTER_RETRIES:
                # nothing to fall back on (a first day) and KIS unreachable, or the exchange still starting beside
                # it: tried again within the same run, 20, 40 and 80 s later
                wait = MASTER_RETRY_S * 2**context.retry_number
                context.log.warning(f"universe {day}: master files unreachable ({e}); trying again in {wait} s")
                raise dg.RetryRequested(max_retries=MASTER_RETRIES, seconds_to_wait=wait) from e
            if fb is None:
                raise dg.Failure(
                    f"master files unavailable ({e}) and no earlier universe within {FALLBACK_DAYS} trading days"
                ) from e
            fb_day, table = fb
            table = rules.upgrade_universe_table(table)  # an earlier day may predate the current columns
            lake.write_json_atomic(
                ddir / "fallback.json",
                {"reason": str(e), "used_universe_of": fb_day.isoformat(), "at": clock.now().isoformat()},
            )
            context.log.error(f"universe {day}: master files unavailable ({e}); using the universe of {fb_day}")
            prev = read_universe(root, prev_day)
            return _Built(
                root,
                day,
                prev_day,
                prev.num_rows if prev is not None else None,
                table,
                {
                    "count": table.num_rows,
                    "source": f"fallback: universe of {fb_day}",
                    "fallback_reason": str(e),
                },
            )
        for w, mp in master_paths.items():
            lake.write_bytes_atomic(mp, zips[w])
        cand, _ = rules.candidates(r for w in zips for r in masters.parse_master_zip(zips[w], w))  # type: ignore[arg-type]
        closes, quote_failures, requests_used = asyncio.run(
            _fetch_prev_closes(kis, [r.code for r in cand], prev_day, config.quote_concurrency)
        )
        lake.write_table_atomic(
            inputs_path,
            pa.table(
                {"code": sorted(closes), "prev_close": [closes[c] for c in sorted(closes)]},
                schema=rules.PREV_CLOSE_SCHEMA,
            ),
        )

    rows = [r for w in ("kospi", "kosdaq") for r in masters.parse_master_zip(zips[w], w)]  # type: ignore[arg-type]
    table, excluded = rules.select(rows, closes, config.min_prev_close)
    lake.write_table_atomic(exclusions_path(root, day), rules.exclusions_table(excluded))
    prev = read_universe(root, prev_day)
    added, removed = rules.diff(table["code"].to_pylist(), prev["code"].to_pylist() if prev is not None else [])
    md = {
        "count": table.num_rows,
        "source": source,
        "previous_trading_day": prev_day.isoformat(),
        "previous_count": prev.num_rows if prev is not None else None,
        "added": len(added) if prev is not None else None,
        "removed": len(removed) if prev is not None else None,
        "added_codes": dg.MetadataValue.json(added[:200]) if prev is not None else None,
        "removed_codes": dg.MetadataValue.json(removed[:200]) if prev is not None else None,
        "master_rows": len(rows),
        "excluded_by_reason": dg.MetadataValue.json(rules.count_by_category(excluded)),
        "quote_failures": len(quote_failures),
        "requests_used": requests_used,
        "min_prev_close": config.min_prev_close,
    }
    if quote_failures:
        context.log.warning(
            f"universe {day}: no previous close for {len(quote_failures)} candidates, excluded: "
            + ", ".join(f"{c} ({r})" for c, r in sorted(quote_failures.items())[:20])
        )
    return _Built(
        root,
        day,
        prev_day,
        prev.num_rows if prev is not None else None,
        table,
        {k: v for k, v in md.items() if v is not None},
    )
