"""Track B gap rules: connection-wide windows from the gap markers, proven losses and silences per code (pure).

The windows and the tick checks are one unit: a loss inside a window is attributed to it and silences are cut by
it, so both live here. ``detect`` only reads the windows back for the verdict's disconnect rules.

A window's ``data_lost`` is judged on evidence (``judge_windows``): true when ticks prove trades lost inside it, or
when codes were held then (``detect_held``) and the ticks cannot show each of them continuous across it; false
when nothing was held (before the first slot, after the capture's window) or every held code's cumulative volume
runs on unbroken across it.

A code held through a window can lose trades no break shows (the restore's *edge holes*): registered as the window
began, its first tick after it has nothing before it to break against (*leading*); or its last tick of the day came
before the window, so nothing after it shows what printed while the session was down (*trailing*). Each is added
to the window's losses; its size is known only once the restore has fetched it (``observer_assets.track_b.restore``
records the end it found, and the restored trades chain between the ends); until then it keeps the window from
being called restored, and a fetch that found nothing printed removes it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.gaps.detect_common import TS, VENUES_OF, DayInputs, Thresholds, as_kst, cut, make_id, make_row
from observer_assets.gaps.detect_held import Held, Holdings, registrations
from observer_resources.calendar import KST

_WINDOW_KIND = {
    "ws_disconnect": "ws_disconnect",
    "ws_timeout": "ws_disconnect",
    "system_error": "capture_restart",
    "manual_stop": "manual_stop",
}


@dataclass
class Window:
    """A connection-wide gap (its row, µs span inside the capture's window, key); ``losses`` collects the breaks
    attributed to it, ``held`` the codes subscribed then, ``outside`` whether it lies wholly outside the window."""

    row: dict
    a: int  # µs since epoch
    b: int
    key: str | None
    losses: dict[str, dict] = field(default_factory=dict)
    held: Held | None = None
    outside: bool = False


def _us(t: datetime) -> int:
    return int(round(t.timestamp() * 1_000_000))


def _from_us(v: int) -> datetime:
    return datetime.fromtimestamp(v / 1_000_000, KST)


def connection_windows(inp: DayInputs, th: Thresholds) -> tuple[list[Window], list[dict], Counter]:
    """Connection-wide gaps from the markers, plus rate-limit markers; per-symbol / swing markers are counted
    (the data itself decides those)."""
    as_of = as_kst(inp.as_of)
    wins: list[Window] = []
    rows: list[dict] = []
    ignored: Counter = Counter()
    files = list(inp.files.get("events", ()))
    holdings = Holdings(inp.events)
    span = holdings.span()
    for g in inp.gap_markers:
        start = as_kst(g.start)
        if start > as_of:
            continue
        if g.reason == "rate_limit":
            rows.append(
                make_row(
                    gap_id=g.gap_id,
                    kind="rate_limit",
                    scope=g.scope,
                    symbol=g.symbol,
                    start=start,
                    end=as_kst(g.end) if g.end else None,
                    seconds=(g.end - g.start).total_seconds() if g.end else None,
                    severity=g.severity,
                    reason="rate_limit",
                    data_lost=False,
                    error_code="EGW00201",
                    evidence=dict(g.metadata),
                    restorable=False,
                    status="info",
                    source_files=files,
                )
            )
            continue
        kind = _WINDOW_KIND.get(g.reason)
        if kind is None or g.symbol or g.scope == "swing":
            ignored[f"{g.scope}:{g.reason}:{'symbol' if g.symbol else 'session'}"] += 1
            continue
        end = as_kst(g.end) if g.end is not None else None
        a, b = _us(start), _us(min(end, as_of) if end is not None else as_of)
        ev: dict[str, Any] = {"marker": dict(g.metadata), "open": end is None}
        outside = False
        if span is not None:  # nothing is subscribed outside the capture's window: that time is not a gap
            a2 = max(a, span[0])
            b2 = max(min(b, span[1]), a2)
            outside = b2 <= a2 and b > a
            if (a2, b2) != (a, b):
                ev["counted"] = {"from": _from_us(a2).isoformat(), "until": _from_us(b2).isoformat()}
            a, b = a2, b2
        secs = (b - a) / 1e6
        sev = g.severity if g.severity in ("major", "critical") else "major"
        if secs > th.window_critical_s:
            sev = "critical"
        key = g.metadata.get("key_id") or g.metadata.get("key")
        key = str(key) if key else None
        row = make_row(
            gap_id=g.gap_id,
            kind=kind,
            scope=g.scope,
            key_id=key,
            start=start,
            end=end,
            seconds=round(secs, 3),
            severity=sev,
            reason=g.reason,
            evidence=ev,
            source_files=files,
        )
        wins.append(Window(row, a, b, key, held=holdings.during(key, a, b), outside=outside))
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
    """Whether ``code`` left its slot after the tick received at ``a`` (or at that very instant: a release and the
    last tick can share a timestamp) and before the one received at ``b``."""
    u = unhold.get(code)
    if u is None or not len(u):
        return False
    i = int(np.searchsorted(u, a, side="left"))
    return i < len(u) and u[i] < b


def _severity_silence(s: float, th: Thresholds) -> str:
    return "critical" if s >= th.silence_s[2] else "major" if s >= th.silence_s[1] else "minor"


#: phase kinds in which a trade tape prints trades at any moment; in the others (auctions, periodic auctions)
#: and in the breaks between phases it is silent by design, so quiet time there is no silence
_TRADING_KINDS = frozenset({"continuous", "closing_price"})


def trading_spans(inp: DayInputs, venue: str) -> list[tuple[int, int]] | None:
    """When the ``venue`` tape can print at any moment (µs spans, merged), from the day's phases; None when the
    inputs carry no phases (every quiet time then counts)."""
    if not inp.phases:
        return None
    venues = VENUES_OF.get(venue, (venue,))
    spans = sorted((_us(p.start), _us(p.end)) for p in inp.phases if p.venue in venues and p.kind in _TRADING_KINDS)
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _within(pieces: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``pieces`` cut to ``spans``."""
    out = []
    for pa_, pb_ in pieces:
        for a, b in spans:
            lo, hi = max(pa_, a), min(pb_, b)
            if hi > lo:
                out.append((lo, hi))
    return out


def track_b_rows(
    inp: DayInputs, wins: list[Window], th: Thresholds, venue: str = "KRX"
) -> tuple[list[dict], dict[str, Any], Continuity | None]:
    """Loss and silence rows of one tape (``inp.ticks``: KRX's, or the ``unified`` / ``NXT`` one), tick stats and
    the ticks' continuity (None without live ticks); a loss inside a window goes into that window's row instead.
    Each tape is judged by its own cumulative volume; silences count only while the tape's venues trade."""
    tag = "" if venue == "KRX" else venue  # other tapes' ids and window losses carry their venue
    t = inp.ticks
    stats: dict[str, Any] = {
        "ticks": 0,
        "codes": 0,
        "losses": 0,
        "missing_volume": 0,
        "overlaps": 0,
        "silences": 0,
        "restored_ticks": 0,
    }
    if t is None or t.num_rows == 0:
        return [], stats, None
    as_of_us = _us(as_kst(inp.as_of))
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
        restored = pa.concat_tables(
            [
                pa.table(
                    {
                        "code": x["code"].cast(pa.string()),
                        "acml_vol": x["acml_vol"].cast(pa.int64()),
                        "qty": x["qty"].cast(pa.int64()),
                        "restored_from": x["restored_from"].cast(pa.string())
                        if "restored_from" in x.column_names
                        else pa.nulls(x.num_rows, pa.string()),
                    }
                )
                for x in parts
            ]
        )
    stats["restored_ticks"] = 0 if restored is None else restored.num_rows
    live_mask = keep & ~is_rest
    if not live_mask.all():
        t = t.filter(pa.array(live_mask))
        rx_all = rx_all[live_mask]
    n = t.num_rows
    stats["ticks"] = n
    if n == 0:
        return [], stats, None
    code_i, names = _encode(t["code"])
    acml = t["acml_vol"].to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    qty = t["qty"].to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    cnt = None
    if "buy_cnt" in t.column_names and "sell_cnt" in t.column_names:
        cnt = t["buy_cnt"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False) + t[
            "sell_cnt"
        ].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
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
    win_arr = sorted((w for w in wins if w.b > w.a), key=lambda w: w.a)  # an empty span covers nothing

    def key_of(j: int) -> str | None:
        if keys is None:
            return None
        k = keys[1][keys[0][order[j]]]
        return k or None

    def windows_over(a: int, b: int, key: str | None) -> list[Window]:
        return [w for w in win_arr if w.a < b and w.b > a and (w.key is None or key is None or w.key == key)]

    rows: list[dict] = []
    tb_files = list(inp.files.get("track_b" if not tag else f"track_b:{venue}", ()))
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
        loss = {
            "missing_volume": mv,
            "missing_trades": mt,
            "prev_acml_vol": int(acml[j]),
            "acml_vol": int(acml[i1]),
            "qty": int(qty[i1]),
            "prev_rx": _from_us(a).isoformat(),
            "rx": _from_us(b).isoformat(),
        }
        rst_from = _restored_cover(restored, code, int(acml[j]), int(acml[i1] - qty[i1]), mv)
        stats["losses"] += 1
        stats["missing_volume"] += mv
        if not ws:
            unexplained[j] = True
        if ws:
            w = ws[0]
            agg = w.losses.setdefault(
                f"{code}@{venue}" if tag else code,
                {"missing_volume": 0, "missing_trades": 0, "breaks": 0, "restored": True},
            )
            agg["missing_volume"] += mv
            agg["missing_trades"] += mt or 0
            agg["breaks"] += 1
            agg["restored"] = agg["restored"] and rst_from is not None
            if rst_from and rst_from not in agg.setdefault("restored_from", []):
                agg["restored_from"].append(rst_from)
            continue
        secs = (b - a) / 1e6
        rows.append(
            make_row(
                gap_id=make_id("track_b_loss", code, a, int(acml[i1]), *([tag] if tag else [])),
                kind="track_b_loss",
                scope="scalp",
                symbol=code,
                key_id=key_of(i1),
                start=_from_us(a),
                end=_from_us(b),
                seconds=round(secs, 6),
                severity="critical" if secs >= th.loss_critical_s else "major",
                reason="no_data_received",
                data_lost=True,
                missing_volume=mv,
                missing_trades=mt,
                evidence=loss,
                restorable=rst_from is not None or inp.today,
                restore_how="conclusions",
                venue=venue,
                status="restored" if rst_from else ("open" if inp.today else "unrecoverable"),
                restored_from=rst_from,
                source_files=tb_files,
            )
        )
    _edge_losses(inp, win_arr, venue, restored, names, code_i, acml, qty, rx, unhold, key_of)
    # silences: quiet time between consecutive ticks while the tape's venues trade, minus connection-wide gaps,
    # never across a release
    lo = int(th.silence_s[0] * 1e6)
    trading = trading_spans(inp, venue)
    for j in np.flatnonzero(same & (dt >= lo) & ~unexplained):
        i1 = j + 1
        code = names[code_i[i1]]
        a, b = int(rx[j]), int(rx[i1])
        if _spans(unhold, code, a, b):
            continue
        pieces = [(a, b)] if trading is None else _within([(a, b)], trading)
        for w in windows_over(a, b, key_of(i1)):
            pieces = cut(pieces, w.a, w.b)
        for pa_, pb_ in pieces:
            s = (pb_ - pa_) / 1e6
            if s < th.silence_s[0]:
                continue
            stats["silences"] += 1
            rows.append(
                make_row(
                    gap_id=make_id("track_b_silence", code, pa_, *([tag] if tag else [])),
                    kind="track_b_silence",
                    scope="scalp",
                    symbol=code,
                    key_id=key_of(i1),
                    start=_from_us(pa_),
                    end=_from_us(pb_),
                    seconds=round(s, 6),
                    severity=_severity_silence(s, th),
                    reason="no_data_received",
                    data_lost=False,
                    missing_volume=0,
                    evidence={
                        "note": "no trade received; cumulative volume continuous (quiet symbol)",
                        "acml_vol": int(acml[i1]),
                    },
                    restorable=False,
                    status="info",
                    source_files=tb_files,
                    venue=venue,
                )
            )
    return rows, stats, Continuity(code_i, names, acml, qty, rx)


def _edge_losses(
    inp: DayInputs,
    wins: list[Window],
    venue: str,
    restored: pa.Table | None,
    names: list,
    code_i: np.ndarray,
    acml: np.ndarray,
    qty: np.ndarray,
    rx: np.ndarray,
    unhold: Mapping[str, np.ndarray],
    key_of: Any,
) -> None:
    """Add each window's edge losses (module doc) to its ``losses``: restored when the restored trades chain from
    one end to the other (a leading loss after a release: down to the tick before the release)."""
    acks = registrations(inp.events)
    found = inp.edge_holes.get(venue, {})
    index = {str(x): i for i, x in enumerate(names)}
    chains: dict[str, dict[int, tuple[int, str | None]]] = {}
    if restored is not None:
        for c, v, q, src in zip(
            restored["code"].to_pylist(),
            restored["acml_vol"].to_pylist(),
            restored["qty"].to_pylist(),
            restored["restored_from"].to_pylist(),
            strict=True,
        ):
            chains.setdefault(c, {})[v] = (q, src)
    trailing_seen: set[str] = set()  # a trailing loss is the first window's after the last tick (one fetch spans all)
    for w in sorted(wins, key=lambda w: w.a):
        held = w.held
        if w.outside or held is None or not held.known:
            continue
        for code in sorted(held.codes):
            label = code if venue == "KRX" else f"{code}@{venue}"
            i = index.get(code)
            if i is None or label in w.losses or not any(t <= w.a for t in acks.get((venue, code), ())):
                continue  # never ticked on this tape, a break already counted, or not registered when it began
            lo_i = int(np.searchsorted(code_i, i, side="left"))
            hi_i = int(np.searchsorted(code_i, i, side="right"))
            after = [j for j in range(lo_i, hi_i) if rx[j] > w.a]
            k = key_of(after[0] if after else hi_i - 1)
            if w.key is not None and k is not None and k != w.key:
                continue
            if not after:  # trailing: its last tick came before the window
                if code in trailing_seen:
                    continue
                trailing_seen.add(code)
                floor = int(acml[hi_i - 1])
                top = found.get(("trailing", code, floor))
                edge = "trailing"
            else:
                j = after[0]
                first_of_day = j == lo_i
                if not first_of_day and not _spans(unhold, code, int(rx[j - 1]), int(rx[j])):
                    continue  # a break (or none) against the tick before: the loss rules above judged it
                top = int(acml[j] - qty[j])
                floor = found.get(("leading", code, top)) if first_of_day else int(acml[j - 1])
                if first_of_day and top <= 0:
                    continue  # its first trade of the day: nothing before it to lose
                edge = "leading"
            if floor is not None and top is not None and floor >= top:
                continue  # nothing printed between the two ends
            chain, v, vol, n, srcs = chains.get(code, {}), top, 0, 0, set()
            while v is not None and v in chain and chain[v][0] > 0 and (floor is None or v > floor):
                q, src = chain[v]
                vol, n, v = vol + q, n + 1, v - q
                srcs.add(src or "conclusions")
            done = floor is not None and top is not None and v == floor
            w.losses[label] = {
                "missing_volume": vol if done else 0,
                "missing_trades": n if done else 0,
                "breaks": 1,
                "restored": done,
                "edge": edge,
                **({"restored_from": sorted(srcs)} if done else {}),
            }


class Continuity:
    """The live ticks in (code, cumulative volume, receipt) order: can a code's trades be shown complete across an
    interval?"""

    def __init__(self, code_i: np.ndarray, names: list, acml: np.ndarray, qty: np.ndarray, rx: np.ndarray):
        self.code_i, self.acml, self.qty, self.rx = code_i, acml, qty, rx
        self.index = {str(x): i for i, x in enumerate(names)}

    def continuous(self, code: str, a: int, b: int) -> bool:
        """True when consecutive ticks of ``code`` received at or before ``a`` and at or after ``b`` have unbroken
        cumulative volume, or its first tick after ``b`` is its first trade of the day: nothing traded was lost."""
        i = self.index.get(code)
        if i is None:
            return False
        lo = int(np.searchsorted(self.code_i, i, side="left"))
        hi = int(np.searchsorted(self.code_i, i, side="right"))
        if hi <= lo:
            return False
        rx, acml, qty = self.rx[lo:hi], self.acml[lo:hi], self.qty[lo:hi]
        if rx[0] >= b and acml[0] - qty[0] == 0:
            return True
        ok = (rx[:-1] <= a) & (rx[1:] >= b) & (acml[1:] - qty[1:] == acml[:-1])
        return bool(ok.any())


def judge_windows(wins: list[Window], cont: Continuity | None, today: bool) -> None:
    """Each window's ``data_lost``, what it cost, and whether a restore has work: from its losses, the codes held
    then and their continuity across it (module doc)."""
    for w in wins:
        ev = json.loads(w.row["evidence"])
        held = w.held or Held(False, frozenset(), "not replayed")
        ev["subscribed"] = held.as_dict()
        w.row["subscribed_codes"] = len(held.codes) if held.known else None
        if w.losses:
            lost, why = True, "trades lost inside it (cumulative-volume breaks)"
            ev["losses"] = w.losses
            w.row["missing_volume"] = sum(x["missing_volume"] for x in w.losses.values())
            w.row["missing_trades"] = sum(x["missing_trades"] for x in w.losses.values())
        elif w.outside:
            lost, why = False, "outside the capture's window: nothing subscribed"
        elif held.known and not held.codes:
            lost, why = False, "nothing subscribed on the session then"
        elif held.known and cont is not None and all(cont.continuous(c, w.a, w.b) for c in held.codes):
            lost, why = False, "every subscribed code's cumulative volume is unbroken across it"
        else:
            lost, why = True, "codes were (or may have been) subscribed and no tick shows them complete across it"
        ev["data_lost_because"] = why
        w.row["evidence"] = json.dumps(ev, ensure_ascii=False, sort_keys=True, default=str)
        w.row["data_lost"] = lost
        if not lost:
            w.row.update(missing_volume=0, missing_trades=0, restorable=False, restore_how=None, status="info")
            continue
        w.row.update(restorable=today, restore_how="conclusions" if today else None)
        if w.losses and all(x["restored"] for x in w.losses.values()):
            w.row["status"] = "restored"
            w.row["restored_from"] = (
                ",".join(sorted({x for v in w.losses.values() for x in v.get("restored_from", [])})) or "conclusions"
            )


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
    idx = np.concatenate([c.indices.fill_null(0).to_numpy(zero_copy_only=False) for c in chunks])
    idx = idx.astype(np.int32, copy=False)
    return idx, names


def _plain(t: pa.Table) -> pa.Table:
    """Dictionary columns decoded (for the few restored rows compared value by value)."""
    return t.cast(
        pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in t.schema])
    )


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
    m = pc.and_(
        pc.equal(restored["code"], code),
        pc.and_(pc.greater(restored["acml_vol"], lo), pc.less_equal(restored["acml_vol"], hi)),
    )
    r = restored.filter(m)
    if r.num_rows == 0 or int(pc.sum(r["qty"]).as_py() or 0) != missing:
        return None
    if "restored_from" in r.column_names:
        src = sorted({x for x in r["restored_from"].to_pylist() if x})
        if src:
            return ",".join(src)
    return "conclusions"
