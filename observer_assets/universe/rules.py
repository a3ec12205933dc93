"""Universe membership: pure functions over master rows and previous closes (no I/O, no Dagster)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from observer_resources.kis.masters import MasterRow

MIN_PREV_CLOSE = 4_000

# Why a master row is not in the universe, in the order the rules are applied (a row gets the first that holds).
ExclusionCategory = Literal[
    "duplicate_code",  # the code is already in the other market's master: the first occurrence is judged
    "not_stock_group",  # security group other than ST (detail: the group code, e.g. EF, RT, MF)
    "etp",  # group ST with an ETP class, i.e. an ETN or listed trust (detail: the class, '3'/'4'/'5')
    "etn_code",  # a Q... short code (ETN) without an ETP class
    "spac",
    "halted",
    "liquidation",  # liquidation trading: delisting pending
    "no_prev_close",  # a candidate whose previous close could not be had
    "below_min_prev_close",  # a candidate whose previous close is under the floor
]
EXCLUSION_CATEGORIES: tuple[ExclusionCategory, ...] = get_args(ExclusionCategory)

# mrkt_alrm_cls_code -> the level its designation names (docs/kis-protocol.md §7.2)
MARKET_WARNING_LEVELS = {"00": "none", "01": "caution", "02": "warning", "03": "risk"}


@dataclass(frozen=True)
class Exclusion:
    """A master row left out of the universe: a category from a small fixed set, the facts in their own fields."""

    code: str
    market: str | None
    name: str | None
    category: ExclusionCategory
    detail: str | None = None  # non-numeric detail: the group code of not_stock_group, the ETP class of etp
    prev_close: int | None = None  # KRW, when known (below_min_prev_close)
    min_prev_close: int | None = None  # KRW, the floor a below_min_prev_close row missed


def eligibility(row: MasterRow) -> tuple[ExclusionCategory, str | None] | None:
    """Why a master row is not a stock Observer tracks, as (category, detail), or None when it is one (common or
    preferred share)."""
    if row.group != "ST":
        return "not_stock_group", row.group or None  # ETF (EF), REIT (RT), funds (MF/IF/BC), ELW (EW), DR, ...
    if row.etp not in ("", "0"):
        return "etp", row.etp  # ETNs and listed trusts carry an ETP class
    if row.code.startswith("Q"):
        return "etn_code", None
    if row.spac:
        return "spac", None
    if row.halted:
        return "halted", None
    if row.liquidation:
        return "liquidation", None
    return None


def _excluded(r: MasterRow, category: ExclusionCategory, detail: str | None = None, **numbers: int) -> Exclusion:
    return Exclusion(r.code, r.market, r.name, category, detail, **numbers)


def candidates(rows: Iterable[MasterRow]) -> tuple[list[MasterRow], list[Exclusion]]:
    keep, out = [], []
    seen: set[str] = set()
    for r in rows:
        if r.code in seen:
            out.append(_excluded(r, "duplicate_code"))
            continue
        seen.add(r.code)
        why = eligibility(r)
        (out.append(_excluded(r, *why)) if why else keep.append(r))
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
        # from here on: added with the master's tail columns; a table migrated from before has them null
        ("sector_large", pa.string()),
        ("sector_medium", pa.string()),
        ("sector_small", pa.string()),
        ("kospi200_sector", pa.string()),
        ("in_kospi200", pa.bool_()),
        ("in_kospi100", pa.bool_()),
        ("in_kospi50", pa.bool_()),
        ("in_krx100", pa.bool_()),
        ("in_kosdaq150", pa.bool_()),
        ("in_krx300", pa.bool_()),
        ("listing_date", pa.date32()),
        ("lot_size", pa.int64()),
        ("market_warning_level", pa.string()),
        ("warning_notice", pa.bool_()),
        ("investment_attention", pa.bool_()),
        ("short_term_overheat", pa.string()),
        ("short_sale_overheat", pa.bool_()),
        ("abnormal_surge", pa.bool_()),
        ("unfaithful_disclosure", pa.bool_()),
        ("low_liquidity", pa.bool_()),
        # from here on: from search-stock-info, not the masters; null where it was not asked (paper keys, a day built
        # before, a failed call: docs/data.md)
        ("nxt_tradable", pa.bool_()),
        ("nxt_halted", pa.bool_()),
    ]
)
NXT_COLUMNS = ("nxt_tradable", "nxt_halted")
_UNIVERSE_V1 = UNIVERSE_SCHEMA.names[: UNIVERSE_SCHEMA.get_field_index("market_cap_100m") + 1]

PREV_CLOSE_SCHEMA = pa.schema([("code", pa.string()), ("prev_close", pa.int64())])

# the kept answer of search-stock-info per member: the flags, or why there are none (``error``, flags null)
NXT_STATUS_SCHEMA = pa.schema(
    [("code", pa.string()), ("nxt_tradable", pa.bool_()), ("nxt_halted", pa.bool_()), ("error", pa.string())]
)

EXCLUSION_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("market", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("detail", pa.string()),
        ("prev_close", pa.int64()),
        ("min_prev_close", pa.int64()),
    ]
)

# universe column -> its value for a member row
_MEMBER_COLUMNS: dict[str, Callable[[MasterRow, int], Any]] = {
    "code": lambda r, _: r.code,
    "name": lambda r, _: r.name,
    "market": lambda r, _: r.market,
    "isin": lambda r, _: r.isin,
    "prev_close": lambda _, close: close,
    "base_price": lambda r, _: r.base_price,
    "preferred": lambda r, _: r.preferred,
    "administrative": lambda r, _: r.administrative,
    "market_warning": lambda r, _: r.market_warning,
    "listed_shares": lambda r, _: r.listed_shares,
    "market_cap_100m": lambda r, _: r.market_cap_100m,
    "sector_large": lambda r, _: r.sector_large,
    "sector_medium": lambda r, _: r.sector_medium,
    "sector_small": lambda r, _: r.sector_small,
    "kospi200_sector": lambda r, _: r.kospi200_sector,
    "in_kospi200": lambda r, _: r.kospi200,
    "in_kospi100": lambda r, _: r.kospi100,
    "in_kospi50": lambda r, _: r.kospi50,
    "in_krx100": lambda r, _: r.krx100,
    "in_kosdaq150": lambda r, _: r.kosdaq150,
    "in_krx300": lambda r, _: r.krx300,
    "listing_date": lambda r, _: r.listing_date,
    "lot_size": lambda r, _: r.lot,
    "market_warning_level": lambda r, _: MARKET_WARNING_LEVELS.get(r.market_warning),
    "warning_notice": lambda r, _: r.warning_notice,
    "investment_attention": lambda r, _: r.investment_attention,
    "short_term_overheat": lambda r, _: r.short_term_overheat,
    "short_sale_overheat": lambda r, _: r.short_sale_overheat,
    "abnormal_surge": lambda r, _: r.abnormal_surge,
    "unfaithful_disclosure": lambda r, _: r.unfaithful_disclosure,
    "low_liquidity": lambda r, _: r.low_liquidity,
}
assert [*_MEMBER_COLUMNS, *NXT_COLUMNS] == UNIVERSE_SCHEMA.names


def select(
    rows: Iterable[MasterRow], prev_close: Mapping[str, int], min_prev_close: int = MIN_PREV_CLOSE
) -> tuple[pa.Table, list[Exclusion]]:
    """The day's universe, sorted by code, plus every exclusion with its category.

    A candidate without a previous close (the quote failed or the symbol is new) is excluded as such, never
    silently kept or dropped.
    """
    keep, excluded = candidates(rows)
    members = []
    for r in keep:
        close = prev_close.get(r.code)
        if close is None or close <= 0:
            excluded.append(_excluded(r, "no_prev_close"))
        elif close < min_prev_close:
            excluded.append(_excluded(r, "below_min_prev_close", prev_close=close, min_prev_close=min_prev_close))
        else:
            members.append((r, close))
    members.sort(key=lambda m: m[0].code)
    cols: dict[str, list[Any]] = {
        name: [get(r, close) for r, close in members] for name, get in _MEMBER_COLUMNS.items()
    }
    cols.update({name: [None] * len(members) for name in NXT_COLUMNS})  # with_nxt_status fills them
    return pa.table(cols, schema=UNIVERSE_SCHEMA), excluded


def nxt_status_table(status: Mapping[str, tuple[bool, bool] | str]) -> pa.Table:
    """The kept input: per code its (tradable, halted) flags, or the error that left them unknown; sorted by code."""
    codes = sorted(status)
    flags = [status[c] if isinstance(status[c], tuple) else (None, None) for c in codes]
    return pa.table(
        {
            "code": codes,
            "nxt_tradable": [f[0] for f in flags],
            "nxt_halted": [f[1] for f in flags],
            "error": [status[c] if isinstance(status[c], str) else None for c in codes],
        },
        schema=NXT_STATUS_SCHEMA,
    )


def with_nxt_status(universe: pa.Table, status: pa.Table | None) -> pa.Table:
    """The universe with each member's NXT flags from the kept ``status`` table; a member it lacks (or ``None``:
    never asked) stays null, never false: unknown is not "not on NXT"."""
    codes = universe["code"].to_pylist()
    by_code: dict[str, tuple[bool | None, bool | None]] = {}
    if status is not None:
        by_code = dict(
            zip(
                status["code"].to_pylist(),
                zip(status["nxt_tradable"].to_pylist(), status["nxt_halted"].to_pylist(), strict=True),
                strict=True,
            )
        )
    out = universe
    for i, name in enumerate(NXT_COLUMNS):
        values = pa.array([by_code.get(c, (None, None))[i] for c in codes], pa.bool_())
        out = out.set_column(out.schema.get_field_index(name), name, values)
    return out


def exclusions_table(excluded: Iterable[Exclusion]) -> pa.Table:
    """The day's exclusions as written to the lake, sorted by code (then market, category)."""
    rows = sorted(excluded, key=lambda e: (e.code, e.market or "", e.category))
    return pa.table({f.name: [getattr(e, f.name) for e in rows] for f in EXCLUSION_SCHEMA}, schema=EXCLUSION_SCHEMA)


def count_by_category(excluded: Iterable[Exclusion]) -> dict[str, int]:
    """Exclusions per category, every category named (0 when none), in rule order."""
    n = Counter(e.category for e in excluded)
    return {c: n.get(c, 0) for c in EXCLUSION_CATEGORIES}


# --- tables written before the current schemas -----------------------------------------------------------------------
_OLD_REASONS: tuple[tuple[re.Pattern[str], ExclusionCategory], ...] = (
    (re.compile(r"group (?P<detail>\S+)"), "not_stock_group"),
    (re.compile(r"ETP class (?P<detail>\S+)"), "etp"),
    (re.compile(r"ETN code"), "etn_code"),
    (re.compile(r"SPAC"), "spac"),
    (re.compile(r"halted"), "halted"),
    (re.compile(r"liquidation trading"), "liquidation"),
    (re.compile(r"duplicate code across masters"), "duplicate_code"),
    (re.compile(r"no previous close"), "no_prev_close"),
    (re.compile(r"previous close (?P<prev_close>-?\d+) < (?P<min_prev_close>\d+)"), "below_min_prev_close"),
)


def parse_old_reason(reason: str) -> tuple[ExclusionCategory, str | None, int | None, int | None]:
    """(category, detail, prev_close, min_prev_close) of a free-text reason the earlier exclusions table held.
    Those texts came from one closed set of rules; anything else is refused rather than guessed."""
    for pattern, category in _OLD_REASONS:
        m = pattern.fullmatch(reason.strip())
        if m:
            g = m.groupdict()
            detail = g.get("detail")
            close, floor = g.get("prev_close"), g.get("min_prev_close")
            return (
                category,
                None if detail == "?" else detail,  # the old text spelt an empty group code '?'
                int(close) if close is not None else None,
                int(floor) if floor is not None else None,
            )
    raise ValueError(f"exclusion reason {reason!r} is not one the earlier rules wrote")


def _conform(t: pa.Table, schema: pa.Schema, derived: Mapping[str, Callable[[pa.Table], pa.Array]]) -> pa.Table:
    """`t` in `schema`'s column order and types: present columns cast, derivable ones derived, the rest null."""
    cols = []
    for f in schema:
        if f.name in t.column_names:
            col = t[f.name]
            cols.append(col if col.type == f.type else col.cast(f.type))
        elif f.name in derived:
            cols.append(derived[f.name](t))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def upgrade_universe_table(t: pa.Table) -> pa.Table:
    """A universe table of any earlier schema in the current one. The master columns added since are null (the
    table never held them; re-building the day from its kept master zips fills them), except the warning level,
    which follows from ``market_warning``. Idempotent."""
    unknown = sorted(set(t.column_names) - set(UNIVERSE_SCHEMA.names))
    missing = sorted(set(_UNIVERSE_V1) - set(t.column_names))
    if unknown or missing:
        raise ValueError(f"not a universe table: unknown columns {unknown}, missing {missing}")
    levels = pa.array(list(MARKET_WARNING_LEVELS), pa.string()), pa.array(list(MARKET_WARNING_LEVELS.values()))
    return _conform(
        t,
        UNIVERSE_SCHEMA,
        {
            "market_warning_level": lambda t: pc.take(
                levels[1], pc.index_in(t["market_warning"].combine_chunks(), value_set=levels[0])
            )
        },
    )


def upgrade_exclusions_table(t: pa.Table) -> pa.Table:
    """An exclusions table of any earlier schema in the current one: the old free-text ``reason`` parsed into
    category, detail and the numbers, rows sorted by code; ``market`` and ``name``, which it never held, null.
    Idempotent."""
    names = set(t.column_names)
    if "reason" in names and "category" not in names:
        parsed = [parse_old_reason(r) for r in t["reason"].to_pylist()]
        t = t.drop_columns(["reason"])
        for i, (name, typ) in enumerate(
            (
                ("category", pa.string()),
                ("detail", pa.string()),
                ("prev_close", pa.int64()),
                ("min_prev_close", pa.int64()),
            )
        ):
            t = t.append_column(name, pa.array([p[i] for p in parsed], typ))
        t = t.sort_by([("code", "ascending"), ("category", "ascending")])  # the current tables' order
    unknown = sorted(set(t.column_names) - set(EXCLUSION_SCHEMA.names))
    if unknown or "code" not in t.column_names or "category" not in t.column_names:
        raise ValueError(f"not an exclusions table: columns {t.column_names}")
    return _conform(t, EXCLUSION_SCHEMA, {})


def diff(today: Iterable[str], previous: Iterable[str]) -> tuple[list[str], list[str]]:
    t, p = set(today), set(previous)
    return sorted(t - p), sorted(p - t)


def change_ratio(count: int, previous_count: int) -> float:
    return abs(count - previous_count) / previous_count if previous_count else 0.0
