"""Track B compaction: journal lines (raw frames) -> typed tick tables, and the fixed-rate sampled view.

Pure (no I/O): the asset reads segments with ``journal.read_journal`` and writes the result with
``lake.write_table_atomic``.

**Which partition a tick belongs to: the hour of receipt**, i.e. the journal segment its frame was written to.
A frame is one line of exactly one segment, and ``compact`` keeps every tick of every line it is given, so a
tick is never in two partitions nor in none — including the tick received at 10:59:59.9 that KIS stamped
11:00:00 (it is in hour 10, with ``exchange_ts`` 11:00:00). Partitioning by exchange time would need the next
hour's segment before an hour could be closed, and would still have to place ticks by receipt when the
exchange clock is wrong. Consumers that want exchange-time windows filter on ``exchange_ts``.

**Gap flags** (docs/collector-rules.md §8.4), **reconnect flags** and the per-code **sequence** need the previous tick
of each code, which for the first tick of an hour is in the previous partition: ``stats['carry']`` (last tick per
code, JSON-able: cumulative volume, ``seq``, connection, receive time) of hour H is ``prev=`` for H+1.

**Sampling** buckets by receive time: KIS's exchange time has 1-second resolution, so 0.5 s buckets cannot be
formed from it; receive time (µs) is also what the earlier live recorder sampled on. See ``sample``.

Split by what the code does: ``compaction_ticks`` (frames -> typed rows), ``compaction_quality`` (duplicates, gap
flags, losses, carry), ``compaction_sampling`` (the sampled view); this module is the line loop and its counts,
and where the asset, the tests and the benchmarks import all of it from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa

from observer_assets.track_b.compaction_feeds import FeedRows
from observer_assets.track_b.compaction_quality import Outage, dedupe_and_flag
from observer_assets.track_b.compaction_sampling import DEFAULT_BUCKETS, SAMPLE_SCHEMA, sample, upgrade_sampled_table
from observer_assets.track_b.compaction_ticks import TICK_SCHEMA, TickBuilder, rx_us, seq_end, upgrade_ticks_table
from observer_assets.track_b.journal_read import JournalLine
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import FeedFrame, Malformed, OrderBookFrame, ParseStats, TradeBatch, parse_message

__all__ = [
    "DEFAULT_BUCKETS",
    "SAMPLE_SCHEMA",
    "TICK_SCHEMA",
    "Outage",
    "HourTables",
    "compact",
    "compact_all",
    "sample",
    "seq_end",
    "upgrade_sampled_table",
    "upgrade_ticks_table",
]

SAMPLE_LIMIT = 100  # malformed / bad-line samples kept in stats (all are counted)


def compact(
    lines: Iterable[JournalLine],
    *,
    day: date,
    hour: int,
    prev: Mapping[str, Mapping] | None = None,
    outages: Sequence[Outage] = (),
) -> tuple[pa.Table, dict]:
    """KRX's tape of the hour: :func:`compact_all`'s ``H0STCNT0`` table and stats."""
    hour_tables = compact_all(lines, day=day, hour=hour, prev_by_tr={p.TR_WS_TRADE: prev or {}}, outages=outages)
    return hour_tables.tapes[p.TR_WS_TRADE]


@dataclass
class HourTables:
    """One hour's journal, compacted: a tick table and its stats per trade TR (KRX's always present), and the
    order-book, expected-price and market-status rows (``compaction_feeds``)."""

    tapes: dict[str, tuple[pa.Table, dict]]
    feeds: dict[str, pa.Table]


def compact_all(
    lines: Iterable[JournalLine],
    *,
    day: date,
    hour: int,
    prev_by_tr: Mapping[str, Mapping[str, Mapping]] | None = None,
    outages: Sequence[Outage] = (),
) -> HourTables:
    """Every valid trade record of the given journal lines, per trade TR (``H0STCNT0``, ``H0NXCNT0``,
    ``H0UNCNT0``: each venue's tape apart), plus the other feeds' rows.

    For each tape: every valid record of the given journal lines, typed, de-duplicated, gap-flagged.

    ``lines`` are the lines of the hour's segment(s) (one per app key), as ``read_journal`` yields them; every
    tick of every line is kept whatever its receive time (lines received outside the hour — a clock step — are
    counted in ``rx_outside_hour``). Exact duplicates (same code, same ACML_VOL, same fields: a duplicated
    frame) are dropped and counted. ``prev`` is the previous hour's ``stats['carry']``; ``outages`` the capture's
    recorded outages (session-wide gap markers) of the day, so that a tick after one is flagged ``after_reconnect``
    even when its connection id did not change.

    Each tape's table is sorted by (code, acml_vol); its stats: ticks, symbols, per_code, duplicates_dropped,
    acml_conflicts, vol_breaks {code: {count, missing_volume}}, gap_ticks, reconnect_flags, carry, and the
    journal's own (shared by every tape): malformed frames and records (counted by reason, first samples kept),
    bad journal lines, connections. ``prev_by_tr`` holds each tape's previous-hour carry.
    """
    start = datetime(day.year, day.month, day.day, hour, tzinfo=KST)
    end = start + timedelta(hours=1)
    accs: dict[str, TickBuilder] = {p.TR_WS_TRADE: TickBuilder()}
    feed_rows = FeedRows(day)
    pstats = ParseStats()
    kinds: Counter = Counter()
    messages: Counter = Counter()
    malformed: Counter = Counter()
    samples: list[dict] = []
    bad_lines: Counter = Counter()
    bad_samples: list[dict] = []
    recovered: list[dict] = []
    conns: dict[str, dict] = {}
    other_date = rx_outside = frames = 0
    day_s = day.strftime("%Y%m%d")

    for ln in lines:
        if not ln.ok:
            bad_lines[ln.error or "bad"] += 1
            if len(bad_samples) < SAMPLE_LIMIT:
                bad_samples.append(
                    {"path": str(ln.path), "offset": ln.offset, "error": ln.error, "bytes": len(ln.raw or b"")}
                )
            continue
        kinds[ln.kind] += 1
        if ln.kind != "frame":  # control lines: a recovery's report is evidence of a gap in the record
            cut = (
                ln.meta.get("recovered")
                if ln.kind == "open"
                else (ln.meta if ln.kind == "close" and ln.meta.get("reason") == "recovered" else None)
            )
            if cut and (cut.get("cut_bytes") or cut.get("bad_lines")):
                recovered.append(
                    {
                        "path": str(ln.path),
                        "at": ln.rx.isoformat() if ln.rx else None,
                        "cut_bytes": cut.get("cut_bytes", 0),
                        "bad_lines": cut.get("bad_lines", 0),
                    }
                )
            continue
        frames += 1
        rx = ln.rx
        assert rx is not None
        if not start <= rx < end:
            rx_outside += 1
        conn_id = ln.conn_id
        c = conns.get(conn_id)
        if c is None:
            c = conns[conn_id] = {
                "conn_id": conn_id,
                "key_id": ln.key_id,
                "first_rx": rx,
                "last_rx": rx,
                "frames": 0,
                "ticks": 0,
            }
        c["frames"] += 1
        if rx > c["last_rx"]:
            c["last_rx"] = rx
        if rx < c["first_rx"]:
            c["first_rx"] = rx
        msg = parse_message(ln.payload if ln.payload is not None else "", pstats)
        kind = type(msg)
        if kind is TradeBatch:
            if msg.records:
                ml = ln.mitigation_level
                acc = accs.get(msg.tr_id)
                if acc is None:
                    acc = accs[msg.tr_id] = TickBuilder()
                acc.add(msg.records, (rx_us(rx), conn_id, ln.key_id, ln.n, None if ml is None else int(ml)))
                c["ticks"] += len(msg.records)
                for t in msg.records:
                    if t.raw[33] != day_s:
                        other_date += 1
            for r in msg.rejected:
                malformed[f"record:{r.reason}"] += 1
                if len(samples) < SAMPLE_LIMIT:
                    samples.append(
                        {
                            "rx": rx.isoformat(),
                            "conn_id": conn_id,
                            "n": ln.n,
                            "reason": r.reason,
                            "detail": r.detail,
                            "record": "^".join(r.raw)[:400],
                        }
                    )
        elif kind is OrderBookFrame or kind is FeedFrame:
            if msg.records:
                add = feed_rows.add_books if kind is OrderBookFrame else feed_rows.add_feed
                add(msg, rx_us(rx), conn_id, ln.key_id, ln.n)  # type: ignore[arg-type]
            messages[f"{kind.__name__}:{msg.tr_id}"] += 1
            for r in msg.rejected:
                malformed[f"record:{r.reason}"] += 1
        elif kind is Malformed:
            malformed[f"frame:{msg.reason}"] += 1
            if len(samples) < SAMPLE_LIMIT:
                samples.append(
                    {
                        "rx": rx.isoformat(),
                        "conn_id": conn_id,
                        "n": ln.n,
                        "reason": msg.reason,
                        "excerpt": msg.raw_excerpt,
                        "flag": ln.meta.get("bad"),
                    }
                )
        else:
            tr = getattr(msg, "tr_id", "")
            messages[f"{kind.__name__}:{tr}" if tr else kind.__name__] += 1

    shared = {
        "day": day.isoformat(),
        "hour": hour,
        "lines": sum(kinds.values()) + sum(bad_lines.values()),
        "frames": frames,
        "line_kinds": dict(kinds),
        "other_messages": dict(messages),
        "malformed": dict(malformed),
        "malformed_frames": sum(v for k, v in malformed.items() if k.startswith("frame:")),
        "malformed_records": sum(v for k, v in malformed.items() if k.startswith("record:")),
        "malformed_samples": samples,
        "bad_lines": dict(bad_lines),
        "bad_line_samples": bad_samples,
        "journal_recoveries": recovered,
        "rx_outside_hour": rx_outside,
        "other_business_date": other_date,
        "parse": pstats.as_dict(),
        "connections": [
            {**c, "first_rx": c["first_rx"].isoformat(), "last_rx": c["last_rx"].isoformat()}
            for c in sorted(conns.values(), key=lambda c: c["first_rx"])
        ],
        "between_connections_s": _between(conns),
    }
    tapes: dict[str, tuple[pa.Table, dict]] = {}
    for tr, acc in accs.items():
        table, fp = acc.table()
        table, fp, stats = dedupe_and_flag(table, fp, (prev_by_tr or {}).get(tr) or {}, outages)
        stats.update(shared)
        tapes[tr] = (table, stats)
    return HourTables(tapes, feed_rows.tables())


def _between(conns: dict[str, dict]) -> float:
    """Seconds between the last frame of one connection and the first of the next, per key: a lower bound
    of disconnected time derived from the record alone (the capture's events are authoritative)."""
    total = 0.0
    by_key: dict[str | None, list[dict]] = {}
    for c in conns.values():
        by_key.setdefault(c["key_id"], []).append(c)
    for cs in by_key.values():
        cs.sort(key=lambda c: c["first_rx"])
        for a, b in zip(cs, cs[1:]):
            total += max(0.0, (b["first_rx"] - a["last_rx"]).total_seconds())
    return round(total, 6)
