"""Track B checks: a tick lost outside every recorded gap is a silent loss, and must not stay silent.

KIS sends no sequence numbers; the cumulative volume is the only witness of a lost trade (ACML_VOL jumps by more
than the trade's own CNTG_VOL: a *volume break*, flagged in ``track_b_ticks`` with its missing volume). A break
is explained when a session-wide gap marker of the same key (the capture's disconnects, restarts, stops) overlaps
the interval in which the missing trades must have been sent — from the code's previous tick to the breaking one,
widened by ``SLACK_S``. Anything else is an unexplained loss (e.g. the exchange skipping a trade on a live
session) and fails the check at WARN severity, listing the breaks; the data is kept either way.
"""

import warnings
from datetime import datetime, timedelta

import dagster as dg
import pyarrow.compute as pc

from observer_assets.orchestration.partitions import parse_hour_key, track_b_hour_partitions
from observer_assets.track_b.assets import track_b_ticks
from observer_resources import clock, events
from observer_resources.storage import lake
from observer_resources.storage.layout import ticks_path

# partitioned checks are a preview API in the pinned Dagster; the per-partition results are tested
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
)

SLACK_S = 2.0  # gap marker bounds are within 2 s of the truth (the capture's promise)


def unexplained_breaks(ticks, gaps: list[events.Gap], hour_start: datetime, now: datetime) -> tuple[int, list[dict]]:
    """(volume breaks, the ones no gap marker explains) of one hour's tick table."""
    if ticks.num_rows == 0:
        return 0, []
    cols = {c: ticks[c].to_pylist() for c in ("code", "receive_ts", "key_id", "missing_volume", "acml_vol")}
    by_key: dict[str, list[tuple[datetime, datetime]]] = {}
    for g in gaps:
        if g.symbol:
            continue
        end = g.end if g.end is not None else now
        by_key.setdefault(str(g.metadata.get("key_id") or "*"), []).append((g.start, end))
    slack = timedelta(seconds=SLACK_S)
    breaks, out = 0, []
    prev_code, prev_rx = None, None
    for code, rx, key, missing, acml in zip(*cols.values()):  # sorted by (code, acml_vol)
        lo = prev_rx if code == prev_code else hour_start
        prev_code, prev_rx = code, rx
        if missing is None or missing <= 0:
            continue
        breaks += 1
        windows = by_key.get(str(key), []) + by_key.get("*", [])
        if not any(a - slack <= rx and b + slack >= lo for a, b in windows):
            out.append(
                {
                    "code": code,
                    "acml_vol": acml,
                    "missing_volume": missing,
                    "key_id": key,
                    "after": lo.isoformat(),
                    "at": rx.isoformat(),
                }
            )
    return breaks, out


@dg.asset_check(
    asset=track_b_ticks,
    partitions_def=track_b_hour_partitions,  # the result belongs to the hour it judged
    description="Every cumulative-volume break (a lost trade) of the hour falls inside a gap marker of its app "
    "key (± 2 s): Track B never loses a tick without saying so. WARN with the unexplained breaks otherwise.",
)
def track_b_losses_are_explained(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    if not context.has_partition_key:
        return dg.AssetCheckResult(passed=False, metadata={"error": "run has no partition"})
    key = context.partition_key
    start = parse_hour_key(key)
    root = lake.data_dir()
    path = ticks_path(root, start)
    if not path.exists():
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{path} missing"})
    ticks = lake.read_table(path, columns=["code", "receive_ts", "key_id", "missing_volume", "acml_vol"])
    breaks, bad = unexplained_breaks(ticks, events.gaps(lake.local_dir(), start.date()), start, clock.now())
    missing = sum(b["missing_volume"] for b in bad)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(bad)} of {breaks} volume breaks outside every gap marker ({missing} shares)"
            if bad
            else f"all {breaks} volume breaks are inside gap markers"
        ),
        metadata={
            "volume_breaks": breaks,
            "unexplained": len(bad),
            "unexplained_volume": missing,
            "unexplained_breaks": dg.MetadataValue.json(bad[:100]),
            "ticks": ticks.num_rows,
            "codes_with_breaks": len(
                set(pc.unique(ticks.filter(pc.greater(ticks["missing_volume"], 0))["code"]).to_pylist())
            ),
        },
    )


def phase_disagreements(day_events: list[dict], hour_start: datetime) -> tuple[list[dict], list[dict]]:
    """(status-feed phase changes, disagreements with the phase table) the capture recorded in the hour."""
    end = hour_start + timedelta(hours=1)
    changes, bad = [], []
    for e in day_events:
        kind = e.get("event_type")
        if kind not in ("phase_change", "calendar_disagreement"):
            continue
        at = datetime.fromisoformat(e["timestamp"])
        if not hour_start <= at < end:
            continue
        row = {k: e.get(k) for k in ("timestamp", "key_id", "venue", "phase_code", "table_phases", "note")}
        (changes if kind == "phase_change" else bad).append(row)
    return changes, bad


@dg.asset_check(
    asset=track_b_ticks,
    partitions_def=track_b_hour_partitions,
    description="The exchange's market-status feed agreed with the phase table through the hour (a late open or "
    "a changed schedule the table does not know fails it, WARN, listing what the exchange said). Passes with "
    "nothing to judge when no status feed is configured (OBSERVER_TRACK_B_FEEDS).",
)
def track_b_phases_agree(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    if not context.has_partition_key:
        return dg.AssetCheckResult(passed=False, metadata={"error": "run has no partition"})
    start = parse_hour_key(context.partition_key)
    changes, bad = phase_disagreements(list(events.read_events(lake.local_dir(), start.date())), start)
    venues = sorted({str(b["venue"]) for b in bad})
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(bad)} market-status record(s) of {', '.join(venues)} disagree with the phase table"
            if bad
            else f"{len(changes)} phase change(s) announced, all as the table says"
        ),
        metadata={
            "disagreements": len(bad),
            "phase_changes": len(changes),
            "disagreeing": dg.MetadataValue.json(bad[:50]),
            "changes": dg.MetadataValue.json(changes[:50]),
        },
    )
