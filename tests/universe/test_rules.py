"""Universe membership and exclusions from real master files (the local exchange's zips, parsed by the collector's
parser) and the exchange's own previous closes; the upgrade of tables written before the current schemas; which
lake files the backup keeps as long as the universe. Pure functions: no Dagster run."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from local_exchange.market import Market
from local_exchange.master import build_master_zip
from observer_assets import catalog
from observer_assets.backup.daysets import LocalFile
from observer_assets.universe import rules
from observer_resources.kis.masters import MasterRow, parse_master_zip
from observer_resources.storage import lake
from observer_resources.storage.layout import exclusions_path, universe_path

DAY = date(2026, 3, 10)
FLOOR = 4_000


@pytest.fixture(scope="module")
def day() -> tuple[Market, list[MasterRow], dict[str, int], set[str]]:
    """The day's master rows, the exchange's previous closes of every candidate but three (left unknown)."""
    market = Market(seed=11, listings=600)
    rows = [r for w in ("kospi", "kosdaq") for r in parse_master_zip(build_master_zip(market, w, DAY), w)]
    cand, _ = rules.candidates(rows)
    unknown = {r.code for r in cand[::97][:3]}
    closes = {r.code: market.prev_close(r.code, DAY) for r in cand if r.code not in unknown}
    return market, rows, closes, unknown


def old_reason(e: rules.Exclusion) -> str:
    """The free text the earlier exclusions table held for the same exclusion (its rules' f-strings)."""
    return {
        "not_stock_group": f"group {e.detail or '?'}",
        "etp": f"ETP class {e.detail}",
        "etn_code": "ETN code",
        "spac": "SPAC",
        "halted": "halted",
        "liquidation": "liquidation trading",
        "duplicate_code": "duplicate code across masters",
        "no_prev_close": "no previous close",
        "below_min_prev_close": f"previous close {e.prev_close} < {e.min_prev_close}",
    }[e.category]


def test_the_universe_carries_the_masters_columns(day) -> None:
    market, rows, closes, _ = day
    table, _ = rules.select(rows, closes, FLOOR)
    assert table.schema.equals(rules.UNIVERSE_SCHEMA) and table.num_rows > 100
    df = table.to_pandas()
    assert list(df["code"]) == sorted(df["code"]) and df["code"].is_unique
    truth = {x.code: x for x in market.listings}
    for r in df.itertuples():
        x = truth[r.code]
        assert (r.market, r.name, r.administrative, r.market_warning) == (x.market, x.name, x.administrative, x.alarm)
        assert r.listing_date == x.listing_date and r.lot_size == 1 and r.prev_close == closes[r.code] >= FLOOR
        assert r.market_warning_level == {"00": "none", "01": "caution", "02": "warning", "03": "risk"}[x.alarm]
    kospi, kosdaq = df[df.market == "kospi"], df[df.market == "kosdaq"]
    # index membership: a minority in each index, and only where the market's master has the column
    for col, where in (
        ("in_kospi200", kospi),
        ("in_kospi100", kospi),
        ("in_kospi50", kospi),
        ("in_kosdaq150", kosdaq),
        ("in_krx100", df),
        ("in_krx300", df),
    ):
        assert 0 < where[col].sum() < len(where) / 2, col
        assert not df.loc[~df.index.isin(where.index), col].any(), col
    assert (df["kospi200_sector"].notna() == df["in_kospi200"]).all()
    assert set(df["kospi200_sector"].dropna()) <= set("12345678")
    assert not (df["in_kospi100"] & ~df["in_kospi200"]).any() and not (df["in_kospi50"] & ~df["in_kospi100"]).any()
    # sectors: varied, and a preferred share in its common share's
    assert df["sector_medium"].nunique() >= 8 and df["sector_large"].notna().all()
    by_code = df.set_index("code")
    prefs = [x for x in market.listings if x.preferred and x.code in by_code.index and x.parent in by_code.index]
    assert prefs
    for x in prefs:
        cols = ["sector_large", "sector_medium", "sector_small"]
        assert by_code.loc[x.code, cols].tolist() == by_code.loc[x.parent, cols].tolist()
    # caution and overheat: a few members carry each, KOSDAQ's own flag only on KOSDAQ
    for col in ("warning_notice", "unfaithful_disclosure", "short_sale_overheat", "abnormal_surge", "low_liquidity"):
        assert 0 < df[col].sum() < len(df) * 0.1, col
    assert set(df["short_term_overheat"]) <= set("0123") and (df["short_term_overheat"] != "0").any()
    assert not kospi["investment_attention"].any()
    assert not {"date", "slot", "hour"} & set(table.column_names)


def test_every_master_row_is_a_member_or_excluded_once_with_its_facts(day) -> None:
    market, rows, closes, unknown = day
    table, excluded = rules.select(rows, closes, FLOOR)
    assert table.num_rows + len(excluded) == len(rows)
    truth = {x.code: x for x in market.listings}
    for e in excluded:
        x = truth[e.code]
        assert (e.market, e.name) == (x.market, x.name)
        numbers = (e.prev_close, e.min_prev_close)
        match e.category:
            case "not_stock_group":
                assert x.group != "ST" and e.detail == x.group and numbers == (None, None)
            case "etp":
                assert x.etp in (3, 4, 5) and e.detail == str(x.etp)
            case "spac":
                assert x.spac and e.detail is None
            case "halted":
                assert x.halted
            case "liquidation":
                assert x.liquidation and not x.halted
            case "no_prev_close":
                assert e.code in unknown and numbers == (None, None)
            case "below_min_prev_close":
                assert numbers == (market.prev_close(e.code, DAY), FLOOR) and e.prev_close < FLOOR
            case _:
                pytest.fail(f"unexpected category {e.category} for {e.code}")
    by_cat = rules.count_by_category(excluded)
    assert list(by_cat) == list(rules.EXCLUSION_CATEGORIES) and sum(by_cat.values()) == len(excluded)
    for c in ("not_stock_group", "etp", "spac", "halted", "no_prev_close", "below_min_prev_close"):
        assert by_cat[c] > 0, c
    assert by_cat["no_prev_close"] == len(unknown)

    t = rules.exclusions_table(excluded)
    assert t.schema.equals(rules.EXCLUSION_SCHEMA) and t.num_rows == len(excluded)
    assert t["code"].to_pylist() == sorted(t["code"].to_pylist())
    assert set(t["category"].to_pylist()) <= set(rules.EXCLUSION_CATEGORIES)
    assert set(t.filter(pa.compute.equal(t["category"], "not_stock_group"))["detail"].to_pylist()) >= {"EF", "RT"}


def test_a_code_in_both_masters_is_excluded_as_a_duplicate(day) -> None:
    _, rows, closes, _ = day
    first = next(r for r in rows if r.market == "kospi" and r.code in closes and closes[r.code] >= FLOOR)
    twin = MasterRow(**{**{s: getattr(first, s) for s in MasterRow.__slots__}, "market": "kosdaq"})
    table, excluded = rules.select([first, twin], closes, FLOOR)
    assert table["code"].to_pylist() == [first.code]
    assert [(e.code, e.market, e.category) for e in excluded] == [(first.code, "kosdaq", "duplicate_code")]


def test_the_days_tables_read_as_hive_datasets_without_project_code(day, tmp_path: Path) -> None:
    _, rows, closes, _ = day
    table, excluded = rules.select(rows, closes, FLOOR)
    lake.write_table_atomic(universe_path(tmp_path, DAY), table)
    lake.write_table_atomic(exclusions_path(tmp_path, DAY), rules.exclusions_table(excluded))
    ex = pd.read_parquet(tmp_path / "universe_exclusions")
    assert len(ex) == len(excluded) and str(ex["date"].iloc[0]) == DAY.isoformat()
    got = duckdb.sql(
        f"SELECT category, count(*) AS n FROM read_parquet('{tmp_path}/universe_exclusions/*/*.parquet', "
        "hive_partitioning = true) GROUP BY category"
    ).fetchall()
    assert dict(got) == {k: v for k, v in rules.count_by_category(excluded).items() if v}
    uni = duckdb.sql(
        f"SELECT count(*), min(listing_date), sum(in_kospi200::INT) FROM read_parquet('{tmp_path}/universe/*/*.parquet',"
        " hive_partitioning = true)"
    ).fetchall()[0]
    assert uni[0] == table.num_rows and isinstance(uni[1], date) and uni[2] > 0


def test_tables_of_the_earlier_schemas_are_upgraded(day) -> None:
    _, rows, closes, _ = day
    table, excluded = rules.select(rows, closes, FLOOR)
    current = rules.exclusions_table(excluded)

    # the earlier universe: the first eleven columns; the master's columns it never held come back null
    old = table.select(rules.UNIVERSE_SCHEMA.names[:11])
    up = rules.upgrade_universe_table(old)
    assert up.schema.equals(rules.UNIVERSE_SCHEMA) and up.select(old.column_names).equals(old)
    assert up["in_kospi200"].null_count == up["listing_date"].null_count == up.num_rows
    assert up["nxt_tradable"].null_count == up["nxt_halted"].null_count == up.num_rows  # unknown, not "not on NXT"
    assert up["market_warning_level"].equals(table["market_warning_level"])  # derived from market_warning
    assert rules.upgrade_universe_table(up).equals(up)
    assert rules.upgrade_universe_table(table).equals(table)  # a current table is left as it is
    with pytest.raises(ValueError, match="not a universe table"):
        rules.upgrade_universe_table(old.append_column("price", pa.array([0] * old.num_rows)))

    # the earlier exclusions: code and a free-text reason; the reason becomes category, detail and numbers
    # (in the order the old rules appended them: the upgrade sorts them by code)
    old_ex = pa.table({"code": [e.code for e in excluded], "reason": [old_reason(e) for e in excluded]})
    up_ex = rules.upgrade_exclusions_table(old_ex)
    assert up_ex.schema.equals(rules.EXCLUSION_SCHEMA)
    assert up_ex.drop_columns(["market", "name"]).equals(current.drop_columns(["market", "name"]))
    assert up_ex["market"].null_count == up_ex["name"].null_count == up_ex.num_rows
    assert rules.upgrade_exclusions_table(up_ex).equals(up_ex) and rules.upgrade_exclusions_table(current).equals(
        current
    )


def test_the_catalog_describes_every_column() -> None:
    assert list(catalog.UNIVERSE_COLUMNS) == rules.UNIVERSE_SCHEMA.names
    assert list(catalog.EXCLUSION_COLUMNS) == rules.EXCLUSION_SCHEMA.names
    categories = catalog.EXCLUSION_COLUMNS["category"]
    assert all(c in categories for c in rules.EXCLUSION_CATEGORIES)


@pytest.mark.parametrize(
    ("reason", "parsed"),
    [
        ("group EF", ("not_stock_group", "EF", None, None)),
        ("group ?", ("not_stock_group", None, None, None)),
        ("ETP class 3", ("etp", "3", None, None)),
        ("ETN code", ("etn_code", None, None, None)),
        ("SPAC", ("spac", None, None, None)),
        ("halted", ("halted", None, None, None)),
        ("liquidation trading", ("liquidation", None, None, None)),
        ("duplicate code across masters", ("duplicate_code", None, None, None)),
        ("no previous close", ("no_prev_close", None, None, None)),
        ("previous close 3950 < 4000", ("below_min_prev_close", None, 3950, 4000)),
    ],
)
def test_old_reasons_parse(reason: str, parsed: tuple) -> None:
    assert rules.parse_old_reason(reason) == parsed


def test_an_unknown_old_reason_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="previous close about 3950"):
        rules.upgrade_exclusions_table(pa.table({"code": ["000001"], "reason": ["previous close about 3950"]}))


@pytest.mark.parametrize(
    ("rel", "universe"),
    [
        ("universe/date=2026-03-10/universe.parquet", True),
        ("universe_exclusions/date=2026-03-10/exclusions.parquet", True),
        ("universe_prev_close/date=2026-03-10/prev_close.parquet", True),
        ("raw/universe/date=2026-03-10/masters/kospi_code.mst.zip", True),
        ("raw/universe/date=2026-03-10/fallback.json", True),
        ("universe_rejected/date=2026-03-10/universe.parquet", True),
        ("_meta/universe_rejected/date=2026-03-10/rejection.json", True),
        ("universe_inputs/date=2026-03-10/masters/kospi_code.mst.zip", True),
        ("raw/track_a/date=2026-03-10/slot=T0900/raw.jsonl", False),
        ("raw/track_b/date=2026-03-10/key=k1/T09.jsonl", False),
        ("_meta/gaps/date=2026-03-10/verdict.json", False),
        ("track_a/date=2026-03-10/slot=T0900/snapshot.parquet", False),
    ],
)
def test_the_universe_and_its_inputs_are_kept_as_long_as_the_universe(rel: str, universe: bool) -> None:
    assert LocalFile(rel, DAY, 1, 0).is_universe is universe
