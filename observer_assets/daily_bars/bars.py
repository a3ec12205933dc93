"""Pure rules of the daily history: the year a partition asks, the table's schema and rows, and what a corporate
action looks like in it. No Dagster, no sockets: tested directly."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MARKER_FIELDS = ("flng_cls_code", "prtt_rate", "mod_yn", "revl_issu_reas")
PRICE_FIELDS = ("open", "high", "low", "close")

SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("open", pa.int64()),
        pa.field("high", pa.int64()),
        pa.field("low", pa.int64()),
        pa.field("close", pa.int64()),
        pa.field("volume", pa.int64()),
        pa.field("value", pa.int64()),
        pa.field("adj_open", pa.int64()),
        pa.field("adj_high", pa.int64()),
        pa.field("adj_low", pa.int64()),
        pa.field("adj_close", pa.int64()),
        pa.field("adj_volume", pa.int64()),
        pa.field("flng_cls_code", pa.string()),
        pa.field("prtt_rate", pa.string()),
        pa.field("mod_yn", pa.string()),
        pa.field("revl_issu_reas", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="Asia/Seoul"), nullable=False),
    ]
)

COLUMNS = {
    "code": "6-character KRX short code: a member of the latest universe when the year was fetched",
    "day": "the trading day (KST)",
    "open": "raw open, KRW: the price traded that day, on that day's share basis (FID_ORG_ADJ_PRC raw)",
    "high": "raw high, KRW",
    "low": "raw low, KRW",
    "close": "raw close, KRW",
    "volume": "raw volume, shares of that day's basis (acml_vol)",
    "value": "traded value, KRW (acml_tr_pbmn; the same in both series)",
    "adj_open": "adjusted open, KRW: on the share basis of the day the year was fetched (splits, rights issues)",
    "adj_high": "adjusted high, KRW",
    "adj_low": "adjusted low, KRW",
    "adj_close": "adjusted close, KRW",
    "adj_volume": "adjusted volume, shares of the fetch day's basis",
    "flng_cls_code": "KIS 락 구분 코드 of the day: 00 none, 01 ex-rights, 02 ex-dividend, 03 ex-distribution, 04 ex-rights "
    "and dividend, 05 ex-interim dividend, 06/07 combinations",
    "prtt_rate": "KIS 분할 비율 (split ratio) of the day as served; 0.00 when none",
    "mod_yn": "KIS 분할변경여부: Y on a split's ex-date",
    "revl_issu_reas": "KIS 재평가사유코드 (revaluation reason) as served; empty when none",
    "fetched_at": "when the row was fetched (KST)",
}

_YEAR_RE = re.compile(r"[0-9]{4}")


class YearKeyError(ValueError):
    """A ``bar_year`` partition key that is not a year the history can hold."""


def parse_year_key(key: str, first_year: int, today: date) -> int:
    """The year of a ``bar_year`` key: four ASCII digits, from ``first_year`` through the current year."""
    if not _YEAR_RE.fullmatch(key or ""):
        raise YearKeyError(f"bar_year key {key!r} must be a year, YYYY")
    year = int(key)
    if year < first_year:
        raise YearKeyError(f"bar_year key {key!r} is before the first year of daily history ({first_year})")
    if year > today.year:
        raise YearKeyError(f"bar_year key {key!r} is in the future (today is {today.isoformat()})")
    return year


def year_keys(first_year: int, today: date) -> list[str]:
    """Every year from ``first_year`` through the current one, oldest first."""
    return [f"{y:04d}" for y in range(first_year, today.year + 1)]


def asked_span(year: int, last_complete_day: date) -> tuple[date, date] | None:
    """The dates a year's partition asks KIS for: 1 January through 31 December, or through the last trading day
    whose session is over (no partial bar is ever stored). None when the year has no such day yet."""
    start, end = date(year, 1, 1), min(date(year, 12, 31), last_complete_day)
    return (start, end) if end >= start else None


def join_rows(code: str, raw: Sequence[Any], adjusted: Sequence[Any], fetched_at: datetime) -> list[dict[str, Any]]:
    """One row per day from the raw and adjusted answers (``DailyBar``-like objects with ``raw`` KIS fields).

    The two series must cover the same days; a day in one only means the answers are inconsistent, and that is
    refused rather than stored half-empty."""
    by_raw = {b.day: b for b in raw}
    by_adj = {b.day: b for b in adjusted}
    if by_raw.keys() != by_adj.keys():
        only_raw = sorted(by_raw.keys() - by_adj.keys())[:3]
        only_adj = sorted(by_adj.keys() - by_raw.keys())[:3]
        raise ValueError(
            f"{code}: raw and adjusted series cover different days (raw only {only_raw}, adjusted only {only_adj})"
        )
    out = []
    for d in sorted(by_raw):
        r, a = by_raw[d], by_adj[d]
        fields: Mapping[str, Any] = r.raw or {}
        out.append(
            {
                "code": code,
                "day": d,
                "open": r.open,
                "high": r.high,
                "low": r.low,
                "close": r.close,
                "volume": r.volume,
                "value": r.value,
                "adj_open": a.open,
                "adj_high": a.high,
                "adj_low": a.low,
                "adj_close": a.close,
                "adj_volume": a.volume,
                **{f: str(fields.get(f, "")) for f in MARKER_FIELDS},
                "fetched_at": fetched_at,
            }
        )
    return out


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def sort_table(t: pa.Table) -> pa.Table:
    return t.sort_by([("code", "ascending"), ("day", "ascending")])


# --- corporate actions in the table ----------------------------------------------------------------------------------
def _tolerance(raw: int, ratio: float) -> float:
    """How far raw may sit from adjusted x ratio: half a KRX tick of the raw price (KIS puts raw prices on the grid,
    at most 0.25 % of the price) plus the adjusted price's own integer rounding, times the ratio."""
    return 0.0026 * abs(raw) + ratio + 1.0


def ratio_spans(code_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One symbol's rows (oldest first) cut where raw/adjusted changes: each span's ratio (raw close / adjusted
    close of its newest day) and its first and last day. A change of span is a corporate action."""
    spans: list[dict[str, Any]] = []
    for r in reversed(code_rows):
        if not r["adj_close"]:
            continue
        ratio = r["close"] / r["adj_close"]
        if spans and abs(r["close"] - r["adj_close"] * spans[-1]["ratio"]) <= _tolerance(
            r["close"], spans[-1]["ratio"]
        ):
            spans[-1]["first"] = r["day"]
            continue
        spans.append({"ratio": ratio, "first": r["day"], "last": r["day"]})
    return list(reversed(spans))


def events_in(t: pa.Table) -> list[dict[str, Any]]:
    """The corporate actions a year's table shows: for each symbol, every day where raw/adjusted steps (the ex-date
    is the first day of the later span), with the step's ratio and the day's marker fields."""
    out = []
    for code, rows in _by_code(t).items():
        spans = ratio_spans(rows)
        by_day = {r["day"]: r for r in rows}
        for before, after in zip(spans, spans[1:], strict=False):
            ex = by_day[after["first"]]
            out.append(
                {
                    "code": code,
                    "ex_date": after["first"],
                    "ratio": round(before["ratio"] / after["ratio"], 4),
                    **{f: ex[f] for f in MARKER_FIELDS},
                }
            )
    return out


def problems(t: pa.Table) -> list[str]:
    """What makes a year's table wrong: a duplicate (code, day), a raw price that is not the adjusted one times its
    span's one factor (open, high, low and close, not just the close), a bar whose high/low do not bound its
    open/close."""
    out: list[str] = []
    if t.num_rows == 0:
        return out
    keys = pc.binary_join_element_wise(t["code"], pc.cast(t["day"], pa.string()), "|")
    n_unique = len(pc.unique(keys))
    if n_unique != t.num_rows:
        out.append(f"{t.num_rows - n_unique} duplicate (code, day) rows")
    for code, rows in _by_code(t).items():
        for span in ratio_spans(rows):
            f = span["ratio"]
            for r in rows:
                if not (span["first"] <= r["day"] <= span["last"]):
                    continue
                for name in PRICE_FIELDS:
                    raw, adj = r[name], r[f"adj_{name}"]
                    if abs(raw - adj * f) > _tolerance(raw, f):
                        out.append(f"{code} {r['day']}: {name} {raw} is not adj_{name} {adj} x {f:.4f}")
                if not (r["low"] <= min(r["open"], r["close"]) and r["high"] >= max(r["open"], r["close"])):
                    out.append(f"{code} {r['day']}: high/low do not bound open/close")
            if len(out) > 20:
                return out
    return out


def _by_code(t: pa.Table) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in (
        sort_table(t)
        .select(["code", "day", *PRICE_FIELDS, *(f"adj_{f}" for f in PRICE_FIELDS), *MARKER_FIELDS])
        .to_pylist()
    ):
        out.setdefault(r["code"], []).append(r)
    return out
