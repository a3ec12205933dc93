"""Universe membership: pure functions over master rows and previous closes (no I/O, no Dagster)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from observer_resources.kis.masters import MasterRow

MIN_PREV_CLOSE = 4_000


@dataclass(frozen=True)
class Exclusion:
    code: str
    reason: str


def eligibility(row: MasterRow) -> str | None:
    """Why a master row is not a stock Observer tracks, or None when it is one (common or preferred share)."""
    if row.group != "ST":
        return f"group {row.group or '?'}"  # ETF (EF), REIT (RT), funds (MF/IF/BC), ELW (EW), DR, foreign ...
    if row.etp not in ("", "0"):
        return f"ETP class {row.etp}"  # ETNs and listed trusts carry an ETP class
    if row.code.startswith("Q"):
        return "ETN code"
    if row.spac:
        return "SPAC"
    if row.halted:
        return "halted"
    if row.liquidation:
        return "liquidation trading"
    return None


def candidates(rows: Iterable[MasterRow]) -> tuple[list[MasterRow], list[Exclusion]]:
    keep, out = [], []
    seen: set[str] = set()
    for r in rows:
        if r.code in seen:
            out.append(Exclusion(r.code, "duplicate code across masters"))
            continue
        seen.add(r.code)
        why = eligibility(r)
        (out.append(Exclusion(r.code, why)) if why else keep.append(r))
    return keep, out


UNIVERSE_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("name", pa.string()),
        ("market", pa.string()),
        ("isin", pa.string()),
        ("prev_close", pa.int64()),
        ("base_price", pa.int64()),
        ("preferred", pa.bool_()),
        ("administrative", pa.bool_()),
        ("market_warning", pa.string()),
        ("listed_shares", pa.int64()),
        ("market_cap_100m", pa.int64()),
    ]
)


def select(
    rows: Iterable[MasterRow], prev_close: Mapping[str, int], min_prev_close: int = MIN_PREV_CLOSE
) -> tuple[pa.Table, list[Exclusion]]:
    """The day's universe, sorted by code, plus every exclusion with its reason.

    A candidate without a previous close (the quote failed or the symbol is new) is excluded with that reason,
    never silently kept or dropped.
    """
    keep, excluded = candidates(rows)
    members = []
    for r in keep:
        pc = prev_close.get(r.code)
        if pc is None or pc <= 0:
            excluded.append(Exclusion(r.code, "no previous close"))
        elif pc < min_prev_close:
            excluded.append(Exclusion(r.code, f"previous close {pc} < {min_prev_close}"))
        else:
            members.append((r, pc))
    members.sort(key=lambda m: m[0].code)
    cols = {
        "code": [r.code for r, _ in members],
        "name": [r.name for r, _ in members],
        "market": [r.market for r, _ in members],
        "isin": [r.isin for r, _ in members],
        "prev_close": [pc for _, pc in members],
        "base_price": [r.base_price for r, _ in members],
        "preferred": [r.preferred for r, _ in members],
        "administrative": [r.administrative for r, _ in members],
        "market_warning": [r.market_warning for r, _ in members],
        "listed_shares": [r.listed_shares for r, _ in members],
        "market_cap_100m": [r.market_cap_100m for r, _ in members],
    }
    return pa.table(cols, schema=UNIVERSE_SCHEMA), excluded


def diff(today: Iterable[str], previous: Iterable[str]) -> tuple[list[str], list[str]]:
    t, p = set(today), set(previous)
    return sorted(t - p), sorted(p - t)


def change_ratio(count: int, previous_count: int) -> float:
    return abs(count - previous_count) / previous_count if previous_count else 0.0
