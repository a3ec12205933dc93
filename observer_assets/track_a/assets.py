"""Track A: one REST snapshot of the whole universe per 10-minute slot.

Real keys ask the 30-symbol multi-quote (≈ universe/30 requests, a few seconds at 18 req/s); paper keys have no
multi-quote and 2 req/s, so they ask per symbol until the next slot begins and report the coverage they reached.
A per-symbol failure is recorded (failures.parquet, metadata), never fatal. The slot's raw answers are archived
first (raw.jsonl), then the Parquet table is derived from them, both atomically: a crash leaves no partial
partition, and a re-run rebuilds the same table from the archive.
"""


import asyncio
import time as _time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from observer_assets import lake
from observer_assets.partitions import calendar, parse_slot_key, slot_label, track_a_slot_partitions
from observer_assets.runs import BACKFILL_TAGS
from observer_assets.track_a import restore, snapshot
from observer_assets.universe.assets import latest_universe_before, read_universe, universe
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisError
from observer_resources.resources import KisResource

DATASET = "track_a"
FAILURES = "track_a_failures"
RAW = "raw/track_a"  # the archive the tables derive from (JSON lines, uncompressed)


class TrackAConfig(dg.Config):
    concurrency: int = 8  # requests in flight; the shared limiter sets the pace
    deadline_margin_s: float = 30.0  # stop this long before the next slot begins
    refetch: bool = False  # ignore an existing raw archive and ask KIS again (a new, later snapshot)
    live_window_min: float = 10.0  # after slot + this, a run restores from minute bars instead of a live snapshot


def slot_dir(root: Path, slot_ts: datetime, dataset: str = DATASET) -> Path:
    return lake.partition_dir(root, dataset, slot_ts.date(), slot_label(slot_ts))


async def _fetch(kis: KisResource, codes: list[str], deadline: float, concurrency: int) -> tuple[list[str], dict[str, str], int]:
    """Raw archive lines and per-code failures. Stops at `deadline` (monotonic) and records what it missed."""
    lines: list[str] = []
    collected: set[str] = set()
    failures: dict[str, str] = {}
    sem = asyncio.Semaphore(concurrency)

    async with kis.rest_client() as client:
        if kis.env == "real":
            batches = [codes[i : i + p.MULTPRICE_MAX] for i in range(0, len(codes), p.MULTPRICE_MAX)]

            async def one(batch: list[str]) -> None:
                async with sem:
                    if _time.monotonic() > deadline:
                        failures.update({c: "deadline: next slot" for c in batch})
                        return
                    try:
                        rows = await client.multi_price(batch)
                    except KisError as e:
                        failures.update({c: f"{type(e).__name__} {getattr(e, 'code', '')}".strip() for c in batch})
                        return
                    now = datetime.now(KST)
                    got = {r.code: r for r in rows}
                    for c in batch:
                        if c in got:
                            lines.append(snapshot.raw_line(p.TR_MULTPRICE, c, got[c].raw, now))
                            collected.add(c)
                        else:
                            failures[c] = "missing from multi-quote answer"
        else:
            batches = [[c] for c in codes]

            async def one(batch: list[str]) -> None:
                (c,) = batch
                async with sem:
                    if _time.monotonic() > deadline:
                        failures[c] = "deadline: next slot"
                        return
                    try:
                        q = await client.inquire_price(c)
                    except KisError as e:
                        failures[c] = f"{type(e).__name__} {getattr(e, 'code', '')}".strip()
                        return
                    lines.append(snapshot.raw_line(p.TR_INQUIRE_PRICE, c, q.raw, datetime.now(KST)))
                    collected.add(c)

        tasks = [asyncio.create_task(one(b)) for b in batches]
        remaining = deadline - _time.monotonic()
        done, pending = await asyncio.wait(tasks, timeout=max(remaining, 0.0)) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if t.exception() is not None:  # a bug, not a KIS error: surface it
                raise t.exception()  # type: ignore[misc]
        for c in codes:
            if c not in collected and c not in failures:
                failures[c] = "deadline: next slot"
        return lines, failures, client.stats.requests


@dg.asset(
    partitions_def=track_a_slot_partitions,
    group_name="track_a",
    kinds={"python", "parquet"},
    # Slot keys are not day keys: without a mapping Dagster maps a slot to a universe partition of the same name,
    # which never exists, and refuses every UI/GraphQL backfill of Track A ("depends on non-existent partitions").
    deps=[dg.AssetDep(universe, partition_mapping=dg.AllPartitionMapping())],
    description=(
        "A REST snapshot of every universe symbol at one 10-minute slot (prices as integer KRW, cumulative volume "
        "and traded value, best bid/ask, timestamps with zone; source = live or restored). Partition key "
        "YYYY-MM-DDTHHMM (KST)."
    ),
    metadata={"path": "track_a/date=YYYY-MM-DD/slot=HHMM/snapshot.parquet"},
)
def track_a_snapshot(context: dg.AssetExecutionContext, config: TrackAConfig, kis: KisResource) -> dg.MaterializeResult:
    cal = calendar()
    slot_ts = parse_slot_key(context.partition_key, cal)
    root = lake.data_dir()
    table_path = slot_dir(root, slot_ts) / "snapshot.parquet"
    raw_path = slot_dir(root, slot_ts, RAW) / "raw.jsonl"
    fail_path = slot_dir(root, slot_ts, FAILURES) / "failures.parquet"

    uni = read_universe(root, slot_ts.date())
    universe_note = f"universe of {slot_ts.date()}"
    if uni is None:
        fb = latest_universe_before(root, slot_ts.date())
        if fb is None:
            raise dg.Failure(f"no universe for {slot_ts.date()} nor any of the 14 trading days before it")
        uni = fb[1]
        universe_note = f"FALLBACK: universe of {fb[0]} (none for {slot_ts.date()})"
        context.log.error(f"track_a {context.partition_key}: {universe_note}")
    codes = uni["code"].to_pylist()
    names = dict(zip(codes, uni["name"].to_pylist()))

    started = datetime.now(KST)
    t0 = _time.monotonic()
    (bk, bv), = BACKFILL_TAGS.items()
    if context.run.tags.get(bk) == bv or started > slot_ts + timedelta(minutes=config.live_window_min):
        return _restore(context, kis, uni, slot_ts, table_path, raw_path, started, universe_note,
                        "backfill tag" if context.run.tags.get(bk) == bv else "slot no longer current")
    requests_used = 0
    if raw_path.exists() and not config.refetch:
        lines = raw_path.read_text(encoding="utf-8").splitlines()
        fails_tbl = pq.read_table(fail_path) if fail_path.exists() else None
        failures = dict(zip(fails_tbl["code"].to_pylist(), fails_tbl["error"].to_pylist())) if fails_tbl else {}
        mode = "rebuilt from raw archive"
    else:
        slots = cal.track_a_slots(slot_ts.date())
        nxt = next((t for t in slots if t > slot_ts), slot_ts + timedelta(minutes=10))
        deadline = t0 + max((nxt - started).total_seconds() - config.deadline_margin_s, 5.0)
        lines, failures, requests_used = asyncio.run(_fetch(kis, codes, deadline, config.concurrency))
        lake.write_table_atomic(fail_path, pa.table({
            "code": sorted(failures), "error": [failures[c] for c in sorted(failures)],
            "at": pa.array([started] * len(failures), snapshot.TS),
        }, schema=snapshot.FAILURE_SCHEMA))
        lake.write_bytes_atomic(raw_path, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))
        mode = "live"
    table = snapshot.table_from_raw(lines, slot_ts, names)
    if mode != "live" and table_path.exists():
        # Rows an earlier backfill restored for symbols the archive lacks are kept: live rows win, restored fill in.
        existing = pq.read_table(table_path)
        restored_rows = existing.filter(pc.equal(existing["source"], "restored"))
        if restored_rows.num_rows:
            table = restore.merge(table, restored_rows)
    lake.write_table_atomic(table_path, table)
    fetch_s = _time.monotonic() - t0
    coverage = table.num_rows / len(codes) if codes else 0.0
    lateness = (started - slot_ts).total_seconds()
    if failures:
        context.log.warning(f"track_a {context.partition_key}: {len(failures)} symbols not collected, e.g. "
                            + ", ".join(f"{c} ({e})" for c, e in list(sorted(failures.items()))[:10]))
    md = {
        "rows": table.num_rows,
        "universe_size": len(codes),
        "coverage_pct": round(100 * coverage, 3),
        "failures": len(failures),
        "requests_used": requests_used,
        "fetch_seconds": round(fetch_s, 3),
        "lateness_seconds": round(lateness, 1) if mode == "live" else None,
        "mode": mode,
        "key_env": kis.env,
        "universe": universe_note,
        "path": dg.MetadataValue.path(str(table_path)),
    }
    return dg.MaterializeResult(metadata={k: v for k, v in md.items() if v is not None})


def _restore(context: dg.AssetExecutionContext, kis: KisResource, uni: pa.Table, slot_ts: datetime, table_path: Path,
             raw_path: Path, started: datetime, universe_note: str, why: str) -> dg.MaterializeResult:
    """Fill what the slot lacks from minute bars (track_a/restore.py): live rows are never replaced; a whole
    missing slot is restored entirely. A slot already complete asks KIS nothing."""
    t0 = _time.monotonic()
    codes = uni["code"].to_pylist()
    names = dict(zip(codes, uni["name"].to_pylist()))
    prev = dict(zip(codes, uni["prev_close"].to_pylist())) if "prev_close" in uni.column_names else {}
    if table_path.exists():
        base = pq.read_table(table_path)
    elif raw_path.exists():  # a crash between archive and table: the live rows come back first
        base = snapshot.table_from_raw(raw_path.read_text(encoding="utf-8").splitlines(), slot_ts, names)
    else:
        base = None
    have = set(base["code"].to_pylist()) if base is not None else set()
    missing = [c for c in codes if c not in have]
    live_rows = 0 if base is None else int(pc.sum(pc.equal(base["source"], "live")).as_py() or 0)
    failures: dict[str, str] = {}
    endpoint = None
    if missing:
        cal = calendar()
        sess = cal.session(slot_ts.date())
        today = slot_ts.date() == started.date()
        endpoint = restore.ENDPOINT_TODAY if today else restore.ENDPOINT_PAST
        restored, failures = asyncio.run(restore.restore_slot(
            kis, missing, slot_ts, today=today, session_open=sess.open, session_close=sess.close,
            names=names, prev_closes=prev))
        table = restore.merge(base, restored)
        lake.write_table_atomic(table_path, table)
        context.log.info(f"track_a {context.partition_key}: restored {restored.num_rows} of {len(missing)} missing "
                         f"symbols from {endpoint} ({why}); {live_rows} live rows kept")
    else:
        table = base
    if failures:
        context.log.warning(f"track_a {context.partition_key}: {len(failures)} symbols not restorable, e.g. "
                            + ", ".join(f"{c} ({e})" for c, e in list(sorted(failures.items()))[:10]))
    n_restored = int(pc.sum(pc.equal(table["source"], "restored")).as_py() or 0) if table is not None else 0
    rows = table.num_rows if table is not None else 0
    md = {
        "rows": rows,
        "universe_size": len(codes),
        "coverage_pct": round(100 * rows / len(codes), 3) if codes else 0.0,
        "live_rows": live_rows,
        "restored_rows": n_restored,
        "restored_now": rows - len(have),
        "failures": len(failures),
        "restored_from": endpoint or "nothing missing",
        "restore_reason": why,
        "fetch_seconds": round(_time.monotonic() - t0, 3),
        "mode": "restored" if missing else "complete: nothing to restore",
        "key_env": kis.env,
        "universe": universe_note,
        "path": dg.MetadataValue.path(str(table_path)),
    }
    return dg.MaterializeResult(metadata=md)
