"""A recorded day as the replay serves it: every received data frame by (tr_id, code) in receive-time order, the
journal's own holes, and the day's gaps.

Source of the frames, in order of preference:

1. **the raw journal** (``raw/track_b/date=D/key=*/HH.jsonl``, every key): the frames exactly as received, with
   their receive times. CRC-failed and torn lines are never served; they become holes.
2. **the compacted tick tables** (``track_b``, ``track_b_nxt``, ``track_b_unified``) when the day has no journal
   (retention deleted it, or a backup was restored without it): one frame per journal line the ticks came in
   (``key_id``, ``conn_id``, ``frame_seq``), records rebuilt from the columns the table keeps, in the KIS field
   order, fields the table does not keep empty. Books, status and expected prices are not rebuilt (their tables
   keep too little of the record); a replay from tables serves the three trade tapes only and says so.
"""

from __future__ import annotations

import bisect
import json
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from local_exchange.frame_source import route_frame
from observer_assets.track_b.journal_format import segments
from observer_assets.track_b.journal_read import read_journal
from observer_resources.calendar import KST
from observer_resources.events import gaps as event_gaps
from observer_resources.kis import protocol as p
from observer_resources.storage import lake, layout

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: the tick tables a replay from tables serves, by trade TR
TAPE_DATASETS = {p.TR_WS_TRADE: layout.TRACK_B, **layout.TRACK_B_TAPES}
#: tick-table column of each H0STCNT0 field the table keeps (the others are sent empty)
FIELD_COLUMNS = {
    "MKSC_SHRN_ISCD": "code",
    "STCK_PRPR": "price",
    "PRDY_VRSS_SIGN": "change_sign",
    "PRDY_VRSS": "change",
    "PRDY_CTRT": "change_rate",
    "WGHN_AVRG_STCK_PRC": "vwap",
    "STCK_OPRC": "day_open",
    "STCK_HGPR": "day_high",
    "STCK_LWPR": "day_low",
    "ASKP1": "ask1",
    "BIDP1": "bid1",
    "CNTG_VOL": "qty",
    "ACML_VOL": "acml_vol",
    "ACML_TR_PBMN": "acml_value",
    "SELN_CNTG_CSNU": "sell_cnt",
    "SHNU_CNTG_CSNU": "buy_cnt",
    "CTTR": "strength",
    "SELN_CNTG_SMTN": "sell_qty",
    "SHNU_CNTG_SMTN": "buy_qty",
    "CCLD_DVSN": "trade_class",
    "NEW_MKOP_CLS_CODE": "session_code",
    "ASKP_RSQN1": "ask_size1",
    "BIDP_RSQN1": "bid_size1",
    "TOTAL_ASKP_RSQN": "total_ask_size",
    "TOTAL_BIDP_RSQN": "total_bid_size",
    "HOUR_CLS_CODE": "hour_cls_code",
    "VI_STND_PRC": "vi_standard_price",
}


class RecordingError(RuntimeError):
    """The day cannot be replayed (no journal and no tick tables): the message says what was looked for."""


def us(t: datetime) -> int:
    """Microseconds since the epoch of an aware instant (the streams' time axis)."""
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(v: int) -> datetime:
    return (_EPOCH + timedelta(microseconds=v)).astimezone(KST)


@dataclass
class Stream:
    """One (tr_id, code)'s frames in receive-time order."""

    rx: array = field(default_factory=lambda: array("q"))  # receive time, µs since the epoch
    frames: list[str] = field(default_factory=list)

    def add(self, rx_us: int, frame: str) -> None:
        self.rx.append(rx_us)
        self.frames.append(frame)

    def index_after(self, t_us: int) -> int:
        """The first frame received after ``t_us``."""
        return bisect.bisect_right(self.rx, t_us)


@dataclass
class Hole:
    """A stretch the journal itself shows as missing on one key's session (gaps of the recording)."""

    kind: str  # lost_lines (a jump of the line counter) | bad_line (CRC/torn) | reconnect | restart
    key_id: str | None
    start: datetime | None
    end: datetime | None
    lines: int | None = None  # lines missing, when the counter says
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key_id": self.key_id,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "lines": self.lines,
            "detail": self.detail,
        }


@dataclass
class Recording:
    """Everything the replay serves of one day."""

    day: date
    source: str  # journal | tables
    streams: dict[tuple[str, str], Stream] = field(default_factory=dict)
    holes: list[Hole] = field(default_factory=list)
    frames: int = 0  # data frames served (after routing)
    skipped: Counter = field(default_factory=Counter)  # frames not served, by reason
    keys: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, rx_us: int, frame_text: str) -> bool:
        routed = route_frame(frame_text)
        if routed is None:
            return False
        for tr_id, code, text in routed:
            s = self.streams.get((tr_id, code))
            if s is None:
                s = self.streams[(tr_id, code)] = Stream()
            s.add(rx_us, text)
            self.frames += 1
        return True

    def summary(self) -> dict[str, Any]:
        by_tr: Counter = Counter()
        codes: dict[str, set[str]] = {}
        for (tr, code), s in self.streams.items():
            by_tr[tr] += len(s.frames)
            codes.setdefault(tr, set()).add(code)
        return {
            "day": self.day.isoformat(),
            "source": self.source,
            "keys": self.keys,
            "frames": self.frames,
            "frames_by_tr": dict(sorted(by_tr.items())),
            "codes_by_tr": {tr: sorted(c) for tr, c in sorted(codes.items())},
            "skipped": dict(self.skipped),
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "journal_holes": len(self.holes),
        }


def _window(day: date, t_from: str | None, t_to: str | None) -> tuple[int, int]:
    lo = datetime.combine(day, datetime.min.time(), KST)
    start = lo + _hhmm(t_from) if t_from else lo
    end = lo + _hhmm(t_to) if t_to else lo + timedelta(days=1)
    if end <= start:
        raise RecordingError(f"--to ({t_to}) must be after --from ({t_from})")
    return us(start), us(end) - 1


def _hhmm(text: str) -> timedelta:
    try:
        h, m = (int(x) for x in text.split(":"))
        if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
            raise ValueError
    except ValueError:
        raise RecordingError(f"a time must be HH:MM (KST), got {text!r}") from None
    return timedelta(hours=h, minutes=m)


def load(
    local: Path, root: Any, day: date, *, t_from: str | None = None, t_to: str | None = None, source: str = "auto"
) -> Recording:
    """The day's recording: the journal under ``local`` when it holds the day (``source='journal'`` insists on it),
    else the tick tables under ``root`` (``source='tables'`` insists on them). Frames outside [from, to) are left
    out; holes are kept for the whole day."""
    lo, hi = _window(day, t_from, t_to)
    paths = segments(local, day) if source in ("auto", "journal") else []
    if paths:
        return _from_journal(day, paths, lo, hi)
    if source == "journal":
        raise RecordingError(f"no Track B journal of {day} under {layout.journal_root(local)}")
    rec = _from_tables(root, day, lo, hi)
    if not rec.streams and source == "auto":
        raise RecordingError(
            f"nothing recorded on {day}: no journal under {layout.journal_root(local)} and no tick tables "
            f"({', '.join(sorted(TAPE_DATASETS.values()))}) under {root}"
        )
    return rec


def _from_journal(day: date, paths: list[Path], lo: int, hi: int) -> Recording:
    rec = Recording(day, "journal")
    rows: list[tuple[int, int, str]] = []  # (rx µs, arrival order, frame)
    state: dict[str | None, dict[str, Any]] = {}  # per key: run, conn, n, rx of the last good line
    order = 0
    for ln in read_journal(paths):
        st = state.setdefault(ln.key_id, {"run": None, "conn": None, "n": None, "rx": None, "bad": None})
        if not ln.ok:
            if st["bad"] is None:
                st["bad"] = Hole("bad_line", ln.key_id, st["rx"], None, None, f"{ln.error} in {ln.path.name}")
                rec.holes.append(st["bad"])
            rec.skipped[ln.error or "bad"] += 1
            st["n"] = None  # the counter's jump over this line is the bad line's hole, not a second one
            continue
        if ln.kind != "frame":
            continue
        rx = ln.rx.astimezone(KST) if ln.rx is not None else None
        if st["bad"] is not None:
            st["bad"].end = rx
            st["bad"] = None
        if st["run"] is not None and ln.run != st["run"]:
            rec.holes.append(Hole("restart", ln.key_id, st["rx"], rx, None, f"run {st['run']} -> {ln.run}"))
        elif st["conn"] is not None and ln.conn != st["conn"]:
            rec.holes.append(Hole("reconnect", ln.key_id, st["rx"], rx, None, f"connection {st['conn']} -> {ln.conn}"))
        if ln.run == st["run"] and st["n"] is not None and ln.n is not None and ln.n > st["n"] + 1:
            rec.holes.append(Hole("lost_lines", ln.key_id, st["rx"], rx, ln.n - st["n"] - 1, "line counter jumped"))
        st.update(run=ln.run, conn=ln.conn, n=ln.n, rx=rx)
        if not isinstance(ln.payload, str) or rx is None:
            rec.skipped["not_text"] += 1
            continue
        t = us(rx)
        if not (lo <= t <= hi):
            continue
        rows.append((t, order, ln.payload))
        order += 1
    rec.keys = sorted(k for k in state if k)
    rows.sort()
    for t, _, text in rows:
        if rec.add(t, text):
            continue
        if text.startswith("{"):
            rec.skipped["control"] += 1  # acks and PINGPONG: the replay's own session answers those
        else:
            rec.skipped["unroutable"] += 1  # malformed or encrypted: no registration to send it to
    if rows:
        rec.first, rec.last = from_us(rows[0][0]), from_us(rows[-1][0])
    return rec


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "Y" if v else "N"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def _from_tables(root: Any, day: date, lo: int, hi: int) -> Recording:
    rec = Recording(day, "tables")
    rows: list[tuple[int, str, str, int, str, list[str]]] = []
    names = p.H0STCNT0_FIELDS
    for tr_id, dataset in TAPE_DATASETS.items():
        files = sorted((Path(str(root)) / dataset / f"date={day.isoformat()}").glob("hour=T*/ticks.parquet"))
        for f in files:
            t: pa.Table = lake.read_table(f)
            cols = {c: t[c].to_pylist() for c in set(FIELD_COLUMNS.values()) | {"exchange_ts", "receive_ts"}}
            extra = ["key_id", "conn_id", "frame_seq"]
            for c in extra:
                cols[c] = t[c].to_pylist()
            for i in range(t.num_rows):
                rx = cols["receive_ts"][i]
                if rx is None:
                    continue
                ts = us(rx)
                if not (lo <= ts <= hi):
                    continue
                ex = cols["exchange_ts"][i].astimezone(KST)
                rec_fields = []
                for name in names:
                    if name == "STCK_CNTG_HOUR":
                        rec_fields.append(ex.strftime("%H%M%S"))
                    elif name == "BSOP_DATE":
                        rec_fields.append(ex.strftime("%Y%m%d"))
                    else:
                        col = FIELD_COLUMNS.get(name)
                        rec_fields.append(_cell(cols[col][i]) if col else "")
                frame_id = f"{cols['key_id'][i]}/{cols['conn_id'][i]}/{cols['frame_seq'][i]}"
                rows.append((ts, frame_id, tr_id, i, cols["code"][i], rec_fields))
    rows.sort(key=lambda r: (r[0], r[1], r[3]))
    k = 0
    while k < len(rows):
        j = k
        while j < len(rows) and rows[j][1] == rows[k][1] and rows[j][2] == rows[k][2] and rows[j][4] == rows[k][4]:
            j += 1
        group = rows[k:j]
        text = f"0|{group[0][2]}|{len(group):03d}|" + "^".join("^".join(r[5]) for r in group)
        rec.add(group[0][0], text)
        k = j
    rec.skipped["books_status_expected_not_rebuilt"] = 1 if rows else 0
    if rows:
        rec.first, rec.last = from_us(rows[0][0]), from_us(rows[-1][0])
    return rec


def gaps_of(root: Any, local: Path, day: date, rec: Recording) -> dict[str, Any]:
    """The recording's gaps: the day's gap report when it exists (else the capture's gap markers from the event
    log), and the journal's own holes."""
    report = layout.report_path(root, day)
    out: dict[str, Any] = {"day": day.isoformat()}
    try:
        t = lake.read_table(report)
    except (FileNotFoundError, OSError):
        t = None
    if t is not None:
        out["source"] = "gap_report"
        out["gaps"] = [{k: _jsonable(v) for k, v in row.items()} for row in t.to_pylist()]
    else:
        out["source"] = "events"
        out["gaps"] = [
            {
                "gap_id": g.gap_id,
                "scope": g.scope,
                "reason": g.reason,
                "severity": g.severity,
                "symbol": g.symbol,
                "start": g.start.isoformat(),
                "end": g.end.isoformat() if g.end else None,
                "metadata": {k: _jsonable(v) for k, v in g.metadata.items()},
            }
            for g in event_gaps(local, day)
        ]
    out["journal_holes"] = [h.to_json() for h in rec.holes]
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(KST).isoformat()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict | list | str | int | float | bool) or v is None:
        return v
    return json.loads(json.dumps(v, default=str))
