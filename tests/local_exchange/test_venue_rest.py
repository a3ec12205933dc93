"""The quote and chart TRs per venue (J / NX / UN) over real loopback HTTP, checked against the exchange's truth.

NX rows are NXT's own trades, UN rows the merged tape (volume KRX's plus NXT's), J rows KRX's as before
(docs/local-exchange.md, Venues).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from ._wire import Kis

DAY = "2026-03-04"  # an ordinary Wednesday, after NXT's launch
NEXT_DAY = "2026-03-05"
PREV_DAY = "20260303"
CODE = "005930"  # a real large cap, always an NXT member
DIVS = ("J", "NX", "UN")
VENUE = {"J": "KRX", "NX": "NXT", "UN": "UN"}


@pytest.fixture
def kis(sim_factory: Any, creds: tuple[str, str]) -> Any:
    sim = sim_factory(
        "--clock",
        "krx",
        "--speed",
        "0",
        "--seed",
        "7",
        "--listings",
        "300",
        "--rate-real",
        "1000",
        "--start",
        f"{DAY}T11:00:00+09:00",
    )
    k = Kis(sim, creds)
    k.token()
    yield k
    k.close()


def _at(kis: Kis, when: str) -> None:
    kis.sim.admin("/clock", json={"at": f"{when}:00+09:00"}, method="POST")


def _truth(kis: Kis, venue: str, to: str = "235959", day: str = DAY, code: str = CODE) -> list[dict[str, Any]]:
    body = kis.sim.admin(
        "/truth/ticks",
        params={"code": code, "day": day.replace("-", ""), "to": to, "venue": venue, "records": "0"},
    )
    return body["ticks"]


def _ok(r: Any) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rt_cd"] == "0", body
    return body


def _conclusion(kis: Kis, div: str, hour: str, code: str = CODE, tr_cont: str = "") -> Any:
    params = {"FID_COND_MRKT_DIV_CODE": div, "FID_INPUT_ISCD": code, "FID_INPUT_HOUR_1": hour}
    return kis.get("inquire-time-itemconclusion", "FHPST01060000", params, tr_cont=tr_cont)


def _minutes(kis: Kis, div: str, hour: str, code: str = CODE) -> Any:
    params = {
        "FID_ETC_CLS_CODE": "",
        "FID_COND_MRKT_DIV_CODE": div,
        "FID_INPUT_ISCD": code,
        "FID_INPUT_HOUR_1": hour,
        "FID_PW_DATA_INCU_YN": "Y",
    }
    return kis.get("inquire-time-itemchartprice", "FHKST03010200", params)


def _daily(kis: Kis, div: str, code: str = CODE) -> Any:
    params = {
        "FID_COND_MRKT_DIV_CODE": div,
        "FID_INPUT_ISCD": code,
        "FID_INPUT_DATE_1": "20260201",
        "FID_INPUT_DATE_2": DAY.replace("-", ""),
        "FID_PERIOD_DIV_CODE": "D",
        "FID_ORG_ADJ_PRC": "0",
    }
    return kis.get("inquire-daily-itemchartprice", "FHKST03010100", params)


def _price_vol(kis: Kis, div: str, code: str = CODE) -> int:
    r = kis.get("inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": div, "FID_INPUT_ISCD": code})
    return int(_ok(r)["output"]["acml_vol"])


def _per_minute(ticks: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Truth ticks as minute bars: {HHMM00: volume, close, open, high, low}."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for t in ticks:
        b = out[t["time"][:4] + "00"]
        b["volume"] = b.get("volume", 0) + t["qty"]
        b.setdefault("open", t["price"])
        b["close"] = t["price"]
        b["high"] = max(b.get("high", t["price"]), t["price"])
        b["low"] = min(b.get("low", t["price"]), t["price"])
    return out


def _non_member(kis: Kis) -> str:
    members = set(kis.sim.admin("/truth/nxt", params={"day": DAY.replace("-", "")})["members"])
    rows = kis.sim.admin("/listings", params={"market": "kospi"})["listings"]
    return next(r["code"] for r in rows if r["code"] not in members)


def test_conclusion_rows_are_the_venue_tape(kis: Kis) -> None:
    for div in DIVS:
        truth = _truth(kis, VENUE[div], "110000")
        body = _ok(_conclusion(kis, div, "110000"))
        rows = body["output2"]
        assert len(rows) == 30
        want = truth[::-1][:30]
        assert [r["stck_cntg_hour"] for r in rows] == [t["time"] for t in want]
        assert [int(r["stck_pbpr"]) for r in rows] == [t["price"] for t in want]
        assert [int(r["cnqn"]) for r in rows] == [t["qty"] for t in want]
        assert [int(r["acml_vol"]) for r in rows] == [t["acml_vol"] for t in want]
        assert int(body["output1"]["acml_vol"]) == truth[-1]["acml_vol"] == _price_vol(kis, div)
    j, nx, un = (_truth(kis, VENUE[d], "110000")[-1]["acml_vol"] for d in DIVS)
    assert 0 < nx < j and un == j + nx


def test_conclusion_pages_cover_the_nxt_tape_once(kis: Kis) -> None:
    truth = _truth(kis, "NXT", "093000")
    got: list[dict[str, str]] = []
    r = _conclusion(kis, "NX", "093000")
    while True:
        got += _ok(r)["output2"]
        if r.headers["tr_cont"] != "M":
            break
        r = _conclusion(kis, "NX", "093000", tr_cont="N")
    assert len(truth) > 30
    assert [(g["stck_cntg_hour"], int(g["acml_vol"])) for g in got] == [
        (t["time"], t["acml_vol"]) for t in reversed(truth)
    ]


def test_minute_bars_per_venue(kis: Kis) -> None:
    bars = {div: _ok(_minutes(kis, div, "110000"))["output2"] for div in DIVS}
    truth = {div: _per_minute(_truth(kis, VENUE[div], "110000")) for div in DIVS}  # the clock is at 11:00:00
    for div in DIVS:
        rows = bars[div]
        assert len(rows) == 30
        assert rows[0]["stck_cntg_hour"] == "110000" and rows[-1]["stck_cntg_hour"] == "103100"
        for r in rows:
            t = truth[div].get(r["stck_cntg_hour"])
            assert int(r["cntg_vol"]) == (t["volume"] if t else 0), (div, r)
            if t:
                got = [int(r[k]) for k in ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_prpr")]
                assert got == [t["open"], t["high"], t["low"], t["close"]], (div, r)
    assert any(int(r["cntg_vol"]) for r in bars["NX"])
    for j, nx, un in zip(bars["J"], bars["NX"], bars["UN"], strict=True):
        assert j["stck_cntg_hour"] == nx["stck_cntg_hour"] == un["stck_cntg_hour"]
        assert int(un["cntg_vol"]) == int(j["cntg_vol"]) + int(nx["cntg_vol"])
        assert int(un["acml_tr_pbmn"]) == int(j["acml_tr_pbmn"]) + int(nx["acml_tr_pbmn"])


def test_nxt_premarket_and_break_minutes(kis: Kis) -> None:
    assert _ok(_minutes(kis, "J", "084500"))["output2"] == []  # KRX has not opened at 08:45
    nx = _ok(_minutes(kis, "NX", "084500"))["output2"]
    un = _ok(_minutes(kis, "UN", "084500"))["output2"]
    assert [r["stck_cntg_hour"] for r in nx] == [f"08{m:02d}00" for m in range(45, 15, -1)]
    assert un == nx  # only NXT trades before 09:00
    hours = [r["stck_cntg_hour"] for r in _ok(_minutes(kis, "NX", "090500"))["output2"]]
    # NXT's pre-market ends at 08:50 and its main market opens at 09:00:30: no bars in between
    assert hours[:6] == [f"09{m:02d}00" for m in range(5, -1, -1)] and hours[6] == "084900"


def test_minute_history_and_daily_bars(kis: Kis) -> None:
    params = {
        "FID_COND_MRKT_DIV_CODE": "NX",
        "FID_INPUT_ISCD": CODE,
        "FID_INPUT_DATE_1": DAY.replace("-", ""),
        "FID_INPUT_HOUR_1": "110000",
        "FID_PW_DATA_INCU_YN": "Y",
        "FID_FAKE_TICK_INCU_YN": "",
    }
    hist = _ok(kis.get("inquire-time-dailychartprice", "FHKST03010230", params))["output2"]
    assert hist[:30] == _ok(_minutes(kis, "NX", "110000"))["output2"]
    assert len(hist) == 120 and not any("085000" <= r["stck_cntg_hour"] < "090000" for r in hist)

    daily = {div: _ok(_daily(kis, div)) for div in DIVS}
    for div in DIVS:
        assert int(daily[div]["output2"][0]["acml_vol"]) == _price_vol(kis, div)
    prev = {
        div: int(next(r for r in daily[div]["output2"] if r["stck_bsop_date"] == PREV_DAY)["acml_vol"]) for div in DIVS
    }
    assert prev["NX"] == _truth(kis, "NXT", day=PREV_DAY)[-1]["acml_vol"]
    assert prev["UN"] == prev["J"] + prev["NX"]
    assert int(daily["UN"]["output1"]["prdy_vol"]) == prev["UN"]
    for div in DIVS:
        params = {
            "FID_COND_MRKT_DIV_CODE": div,
            "FID_INPUT_ISCD": CODE,
            "FID_PERIOD_DIV_CODE": "D",
            "FID_ORG_ADJ_PRC": "0",
        }
        rows = _ok(kis.get("inquire-daily-price", "FHKST01010400", params))["output"]
        assert int(rows[0]["acml_vol"]) == _price_vol(kis, div) and int(rows[1]["acml_vol"]) == prev[div]


def test_multprice_rows_per_venue(kis: Kis) -> None:
    other = _non_member(kis)
    params = {}
    for n, (div, code) in enumerate((("J", CODE), ("NX", CODE), ("UN", CODE), ("NX", other), ("J", other)), 1):
        params[f"FID_COND_MRKT_DIV_CODE_{n}"] = div
        params[f"FID_INPUT_ISCD_{n}"] = code
    rows = _ok(kis.get("intstock-multprice", "FHKST11300006", params))["output"]
    assert [r["inter_shrn_iscd"] for r in rows] == [CODE, CODE, CODE, other]  # NX for a non-member is left out
    assert [int(r["acml_vol"]) for r in rows[:3]] == [_price_vol(kis, d) for d in DIVS]


def test_non_member_on_nx_and_un(kis: Kis) -> None:
    code = _non_member(kis)
    for r in (_conclusion(kis, "NX", "110000", code), _minutes(kis, "NX", "110000", code), _daily(kis, "NX", code)):
        body = r.json()
        assert body["rt_cd"] == "7" and body["msg_cd"] == "KIOK0560", body
    # without NXT trades the unified tape is KRX's, so UN answers exactly as J
    for call in (_conclusion, _minutes):
        j, un = _ok(call(kis, "J", "110000", code)), _ok(call(kis, "UN", "110000", code))
        assert un["output1"] == j["output1"] and un["output2"] == j["output2"]
    assert _ok(_daily(kis, "UN", code))["output2"] == _ok(_daily(kis, "J", code))["output2"]


def test_nx_outside_nxt_hours(kis: Kis) -> None:
    # 21:00: NXT closed at 20:00; the whole NXT day is there, the last bar is 19:59
    _at(kis, f"{DAY}T21:00")
    total = _truth(kis, "NXT")[-1]
    body = _ok(_conclusion(kis, "NX", "210000"))
    assert body["output2"][0]["stck_cntg_hour"] == total["time"] < "200000"
    assert int(body["output2"][0]["acml_vol"]) == total["acml_vol"]
    assert _ok(_minutes(kis, "NX", "210000"))["output2"][0]["stck_cntg_hour"] == "195900"
    # 07:30 next day: before NXT's pre-market there are no trades yet, an empty answer rather than an error
    _at(kis, f"{NEXT_DAY}T07:30")
    body = _ok(_conclusion(kis, "NX", "073000"))
    assert body["output2"] == [] and body["output1"]["acml_vol"] == "0"
    assert _ok(_minutes(kis, "NX", "073000"))["output2"] == []


def test_inquire_ccnl_is_the_latest_30_trades_of_each_venue(kis: Kis) -> None:
    """FHKST01010300 as KIS samples call it: seven fields, newest first, each venue's own trades."""
    for div in DIVS:
        body = _ok(kis.get("inquire-ccnl", "FHKST01010300", {"FID_COND_MRKT_DIV_CODE": div, "FID_INPUT_ISCD": CODE}))
        rows = body["output"]
        truth = _truth(kis, VENUE[div], to="110000")[-30:][::-1]
        assert len(rows) == 30 and list(rows[0]) == [
            "stck_cntg_hour",
            "stck_prpr",
            "prdy_vrss",
            "prdy_vrss_sign",
            "cntg_vol",
            "tday_rltv",
            "prdy_ctrt",
        ]
        assert [(r["stck_cntg_hour"], int(r["stck_prpr"]), int(r["cntg_vol"])) for r in rows] == [
            (t["time"], t["price"], t["qty"]) for t in truth
        ]
        assert all(float(r["tday_rltv"]) > 0 for r in rows)
    _at(kis, f"{DAY}T07:30")  # before NXT's pre-market: no NXT trade yet today, an empty answer
    body = _ok(kis.get("inquire-ccnl", "FHKST01010300", {"FID_COND_MRKT_DIV_CODE": "NX", "FID_INPUT_ISCD": CODE}))
    assert body["output"] == []
