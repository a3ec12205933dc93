"""Track B ticks lost in a gap, restored from today's intraday conclusions where KIS still serves them.

A lost trade shows in the live ticks as a cumulative-volume break (`missing_volume > 0` on the tick after the hole:
ACML_VOL - CNTG_VOL - previous ACML_VOL). The hole is the cumulative-volume interval (lo, hi] with
hi = ACML_VOL - CNTG_VOL of the breaking tick and lo = hi - missing_volume. `inquire-time-itemconclusion` serves
today's trades newest first, each with its ACML_VOL, so the trades of the hole are exactly those with
lo < acml_vol <= hi; paging stops as soon as a page reaches below lo (a quiet afternoon costs one call, not the day).

Restored ticks go to their own dataset, `track_b_restored/date=D/restored.parquet`, with `source = restored` and
`restored_from` = the endpoint; the live Track B files are never rewritten. A hole is `complete` when the restored
quantities sum to its missing volume (the gap report then marks it restored); otherwise what was found is kept and
the hole stays open. KIS serves conclusions for the current day only: earlier days cannot be restored this way.

A disconnect can also cost trades no break ever shows: the *edge holes*, bounded by time instead of volume.
- *Leading*: a code registered just before the drop has no live tick before it, so its first tick after the
  reconnect breaks against nothing. Its trades from the acknowledged registration (``since``) up to that tick were
  lost; the hole's floor is found when fetching (the newest trade before ``since``).
- *Trailing*: a code whose last tick of the day came before the drop, and that never ticked again (quiet, or let
  go soon after the reconnect), hides what printed while the session was down. Its trades after that tick and
  before the code was registered again (``until``: the next acknowledged registration, else the gap's end) were
  lost; the hole's top is found when fetching.
An edge hole waits until every hour it spans is compacted from its journal as it stands (``compacted_through``):
before that its code's live ticks are not all in the lake, and they would be fetched again as lost. What each fetch
found is recorded even when nothing printed (``_meta/<restored dataset>/date=D/edge_holes.json``), so a code that
lost nothing is seen to have lost nothing.
"""

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets import catalog
from observer_assets.gaps.detect_held import Holdings, registrations
from observer_assets.orchestration.partitions import calendar, parse_day_key, trading_day_partitions
from observer_assets.orchestration.runs import KIS_REST_POOL
from observer_assets.track_b.assets import compacted_from, hour_segments, journal_fingerprint
from observer_resources import clock, events
from observer_resources.calendar import KST
from observer_resources.events import Gap
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisError
from observer_resources.kis.models import Conclusion
from observer_resources.kis.rows import conclusion_from
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    TRACK_B,
    TRACK_B_RESTORED,
    TRACK_B_TAPES,
    TRACK_B_TAPES_RESTORED,
    edge_holes_path,
    restored_path,
    tick_files,
)

ENDPOINT = "inquire-time-itemconclusion"
TS_MS = pa.timestamp("ms", tz="Asia/Seoul")
TS_US = pa.timestamp("us", tz="Asia/Seoul")

RESTORED_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("exchange_ts", TS_MS),  # the trade's time (1 s resolution), today's date
        ("price", pa.int64()),
        ("qty", pa.int64()),
        ("acml_vol", pa.int64()),
        ("change", pa.int64()),
        ("change_sign", pa.string()),
        ("change_rate", pa.float64()),
        ("ask1", pa.int64()),
        ("bid1", pa.int64()),
        ("strength", pa.float64()),
        ("source", pa.string()),  # always "restored"
        ("restored_from", pa.string()),  # the endpoint
        ("hole_lo", pa.int64()),  # the hole (lo, hi] of cumulative volume this trade fills
        ("hole_hi", pa.int64()),
        ("gap_id", pa.string()),  # the session-wide gap marker (disconnect) overlapping the hole, if any
        ("fetched_at", TS_US),
    ]
)


@dataclass(frozen=True)
class Hole:
    code: str
    lo: int  # cumulative volume before the first lost trade
    hi: int  # cumulative volume after the last lost trade
    before: datetime  # exchange time of the tick that revealed the hole (the lost trades are at or before it)
    after: datetime | None  # exchange time of the code's previous live tick
    gap_id: str | None = None
    market: str = "J"  # the KIS market code of the tape: J (KRX), NX (NXT), UN (unified)
    since: datetime | None = None  # a leading hole (module doc): lost from this instant, ``lo`` found when fetched
    until: datetime | None = None  # a trailing hole: lost before this instant, ``hi`` found when fetched

    @property
    def edge(self) -> str | None:
        """ "leading", "trailing", or None for a hole a break shows (both ends known)."""
        return "leading" if self.since is not None else "trailing" if self.until is not None else None

    @property
    def known(self) -> int:
        """The end of an edge hole that is known: its top (leading) or its floor (trailing)."""
        return self.hi if self.since is not None else self.lo

    @property
    def missing(self) -> int | None:
        """The lost volume; None for an edge hole until its trades are fetched."""
        return None if self.edge else self.hi - self.lo

    @property
    def span(self) -> tuple[datetime, datetime] | None:
        """When an edge hole's lost trades printed: from the registration to the first live tick (leading), from
        the last live tick to the next registration (trailing); None for a hole a break shows."""
        if self.since is not None:
            return self.since, self.before
        if self.until is not None and self.after is not None:
            return self.after, self.until
        return None


Settled = Callable[[datetime, datetime], bool]


def compacted_through(root: lake.LakePath, local: Path, now: datetime) -> Settled:
    """Whether every hour from ``a`` to ``b`` is settled: compacted from its journal as it stands (the compaction
    sensor's test), or over with no journal (nothing live to find). An edge hole is bounded by the live ticks the
    compaction has written; in an hour not compacted yet a code's live ticks look lost, and fetching them would put
    their copies in the restored dataset beside the live ones. Such a hole waits for its hours
    (``edge_holes_waiting``)."""
    seen: dict[datetime, bool] = {}

    def hour_settled(h: datetime) -> bool:
        if h not in seen:
            segs = hour_segments(local, h)
            seen[h] = compacted_from(root, h) == journal_fingerprint(segs) if segs else h + timedelta(hours=1) <= now
        return seen[h]

    def settled(a: datetime, b: datetime) -> bool:
        h = a.astimezone(KST).replace(minute=0, second=0, microsecond=0)
        while h <= b:
            if not hour_settled(h):
                return False
            h += timedelta(hours=1)
        return True

    return settled


def upgrade_restored_table(t: pa.Table) -> pa.Table:
    """A restored table in ``RESTORED_SCHEMA``: the schema has not changed since the first release, so this only
    orders the columns and checks the types (idempotent); a migration can call it like the other upgrades."""
    return t.select(RESTORED_SCHEMA.names).cast(RESTORED_SCHEMA)


def read_restored(root: Path, day: date, dataset: str = TRACK_B_RESTORED) -> pa.Table | None:
    path = restored_path(root, day, dataset)
    return lake.read_table(path) if path.exists() else None


@dataclass(frozen=True)
class Tape:
    """One trade tape Track B compacts, where its restored trades go, and the market code KIS serves it under."""

    venue: str  # as the gap report names it
    ticks: str  # dataset
    restored: str  # dataset
    market: str


TAPES = (
    Tape("KRX", TRACK_B, TRACK_B_RESTORED, "J"),
    Tape("unified", TRACK_B_TAPES[p.TR_WS_TRADE_UN], TRACK_B_TAPES_RESTORED[p.TR_WS_TRADE_UN], "UN"),
    Tape("NXT", TRACK_B_TAPES[p.TR_WS_TRADE_NXT], TRACK_B_TAPES_RESTORED[p.TR_WS_TRADE_NXT], "NX"),
)


def find_holes(
    ticks: pa.Table,
    gaps: Sequence[Gap] = (),
    market: str = "J",
    held: Callable[[Gap, str], Mapping[str, datetime]] | None = None,
    tape: str = "KRX",
) -> list[Hole]:
    """The cumulative-volume holes of a day's live ticks (pure), each tied to an overlapping session-wide gap; with
    ``held`` (:func:`held_during`), also the edge holes (module doc) of the codes held through a gap: leading when
    the code's first tick of the day came after it, trailing when its last one came before it."""
    if ticks.num_rows == 0:
        return []
    t = ticks.select(["code", "exchange_ts", "acml_vol", "qty", "missing_volume"]).sort_by(
        [("code", "ascending"), ("acml_vol", "ascending")]
    )
    rows = t.to_pylist()
    windows = [g for g in gaps if g.symbol is None]
    out: list[Hole] = []
    first: dict[str, dict] = {}
    for i, r in enumerate(rows):
        first.setdefault(r["code"], r)
        mv = r["missing_volume"]
        if not mv or mv <= 0:
            continue
        prev = rows[i - 1] if i > 0 and rows[i - 1]["code"] == r["code"] else None
        hi = r["acml_vol"] - r["qty"]
        after = prev["exchange_ts"] if prev else None
        before = r["exchange_ts"]
        gid = next(
            (g.gap_id for g in windows if g.start <= before and (g.end is None or after is None or g.end >= after)),
            None,
        )
        out.append(Hole(r["code"], hi - mv, hi, before, after, gid, market))
    if held is None:
        return out
    last: dict[str, dict] = {r["code"]: r for r in rows}  # by cumulative volume: the day's last tick of each code
    edges: dict[tuple[str, str], Hole] = {}
    for g in sorted(windows, key=lambda g: g.start):
        for code, (since, back) in held(g, tape).items():
            r, z = first.get(code), last.get(code)
            if r is None:
                continue  # never ticked on this tape: nothing tells what it lost (the window stays "may have lost")
            if r["exchange_ts"] >= g.start and r["acml_vol"] - r["qty"] > 0 and ("leading", code) not in edges:
                top = r["acml_vol"] - r["qty"]
                edges[("leading", code)] = Hole(code, 0, top, r["exchange_ts"], None, g.gap_id, market, since=since)
            elif z["exchange_ts"] < g.start:  # the last gap it was held through wins: its hole spans the earlier
                until = back or g.end or g.start
                hole = Hole(code, z["acml_vol"], z["acml_vol"], until, z["exchange_ts"], g.gap_id, market, until=until)
                edges[("trailing", code)] = hole
    return out + [edges[k] for k in sorted(edges)]


def held_during(events: Sequence[dict]) -> Callable[[Gap, str], Mapping[str, tuple[datetime, datetime | None]]]:
    """For a gap and a tape (as the gap report names it): the codes the capture held (any key) and had registered
    on that tape when the gap began, each with the time the server acknowledged that registration (an edge hole's
    ``since``) and the first registration acknowledged after the gap began (its ``until``; None if none). Replayed
    from the day's slot decisions; none where the events cannot tell, so an edge hole is restored only for a code
    known to have been subscribed."""
    holdings = Holdings(events)
    acks = registrations(events)

    def kst(us: int) -> datetime:
        return datetime.fromtimestamp(us / 1_000_000, KST)

    def held(g: Gap, tape: str) -> Mapping[str, tuple[datetime, datetime | None]]:
        start = _us(g.start)
        h = holdings.during(None, start, _us(g.end or g.start))
        if not h.known:
            return {}
        out = {}
        for code in h.codes:
            times = acks.get((tape, code), ())
            before = [t for t in times if t <= start]
            if before:  # registered on this tape when the session went: what printed then was lost with it
                back = next((t for t in times if t > start), None)
                out[code] = (kst(max(before)), kst(back) if back is not None else None)
        return out

    return held


def _us(t: datetime) -> int:
    return int(round(t.timestamp() * 1_000_000))


def edge_end(hole: Hole, trades: Sequence[Conclusion]) -> int:
    """The unknown end of an edge hole (pure), from its fetched trades: a leading hole's floor is the newest trade
    before its ``since`` (0: none that day); a trailing hole's top is the newest trade before its ``until`` (its
    floor: nothing printed)."""
    if hole.since is not None:
        return max((c.acml_vol for c in trades if c.at < hole.since and c.acml_vol <= hole.hi), default=0)
    return max((c.acml_vol for c in trades if c.at < hole.until and c.acml_vol > hole.lo), default=hole.lo)


EdgeKey = tuple[str, str, int]  # (edge, code, the hole's known end)


def read_edges(path: lake.LakePath) -> dict[EdgeKey, int]:
    """A tape's fetched edge holes: (edge, code, known end) -> the other end found."""
    out = {}
    for r in json.loads(path.read_text(encoding="utf-8")):
        leading = r["edge"] == "leading"
        out[(r["edge"], str(r["code"]), int(r["hi"] if leading else r["lo"]))] = int(r["lo"] if leading else r["hi"])
    return out


def write_edges(path: lake.LakePath, found: Mapping[EdgeKey, int]) -> None:
    """Merged with what an earlier run found (idempotent), atomically."""
    merged = {**(read_edges(path) if path.exists() else {}), **found}
    rows = []
    for (edge, code, known), other in sorted(merged.items()):
        lo, hi = (other, known) if edge == "leading" else (known, other)
        rows.append({"edge": edge, "code": code, "lo": lo, "hi": hi})
    lake.write_json_atomic(path, rows)


def _bounded(hole: Hole, trades: Sequence[Conclusion]) -> Hole:
    """An edge hole with its unknown end filled in from its trades; any other hole as it is."""
    if hole.since is not None:
        return Hole(hole.code, edge_end(hole, trades), hole.hi, hole.before, hole.after, hole.gap_id, hole.market)
    if hole.until is not None:
        return Hole(hole.code, hole.lo, edge_end(hole, trades), hole.before, hole.after, hole.gap_id, hole.market)
    return hole


def rows_for_hole(hole: Hole, trades: Sequence[Conclusion], fetched_at: datetime) -> list[dict]:
    """The trades that fill the hole (pure): lo < acml_vol <= hi, oldest first, one per cumulative volume; an edge
    hole's unknown end is found from the trades first (:func:`edge_end`)."""
    hole = _bounded(hole, trades)
    by_vol = {c.acml_vol: c for c in trades if hole.lo < c.acml_vol <= hole.hi}
    return [
        {
            "code": hole.code,
            "exchange_ts": c.at,
            "price": c.price,
            "qty": c.qty,
            "acml_vol": c.acml_vol,
            "change": c.change,
            "change_sign": c.change_sign,
            "change_rate": c.change_rate,
            "ask1": c.ask1,
            "bid1": c.bid1,
            "strength": c.strength,
            "source": "restored",
            "restored_from": ENDPOINT,
            "hole_lo": hole.lo,
            "hole_hi": hole.hi,
            "gap_id": hole.gap_id,
            "fetched_at": fetched_at,
        }
        for v, c in sorted(by_vol.items())
    ]


async def fetch_hole(client, hole: Hole, day: date, max_pages: int = 400) -> list[Conclusion]:
    """Conclusions at or before the hole's revealing tick, newest first, until a page goes below the hole."""
    params = {
        "FID_COND_MRKT_DIV_CODE": hole.market,
        "FID_INPUT_ISCD": hole.code,
        "FID_INPUT_HOUR_1": hole.before.astimezone(KST).strftime("%H%M%S"),
    }
    got: list[Conclusion] = []
    page = await client.request(ENDPOINT, p.TR_TIME_CONCLUSION, params)
    for _ in range(max_pages):
        rows = [conclusion_from(o, day) for o in (page.body.get("output2") or []) if o.get("stck_cntg_hour")]
        got.extend(rows)
        below = min(c.acml_vol for c in rows) <= hole.lo if rows else True
        if hole.since is not None and rows:
            below = below or min(c.at for c in rows) < hole.since
        if below or page.tr_cont not in ("F", "M"):
            break
        page = await client.request(ENDPOINT, p.TR_TIME_CONCLUSION, params, tr_cont="N")
    got.reverse()
    return got


def table(rows: Sequence[dict]) -> pa.Table:
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in RESTORED_SCHEMA}, schema=RESTORED_SCHEMA)


def merge(old: pa.Table | None, new: pa.Table) -> pa.Table:
    """Union keyed by (code, acml_vol): a re-run adds what is new and keeps what an earlier run restored."""
    if old is None or old.num_rows == 0:
        merged = new
    else:
        seen = set(zip(old["code"].to_pylist(), old["acml_vol"].to_pylist()))
        keep = [(c, v) not in seen for c, v in zip(new["code"].to_pylist(), new["acml_vol"].to_pylist())]
        merged = pa.concat_tables([old.cast(RESTORED_SCHEMA), new.filter(pa.array(keep, pa.bool_()))])
    return merged.sort_by([("code", "ascending"), ("acml_vol", "ascending")])


def complete_holes(
    restored: pa.Table, holes: Sequence[Hole], edges: Mapping[EdgeKey, int] | None = None
) -> tuple[int, int]:
    """(holes fully restored, volume restored) — a hole is complete when its trades' sizes add up to it; an edge
    hole's unknown end is the one its fetch found (``edges``; not fetched yet: not complete)."""
    done, vol = 0, 0
    for h in holes:
        lo, hi = h.lo, h.hi
        if h.edge is not None:
            other = (edges or {}).get((h.edge, h.code, h.known))
            if other is None:
                continue
            lo, hi = (other, h.hi) if h.edge == "leading" else (h.lo, other)
        m = pc.and_(
            pc.equal(restored["code"], h.code),
            pc.and_(pc.greater(restored["acml_vol"], lo), pc.less_equal(restored["acml_vol"], hi)),
        )
        got = int(pc.sum(restored.filter(m)["qty"]).as_py() or 0)
        vol += got
        done += got == hi - lo
    return done, vol


async def restore_holes(
    kis, holes: Sequence[Hole], day: date, concurrency: int = 4
) -> tuple[pa.Table, dict[str, str], dict[tuple[str, int], int]]:
    """Restored rows for the holes, per-hole failures ("code@lo-hi" -> why), and each edge hole's end found."""
    rows: list[dict] = []
    failures: dict[str, str] = {}
    found: dict[EdgeKey, int] = {}
    sem = asyncio.Semaphore(concurrency)
    async with kis.rest_client() as client:

        async def one(h: Hole) -> None:
            async with sem:
                try:
                    trades = await fetch_hole(client, h, day)
                except KisError as e:
                    failures[f"{h.code}@{h.lo}-{h.hi}"] = f"{type(e).__name__} {getattr(e, 'code', '')}".strip()
                    return
                rows.extend(rows_for_hole(h, trades, clock.now()))
                if h.edge is not None:
                    found[(h.edge, h.code, h.known)] = edge_end(h, trades)

        await asyncio.gather(*(one(h) for h in holes))
    return table(rows), failures, found


def day_ticks(root: Path, day: date, dataset: str = TRACK_B) -> pa.Table | None:
    """Every compacted live tick of the day (all hours) of one tape, or None."""
    files = tick_files(root, day, dataset)
    if not files:
        return None
    cols = ["code", "exchange_ts", "acml_vol", "qty", "missing_volume"]
    return pa.concat_tables([lake.read_table(f, columns=cols) for f in files])


# --- the asset -----------------------------------------------------------------------------------------------------
@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="gaps",
    pool=KIS_REST_POOL,
    kinds={"python", "parquet"},
    description="Track B trades lost in gaps (cumulative-volume holes of the day's live ticks), restored from "
    "today's intraday conclusions (inquire-time-itemconclusion) with source = restored, in their own dataset: the "
    "live ticks are never rewritten. Each tape apart: KRX's holes from market J into track_b_restored, the unified "
    "tape's from UN into track_b_unified_restored, NXT's from NX into track_b_nxt_restored (by_tape). Only the "
    "current day can be restored (KIS serves today's conclusions only).",
    metadata=catalog.definition_metadata(
        RESTORED_SCHEMA, catalog.RESTORED_COLUMNS, "track_b_restored/date=YYYY-MM-DD/restored.parquet"
    ),
    owners=catalog.OWNERS,
)
def track_b_restored(context: dg.AssetExecutionContext, kis: KisResource) -> dg.MaterializeResult:
    day = parse_day_key(context.partition_key, calendar())
    root = lake.data_dir()
    today = clock.now().date()
    day_events = list(events.read_events(lake.local_dir(), day))
    day_gaps = events.gaps_from(day_events)
    held = held_during(day_events)
    per_tape: dict[str, dict] = {}
    settled = compacted_through(root, lake.local_dir(), clock.now())
    totals = {
        "holes": 0,
        "holes_restored": 0,
        "missing_volume": 0,
        "edge_holes": 0,
        "edge_holes_waiting": 0,
        "restored_volume": 0,
        "failures": 0,
    }
    krx_rows = 0
    for tape in TAPES:
        ticks = day_ticks(root, day, tape.ticks)
        if ticks is None and tape.venue != "KRX":
            continue  # a tape never streamed: nothing to restore, no file
        holes = find_holes(ticks, day_gaps, tape.market, held, tape.venue) if ticks is not None else []
        ready = [h for h in holes if h.span is None or settled(*h.span)]
        waiting, holes = len(holes) - len(ready), ready
        old = read_restored(root, day, tape.restored)
        failures: dict[str, str] = {}
        edge_path = edge_holes_path(root, day, tape.restored)
        known = read_edges(edge_path) if edge_path.exists() else {}
        todo = [h for h in holes if h.edge is None or (h.edge, h.code, h.known) not in known]  # found stays found
        if todo and day == today:
            new, failures, found = asyncio.run(restore_holes(kis, todo, day))
            merged = merge(old, new)
            lake.write_table_atomic(restored_path(root, day, tape.restored), merged)
            if found:  # after the trades: an end on record claims its trades are there
                write_edges(edge_path, found)
        else:
            merged = old if old is not None else table([])
            if holes and day != today:
                context.log.warning(
                    f"track_b_restored {day} ({tape.venue}): {len(holes)} holes, but KIS serves conclusions for "
                    f"today ({today}) only: they stay unrecoverable"
                )
        edges = read_edges(edge_path) if edge_path.exists() else {}
        done, vol = complete_holes(merged, holes, edges) if holes else (0, 0)
        if failures:
            context.log.warning(
                f"track_b_restored {day} ({tape.venue}): {len(failures)} holes failed: "
                + ", ".join(f"{k} ({v})" for k, v in list(failures.items())[:10])
            )
        stats = {
            "holes": len(holes),
            "holes_restored": done,
            "missing_volume": sum(h.missing or 0 for h in holes),
            "edge_holes": sum(h.edge is not None for h in holes),
            "edge_holes_waiting": waiting,
            "restored_volume": vol,
            "failures": len(failures),
        }
        for k, v in stats.items():
            totals[k] += v
        per_tape[tape.venue] = {**stats, "restored_rows": merged.num_rows, "market": tape.market}
        if tape.venue == "KRX":
            krx_rows = merged.num_rows
    return dg.MaterializeResult(
        metadata={
            **totals,
            "restored_rows": krx_rows,
            "by_tape": dg.MetadataValue.json(per_tape),
            "restored_from": ENDPOINT,
            "restorable": day == today,
            **catalog.materialized(krx_rows, restored_path(root, day)),
        }
    )
