"""Master-file lines decoded into rows: the flag and code conventions of the official layout.

Real KIS files leave many one-character flags blank (a blank ETP class, manufacturing flag or KOSDAQ sector flag on
a large cap) and spell "none" as 0 / 0000; the lines here are built column by column from the official widths, with
those blanks, so each convention is pinned on its own. The local exchange's files are checked against the official
parser in tests/local_exchange/test_master.py.
"""

from __future__ import annotations

from datetime import date

import pytest

from observer_resources.kis.masters import COLUMNS, MasterFormatError, Which, parse_mst


def line(which: Which, code: str = "005930", name: str = "삼성전자", **raw: str) -> str:
    """One master line: head, then every tail column blank-padded unless given raw (its exact text)."""
    tail = ""
    for col, width in COLUMNS[which]:
        text = raw.pop(col, "")
        assert len(text) <= width, col
        tail += text.rjust(width, "0") if text.isdigit() and len(text) < width else text.ljust(width)
    assert not raw, f"not {which} columns: {sorted(raw)}"
    return code.ljust(9) + "KR7005930003" + name + tail


def test_blank_and_zero_fields_read_as_none_or_no() -> None:
    (row,) = parse_mst(line("kospi", group="ST", sector_l="0000", sector_m="    ", k200_sector="0", lot=""), "kospi")
    assert (row.sector_large, row.sector_medium, row.sector_small) == (None, None, None)
    assert row.kospi200_sector is None and not row.kospi200
    assert not any((row.kospi100, row.kospi50, row.krx100, row.kosdaq150, row.krx300))
    assert not any(
        (
            row.low_liquidity,
            row.warning_notice,
            row.unfaithful_disclosure,
            row.investment_attention,
            row.short_sale_overheat,
            row.abnormal_surge,
        )
    )
    assert row.lot is None and row.short_term_overheat == "0" and row.market_warning == "00" and row.etp == "0"
    assert row.listing_date is None
    (blank,) = parse_mst(line("kospi", group="ST", k200_sector=" "), "kospi")
    assert not blank.kospi200


def test_a_kospi_large_cap() -> None:
    (row,) = parse_mst(
        line(
            "kospi",
            group="ST",
            cap_size="1",
            sector_l="0027",
            sector_m="0013",
            sector_s="0000",
            k200_sector="5",
            kospi100="Y",
            kospi50="Y",
            krx100="Y",
            krx300="Y",
            short_overheat_code="2",
            lot="00001",
            market_warning="01",
            warning_notice="Y",
            unfaithful_disclosure="Y",
            short_sale_overheat="Y",
            abnormal_surge="Y",
            low_liquidity="Y",
            listing_date="19750611",
        ),
        "kospi",
    )
    assert (row.sector_large, row.sector_medium, row.sector_small) == ("0027", "0013", None)
    assert row.kospi200_sector == "5" and row.kospi200 and row.kospi100 and row.kospi50 and row.krx100 and row.krx300
    assert not row.kosdaq150 and not row.investment_attention  # columns the KOSPI master does not have
    assert row.lot == 1 and row.listing_date == date(1975, 6, 11) and row.short_term_overheat == "2"
    assert row.market_warning == "01" and row.warning_notice and row.unfaithful_disclosure
    assert row.short_sale_overheat and row.abnormal_surge and row.low_liquidity


def test_a_kosdaq_row_has_its_own_columns() -> None:
    (row,) = parse_mst(
        line("kosdaq", "247540", "에코프로비엠", group="ST", kosdaq150="Y", investment_attention="Y", krx300="Y"),
        "kosdaq",
    )
    assert row.market == "kosdaq" and row.kosdaq150 and row.investment_attention and row.krx300
    assert not (row.kospi200 or row.kospi100 or row.kospi50)  # the KOSDAQ master has no KOSPI index columns
    assert row.fields["investment_attention"] == "Y" and "k200_sector" not in row.fields


def test_a_line_of_the_wrong_width_is_refused_with_its_number() -> None:
    good = line("kospi", group="ST")
    with pytest.raises(MasterFormatError, match="line 2"):
        parse_mst(good + "\n" + good[:-1] + "\n", "kospi")
