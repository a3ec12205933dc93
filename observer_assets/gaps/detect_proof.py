"""The completeness proof: the captured tapes, minute by minute, against KIS's own minute bars (pure).

The gap rules judge the capture by its own evidence (cumulative volume breaks, markers), so a trade lost where that
evidence is blind (just before a code leaves its slot, at a disconnect of a quiet code) is not seen. KIS's minute
bars are an independent witness. For every code Track B recorded and every whole minute it held the code, the
tape's bar built from the captured ticks is compared with KIS's bar of the same minute and tape:

- ``agree``: the live ticks alone give KIS's volume, open, high, low and close;
- ``restored``: they did not, and the live plus the restored ticks do;
- ``explained``: they still differ, and a recorded gap (a loss, a disconnect, a dead or stopped capture) of that
  code or of the whole session covers the minute;
- ``differs``: nothing on record explains the difference. The report lists these as ``track_b_unproven`` rows.

A minute is compared only when the code was held for all of it (from ``HOLD_MARGIN_S`` after its slot was taken to
when it was let go, from the capture's ``slot_change`` events) and it has ended by the report's as-of time. KIS's
minute bars carry no trade count, so the proof judges volume and prices; the tape's trade counts are kept beside
them for the reader. Rules and thresholds: docs/collector-rules.md §8.6.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.gaps.detect_common import TS, DayInputs, as_kst, make_id, make_row
from observer_assets.gaps.detect_held import registrations
from observer_resources.calendar import KST

PROOF_KIND = "track_b_unproven"
PROOF_REASON = "minute_bars_disagree"
#: a code's first minute is compared only from this long after its slot was taken: the registration and its first
#: frame take a moment, and a trade in that moment was never the capture's to see
HOLD_MARGIN_S = 5
#: a gap row explains a minute it overlaps within this slack: rows are stamped by receive time, minutes by trade time
SLACK = timedelta(seconds=60)
EXPLAINING_KINDS = frozenset({"track_b_loss", "ws_disconnect", "capture_restart", "manual_stop"})
#: the KIS market each tape's bars are asked on (minute_bars.fetch); a unified tape of a stock NXT does not trade is
#: KRX's, whose bars are asked on J
MARKET_OF_TAPE = {"KRX": "J", "NXT": "NX", "unified": "UN"}
STATUSES = ("agree", "restored", "explained", "differs")

PROOF_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("venue", pa.string()),  # the tape: KRX | NXT | unified
        ("market", pa.string()),  # the market KIS's bars were asked on
        ("minute", TS),
        ("kis_volume", pa.int64()),
        ("live_volume", pa.int64()),
        ("live_trades", pa.int64()),
        ("restored_volume", pa.int64()),
        ("restored_trades", pa.int64()),
        ("kis_open", pa.int64()),
        ("kis_high", pa.int64()),
        ("kis_low", pa.int64()),
        ("kis_close", pa.int64()),
        ("tape_open", pa.int64()),
        ("tape_high", pa.int64()),
        ("tape_low", pa.int64()),
        ("tape_close", pa.int64()),
        ("status", pa.string()),  # STATUSES
        ("gap_id", pa.string()),  # the gap row that explains the minute (explained), else null
    ]
)


def _minute_bars(ticks: pa.Table | None) -> pd.DataFrame:
    """Per (code, minute of trade time): volume, trades, open/high/low/close, in trade order (cumulative volume)."""
    cols = ["code", "exchange_ts", "price", "qty", "acml_vol"]
    if ticks is None or not ticks.num_rows or any(c not in ticks.column_names for c in cols):
        return pd.DataFrame(columns=["code", "minute", "volume", "trades", "open", "high", "low", "close"])
    df = ticks.select(cols).to_pandas()
    df["code"] = df["code"].astype(str)
    df = df.dropna(subset=["exchange_ts", "price", "qty"]).sort_values(["code", "acml_vol"], kind="stable")
    df["minute"] = df["exchange_ts"].dt.tz_convert(KST).dt.floor("min")
    g = df.groupby(["code", "minute"], sort=False)
    out = g.agg(
        volume=("qty", "sum"),
        trades=("qty", "size"),
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
    )
    return out.reset_index()


def _union(live: pa.Table | None, restored: pa.Table | None) -> pa.Table | None:
    """The tape as it stands after the restore: live and restored trades together."""
    cols = ["code", "exchange_ts", "price", "qty", "acml_vol"]
    parts = [t for t in (live, restored) if t is not None and t.num_rows and all(c in t.column_names for c in cols)]
    if not parts:
        return None
    return pa.concat_tables(
        [
            t.select(cols).cast(
                pa.schema([("code", pa.string()), ("exchange_ts", TS)] + [(c, pa.int64()) for c in cols[2:]])
            )
            for t in parts
        ]
    )


def wanted_spans(events: Sequence[Mapping[str, Any]], end: int) -> dict[str, list[tuple[int, int]]]:
    """code -> µs spans over which the capture wanted it streamed, from its ``slot_change`` events: from the change
    that takes it (allocate, pin, replace or move_in naming it) to the one that lets it go (release, or a replace or
    move_in naming it as the old code, the moment the decision is taken, whatever the unsubscribe's ack does). A
    capture start or stop ends every span (a restart re-takes its codes with new events)."""
    timed = []
    for e in events:
        et = e.get("event_type")
        if et in ("slot_change", "capture_started", "capture_stopped"):
            try:
                timed.append((_us(datetime.fromisoformat(str(e["timestamp"]))), et, e))
            except (KeyError, ValueError):
                continue
    timed.sort(key=lambda x: x[0])
    open_at: dict[str, int] = {}
    out: dict[str, list[tuple[int, int]]] = {}

    def close(code: str, at: int) -> None:
        a = open_at.pop(code, None)
        if a is not None and at > a:
            out.setdefault(code, []).append((a, at))

    for at, et, e in timed:
        if et != "slot_change":
            for code in list(open_at):
                close(code, at)
            continue
        act, code, old = e.get("action"), e.get("code"), e.get("old_code")
        if act in ("replace", "move_in") and old:
            close(str(old), at)
        if act == "release" and code:
            close(str(code), at)
        elif act in ("allocate", "pin", "replace", "move_in") and code:
            open_at.setdefault(str(code), at)
    for code in list(open_at):
        close(code, end)
    return out


def _from_registration(spans: list[tuple[int, int]], acks: list[int]) -> list[tuple[int, int]]:
    """Each held span from the first registration acknowledged in it: a code is taken when the capture decides,
    but its frames start when the server acknowledges (a moment later; on a stepped clock, minutes). Spans of a log
    without these events (written before them) are kept as they are."""
    if not acks:
        return spans
    out = []
    for a, b in spans:
        i = bisect.bisect_left(acks, a - 1_000_000)
        if i < len(acks) and acks[i] < b:
            out.append((max(a, acks[i]), b))
    return out


def _us(t: datetime) -> int:
    return int(round(t.timestamp() * 1_000_000))


def _whole_minutes(spans: Sequence[tuple[int, int]], as_of: int) -> list[int]:
    """Start (µs) of every minute lying wholly inside a span (after the margin) and ended by ``as_of``."""
    out: list[int] = []
    minute = 60_000_000
    for a, b in spans:
        first = -(-(a + HOLD_MARGIN_S * 1_000_000) // minute) * minute
        last = min(b, as_of) // minute * minute - minute  # the last minute that ends by b and by as_of
        out += range(first, last + 1, minute)
    return out


def _explaining(
    rows: Sequence[Mapping[str, Any]], tape: str, as_of: datetime
) -> list[tuple[str | None, datetime, datetime, str]]:
    out = []
    for r in rows:
        if r.get("kind") not in EXPLAINING_KINDS or r.get("start") is None:
            continue
        venues = str(r.get("venue") or "").split("+")
        if r.get("venue") and tape not in venues:
            continue
        end = r.get("end") or as_of
        out.append((r.get("symbol"), as_kst(r["start"]) - SLACK, as_kst(end) + SLACK, str(r["gap_id"])))
    return out


def _prices_equal(a: Mapping[str, Any], b: Mapping[str, Any], prefix_a: str, prefix_b: str) -> bool:
    return all(a.get(f"{prefix_a}{k}") == b.get(f"{prefix_b}{k}") for k in ("open", "high", "low", "close"))


def prove(inp: DayInputs, rows: Sequence[Mapping[str, Any]]) -> tuple[pa.Table, list[dict], dict[str, Any]]:
    """The proof table (``PROOF_SCHEMA``), the report rows for unexplained minutes, and a summary. Without minute
    bars for the day the table is empty and the summary says the capture is not proven."""
    tapes: dict[str, tuple[pa.Table | None, pa.Table | None]] = {}
    if inp.ticks is not None and inp.ticks.num_rows:
        tapes["KRX"] = (inp.ticks, inp.restored_ticks)
    for venue, t in inp.venue_ticks.items():
        if t is not None and t.num_rows:
            tapes[venue] = (t, inp.venue_restored.get(venue))
    bars = inp.minute_bars
    summary: dict[str, Any] = {"minute_bars": bars is not None and bars.num_rows > 0, "tapes": sorted(tapes)}
    if not tapes or bars is None or not bars.num_rows:
        summary["proven"] = False if tapes else None
        summary["why"] = "no minute bars for the day yet" if tapes else "nothing captured"
        return PROOF_SCHEMA.empty_table(), [], summary
    captured = sorted({c for live, _ in tapes.values() for c in pc.unique(live["code"].cast(pa.string())).to_pylist()})
    bars = bars.filter(pc.is_in(bars["code"], pa.array(captured, pa.string())))  # a few dozen of the universe's codes
    kis = bars.select(["code", "market", "minute", "volume", "open", "high", "low", "close"]).to_pandas()
    kis["minute"] = kis["minute"].dt.tz_convert(KST)
    kis_by = {(c, m): g.set_index("minute") for (c, m), g in kis.groupby(["code", "market"], sort=False)}
    capture_seen = any(e.get("event_type") == "capture_started" for e in inp.events)
    registered = registrations(inp.events)
    as_of = as_kst(inp.as_of)
    as_of_us = _us(as_of)
    wanted = wanted_spans(inp.events, as_of_us)
    out: list[dict] = []
    without: list[str] = []
    for tape, (live_t, restored_t) in tapes.items():
        live, whole = _minute_bars(live_t), _minute_bars(_union(live_t, restored_t))  # restored: whole minus live
        live_by = {c: g.set_index("minute") for c, g in live.groupby("code", sort=False)}
        tape_by = {c: g.set_index("minute") for c, g in whole.groupby("code", sort=False)}
        explain = _explaining(rows, tape, as_of)
        for code in sorted(live_by):
            market = MARKET_OF_TAPE[tape]
            ref = kis_by.get((code, market))
            if ref is None and market == "UN":
                market, ref = "J", kis_by.get((code, "J"))
            if ref is None:
                without.append(f"{code}/{tape}")  # nothing to prove it with: the capture cannot be called complete
                continue
            lv = live_by[code]
            if capture_seen:
                spans = _from_registration(wanted.get(code, []), registered.get((tape, code), []))
            else:  # no slot history: the whole minutes between the code's first and last ticks' minutes
                spans = [(_us(lv.index.min()), _us(lv.index.max()))]
            tv = tape_by[code]
            for m_us in _whole_minutes(spans, as_of_us):
                minute = datetime.fromtimestamp(m_us / 1e6, KST)
                key = pd.Timestamp(minute)
                k = ref.loc[key] if key in ref.index else None
                lrow = lv.loc[key] if key in lv.index else None
                trow = tv.loc[key] if key in tv.index else None
                if k is None and trow is None:
                    continue
                rec = _record(code, tape, market, minute, k, lrow, trow)
                rec["status"], rec["gap_id"] = _judge(rec, lrow, code, minute, explain)
                out.append(rec)
    table = pa.Table.from_pylist(out, schema=PROOF_SCHEMA)
    report_rows = unproven_rows(out, inp.today)
    by = {s: sum(1 for r in out if r["status"] == s) for s in STATUSES}
    summary.update(
        {
            "minutes": len(out),
            "by_status": by,
            "codes": len({(r["code"], r["venue"]) for r in out}),
            "codes_without_bars": without[:50],
            "proven": by["differs"] == 0 and len(out) > 0 and not without,
        }
    )
    return table, report_rows, summary


def _int(row: Any, name: str) -> int | None:
    if row is None:
        return None
    v = row[name]
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)


def _record(code: str, tape: str, market: str, minute: datetime, k: Any, lrow: Any, trow: Any) -> dict:
    rec: dict[str, Any] = {
        "code": code,
        "venue": tape,
        "market": market,
        "minute": minute,
        "kis_volume": _int(k, "volume") or 0,
        "live_volume": _int(lrow, "volume") or 0,
        "live_trades": _int(lrow, "trades") or 0,
        "restored_volume": (_int(trow, "volume") or 0) - (_int(lrow, "volume") or 0),
        "restored_trades": (_int(trow, "trades") or 0) - (_int(lrow, "trades") or 0),
    }
    for f in ("open", "high", "low", "close"):
        rec[f"kis_{f}"] = _int(k, f) if rec["kis_volume"] else None
        rec[f"tape_{f}"] = _int(trow, f)
    return rec


def _judge(rec: dict[str, Any], lrow: Any, code: str, minute: datetime, explain: list) -> tuple[str, str | None]:
    kis_prices = [rec[f"kis_{f}"] for f in ("open", "high", "low", "close")]
    live_prices = [_int(lrow, f) for f in ("open", "high", "low", "close")]
    if rec["live_volume"] == rec["kis_volume"] and (rec["kis_volume"] == 0 or live_prices == kis_prices):
        return "agree", None
    tape_prices = [rec[f"tape_{f}"] for f in ("open", "high", "low", "close")]
    tape_volume = rec["live_volume"] + rec["restored_volume"]
    if rec["restored_volume"] and tape_volume == rec["kis_volume"] and tape_prices == kis_prices:
        return "restored", None
    end = minute + timedelta(minutes=1)
    for symbol, a, b, gap_id in explain:
        if (symbol is None or symbol == code) and a < end and b > minute:
            return "explained", gap_id
    return "differs", None


def unproven_rows(records: Sequence[Mapping[str, Any]], today: bool) -> list[dict]:
    """One ``track_b_unproven`` row per run of consecutive unexplained minutes of a code's tape."""
    runs: list[list[Mapping[str, Any]]] = []
    for r in sorted(
        (r for r in records if r["status"] == "differs"), key=lambda r: (r["venue"], r["code"], r["minute"])
    ):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and (last["venue"], last["code"]) == (r["venue"], r["code"])
            and r["minute"] - last["minute"] == timedelta(minutes=1)
        ):
            runs[-1].append(r)
        else:
            runs.append([r])
    out = []
    for run in runs:
        first, last = run[0], run[-1]
        start, end = as_kst(first["minute"]), as_kst(last["minute"]) + timedelta(minutes=1)
        missing = sum(r["kis_volume"] - r["live_volume"] - r["restored_volume"] for r in run)
        out.append(
            make_row(
                gap_id=make_id(PROOF_KIND, first["code"], first["venue"], _us(start)),
                kind=PROOF_KIND,
                scope="scalp",
                symbol=first["code"],
                start=start,
                end=end,
                seconds=(end - start).total_seconds(),
                severity="major",
                reason=PROOF_REASON,
                data_lost=missing > 0,
                missing_volume=missing,
                evidence={
                    "minutes": [as_kst(r["minute"]).strftime("%H:%M") for r in run][:60],
                    "kis_volume": sum(r["kis_volume"] for r in run),
                    "tape_volume": sum(r["live_volume"] + r["restored_volume"] for r in run),
                    "market": first["market"],
                },
                restorable=False,
                status="open" if today else "unrecoverable",
                venue=first["venue"],
            )
        )
    return out
