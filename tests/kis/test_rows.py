"""The KIS row converters on hand-built JSON (no exchange, no client): the client and the Track B restore both
rely on these, so their edge cases are pinned here."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisResponseError
from observer_resources.kis.rows import (
    conclusion_from,
    hhmmss,
    holiday_from,
    output_rows,
    product_info_from,
    typed_row,
    yyyymmdd,
)

DAY = date(2026, 3, 10)
TICK = {
    "stck_cntg_hour": "093015",
    "stck_pbpr": "71200",
    "prdy_vrss": "-300",
    "prdy_vrss_sign": "5",
    "prdy_ctrt": "-0.42",
    "askp": "71300",
    "bidp": "0",
    "tday_rltv": "101.5",
    "acml_vol": "123.00",
    "cnqn": "",
}


def test_conclusion_is_stamped_with_the_serving_day_and_keeps_what_kis_sent() -> None:
    c = conclusion_from(TICK, DAY)
    assert c.at == datetime(2026, 3, 10, 9, 30, 15, tzinfo=KST)
    assert (c.price, c.change, c.change_rate) == (71200, -300, -0.42)
    assert (c.ask1, c.bid1) == (71300, None)  # a 0 best bid is "none", never 0
    assert (c.acml_vol, c.qty) == (123, 0)  # '123.00' in an integer column; '' is 0
    assert c.raw == TICK


def test_yes_no_flags_and_optional_dates() -> None:
    h = holiday_from(
        {
            "bass_dt": "20260310",
            "wday_dvsn_cd": "3",
            "bzdy_yn": "Y",
            "tr_day_yn": "y",
            "opnd_yn": "N",
            "sttl_day_yn": "",
        }
    )
    assert (h.day, h.business_day, h.transaction_day, h.market_open, h.settlement_day) == (
        DAY,
        True,
        True,
        False,
        False,
    )
    assert product_info_from({"pdno": "005930"}).first_listed is None


def test_a_bad_value_names_the_tr() -> None:
    with pytest.raises(KisResponseError, match=f"{p.TR_TIME_CONCLUSION}: cannot type row"):
        typed_row(p.TR_TIME_CONCLUSION, lambda o: conclusion_from(o, DAY), {**TICK, "stck_cntg_hour": "9:30"})
    with pytest.raises(KisResponseError, match="expected an object row"):
        typed_row(p.TR_TIME_CONCLUSION, lambda o: conclusion_from(o, DAY), ["093015"])


def test_output_rows_accepts_list_object_or_nothing() -> None:
    assert output_rows({"output": [{"a": 1}]}, "output") == [{"a": 1}]
    assert output_rows({"output": {"a": 1}}, "output") == [{"a": 1}]
    assert output_rows({"output": ""}, "output") == output_rows({}, "output") == []
    with pytest.raises(KisResponseError):
        output_rows({"output": "x"}, "output")


def test_request_parameters_are_validated_before_sending() -> None:
    assert yyyymmdd(DAY) == "20260310"
    assert hhmmss(time(9, 5, 0)) == hhmmss("090500") == "090500"
    with pytest.raises(ValueError):
        hhmmss("9:05")
