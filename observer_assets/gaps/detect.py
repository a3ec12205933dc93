"""Gap detection for one trading day (pure: tables in, gap rows out; no I/O, no Dagster).

What counts (docs/collector-rules.md §8, §9):

* **Track A**: every valid slot up to the report's as-of time without a live snapshot is a missing slot once
  the 2-minute grace has passed (major < 10 min late, critical >= 10 min); a snapshot taken more than the grace
  after its slot is late; universe symbols absent from a slot's live rows are missing symbols. Rows written later
  by a backfill (``source = restored``) close those gaps as ``restored``, with what they came from.
* **Track B**: per code, ticks ordered by cumulative volume; ``previous ACML_VOL + CNTG_VOL != ACML_VOL`` proves
  lost trades (missing volume, missing trade count from the cumulative buy/sell counts). A silence between two
  ticks is *not* a loss (a quiet symbol); silences >= 10/60/300 s are reported separately, only for time the
  connection was up and the code held a slot. Session-wide gap markers become ``ws_disconnect`` /
  ``capture_restart`` / ``manual_stop`` windows; a loss inside one is attributed to it (its evidence), not
  listed twice.
* **Rate limits**: EGW00201 / RateLimitedError in a slot's failures, rate-limit events and markers.
* **Anomaly verdict**: the §9 rules the stored data can decide.

Rows that are not data losses (silences, late snapshots, rate-limit notices) carry ``data_lost = False`` and
status ``info``; backfill targets are rows with ``restorable`` and status ``open``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_resources.calendar import KST
from observer_resources.events import Gap
from observer_resources.intervals import union_length

TS = pa.timestamp("us", tz="Asia/Seoul")
GAP_SCHEMA = pa.schema([
    ("gap_id", pa.string()),
    ("kind", pa.string()),  # track_a_missing_slot | track_a_missing_symbol | track_a_late | track_b_loss |
    #                         track_b_silence | ws_disconnect | capture_restart | manual_stop | rate_limit | ...
    ("scope", pa.string()),  # swing | scalp | all
    ("symbol", pa.string()),  # null for slot- or connection-wide gaps
    ("slot_ts", TS),  # Track A slot the row is about
    ("start", TS),
    ("end", TS),  # null while a marker is still open
    ("seconds", pa.float64()),
    ("severity", pa.string()),  # minor | major | critical
    ("reason", pa.string()),  # docs/collector-rules.md §8.3 code
    ("data_lost", pa.bool_()),
    ("missing_volume", pa.int64()),
    ("missing_trades", pa.int64()),
    ("error_code", pa.string()),
    ("evidence", pa.string()),  # JSON
    ("restorable", pa.bool_()),
    ("restore_how", pa.string()),  # minute_bars_today | minute_bars_past | conclusions | null
    ("status", pa.string()),  # open | restored | unrecoverable | info
    ("restored_from", pa.string()),
    ("source_files", pa.string()),  # JSON list
])

LOSS_KINDS = frozenset({"track_a_missing_slot", "track_a_missing_symbol", "track_b_loss", "ws_disconnect",
                        "capture_restart", "manual_stop"})
_WINDOW_KIND = {"ws_disconnect": "ws_disconnect", "ws_timeout": "ws_disconnect", "system_error": "capture_restart",
                "manual_stop": "manual_stop"}


@dataclass(frozen=True)
class Thresholds:
    grace_s: float = 120.0  # Track A: a snapshot is on time up to slot + 2 min
    critical_late_s: float = 600.0  # Track A: >= 10 min late is critical
    silence_s: tuple[float, float, float] = (10.0, 60.0, 300.0)  # Track B silence minor / major / critical
    loss_critical_s: float = 300.0  # a loss spanning this long is critical
    window_critical_s: float = 300.0  # a connection-wide gap longer than this is critical
    anomaly_reconnects: int = 20
    anomaly_disconnect_s: float = 600.0
    anomaly_long_gap_s: float = 60.0
    anomaly_long_gaps: int = 2


@dataclass
class DayInputs:
    """Everything the report needs for one day, already read. Tables may be missing (None/empty).

    ``snapshots``/``failures`` are keyed by slot instant; snapshot tables need ``code``, ``source``,
    ``restored_from`` and ``fetched_at``; failure tables ``code`` and ``error``. ``ticks`` needs ``code``,
    ``receive_ts``, ``acml_vol``, ``qty`` and optionally ``buy_cnt``, ``sell_cnt``, ``key_id``, ``source``,
    ``restored_from`` (restored ticks carry ``source = restored``); ``restored_ticks`` are the restore asset's rows
    (``code``, ``acml_vol``, ``qty``, ``restored_from``), judged whatever their time. ``today`` says whether KIS still serves the
    day's intraday endpoints (today's minute bars, conclusions)."""

    day: date
    as_of: datetime
    slots: Sequence[datetime]
    universe: Sequence[str] | None
    snapshots: Mapping[datetime, pa.Table] = field(default_factory=dict)
    failures: Mapping[datetime, pa.Table] = field(default_factory=dict)
    ticks: pa.Table | None = None
    restored_ticks: pa.Table | None = None  # track_b_restored rows: code, acml_vol, qty, restored_from
    gap_markers: Sequence[Gap] = ()
    events: Sequence[Mapping[str, Any]] = ()
    anomaly: Mapping[str, Any] | None = None
    today: bool = False
    files: Mapping[str, Sequence[str]] = field(default_factory=dict)  # "slot:HHMM", "track_b", "events", ...
    #: lines of the day's event files that could not be read: {"bad_lines": n, "torn_lines": n, "where": [...]}
    events_unreadable: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    rows: pa.Table
    verdict: dict[str, Any]
    summary: dict[str, Any]


def _gid(*parts: Any) -> str:
    return hashlib.sha1("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:16]


def _row(**kw: Any) -> dict[str, Any]:
    r = {f.name: None for f in GAP_SCHEMA}
    r.update(kw)
    if isinstance(r["evidence"], (dict, list)):
        r["evidence"] = json.dumps(r["evidence"], ensure_ascii=False, sort_keys=True, default=str)
    if isinstance(r["source_files"], (list, tuple)):
        r["source_files"] = json.dumps(list(r["source_files"]), ensure_ascii=False)
    return r


def _kst(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: every time in the gap report carries its zone")
    return t.astimezone(KST)


def _classify_error(err: str | None) -> tuple[str, str | None]:
    """(reason code, error code) of a Track A per-symbol failure text."""
    e = err or ""
    if "EGW00201" in e or "RateLimited" in e:
        return "rate_limit", "EGW00201"
    code = next((w for w in e.replace("(", " ").replace(")", " ").split() if w[:3] in ("EGW", "OPS")), None)
    if e.startswith("deadline"):
        return "system_error", None
    return "api_error", code


# --- Track A --------------------------------------------------------------------------------------------------


def _track_a(inp: DayInputs, th: Thresholds) -> tuple[list[dict], dict[str, Any]]:
    rows: list[dict] = []
    coverage: dict[str, dict] = {}
    as_of = _kst(inp.as_of)
    universe = sorted(set(inp.universe or ()))
    uni_arr = pa.array(universe, pa.string())
    how = "minute_bars_today" if inp.today else "minute_bars_past"
    for slot in sorted(_kst(s) for s in inp.slots):
        if slot > as_of:
            break  # a future slot is never a gap
        label = slot.strftime("%H%M")
        files = list(inp.files.get(f"slot:{label}", ()))
        snap = inp.snapshots.get(slot)
        fails = inp.failures.get(slot)
        overdue = (as_of - slot).total_seconds()
        if snap is None or snap.num_rows == 0:
            live = restored = pa.table({"code": pa.array([], pa.string())})
        else:
            is_live = pc.equal(snap["source"].fill_null("live"), "live")
            live = snap.filter(is_live)
            restored = snap.filter(pc.invert(is_live))
        if live.num_rows == 0:
            if restored.num_rows == 0 and overdue <= th.grace_s:
                coverage[label] = {"slot_ts": slot.isoformat(), "state": "pending", "universe": len(universe)}
                continue  # still inside its grace: not yet a gap
            rest_codes = set(restored["code"].to_pylist()) & set(universe) if restored.num_rows else set()
            src = sorted({x for x in restored["restored_from"].to_pylist() if x}) if restored.num_rows else []
            late = overdue if not rest_codes else None
            sev = "critical" if (late is None or late >= th.critical_late_s) else "major"
            reason, err = "system_error", None  # no answer recorded at all: the run did not happen or died
            if fails is not None and fails.num_rows:
                reasons = Counter(_classify_error(e)[0] for e in fails["error"].to_pylist())
                reason = reasons.most_common(1)[0][0]
                err = "EGW00201" if reason == "rate_limit" else None
            rows.append(_row(
                gap_id=_gid("track_a_missing_slot", slot.isoformat()), kind="track_a_missing_slot", scope="swing",
                slot_ts=slot, start=slot, end=slot + timedelta(minutes=10), seconds=600.0, severity=sev,
                reason=reason, data_lost=True, error_code=err,
                evidence={"universe": len(universe), "live_rows": 0, "restored_rows": len(rest_codes),
                          "still_missing": len(universe) - len(rest_codes),
                          "still_missing_symbols": sorted(set(universe) - rest_codes)[:100] if rest_codes else [],
                          "failures": 0 if fails is None else fails.num_rows,
                          "overdue_seconds": round(overdue, 1)},
                restorable=True, restore_how=how,
                # restored = the backfill ran and gave what history has; symbols it could not give stay on record
                # in the evidence (``still_missing_symbols``)
                status="restored" if rest_codes else "open",
                restored_from=",".join(src) if src else None, source_files=files))
            coverage[label] = {"slot_ts": slot.isoformat(), "state": "restored" if rest_codes else "missing",
                               "universe": len(universe), "live": 0, "restored": len(rest_codes),
                               "coverage_pct": round(100 * len(rest_codes) / len(universe), 3) if universe else None}
            continue
        # a live snapshot exists: lateness, then the symbols it lacks
        first = pc.min(live["fetched_at"]).as_py()
        late_s = (first - slot).total_seconds() if first is not None else None
        if late_s is not None and late_s > th.grace_s:
            rows.append(_row(
                gap_id=_gid("track_a_late", slot.isoformat()), kind="track_a_late", scope="swing", slot_ts=slot,
                start=slot + timedelta(seconds=th.grace_s), end=_kst(first), seconds=round(late_s, 3),
                severity="critical" if late_s >= th.critical_late_s else "major", reason="api_error",
                data_lost=False, evidence={"fetched_at": _kst(first).isoformat(), "lateness_seconds": round(late_s, 3),
                                           "grace_seconds": th.grace_s},
                restorable=False, status="info", source_files=files))
        have = pc.is_in(uni_arr, value_set=live["code"])
        absent = uni_arr.filter(pc.invert(have)).to_pylist()
        fail_by = dict(zip(fails["code"].to_pylist(), fails["error"].to_pylist())) if fails is not None else {}
        rest_by: dict[str, str | None] = {}
        if restored.num_rows:
            rest_by = dict(zip(restored["code"].to_pylist(), restored["restored_from"].to_pylist()))
        rl_codes = []
        for code in absent:
            err_text = fail_by.get(code)
            reason, err = _classify_error(err_text) if err_text is not None else ("no_data_received", None)
            if reason == "rate_limit":
                rl_codes.append(code)
            rst = code in rest_by
            rows.append(_row(
                gap_id=_gid("track_a_missing_symbol", slot.isoformat(), code), kind="track_a_missing_symbol",
                scope="swing", symbol=code, slot_ts=slot, start=slot, end=slot + timedelta(minutes=10),
                severity="major", reason=reason, data_lost=True, error_code=err,
                evidence={"error": err_text} if err_text else {"error": None, "note": "absent, no failure recorded"},
                restorable=True, restore_how=how, status="restored" if rst else "open",
                restored_from=rest_by.get(code) if rst else None, source_files=files))
        rl_all = [c for c, e in fail_by.items() if _classify_error(e)[0] == "rate_limit"]
        if rl_all:
            rows.append(_row(
                gap_id=_gid("rate_limit", "swing", slot.isoformat()), kind="rate_limit", scope="swing", slot_ts=slot,
                start=slot, severity="major" if rl_codes else "minor", reason="rate_limit", data_lost=False,
                error_code="EGW00201", evidence={"rejected_symbols": len(rl_all), "symbols": sorted(rl_all)[:50]},
                restorable=False, status="info", source_files=files))
        n_live = len(universe) - len(absent)
        coverage[label] = {"slot_ts": slot.isoformat(), "state": "live", "universe": len(universe), "live": n_live,
                           "restored": sum(1 for c in absent if c in rest_by), "missing": len(absent),
                           "coverage_pct": round(100 * n_live / len(universe), 3) if universe else None,
                           "lateness_seconds": round(late_s, 1) if late_s is not None else None}
    return rows, coverage


# --- Track B --------------------------------------------------------------------------------------------------


@dataclass
class _Window:
    row: dict
    a: int  # µs since epoch
    b: int
    key: str | None
    losses: dict[str, dict] = field(default_factory=dict)


def _us(t: datetime) -> int:
    return int(round(t.timestamp() * 1_000_000))


def _from_us(v: int) -> datetime:
    return datetime.fromtimestamp(v / 1_000_000, KST)


def _windows(inp: DayInputs, th: Thresholds) -> tuple[list[_Window], list[dict], Counter]:
    """Connection-wide gaps from the markers, plus rate-limit markers; per-symbol / swing markers are counted
    (the data itself decides those)."""
    as_of = _kst(inp.as_of)
    wins: list[_Window] = []
    rows: list[dict] = []
    ignored: Counter = Counter()
    files = list(inp.files.get("events", ()))
    for g in inp.gap_markers:
        start = _kst(g.start)
        if start > as_of:
            continue
        if g.reason == "rate_limit":
            rows.append(_row(gap_id=g.gap_id, kind="rate_limit", scope=g.scope, symbol=g.symbol, start=start,
                             end=_kst(g.end) if g.end else None, seconds=(g.end - g.start).total_seconds() if g.end else None,
                             severity=g.severity, reason="rate_limit", data_lost=False, error_code="EGW00201",
                             evidence=dict(g.metadata), restorable=False, status="info", source_files=files))
            continue
        kind = _WINDOW_KIND.get(g.reason)
        if kind is None or g.symbol or g.scope == "swing":
            ignored[f"{g.scope}:{g.reason}:{'symbol' if g.symbol else 'session'}"] += 1
            continue
        end = _kst(g.end) if g.end is not None else None
        eff_end = min(end, as_of) if end is not None else as_of
        secs = (eff_end - start).total_seconds()
        sev = g.severity if g.severity in ("major", "critical") else "major"
        if secs > th.window_critical_s:
            sev = "critical"
        meta = dict(g.metadata)
        row = _row(gap_id=g.gap_id, kind=kind, scope=g.scope, start=start, end=end, seconds=round(secs, 3),
                   severity=sev, reason=g.reason, data_lost=True,
                   evidence={"marker": meta, "open": end is None}, restorable=inp.today,
                   restore_how="conclusions" if inp.today else None, source_files=files)
        key = meta.get("key_id") or meta.get("key")
        wins.append(_Window(row, _us(start), _us(eff_end), str(key) if key else None))
    return wins, rows, ignored


def _unholds(inp: DayInputs) -> dict[str, np.ndarray]:
    """When each code lost its slot (slot_change events), so continuity and silence never span a release."""
    out: dict[str, list[int]] = defaultdict(list)
    for e in inp.events:
        if e.get("event_type") != "slot_change":
            continue
        try:
            at = _us(datetime.fromisoformat(e.get("slot_at") or e["timestamp"]))
        except (KeyError, TypeError, ValueError):
            continue
        act = e.get("action")
        if act in ("replace", "move_in") and e.get("old_code"):
            out[str(e["old_code"])].append(at)
        elif act == "release" and e.get("code"):
            out[str(e["code"])].append(at)
    return {k: np.sort(np.array(v, dtype=np.int64)) for k, v in out.items()}


def _spans(unhold: Mapping[str, np.ndarray], code: str, a: int, b: int) -> bool:
    u = unhold.get(code)
    if u is None or not len(u):
        return False
    i = int(np.searchsorted(u, a, side="right"))
    return i < len(u) and u[i] < b


def _severity_silence(s: float, th: Thresholds) -> str:
    return "critical" if s >= th.silence_s[2] else "major" if s >= th.silence_s[1] else "minor"


def _track_b(inp: DayInputs, wins: list[_Window], th: Thresholds) -> tuple[list[dict], dict[str, Any]]:
    t = inp.ticks
    stats: dict[str, Any] = {"ticks": 0, "codes": 0, "losses": 0, "missing_volume": 0, "overlaps": 0,
                             "silences": 0, "restored_ticks": 0}
    if t is None or t.num_rows == 0:
        return [], stats
    as_of_us = _us(_kst(inp.as_of))
    rx_all = t["receive_ts"].cast(pa.int64()).to_numpy()
    if t.schema.field("receive_ts").type.unit != "us":
        rx_all = t["receive_ts"].cast(TS).cast(pa.int64()).to_numpy()
    keep = rx_all <= as_of_us
    is_rest = np.zeros(t.num_rows, dtype=bool)
    if "source" in t.column_names:
        si, sn = _encode(t["source"])
        is_rest = np.isin(si, [i for i, x in enumerate(sn) if x == "restored"])
    parts = [_plain(t.filter(pa.array(keep & is_rest)))] if is_rest.any() else []
    if inp.restored_ticks is not None and inp.restored_ticks.num_rows:
        parts.append(_plain(inp.restored_ticks))
    restored = None
    if parts:
        restored = pa.concat_tables([
            pa.table({"code": x["code"].cast(pa.string()), "acml_vol": x["acml_vol"].cast(pa.int64()),
                      "qty": x["qty"].cast(pa.int64()),
                      "restored_from": x["restored_from"].cast(pa.string()) if "restored_from" in x.column_names
                      else pa.nulls(x.num_rows, pa.string())}) for x in parts])
    stats["restored_ticks"] = 0 if restored is None else restored.num_rows
    live_mask = keep & ~is_rest
    if not live_mask.all():
        t = t.filter(pa.array(live_mask))
        rx_all = rx_all[live_mask]
    n = t.num_rows
    stats["ticks"] = n
    if n == 0:
        return [], stats
    code_i, names = _encode(t["code"])
    acml = t["acml_vol"].to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    qty = t["qty"].to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    cnt = None
    if "buy_cnt" in t.column_names and "sell_cnt" in t.column_names:
        cnt = (t["buy_cnt"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
               + t["sell_cnt"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64))
    keys = None
    if "key_id" in t.column_names:
        keys = _encode(t["key_id"])
    order = _order(code_i, acml, rx_all)
    code_i, acml, qty, rx = code_i[order], acml[order], qty[order], rx_all[order]
    if cnt is not None:
        cnt = cnt[order]
    stats["codes"] = int(len(np.unique(code_i)))
    same = code_i[1:] == code_i[:-1]
    missing = acml[1:] - qty[1:] - acml[:-1]
    dt = rx[1:] - rx[:-1]
    stats["overlaps"] = int((same & (missing < 0)).sum())
    unhold = _unholds(inp)
    win_arr = sorted(wins, key=lambda w: w.a)

    def key_of(j: int) -> str | None:
        if keys is None:
            return None
        k = keys[1][keys[0][order[j]]]
        return k or None

    def windows_over(a: int, b: int, key: str | None) -> list[_Window]:
        return [w for w in win_arr if w.a < b and w.b > a and (w.key is None or key is None or w.key == key)]

    rows: list[dict] = []
    tb_files = list(inp.files.get("track_b", ()))
    unexplained = np.zeros(len(same), dtype=bool)  # losses outside any window: where the quiet time was is unknown
    # losses: the cumulative-volume identity broken between consecutive ticks of a code
    for j in np.flatnonzero(same & (missing > 0)):
        i1 = j + 1
        code = names[code_i[i1]]
        a, b = int(rx[j]), int(rx[i1])
        if _spans(unhold, code, a, b):
            continue  # the code left its slot in between: the jump is the unsubscribed time, not a loss
        mv = int(missing[j])
        mt = int(cnt[i1] - cnt[j] - 1) if cnt is not None else None
        ws = windows_over(a, b, key_of(i1))
        loss = {"missing_volume": mv, "missing_trades": mt, "prev_acml_vol": int(acml[j]), "acml_vol": int(acml[i1]),
                "qty": int(qty[i1]), "prev_rx": _from_us(a).isoformat(), "rx": _from_us(b).isoformat()}
        rst_from = _restored_cover(restored, code, int(acml[j]), int(acml[i1] - qty[i1]), mv)
        stats["losses"] += 1
        stats["missing_volume"] += mv
        if not ws:
            unexplained[j] = True
        if ws:
            w = ws[0]
            agg = w.losses.setdefault(code, {"missing_volume": 0, "missing_trades": 0, "breaks": 0, "restored": True})
            agg["missing_volume"] += mv
            agg["missing_trades"] += mt or 0
            agg["breaks"] += 1
            agg["restored"] = agg["restored"] and rst_from is not None
            if rst_from and rst_from not in agg.setdefault("restored_from", []):
                agg["restored_from"].append(rst_from)
            continue
        secs = (b - a) / 1e6
        rows.append(_row(
            gap_id=_gid("track_b_loss", code, a, int(acml[i1])), kind="track_b_loss", scope="scalp", symbol=code,
            start=_from_us(a), end=_from_us(b), seconds=round(secs, 6),
            severity="critical" if secs >= th.loss_critical_s else "major", reason="no_data_received",
            data_lost=True, missing_volume=mv, missing_trades=mt, evidence=loss,
            restorable=rst_from is not None or inp.today, restore_how="conclusions",
            status="restored" if rst_from else ("open" if inp.today else "unrecoverable"),
            restored_from=rst_from, source_files=tb_files))
    # silences: quiet time between consecutive ticks, minus connection-wide gaps, never across a release
    lo = int(th.silence_s[0] * 1e6)
    for j in np.flatnonzero(same & (dt >= lo) & ~unexplained):
        i1 = j + 1
        code = names[code_i[i1]]
        a, b = int(rx[j]), int(rx[i1])
        if _spans(unhold, code, a, b):
            continue
        pieces = [(a, b)]
        for w in windows_over(a, b, key_of(i1)):
            nxt = []
            for pa_, pb_ in pieces:
                if w.b <= pa_ or w.a >= pb_:
                    nxt.append((pa_, pb_))
                    continue
                if w.a > pa_:
                    nxt.append((pa_, w.a))
                if w.b < pb_:
                    nxt.append((w.b, pb_))
            pieces = nxt
        for pa_, pb_ in pieces:
            s = (pb_ - pa_) / 1e6
            if s < th.silence_s[0]:
                continue
            stats["silences"] += 1
            rows.append(_row(
                gap_id=_gid("track_b_silence", code, pa_), kind="track_b_silence", scope="scalp", symbol=code,
                start=_from_us(pa_), end=_from_us(pb_), seconds=round(s, 6), severity=_severity_silence(s, th),
                reason="no_data_received", data_lost=False, missing_volume=0,
                evidence={"note": "no trade received; cumulative volume continuous (quiet symbol)",
                          "acml_vol": int(acml[i1])},
                restorable=False, status="info", source_files=tb_files))
    # the windows now know what they cost
    for w in wins:
        if w.losses:
            w.row["missing_volume"] = sum(x["missing_volume"] for x in w.losses.values())
            w.row["missing_trades"] = sum(x["missing_trades"] for x in w.losses.values())
            ev = json.loads(w.row["evidence"])
            ev["losses"] = w.losses
            w.row["evidence"] = json.dumps(ev, ensure_ascii=False, sort_keys=True, default=str)
            if all(x["restored"] for x in w.losses.values()):
                w.row["status"] = "restored"
                w.row["restored_from"] = ",".join(sorted({x for v in w.losses.values()
                                                          for x in v.get("restored_from", [])})) or "conclusions"
    return rows, stats


def _encode(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """(int32 indices, names) of a string or dictionary column; nulls become ''."""
    if pa.types.is_dictionary(col.type):  # nulls must become '' before encoding, or an all-null key column has no names
        col = col.cast(pa.string())
    col = pc.dictionary_encode(col.fill_null(""))
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    chunks = col.chunks
    if not chunks:
        return np.zeros(0, dtype=np.int32), []
    names = [x if x is not None else "" for x in chunks[0].dictionary.to_pylist()]
    idx = np.concatenate([c.indices.fill_null(0).to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False)
    return idx, names


def _plain(t: pa.Table) -> pa.Table:
    """Dictionary columns decoded (for the few restored rows compared value by value)."""
    return t.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                             for f in t.schema]))


def _order(code_i: np.ndarray, acml: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """Ticks ordered by (code, cumulative volume, receipt). The compacted hours are already in cumulative-volume
    order per code, so a stable sort by code usually suffices; verified, with the full sort as fallback."""
    order = np.argsort(code_i, kind="stable")
    c, a = code_i[order], acml[order]
    same = c[1:] == c[:-1]
    if np.all(~same | (a[1:] >= a[:-1])):
        r = rx[order]
        tie = same & (a[1:] == a[:-1])
        if not np.any(tie & (r[1:] < r[:-1])):
            return order
    return np.lexsort((rx, acml, code_i))


def _restored_cover(restored: pa.Table | None, code: str, lo: int, hi: int, missing: int) -> str | None:
    """The restored ticks' provenance if they fill the volume hole (lo, hi] of ``code`` exactly."""
    if restored is None or restored.num_rows == 0:
        return None
    m = pc.and_(pc.equal(restored["code"], code),
                pc.and_(pc.greater(restored["acml_vol"], lo), pc.less_equal(restored["acml_vol"], hi)))
    r = restored.filter(m)
    if r.num_rows == 0 or int(pc.sum(r["qty"]).as_py() or 0) != missing:
        return None
    if "restored_from" in r.column_names:
        src = sorted({x for x in r["restored_from"].to_pylist() if x})
        if src:
            return ",".join(src)
    return "conclusions"


def _rate_limit_events(inp: DayInputs) -> list[dict]:
    rows = []
    files = list(inp.files.get("events", ()))
    as_of = _kst(inp.as_of)
    for e in inp.events:
        et = str(e.get("event_type", ""))
        if et == "gap_marker":
            continue
        if "rate_limit" not in et and e.get("reason") != "rate_limit" and e.get("code") != "EGW00201":
            continue
        if et == "rate_limit_waits":  # a client's summary of its own limiter waits, not a rejection
            continue
        at = datetime.fromisoformat(e["timestamp"]).astimezone(KST)
        if at > as_of:
            continue
        ev = {k: v for k, v in e.items() if k not in ("timestamp",)}
        rows.append(_row(gap_id=_gid("rate_limit", et, e["timestamp"]), kind="rate_limit",
                         scope=e.get("scope") or "all", symbol=e.get("symbol"), start=at, severity="minor",
                         reason="rate_limit", data_lost=False, error_code="EGW00201", evidence=ev,
                         restorable=False, status="info", source_files=files))
    return rows


# --- verdict ------------------------------------------------------------------------------------------------------


def _verdict(inp: DayInputs, rows: list[dict], wins: list[_Window], th: Thresholds) -> dict[str, Any]:
    fired: list[dict] = []
    disc = [w for w in wins if w.row["kind"] == "ws_disconnect"]
    reconnect_events = sum(1 for e in inp.events if e.get("event_type") == "ws_connected" and e.get("reconnect"))
    reconnects = max(reconnect_events, len(disc))
    if reconnects >= th.anomaly_reconnects:
        fired.append({"rule": "ws_reconnects", "value": reconnects, "threshold": th.anomaly_reconnects})
    down = union_length([(w.a, w.b) for w in wins], 0) / 1e6
    if down >= th.anomaly_disconnect_s:
        fired.append({"rule": "ws_disconnection_seconds", "value": round(down, 3), "threshold": th.anomaly_disconnect_s})
    long_gaps = [r["gap_id"] for r in rows if r["data_lost"] and (r["seconds"] or 0) >= th.anomaly_long_gap_s
                 and r["kind"] != "track_a_missing_symbol"]
    if len(long_gaps) >= th.anomaly_long_gaps:
        fired.append({"rule": "gaps_of_60s", "value": len(long_gaps), "threshold": th.anomaly_long_gaps})
    crit = [r["gap_id"] for r in rows if r["severity"] == "critical" and r["kind"] != "track_b_silence"]
    if crit:
        fired.append({"rule": "critical_gap", "value": len(crit), "threshold": 1, "gap_ids": crit[:20]})
    if inp.anomaly:
        fired.append({"rule": "anomaly_marker", "value": [r.get("rule") for r in inp.anomaly.get("rules", [])]
                      if isinstance(inp.anomaly.get("rules"), list) else True, "threshold": "present"})
    return {"day": inp.day.isoformat(), "as_of": _kst(inp.as_of).isoformat(), "anomaly_day": bool(fired),
            "rules_fired": fired,
            "measured": {"reconnects": reconnects, "disconnected_seconds": round(down, 3),
                         "gaps_of_60s": len(long_gaps), "critical_gaps": len(crit)},
            "not_decided_here": ["track_b_record_rate", "cpu", "disk_usage", "etl_failure", "backup_failure"]}


# --- entry point ----------------------------------------------------------------------------------------------


def detect(inp: DayInputs, th: Thresholds = Thresholds()) -> Report:
    """Every gap of the day up to ``inp.as_of``, one row each (``GAP_SCHEMA``), plus verdict and summary."""
    a_rows, coverage = _track_a(inp, th)
    wins, marker_rows, ignored = _windows(inp, th)
    b_rows, b_stats = _track_b(inp, wins, th)
    for w in wins:
        if w.row["status"] is None:
            w.row["status"] = "open" if inp.today else "unrecoverable"
    rows = a_rows + marker_rows + [w.row for w in wins] + b_rows + _rate_limit_events(inp)
    rows.sort(key=lambda r: (r["start"] or r["slot_ts"], r["kind"], r["symbol"] or ""))
    table = pa.Table.from_pylist(rows, schema=GAP_SCHEMA)
    verdict = _verdict(inp, rows, wins, th)
    kinds = Counter(r["kind"] for r in rows)
    summary = {
        "rows": len(rows), "by_kind": dict(sorted(kinds.items())),
        "by_severity": dict(Counter(r["severity"] for r in rows if r["kind"] != "track_b_silence")),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "data_lost_rows": sum(1 for r in rows if r["data_lost"]),
        "backfill_targets": sum(1 for r in rows if r["restorable"] and r["status"] == "open"),
        "coverage": coverage, "track_b": b_stats, "markers_ignored": dict(ignored),
        "universe_size": len(set(inp.universe or ())),
        # the report is built without these lines: say so, so a gap they held is not silently missing
        "events_bad_lines": int(inp.events_unreadable.get("bad_lines", 0)),
        "events_torn_lines": int(inp.events_unreadable.get("torn_lines", 0)),
        "events_unreadable_where": list(inp.events_unreadable.get("where", ())),
    }
    return Report(table, verdict, summary)
