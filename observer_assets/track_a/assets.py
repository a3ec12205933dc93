"""Track A: one REST snapshot of the whole universe per 10-minute slot.

Real keys ask the 30-symbol multi-quote (≈ universe/30 requests, a few seconds at 18 req/s); paper keys have no
multi-quote and 2 req/s, so they ask per symbol until the next slot begins and report the coverage they reached.
A per-symbol failure is recorded (failures.parquet, metadata), never fatal; a slot without failures has no
failures file (a live re-run that has none removes the earlier run's).
With several app keys (``KisPool``) the sorted universe is cut into one contiguous block of whole requests per key,
fetched at once, each through its own key's token and budget; a key that fails (credentials, token, EGW answers)
costs only its block, recorded per symbol with the key id, in the metadata ("degraded: key …") and as a
``track_a_key_degraded`` system event (docs/multi-key.md). The slot's raw answers are archived
first (raw.jsonl), then the Parquet table is derived from them, both atomically: a crash leaves no partial
partition, and a re-run rebuilds the same table from the archive.

The fetch across keys is ``fetch.py``; this module is the asset: universe choice, archive, table, metadata, events.
"""

import asyncio
import time as _time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets import catalog
from observer_assets.orchestration.partitions import calendar, parse_slot_key, track_a_slot_partitions
from observer_assets.orchestration.runs import BACKFILL_TAGS, KIS_REST_POOL
from observer_assets.track_a import restore, snapshot, venues
from observer_assets.track_a.fetch import KeyShard, fetch_shards
from observer_assets.universe.dataset import latest_universe_before, read_rejection, read_universe
from observer_resources import clock, metrics
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import record
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
from observer_resources.storage.layout import TRACK_A_RAW as RAW
from observer_resources.storage.layout import rejected_path, slot_dir

#: failures.parquet: the shared schema plus the app key that was asked (several keys shard the universe)
FAILURE_SCHEMA = snapshot.FAILURE_SCHEMA.append(pa.field("key_id", pa.string()))


class TrackAConfig(dg.Config):
    concurrency: int = 8  # requests in flight; the shared limiter sets the pace
    deadline_margin_s: float = 30.0  # stop this long before the next slot begins
    refetch: bool = False  # ignore an existing raw archive and ask KIS again (a new, later snapshot)
    live_window_min: float = 10.0  # after slot + this, a run restores from minute bars instead of a live snapshot


def lateness_metadata(table: pa.Table) -> dict[str, float]:
    """The slot's lateness from its live rows' ``late_s`` (first, median and last answer after the slot instant);
    nothing when it has no live rows. Restored rows are left out: their lateness is when the bars were fetched."""
    if "late_s" not in table.column_names:
        table = snapshot.upgrade_snapshot_table(table)
    late = table.filter(pc.equal(table["source"], "live"))["late_s"].drop_null()
    if len(late) == 0:
        return {}
    q = pc.quantile(late, q=[0.5]).to_pylist()[0]
    return {
        "late_s_min": round(pc.min(late).as_py(), 3),
        "late_s_median": round(q, 3),
        "late_s_max": round(pc.max(late).as_py(), 3),
    }


def _per_key_markdown(shards: list[KeyShard]) -> str:
    rows = ["| key | shard | symbols | collected | failed | requests | state |", "|---|---|---|---|---|---|---|"]
    for s in shards:
        span = f"{s.codes[0]}–{s.codes[-1]}" if s.codes else "—"
        state = f"**degraded: {s.degraded}**" if s.degraded else "ok"
        rows.append(
            f"| {s.key_id} | {span} | {len(s.codes)} | {s.collected} | {len(s.failures)} | {s.requests} | {state} |"
        )
    return "\n".join(rows)


def _degraded_line(s: KeyShard) -> str:
    span = f" ({s.codes[0]}–{s.codes[-1]})" if s.codes else ""
    return (
        f"degraded: key {s.key_id} ({s.degraded}): {len(s.failures)} of its {len(s.codes)} symbols{span} not collected"
    )


@dg.asset(
    partitions_def=track_a_slot_partitions,
    group_name="track_a",
    pool=KIS_REST_POOL,  # live snapshots and restores from minute bars alike
    kinds={"python", "parquet"},
    # Slot keys are not day keys: without a mapping Dagster maps a slot to a universe partition of the same name,
    # which never exists, and refuses every UI/GraphQL backfill of Track A ("depends on non-existent partitions").
    deps=[dg.AssetDep(dg.AssetKey("universe"), partition_mapping=dg.AllPartitionMapping())],
    description=(
        "A REST snapshot of every universe symbol at one 10-minute slot (prices as integer KRW, cumulative volume "
        "and traded value, best bid/ask and book totals, change sign, session phase, expected auction, halt/VI "
        "status where the TR has them, the app key and the lateness; timestamps with zone; source = live or "
        "restored). Partition key YYYY-MM-DDTHHMM (KST)."
    ),
    metadata=catalog.definition_metadata(
        snapshot.SNAPSHOT_SCHEMA,
        catalog.SNAPSHOT_COLUMNS,
        "track_a/date=YYYY-MM-DD/slot=THHMM/snapshot.parquet",
        failures_path="track_a_failures/date=YYYY-MM-DD/slot=THHMM/failures.parquet (only when a symbol failed)",
        failures_schema=catalog.table_schema(FAILURE_SCHEMA, catalog.FAILURE_COLUMNS),
    ),
    owners=catalog.OWNERS,
)
def track_a_snapshot(context: dg.AssetExecutionContext, config: TrackAConfig, kis: KisResource) -> dg.MaterializeResult:
    # The slot's result is a system event (docs/collector-rules.md §13 "ETL"); a failure is recorded before it raises.
    started = _time.monotonic()
    try:
        res = _snapshot(context, config, kis)
    except Exception as e:
        record(
            "track_a_slot_failed",
            source="track_a",
            logger=context.log,
            slot=context.partition_key,
            error=f"{type(e).__name__}: {e}"[:500],
        )
        raise
    metrics.observe_track_a_slot(
        _time.monotonic() - started
    )  # observer_track_a_slot_duration_seconds (docs/metrics.md)
    md = res.metadata or {}
    detail = str(md.get("mode", ""))
    mode = "live" if detail == "live" else "rebuild" if detail.startswith("rebuilt") else "restore"
    record(
        "track_a_slot",
        source="track_a",
        logger=context.log,
        slot=context.partition_key,
        mode=mode,
        mode_detail=detail,
        ok=md.get("rows"),
        failed=md.get("failures"),
        universe_size=md.get("universe_size"),
        coverage_pct=md.get("coverage_pct"),
        requests_used=md.get("requests_used"),
        universe_fallback=str(md.get("universe", "")).startswith("FALLBACK"),
    )
    return res


def _snapshot(context: dg.AssetExecutionContext, config: TrackAConfig, kis: KisResource) -> dg.MaterializeResult:
    cal = calendar()
    slot_ts = parse_slot_key(context.partition_key, cal)
    root = lake.data_dir()
    table_path = slot_dir(root, slot_ts) / "snapshot.parquet"
    raw_path = slot_dir(root, slot_ts, RAW) / "raw.jsonl"
    fail_path = slot_dir(root, slot_ts, FAILURES) / "failures.parquet"

    uni = read_universe(root, slot_ts.date())
    universe_note = f"universe of {slot_ts.date()}"
    if uni is None:
        rejection = read_rejection(root, slot_ts.date())
        if rejection is not None:  # refused on purpose: an earlier day's universe must not stand in for it
            raise dg.Failure(
                f"the universe of {slot_ts.date()} was rejected by its check "
                f"({'; '.join(map(str, rejection.get('problems') or [])) or 'see rejection.json'}): it is set aside "
                f"at {rejected_path(root, slot_ts.date())} and not used. Re-run universe {slot_ts.date()} with "
                "accept_anyway: true to publish it, then this slot."
            )
        fb = latest_universe_before(root, slot_ts.date())
        if fb is None:
            raise dg.Failure(f"no universe for {slot_ts.date()} nor any of the 14 trading days before it")
        uni = fb[1]
        universe_note = f"FALLBACK: universe of {fb[0]} (none for {slot_ts.date()})"
        context.log.error(f"track_a {context.partition_key}: {universe_note}")
    markets = venues.slot_markets(uni, cal, slot_ts)
    codes = list(markets)  # the members this slot quotes, each on its market code
    names = dict(zip(uni["code"].to_pylist(), uni["name"].to_pylist()))

    started = clock.now()
    t0 = _time.monotonic()
    ((bk, bv),) = BACKFILL_TAGS.items()
    if context.run.tags.get(bk) == bv or started > slot_ts + timedelta(minutes=config.live_window_min):
        return _restore(
            context,
            kis,
            uni,
            slot_ts,
            table_path,
            raw_path,
            started,
            universe_note,
            "backfill tag" if context.run.tags.get(bk) == bv else "slot no longer current",
            markets,
        )
    requests_used = 0
    shards: list[KeyShard] = []
    if raw_path.exists() and not config.refetch:
        lines = raw_path.read_text(encoding="utf-8").splitlines()
        fails_tbl = lake.read_table(fail_path) if fail_path.exists() else None
        failures = dict(zip(fails_tbl["code"].to_pylist(), fails_tbl["error"].to_pylist())) if fails_tbl else {}
        mode = "rebuilt from raw archive"
    else:
        slots = cal.track_a_slots(slot_ts.date())
        nxt = next((t for t in slots if t > slot_ts), slot_ts + timedelta(minutes=10))
        deadline = t0 + max((nxt - started).total_seconds() - config.deadline_margin_s, 5.0)
        shards = asyncio.run(fetch_shards(kis, codes, deadline, config.concurrency, markets))
        lines = [line for s in shards for line in s.lines]
        failures = {c: e for s in shards for c, e in s.failures.items()}
        key_of = {c: s.key_id for s in shards for c in s.failures}
        requests_used = sum(s.requests for s in shards)
        order = sorted(failures)
        if failures:
            lake.write_table_atomic(
                fail_path,
                pa.table(
                    {
                        "code": order,
                        "error": [failures[c] for c in order],
                        "at": pa.array([started] * len(failures), snapshot.TS),
                        "key_id": [key_of[c] for c in order],
                    },
                    schema=FAILURE_SCHEMA,
                ),
            )
        elif fail_path.exists():  # an earlier run's failures no longer describe this slot
            fail_path.unlink()
            if lake.is_local(fail_path) and not any(fail_path.parent.iterdir()):
                fail_path.parent.rmdir()  # an empty slot= directory would read as a partition without a file
        lake.write_bytes_atomic(raw_path, ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))
        mode = "live"
        for sh in shards:
            if sh.degraded is not None:
                context.log.error(f"track_a {context.partition_key}: {_degraded_line(sh)} — {sh.error_detail}")
                record(
                    "track_a_key_degraded",
                    source="track_a",
                    logger=context.log,
                    slot=context.partition_key,
                    key_id=sh.key_id,
                    error=sh.degraded,
                    detail=sh.error_detail,
                    symbols=len(sh.codes),
                    not_collected=len(sh.failures),
                    collected=sh.collected,
                    requests=sh.requests,
                    first_code=sh.codes[0] if sh.codes else None,
                    last_code=sh.codes[-1] if sh.codes else None,
                )
    table = snapshot.table_from_raw(lines, slot_ts, names)
    if mode != "live" and table_path.exists():
        # Rows an earlier backfill restored for symbols the archive lacks are kept: live rows win, restored fill in.
        existing = lake.read_table(table_path)
        restored_rows = existing.filter(pc.equal(existing["source"], "restored"))
        if restored_rows.num_rows:
            table = restore.merge(table, restored_rows)
    lake.write_table_atomic(table_path, table)
    fetch_s = _time.monotonic() - t0
    coverage = table.num_rows / len(codes) if codes else 0.0
    lateness = (started - slot_ts).total_seconds()
    if failures:
        context.log.warning(
            f"track_a {context.partition_key}: {len(failures)} symbols not collected, e.g. "
            + ", ".join(f"{c} ({e})" for c, e in list(sorted(failures.items()))[:10])
        )
    md = {
        "rows": table.num_rows,
        "universe_size": len(codes),
        "coverage_pct": round(100 * coverage, 3),
        "failures": len(failures),
        "requests_used": requests_used,
        "fetch_seconds": round(fetch_s, 3),
        "lateness_seconds": round(lateness, 1) if mode == "live" else None,
        **lateness_metadata(table),
        "mode": mode,
        "key_env": kis.env,
        "universe": universe_note,
        **_venue_metadata(cal, slot_ts, uni, markets),
        **catalog.materialized(table.num_rows, table_path),
    }
    if shards:  # a live fetch: what each app key did, and which keys failed
        bad = [sh for sh in shards if sh.degraded is not None]
        md["keys"] = len(shards)
        md["keys_degraded"] = len(bad)
        if bad:
            md["degraded"] = "; ".join(_degraded_line(sh) for sh in bad)
        md["per_key"] = dg.MetadataValue.md(_per_key_markdown(shards))
    return dg.MaterializeResult(metadata={k: v for k, v in md.items() if v is not None})


def _restore(
    context: dg.AssetExecutionContext,
    kis: KisResource,
    uni: pa.Table,
    slot_ts: datetime,
    table_path: Path,
    raw_path: Path,
    started: datetime,
    universe_note: str,
    why: str,
    markets: dict[str, str],
) -> dg.MaterializeResult:
    """Fill what the slot lacks from minute bars (track_a/restore.py): live rows are never replaced; a whole
    missing slot is restored entirely. A slot already complete asks KIS nothing. Each code's bars are those of
    the market it is quoted on (``markets``: the slot's members)."""
    t0 = _time.monotonic()
    cal = calendar()
    codes = list(markets)
    members = uni["code"].to_pylist()
    names = dict(zip(members, uni["name"].to_pylist()))
    prev = dict(zip(members, uni["prev_close"].to_pylist())) if "prev_close" in uni.column_names else {}
    if table_path.exists():
        base = lake.read_table(table_path)
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
        sess = cal.session(slot_ts.date())
        today = slot_ts.date() == started.date()
        endpoint = restore.ENDPOINT_TODAY if today else restore.ENDPOINT_PAST
        restored, failures = asyncio.run(
            restore.restore_slot(
                kis,
                missing,
                slot_ts,
                today=today,
                session_open=sess.open,
                session_close=sess.close,
                names=names,
                prev_closes=prev,
                markets=markets,
                market_days=_market_days(cal, slot_ts),
            )
        )
        table = restore.merge(base, restored)
        lake.write_table_atomic(table_path, table)
        context.log.info(
            f"track_a {context.partition_key}: restored {restored.num_rows} of {len(missing)} missing "
            f"symbols from {endpoint} ({why}); {live_rows} live rows kept"
        )
    else:
        table = base
    if failures:
        context.log.warning(
            f"track_a {context.partition_key}: {len(failures)} symbols not restorable, e.g. "
            + ", ".join(f"{c} ({e})" for c, e in list(sorted(failures.items()))[:10])
        )
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
        **_venue_metadata(cal, slot_ts, uni, markets),
        **(lateness_metadata(table) if table is not None else {}),
        **catalog.materialized(rows, table_path),
    }
    return dg.MaterializeResult(metadata=md)


def _market_days(cal: MarketCalendar, slot_ts: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The span of the day each market's bars cover, for a restore: unified and NXT bars run from the first venue's
    first phase to the last venue's last; KRX's from its regular session (the default)."""
    windows = [v.window for v in cal.venues(slot_ts.date()).values()]
    if not windows or not cal.two_venue_day:
        return {}
    span = (min(w[0] for w in windows), max(w[1] for w in windows))
    return {"UN": span, "NX": span}


def _venue_metadata(cal: MarketCalendar, slot_ts: datetime, uni: pa.Table, markets: dict[str, str]) -> dict:
    """Which venues the slot quoted and how many members on each market code (the UI's answer to 'whose price')."""
    md: dict = {"venues": ", ".join(cal.venues_at_slot(slot_ts)) or "none", "quoted": len(markets)}
    for m, venue in snapshot.VENUE_OF_MARKET.items():
        n = sum(1 for x in markets.values() if x == m)
        if n:
            md[f"quoted_{venue.lower()}"] = n
    if cal.two_venue_day:
        md["nxt_status_unknown"] = venues.unknown_nxt_status(uni)
    return md
