"""The daily history's pure rules: year keys, the asked span, joining raw and adjusted answers, and what a
corporate action looks like in a year's table (the check's rules)."""

from datetime import date, datetime
from types import SimpleNamespace

import pytest

from observer_assets.daily_bars import bars
from observer_resources.clock import KST

TODAY = date(2026, 12, 4)
AT = datetime(2026, 12, 4, 21, 0, tzinfo=KST)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("26", "must be a year, YYYY"),
        ("２０２３", "must be a year, YYYY"),  # full-width digits are not a year key
        ("2023\n", "must be a year, YYYY"),
        ("2017", "before the first year of daily history (2018)"),
        ("2027", "is in the future (today is 2026-12-04)"),
    ],
)
def test_bad_year_keys_are_refused_with_the_reason(key, message):
    with pytest.raises(bars.YearKeyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bars.parse_year_key(key, 2018, TODAY)


def test_year_keys_and_the_asked_span():
    assert bars.parse_year_key("2026", 2018, TODAY) == 2026
    assert bars.year_keys(2024, TODAY) == ["2024", "2025", "2026"]
    assert bars.asked_span(2025, date(2026, 12, 3)) == (date(2025, 1, 1), date(2025, 12, 31))
    assert bars.asked_span(2026, date(2026, 12, 3)) == (date(2026, 1, 1), date(2026, 12, 3))  # no partial bar
    assert bars.asked_span(2027, date(2026, 12, 31)) is None


def _bar(d, o, h, lo, c, v, marks=None):
    return SimpleNamespace(day=d, open=o, high=h, low=lo, close=c, volume=v, value=v * c, raw=marks or {})


def test_join_refuses_answers_that_cover_different_days():
    a, b = _bar(date(2023, 1, 2), 10, 11, 9, 10, 5), _bar(date(2023, 1, 3), 10, 11, 9, 10, 5)
    with pytest.raises(ValueError, match="cover different days"):
        bars.join_rows("000001", [a, b], [a], AT)


def _year(ex: date, ratio: int) -> list[dict]:
    """A symbol's rows around one split on ``ex`` (raw = adjusted x ratio before it)."""
    rows = []
    for i, day in enumerate([date(2023, 3, d) for d in range(1, 11)]):
        adj = 1000 + 10 * i
        r = ratio if day < ex else 1
        marks = {
            "flng_cls_code": "00",
            "mod_yn": "Y" if day == ex else "N",
            "prtt_rate": "5.00" if day == ex else "0.00",
        }
        rows.append(
            (
                _bar(day, adj * r, adj * r + 5 * r, adj * r - 5 * r, adj * r, 100 // r, marks),
                _bar(day, adj, adj + 5, adj - 5, adj, 100),
            )
        )
    return bars.join_rows("000001", [x for x, _ in rows], [y for _, y in rows], AT)


def test_a_split_is_found_and_a_consistent_table_has_no_problems():
    t = bars.to_table(_year(date(2023, 3, 6), 5))
    assert bars.problems(t) == []
    (ev,) = bars.events_in(t)
    assert ev["code"] == "000001" and ev["ex_date"] == date(2023, 3, 6) and ev["ratio"] == 5.0
    assert ev["mod_yn"] == "Y" and ev["prtt_rate"] == "5.00"


def test_problems_name_duplicates_and_a_raw_price_off_its_span_factor():
    rows = _year(date(2023, 3, 6), 5)
    rows[1] = {**rows[1], "high": rows[1]["high"] + 400}  # a raw high that is no longer adjusted x 5
    t = bars.to_table([*rows, rows[-1]])
    found = bars.problems(t)
    assert "1 duplicate (code, day) rows" in found
    assert any("2023-03-02: high" in p for p in found), found
