"""Track B's hourly assets: the journal of an hour compacted to typed ticks, and the per-slot sampled view.

Partition key ``YYYY-MM-DDTHH`` = the KST hour of *receipt* (the journal segment a frame was written to; see
compaction.py for why). One partition gathers the segments of every app key for that hour.

Files (hive layout, readable with no project code; paths from ``storage.layout``)::

    track_b/date=D/hour=THH/ticks.parquet             every trade, de-duplicated, numbered, gap-flagged (TICK_SCHEMA)
    track_b_sampled/date=D/hour=THH/sampled.parquet   2 Hz per slot (1 Hz / 0.5 Hz where mitigation was on)
    _meta/track_b/date=D/hour=THH/state.json          carry for the next hour: last tick and seq per code, slots held
    _meta/track_b/date=D/hour=THH/manifest.json       journal fingerprint compacted + summary (the sensor reads it)

Idempotent: the same journal gives the same files (written atomically, the manifest last). The result of an
hour does not depend on the order hours are compacted in: the previous hour's carry is read from its stored
state when that state was made from the current journal, and otherwise recomputed in memory from the day's
earlier hours, exactly as an in-order run would have.

**Record rate per slot** = ticks of a symbol ÷ the minutes it held a slot in the hour. Slot time comes from the
exchange's subscription acks kept in the journal (subscribe/already → unsubscribe, or the connection's end),
carried across hours in ``state.json``; a symbol with ticks but no ack in view (e.g. the journal started
mid-subscription) counts from its first tick, and is listed as ``approx``.

**Disconnected seconds** = seconds of the hour covered by session-wide gap markers (``symbol`` null) in the
day's event log, per key and as a union over keys (a marker still open counts up to the hour end or now). The same
markers go to the compaction as outages: the first tick of a code after one is flagged ``after_reconnect``.
"""

import hashlib
import json
import statistics
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets import catalog
from observer_assets.orchestration.partitions import hour_key, parse_hour_key, track_b_hour_partitions
from observer_assets.orchestration.runs import COMPACTION_POOL
from observer_assets.track_b import journal as jr
from observer_assets.track_b.compaction import (
    DEFAULT_BUCKETS,
    SAMPLE_SCHEMA,
    TICK_SCHEMA,
    HourTables,
    Outage,
    compact_all,
    sample,
)
from observer_resources import clock, events
from observer_resources.calendar import KST
from observer_resources.intervals import union_length
from observer_resources.kis import protocol as p
from observer_resources.kis.frames import Ack, parse_message
from observer_resources.storage import lake
from observer_resources.storage.layout import (
    TRACK_B_TAPES,
    feed_path,
    manifest_path,
    sampled_path,
    state_path,
    ticks_path,
    venue_ticks_path,
)

# a connection with a frame this close to the hour end is alive through it (KIS sends a PINGPONG every ~10 s,
# and the journal keeps every frame, so a live session is never silent this long)
ALIVE_AT_END_S = 60.0


# --- paths and the journal's view of an hour --------------------------------------------------------------


def hour_segments(root: Path, start: datetime) -> list[Path]:
    return jr.segments(root, start.date(), start.hour)


def journal_fingerprint(paths: Iterable[Path]) -> str:
    """Identity of an hour's journal (every key's segment: name, size, mtime): any append, cut or seal
    after a compaction changes it, and the compaction sensor requests the hour again."""
    h = hashlib.sha256()
    for path in sorted(paths):
        st = path.stat()
        h.update(f"{path.parent.name}/{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def journal_hours(root: Path, since: datetime | None = None) -> list[datetime]:
    """Start (KST) of every hour with at least one journal segment, oldest first (days from ``since``)."""
    base = jr.journal_root(root)
    out: set[datetime] = set()
    if not base.exists():
        return []
    for day_dir in base.glob("date=*"):
        try:
            day = datetime.strptime(day_dir.name[5:], "%Y-%m-%d")
        except ValueError:
            continue
        if since is not None and day.date() < since.date():
            continue
        for seg in day_dir.glob("key=*/[0-2][0-9].jsonl"):
            hh = int(seg.stem)
            if hh < 24:
                out.add(datetime(day.year, day.month, day.day, hh, tzinfo=KST))
    return sorted(out)


def journal_summary(local: Path, day: date) -> dict:
    """What the journal holds for a day (segments, bytes, keys, hours, sealed or not) and its fingerprint: the
    content of a ``track_b_journal`` event. Reads file metadata and segment tails only."""
    segs = jr.segments(local, day)
    return {
        "day": day.isoformat(),
        "segments": len(segs),
        "bytes": sum(s.stat().st_size for s in segs),
        "keys": sorted({s.parent.name.removeprefix("key=") for s in segs}),
        "hours": sorted({s.stem for s in segs}),
        "unsealed_segments": sum(1 for s in segs if not jr.segment_closed(s)),
        "fingerprint": journal_fingerprint(segs) if segs else "",
        "path": jr.journal_root(local) / f"date={day.isoformat()}",
    }


def journal_event_metadata(summary: dict) -> dict:
    """A journal summary as asset-event metadata."""
    return {
        "day": summary["day"],
        "segments": summary["segments"],
        "bytes": summary["bytes"],
        "keys": dg.MetadataValue.json(summary["keys"]),
        "hours": dg.MetadataValue.json(summary["hours"]),
        "unsealed_segments": summary["unsealed_segments"],
        "journal_fingerprint": summary["fingerprint"],
        "path": dg.MetadataValue.path(str(summary["path"])),
        catalog.URI: catalog.uri(summary["path"]),
    }


# The raw journal: written by the capture (track_b_capture_job reports a materialization when its supervision
# ends), observed on disk by track_b_journal_sensor, compacted into track_b_ticks. Not executable from Dagster:
# only the capture process appends to it.
track_b_journal = dg.AssetSpec(
    "track_b_journal",
    group_name="track_b",
    kinds={"python", "jsonl"},
    owners=catalog.OWNERS,
    description=(
        "Track B's raw record: every WebSocket frame exactly as received, one self-checking JSON line each (CRC32), "
        "per app key and KST hour of receipt, append-only with group-commit fsync. Written by the capture process "
        "that track_b_capture_job supervises; observed every minute by track_b_journal_sensor (data version = "
        "the day's segment fingerprint); compacted hour by hour into track_b_ticks. Lives on the local/NFS "
        "directory (OBSERVER_LOCAL_DIR), never on an object store."
    ),
    metadata=catalog.definition_metadata(
        catalog.JOURNAL_SCHEMA,
        catalog.JOURNAL_COLUMNS,
        "raw/track_b/date=YYYY-MM-DD/key=<key_id>/HH.jsonl",
        written_by="track_b_capture_job",
    ),
)


def read_manifest(root: Path, start: datetime) -> dict | None:
    try:
        return json.loads(manifest_path(root, start).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def compacted_from(root: Path, start: datetime) -> str | None:
    """The journal fingerprint the hour's lake tables were compacted from (its manifest, the compaction's last
    write, with its ticks file in place), or None when it was not compacted. Equal to the journal's fingerprint
    now: the lake holds everything the hour's journal holds."""
    m = read_manifest(root, start)
    return m.get("journal_fingerprint") if m and ticks_path(root, start).exists() else None


def is_current(root: Path, start: datetime, local: Path | None = None) -> bool:
    """The hour's stored compaction (in the lake, `root`) was made from the journal (in `local`) as it is now."""
    m = read_manifest(root, start)
    segs = hour_segments(local or root, start)
    return bool(
        m and segs and m.get("journal_fingerprint") == journal_fingerprint(segs) and ticks_path(root, start).exists()
    )


# --- slot occupancy from the subscription acks (pure) ------------------------------------------------------


class SlotTime:
    """Seconds each symbol held a slot within [start, end), from the acks in the journal lines fed in order.

    ``carried`` maps a connection id to the symbols it held at the previous hour's end: they count from the
    hour start if that connection is still sending in this hour."""

    def __init__(self, start: datetime, end: datetime, carried: dict[str, list[str]] | None = None) -> None:
        self.start, self.end = start, end
        self.carried = {c: list(codes) for c, codes in (carried or {}).items()}
        self.open: dict[tuple[str, str], datetime] = {}
        self.seconds: dict[str, float] = {}
        self.last_rx: dict[str, datetime] = {}
        self.acks = 0

    def feed(self, lines: Iterable[jr.JournalLine]) -> Iterator[jr.JournalLine]:
        """Pass the lines through (to the compaction), noting connection activity and acks on the way."""
        for ln in lines:
            if ln.ok and ln.kind == "frame" and ln.rx is not None:
                conn = ln.conn_id
                if conn not in self.last_rx:
                    for code in self.carried.pop(conn, ()):  # held since the previous hour
                        self.open.setdefault((conn, code), self.start)
                self.last_rx[conn] = ln.rx
                pl = ln.payload
                if isinstance(pl, str) and pl[:1] == "{":
                    msg = parse_message(pl)
                    if isinstance(msg, Ack) and msg.tr_id == p.TR_WS_TRADE and msg.tr_key:
                        self.acks += 1
                        self._ack(conn, msg.tr_key, msg.kind, ln.rx)
            yield ln

    def _ack(self, conn: str, code: str, kind: str, at: datetime) -> None:
        key = (conn, code)
        if kind in ("subscribed", "already"):
            self.open.setdefault(key, max(at, self.start))
        elif kind in ("unsubscribed", "not_registered") and key in self.open:
            self._add(code, self.open.pop(key), at)

    def _add(self, code: str, a: datetime, b: datetime) -> None:
        a, b = max(a, self.start), min(b, self.end)
        if b > a:
            self.seconds[code] = self.seconds.get(code, 0.0) + (b - a).total_seconds()

    def finish(self) -> tuple[dict[str, float], dict[str, list[str]]]:
        """(seconds held per symbol, symbols held at the hour end per connection — the next hour's carry)."""
        at_end: dict[str, list[str]] = {}
        for (conn, code), since in sorted(self.open.items()):
            last = self.last_rx.get(conn, self.start)
            if (self.end - last).total_seconds() <= ALIVE_AT_END_S:
                self._add(code, since, self.end)
                at_end.setdefault(conn, []).append(code)
            else:  # the connection ended inside the hour
                self._add(code, since, last)
        self.open.clear()
        return dict(self.seconds), at_end


def record_rates(
    per_code: dict[str, int], first_rx: dict[str, datetime], slot_s: dict[str, float], end: datetime
) -> dict[str, dict]:
    """Per symbol: ticks, slot minutes and ticks per slot-minute (see the module docstring)."""
    out: dict[str, dict] = {}
    for code in sorted(set(per_code) | set(slot_s)):
        n = per_code.get(code, 0)
        secs, approx = slot_s.get(code, 0.0), False
        if secs <= 0 and n:
            secs, approx = max(1.0, (end - first_rx[code]).total_seconds()), True
        minutes = secs / 60.0
        out[code] = {
            "ticks": n,
            "slot_minutes": round(minutes, 3),
            "ticks_per_minute": round(n / minutes, 3) if minutes > 0 else None,
            "approx": approx,
        }
    return out


# --- disconnected time from the gap markers (pure over the event log) --------------------------------------


def disconnected_seconds(
    gaps: Iterable[events.Gap], start: datetime, end: datetime, now: datetime
) -> tuple[float, dict[str, float], int]:
    """(union over keys, per key, number of markers) of session-wide gap time inside [start, end)."""
    by_key: dict[str, list[tuple[datetime, datetime]]] = {}
    n = 0
    for g in gaps:
        if g.symbol:
            continue
        a = max(g.start, start)
        b = min(g.end if g.end is not None else min(end, now), end)
        if b <= a:
            continue
        n += 1
        key = str(g.metadata.get("key_id") or g.metadata.get("key") or "*")
        by_key.setdefault(key, []).append((a, b))
    per_key = {k: round(union_length(v, timedelta(0)).total_seconds(), 3) for k, v in sorted(by_key.items())}
    allv = [iv for v in by_key.values() for iv in v]
    return round(union_length(allv, timedelta(0)).total_seconds(), 3), per_key, n


# --- compaction of one hour ------------------------------------------------------------------------------


def outages_of(gaps: Iterable[events.Gap]) -> list[Outage]:
    """The capture's session-wide Track B gap markers as compaction outages (key or None, start in µs)."""
    out: list[Outage] = []
    for g in gaps:
        if g.symbol or g.scope not in ("scalp", "all"):
            continue
        key = g.metadata.get("key_id") or g.metadata.get("key")
        out.append((str(key) if key else None, int(g.start.timestamp()) * 1_000_000 + g.start.microsecond))
    return out


def compact_hour(
    root: Path,
    start: datetime,
    prev_carry: dict[str, dict] | None,
    prev_slots: dict[str, list[str]] | None,
    outages: list[Outage] | None = None,
) -> tuple[HourTables, dict[str, float], dict]:
    """(every tape and feed of the hour, slot seconds per symbol, state for the next hour) of one hour's journal;
    ``prev_carry`` is the previous hour's carry per trade TR; ``outages`` default to the day's gap markers in
    ``root``'s event log."""
    end = start + timedelta(hours=1)
    if outages is None:
        outages = outages_of(events.gaps(root, start.date()))
    st = SlotTime(start, end, prev_slots)
    lines = st.feed(jr.read_journal(hour_segments(root, start)))
    tables = compact_all(lines, day=start.date(), hour=start.hour, prev_by_tr=prev_carry, outages=outages)
    slot_s, at_end = st.finish()
    carries = {tr: stats["carry"] for tr, (_, stats) in tables.tapes.items()}
    for tr, c in (prev_carry or {}).items():  # a feed silent this hour keeps its carry for the next
        carries.setdefault(tr, c)
    state = {
        "hour": hour_key(start),
        "carry": carries.pop(p.TR_WS_TRADE),
        "carry_by_tr": carries,
        "open_slots": at_end,
        "acks": st.acks,
    }
    return tables, slot_s, state


def carries_of(state: dict) -> dict[str, dict]:
    """Each trade TR's carry from a stored hour state (KRX's under ``carry``, as states always had it)."""
    return {p.TR_WS_TRADE: state["carry"], **(state.get("carry_by_tr") or {})}


def previous_state(
    root: Path, start: datetime, local: Path | None = None, outages: list[Outage] | None = None
) -> tuple[dict | None, dict | None, str]:
    """The carry and slots of the hour before ``start`` (same day), and how they were obtained. A stored state
    from before ``seq`` was carried is recomputed, so the sequence continues across hours."""
    local = local or root
    if outages is None:
        outages = outages_of(events.gaps(local, start.date()))
    earlier = [h for h in journal_hours(local, start) if h.date() == start.date() and h < start]
    chain: list[datetime] = []
    carry: dict | None = None
    slots: dict | None = None
    for h in reversed(earlier):
        if is_current(root, h, local):
            try:
                s = json.loads(state_path(root, h).read_text(encoding="utf-8"))
                if all("seq" in c for c in s["carry"].values()):
                    carry, slots = carries_of(s), s["open_slots"]
                    break
            except (FileNotFoundError, ValueError, KeyError, AttributeError):
                pass
        chain.append(h)
    for h in reversed(chain):  # oldest first, as an in-order run would have
        _, _, s = compact_hour(local, h, carry, slots, outages)
        carry, slots = carries_of(s), s["open_slots"]
    if not earlier:
        how = "none (first hour of the day with journal data)"
    elif chain:
        how = "recomputed from the journal of " + ", ".join(hour_key(h) for h in reversed(chain))
    else:
        how = f"stored state of {hour_key(earlier[-1])}" if carry is not None else "none"
    return carry, slots, how


def write_other_feeds(root: Path, start: datetime, tables: HourTables) -> dict[str, dict]:
    """Write the hour's NXT and unified tapes and its book, expected-price and status rows, each to its dataset
    (docs/data.md). A table with no rows is written only over an earlier file (a re-run that finds less must not
    leave the old rows); the journal holding none of a feed writes nothing for it. Returns what was written."""
    out: dict[str, dict] = {}
    targets: list[tuple[str, pa.Table, Any]] = []
    for tr in TRACK_B_TAPES:
        got = tables.tapes.get(tr)
        t = got[0] if got is not None else TICK_SCHEMA.empty_table()
        targets.append((tr, t, venue_ticks_path(root, start, tr)))
    for kind, t in tables.feeds.items():
        targets.append((kind, t, feed_path(root, start, kind)))
    for name, t, path in targets:
        if t.num_rows == 0 and not path.exists():
            continue
        lake.write_table_atomic(path, t)
        md: dict = {"rows": t.num_rows, "path": str(path)}
        if name in TRACK_B_TAPES:
            st = tables.tapes[name][1] if name in tables.tapes else {}
            md.update(
                symbols=st.get("symbols", 0),
                duplicates_dropped=st.get("duplicates_dropped", 0),
                volume_breaks=sum(b["count"] for b in st.get("vol_breaks", {}).values()),
                missing_volume=st.get("missing_volume", 0),
            )
        out[name] = md
    return out


def _first_rx(table: pa.Table) -> dict[str, datetime]:
    if table.num_rows == 0:
        return {}
    g = table.group_by("code").aggregate([("receive_ts", "min")])
    return dict(zip(g["code"].to_pylist(), g["receive_ts_min"].to_pylist()))


@dg.asset(
    partitions_def=track_b_hour_partitions,
    group_name="track_b",
    pool=COMPACTION_POOL,
    kinds={"python", "parquet"},
    description=(
        "Every trade Track B received in one KST hour (all app keys), from the raw journal: typed H0STCNT0 "
        "fields, receive and exchange time with zone, de-duplicated, numbered per code and day (order by code, "
        "seq), the tick after a cumulative-volume break flagged 'gap' with the missing volume, the first tick "
        "after a reconnect or recorded outage flagged after_reconnect. day_open/day_high/day_low are the day's "
        "running values, not the trade's. Metadata: ticks, symbols, duplicates dropped, malformed frames, volume "
        "breaks, record rate per slot, disconnected seconds. The same run writes the hour's other feeds, when "
        "subscribed (OBSERVER_TRACK_B_FEEDS): the unified and NXT tapes (track_b_unified, track_b_nxt, same columns "
        "and rules), order books (track_b_books), expected prices (track_b_expected) and market status "
        "(track_b_status); see other_feeds. Partition key YYYY-MM-DDTHH (KST)."
    ),
    metadata=catalog.definition_metadata(
        TICK_SCHEMA,
        catalog.TICK_COLUMNS,
        "track_b/date=YYYY-MM-DD/hour=THH/ticks.parquet",
        source="raw/track_b/date=*/key=*/HH.jsonl",
    ),
    owners=catalog.OWNERS,
    deps=[track_b_journal],
)
def track_b_ticks(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    start = parse_hour_key(context.partition_key)
    end = start + timedelta(hours=1)
    root, local = lake.data_dir(), lake.local_dir()  # the journal and the event log are local; the ticks go to the lake
    segs = hour_segments(local, start)
    if not segs:
        raise dg.Failure(
            f"no Track B journal for {context.partition_key} under {jr.journal_root(local)}: "
            "nothing was recorded in that hour (a gap, not an empty hour)"
        )
    fp = journal_fingerprint(segs)  # before reading: a later append makes the sensor ask again
    unsealed = [str(s) for s in segs if not jr.segment_closed(s)]
    day_gaps = events.gaps(local, start.date())
    outages = outages_of(day_gaps)
    carry, slots, prev_how = previous_state(root, start, local, outages)
    hour_tables, slot_s, state = compact_hour(local, start, carry, slots, outages)
    table, stats = hour_tables.tapes[p.TR_WS_TRADE]

    out = ticks_path(root, start)
    lake.write_table_atomic(out, table)
    feeds_md = write_other_feeds(root, start, hour_tables)
    lake.write_json_atomic(state_path(root, start), state, compact=True)

    now = clock.now()
    disc, disc_by_key, n_markers = disconnected_seconds(day_gaps, start, end, now)
    rates = record_rates(stats["per_code"], _first_rx(table), slot_s, end)
    tpm = [r["ticks_per_minute"] for r in rates.values() if r["ticks_per_minute"] is not None]
    vol_breaks = stats["vol_breaks"]
    n_breaks = sum(b["count"] for b in vol_breaks.values())
    bad_lines = sum(stats["bad_lines"].values())
    summary = {
        "ticks": stats["ticks"],
        "symbols": stats["symbols"],
        "frames": stats["frames"],
        "duplicates_dropped": stats["duplicates_dropped"],
        "duplicates_of_previous_hour": stats.get("duplicates_of_previous_hour", 0),  # absent for an empty hour
        "malformed_frames": stats["malformed_frames"],
        "malformed_records": stats["malformed_records"],
        "bad_journal_lines": bad_lines,
        "volume_breaks": n_breaks,
        "missing_volume": stats.get("missing_volume", 0),
        "gap_ticks": stats["gap_ticks"],
        "reconnect_flags": stats["reconnect_flags"],
        "disconnected_seconds": disc,
        "gap_markers": n_markers,
    }
    lake.write_json_atomic(
        manifest_path(root, start),
        {
            "hour": context.partition_key,
            "journal_fingerprint": fp,
            "segments": [str(s) for s in segs],
            "compacted_at": now.isoformat(),
            "run_id": context.run.run_id,
            **summary,
        },
        compact=True,
    )

    if stats["malformed_frames"] or stats["malformed_records"]:
        context.log.warning(f"track_b {context.partition_key}: malformed frames set aside: {stats['malformed']}")
    if bad_lines:
        context.log.error(
            f"track_b {context.partition_key}: {bad_lines} journal lines failed their CRC or "
            f"did not parse ({stats['bad_lines']}); samples in the metadata"
        )
    if n_breaks:
        context.log.warning(
            f"track_b {context.partition_key}: {n_breaks} cumulative-volume breaks, "
            f"{stats.get('missing_volume', 0)} shares missing, in {sorted(vol_breaks)[:20]}"
        )
    if unsealed:
        context.log.warning(
            f"track_b {context.partition_key}: compacted {len(unsealed)} segment(s) not sealed "
            "by their writer (capture down or late); a later seal re-requests this hour"
        )
    md = {
        **summary,
        "unchecked_first_ticks": stats["unchecked_first_ticks"],
        "acml_conflicts": stats["acml_conflicts"],
        "disconnected_seconds_by_key": dg.MetadataValue.json(disc_by_key),
        "between_connections_s": stats["between_connections_s"],
        "record_rate_per_slot": dg.MetadataValue.json(rates),
        "ticks_per_slot_minute_median": round(statistics.median(tpm), 3) if tpm else 0.0,
        "ticks_per_slot_minute_min": min(tpm) if tpm else 0.0,
        "slots_without_ticks": sum(1 for r in rates.values() if r["ticks"] == 0),
        "subscription_acks": state["acks"],
        "malformed": dg.MetadataValue.json(stats["malformed"]),
        "malformed_samples": dg.MetadataValue.json(stats["malformed_samples"][:20]),
        "bad_line_samples": dg.MetadataValue.json(stats["bad_line_samples"][:20]),
        "volume_breaks_by_code": dg.MetadataValue.json(dict(list(sorted(vol_breaks.items()))[:100])),
        "keys": dg.MetadataValue.json(sorted({c["key_id"] for c in stats["connections"] if c["key_id"]})),
        "connections": len(stats["connections"]),
        "segments": len(segs),
        "unsealed_segments": len(unsealed),
        "journal_recoveries": dg.MetadataValue.json(stats["journal_recoveries"]),
        "rx_outside_hour": stats["rx_outside_hour"],
        "other_business_date": stats["other_business_date"],
        "previous_hour": prev_how,
        "journal_fingerprint": fp,
        "other_feeds": dg.MetadataValue.json(feeds_md),
        **catalog.materialized(table.num_rows, out),
    }
    return dg.MaterializeResult(metadata={k: v for k, v in md.items() if v is not None})


@dg.asset(
    partitions_def=track_b_hour_partitions,
    group_name="track_b",
    pool=COMPACTION_POOL,
    kinds={"python", "parquet"},
    deps=[track_b_ticks],
    description=(
        "Track B's fixed-rate view of one KST hour: per symbol, the last trade of each receive-time bucket with "
        "the bucket's trade count, volume, high and low (totals survive sampling). 2 Hz (0.5 s buckets); 1 Hz and "
        "0.5 Hz where the journal says mitigation level 1 or 2 was on. Partition key YYYY-MM-DDTHH (KST)."
    ),
    metadata=catalog.definition_metadata(
        SAMPLE_SCHEMA, catalog.SAMPLE_COLUMNS, "track_b_sampled/date=YYYY-MM-DD/hour=THH/sampled.parquet"
    ),
    owners=catalog.OWNERS,
)
def track_b_sampled(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    start = parse_hour_key(context.partition_key)
    root = lake.data_dir()
    src = ticks_path(root, start)
    if not src.exists():
        raise dg.Failure(f"track_b_ticks {context.partition_key} is not materialized ({src} missing)")
    ticks = lake.read_table(src)
    out_tbl = sample(ticks, bucket_s_by_level=DEFAULT_BUCKETS)
    vol_in = pc.sum(ticks["qty"]).as_py() or 0
    vol_out = pc.sum(out_tbl["bucket_volume"]).as_py() or 0
    if vol_in != vol_out or (pc.sum(out_tbl["bucket_trades"]).as_py() or 0) != ticks.num_rows:
        raise dg.Failure(
            f"sampling lost trades: {ticks.num_rows} ticks / volume {vol_in} in, "
            f"{pc.sum(out_tbl['bucket_trades']).as_py()} / {vol_out} in the buckets"
        )
    out = lake.write_table_atomic(sampled_path(root, start), out_tbl)
    widths = out_tbl.group_by("bucket_s").aggregate([("code", "count")]) if out_tbl.num_rows else None
    by_width = (
        {f"{w:g}s": n for w, n in zip(widths["bucket_s"].to_pylist(), widths["code_count"].to_pylist())}
        if widths is not None
        else {}
    )
    levels = sorted({lvl if lvl is not None else 0 for lvl in ticks["mitigation_level"].unique().to_pylist()})
    return dg.MaterializeResult(
        metadata={
            "rows": out_tbl.num_rows,
            "symbols": len(set(out_tbl["code"].to_pylist())),
            "ticks": ticks.num_rows,
            "rows_by_bucket": dg.MetadataValue.json(by_width),
            "mitigation_levels": dg.MetadataValue.json(levels),
            "gap_buckets": out_tbl["quality_flag"].to_pylist().count("gap"),
            "volume": vol_out,
            **catalog.materialized(out_tbl.num_rows, out),
        }
    )
