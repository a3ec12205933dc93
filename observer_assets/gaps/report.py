"""Read one day of the lake, the event log and the Track A runs into the inputs `detect` needs (I/O only, no rules).

Only the columns the rules use are read, so a full day (2,500 symbols x 40 slots, 41 streams) stays well under
the 2-second budget, and columns other writers add or rename never matter. Paths come from the storage layout:
the slots' snapshots, their failures (a slot without failures has no failures file: zero failures), the Track B
hours' ticks, the restored trades, every host's event file (through the tolerant reader: unreadable lines are
counted in the summary, never fatal) and the anomaly marker. The Track A runs come from the Dagster instance when
one is given: when each slot's run was created and began is the evidence of a late launch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from observer_assets.gaps.detect import DayInputs, Report, SlotRun, Thresholds, detect
from observer_assets.gaps.detect_common import COVERAGE_SCHEMA as COVERAGE_SCHEMA
from observer_assets.gaps.detect_common import GAP_SCHEMA as GAP_SCHEMA
from observer_assets.gaps.detect_common import VERDICT_SCHEMA as VERDICT_SCHEMA
from observer_assets.gaps.detect_common import upgrade_gap_report_table as upgrade_gap_report_table
from observer_assets.orchestration.partitions import calendar, slot_key
from observer_assets.orchestration.runs import BACKFILL_TAGS, LATE_TAG
from observer_assets.track_a.venues import slot_markets
from observer_assets.track_b.restore import TAPES, read_edges
from observer_assets.track_b.window import track_b_window, window_text_from_env
from observer_assets.universe.dataset import latest_universe_before, read_universe
from observer_resources import clock, events
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.storage import lake
from observer_resources.storage.layout import TRACK_A as TRACK_A
from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
from observer_resources.storage.layout import (
    anomaly_path,
    edge_holes_path,
    minute_bars_path,
    restored_path,
    slot_dir,
    slot_label,
    tick_files,
)

TRACK_A_ASSET = dg.AssetKey("track_a_snapshot")
TRACK_A_JOB = "track_a_job"
SNAP_COLS = ["code", "source", "restored_from", "fetched_at"]
TICK_COLS = ["code", "receive_ts", "acml_vol", "qty", "buy_cnt", "sell_cnt", "key_id"]
RESTORED_COLS = ["code", "acml_vol", "qty", "restored_from", "exchange_ts", "price"]
BAR_COLS = ["code", "market", "minute", "volume", "open", "high", "low", "close"]  # what the proof compares
OPTIONAL_TICK_COLS = ["source", "restored_from", "exchange_ts", "price"]  # the last two: the proof


def default_as_of(day: date, now: datetime | None = None) -> datetime:
    """Now for today (nothing after it is judged), the day's last instant for a past day."""
    now = (now or clock.now()).astimezone(KST)
    end = datetime.combine(day, time(23, 59, 59), KST)
    return min(now, end)


def read_ticks(paths: list[Path]) -> pa.Table | None:
    tables = []
    for p in paths:
        names = set(lake.read_schema(p).names)
        cols = [c for c in TICK_COLS + OPTIONAL_TICK_COLS if c in names]
        t = lake.read_table(p, columns=cols, read_dictionary=[c for c in ("code", "key_id", "source") if c in cols])
        if "receive_ts" in names:
            t = t.set_column(
                t.schema.get_field_index("receive_ts"),
                "receive_ts",
                t["receive_ts"].cast(pa.timestamp("us", tz="Asia/Seoul")),
            )
        tables.append(t)
    if not tables:
        return None
    if len({t.schema for t in tables}) > 1:  # hours written before/after a column was added
        return pa.concat_tables(
            [
                t.cast(
                    pa.schema(
                        [
                            pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                            for f in t.schema
                        ]
                    )
                )
                for t in tables
            ],
            promote_options="permissive",
        )
    return pa.concat_tables(tables)


def launched_by(tags: dict[str, str]) -> str:
    """How a Track A run came to be, from its tags: backfill, catch_up (the late-start sensor), schedule or manual."""
    if tags.get("observer/kind") == BACKFILL_TAGS["observer/kind"] or "dagster/backfill" in tags:
        return "backfill"
    if tags.get(LATE_TAG) == "true":
        return "catch_up"
    if "dagster/schedule_name" in tags:
        return "schedule"
    return "manual"


def slot_runs(instance: dg.DagsterInstance, slots: Sequence[datetime]) -> dict[datetime, list[SlotRun]]:
    """The Track A runs of each slot (one query): every run of the slot's partition that materializes the snapshot."""
    keys = {slot_key(s): s for s in slots}
    out: dict[datetime, list[SlotRun]] = {s: [] for s in slots}
    if not keys:
        return out
    for rec in instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": list(keys)})):
        run = rec.dagster_run
        # slot keys belong to Track A alone; a run that names assets without the snapshot, or only checks, collected
        # nothing (an empty selection is the whole job)
        if run.asset_selection and TRACK_A_ASSET not in run.asset_selection:
            continue
        if not run.asset_selection and run.asset_check_selection and run.job_name != TRACK_A_JOB:
            continue
        slot = keys.get(run.tags.get("dagster/partition", ""))
        if slot is None:
            continue
        out[slot].append(
            SlotRun(
                run_id=run.run_id,
                status=run.status.value,
                created=rec.create_timestamp.astimezone(KST),
                started=datetime.fromtimestamp(rec.start_time, KST) if rec.start_time else None,
                ended=datetime.fromtimestamp(rec.end_time, KST) if rec.end_time else None,
                launched_by=launched_by(dict(run.tags)),
            )
        )
    return out


def load_day(
    root: Path,
    day: date,
    as_of: datetime | None = None,
    *,
    now: datetime | None = None,
    local: Path | None = None,
    instance: dg.DagsterInstance | None = None,
) -> DayInputs:
    """`root` is the lake (a Path or a URL's UPath); `local` the directory of the event log and anomaly markers
    (default: the lake itself when it is local, else OBSERVER_LOCAL_DIR); `instance` the Dagster instance whose
    Track A runs are evidence (None: not looked up)."""
    now = (now or clock.now()).astimezone(KST)
    local = local or (root if lake.is_local(root) else lake.local_dir())
    as_of = (as_of or default_as_of(day, now)).astimezone(KST)
    cal = calendar()
    slots = [s for s in cal.track_a_slots(day) if s <= as_of]
    uni = read_universe(root, day)
    files: dict[str, list[str]] = {}
    uni_note = "own"
    if uni is None:
        fb = latest_universe_before(root, day)
        uni, uni_note = (fb[1], f"fallback {fb[0].isoformat()}") if fb else (None, "none")
    snaps: dict[datetime, pa.Table] = {}
    fails: dict[datetime, pa.Table] = {}
    for s in slots:
        label = slot_label(s)
        sp = slot_dir(root, s, TRACK_A) / "snapshot.parquet"
        fp = slot_dir(root, s, FAILURES) / "failures.parquet"
        have = []
        if sp.exists():
            snaps[s] = lake.read_table(sp, columns=SNAP_COLS)
            have.append(str(sp))
        if fp.exists():
            fails[s] = lake.read_table(fp, columns=["code", "error"])
            have.append(str(fp))
        files[f"slot:{label}"] = have
    tpaths = tick_files(root, day)
    files["track_b"] = [str(p) for p in tpaths]
    venue_ticks, venue_restored = {}, {}
    for tape in TAPES:
        if tape.venue == "KRX":
            continue  # KRX's tape is ``ticks`` (below)
        vpaths = tick_files(root, day, tape.ticks)
        table = read_ticks(vpaths)
        if table is not None:
            venue = tape.venue
            venue_ticks[venue] = table
            files[f"track_b:{venue}"] = [str(p) for p in vpaths]
            vr = restored_path(root, day, tape.restored)
            if vr.exists():
                venue_restored[venue] = lake.read_table(vr, columns=RESTORED_COLS)
                files[f"track_b:{venue}"].append(str(vr))
    rp = restored_path(root, day)
    restored = None
    if rp.exists():
        restored = lake.read_table(rp, columns=RESTORED_COLS)
        files["track_b"].append(str(rp))
    edges = {}
    for tape in TAPES:
        lp = edge_holes_path(root, day, tape.restored)
        if lp.exists():
            edges[tape.venue] = read_edges(lp)
            files.setdefault(f"track_b:{tape.venue}" if tape.venue != "KRX" else "track_b", []).append(str(lp))
    ev = events.load_day(local, day)
    files["events"] = [str(p) for p in ev.files]
    anomaly = None
    ap = anomaly_path(local, day)
    if ap.exists():
        anomaly = json.loads(ap.read_text(encoding="utf-8"))
        files["events"].append(str(ap))
    mb = minute_bars_path(root, day)
    bars = lake.read_table(mb, columns=BAR_COLS) if mb.exists() else None
    if bars is not None:
        files["minute_bars"] = [str(mb)]
    return DayInputs(
        day=day,
        minute_bars=bars,
        as_of=as_of,
        slots=slots,
        universe=uni["code"].to_pylist() if uni is not None else None,
        slot_universe={s: slot_markets(uni, cal, s) for s in slots} if uni is not None else {},
        phases=cal.phases(day),
        snapshots=snaps,
        failures=fails,
        ticks=read_ticks(tpaths),
        venue_ticks=venue_ticks,
        venue_restored=venue_restored,
        edge_holes=edges,
        track_b_window=_track_b_window(cal, day),
        restored_ticks=restored,
        gap_markers=events.gaps_from(ev.records),
        events=ev.records,
        anomaly=anomaly,
        today=(day == now.date()),
        runs=slot_runs(instance, slots) if instance is not None else None,
        files={**files, "universe": [uni_note]},
        events_unreadable={"bad_lines": ev.bad_count, "torn_lines": ev.torn_count, "where": ev.problems(20)},
    )


def _track_b_window(cal: MarketCalendar, day: date) -> tuple[datetime, datetime] | None:
    """The day's configured Track B window on the KRX calendar (the demo calendar's whole day is not judged)."""
    if cal.mode != "krx":
        return None
    w = track_b_window(day, cal, window_text_from_env(os.environ))
    return (w.start, w.end) if w is not None else None


def build_report(
    root: Path,
    day: date,
    as_of: datetime | None = None,
    *,
    now: datetime | None = None,
    thresholds: Thresholds = Thresholds(),
    instance: dg.DagsterInstance | None = None,
) -> Report:
    """The day's gap report from what is on disk and, with `instance`, the Track A runs (see `detect`)."""
    inp = load_day(root, day, as_of, now=now, instance=instance)
    rep = detect(inp, thresholds)
    rep.summary["universe_source"] = inp.files["universe"][0]
    return rep
