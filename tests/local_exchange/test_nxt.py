"""NXT's own trades and the NX / UN market codes, over real loopback HTTP (docs/local-exchange.md, Venues)."""

from __future__ import annotations

from typing import Any

import pytest

from ._wire import Kis

DAY = "2026-03-04"  # an ordinary Wednesday, after NXT's launch
CODE = "005930"  # a real large cap, always an NXT member


@pytest.fixture
def kis(sim_factory: Any, creds: tuple[str, str]) -> Any:
    sim = sim_factory(
        "--clock", "krx", "--speed", "0", "--seed", "7", "--listings", "300", "--start", f"{DAY}T08:30:00+09:00"
    )
    k = Kis(sim, creds)
    k.token()
    yield k
    k.close()


def _at(kis: Kis, hhmm: str) -> None:
    kis.sim.admin("/clock", json={"at": f"{DAY}T{hhmm}:00+09:00"}, method="POST")


def _price(kis: Kis, div: str, code: str = CODE) -> dict[str, Any]:
    r = kis.get("inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": div, "FID_INPUT_ISCD": code})
    assert r.status_code == 200, r.text
    return r.json()


def _vol(kis: Kis, div: str) -> int:
    body = _price(kis, div)
    assert body["rt_cd"] == "0", body
    return int(body["output"]["acml_vol"])


def _truth(kis: Kis, venue: str, to: str) -> list[dict[str, Any]]:
    body = kis.sim.admin(
        "/truth/ticks", params={"code": CODE, "day": DAY.replace("-", ""), "to": to, "venue": venue, "records": "0"}
    )
    assert body["venue"] == venue
    return body["ticks"]


def test_venues_over_the_day(kis: Kis) -> None:
    # 08:30: NXT's pre-market trades, KRX has not opened.
    assert _vol(kis, "J") == 0
    pre = _vol(kis, "NX")
    assert pre > 0 and _vol(kis, "UN") == pre

    # 10:00: both trade; UN is their sum, NXT a minority.
    _at(kis, "10:00")
    j, nx, un = _vol(kis, "J"), _vol(kis, "NX"), _vol(kis, "UN")
    assert 0 < nx < j and un == j + nx
    for venue, vol in (("KRX", j), ("NXT", nx), ("UN", un)):
        assert _truth(kis, venue, "100000")[-1]["acml_vol"] == vol
    krx_last, nxt_last = _truth(kis, "KRX", "100000")[-1], _truth(kis, "NXT", "100000")[-1]
    later = nxt_last if nxt_last["time"] > krx_last["time"] else krx_last
    assert int(_price(kis, "UN")["output"]["stck_prpr"]) == later["price"]
    k_price, n_price = (int(_price(kis, d)["output"]["stck_prpr"]) for d in ("J", "NX"))
    assert abs(k_price - n_price) <= 2 * 100  # within two ticks (100 KRW at this price level)

    # After 16:00 KRX's continuous trading is over; NXT's after-market still trades.
    _at(kis, "16:30")
    j1, nx1 = _vol(kis, "J"), _vol(kis, "NX")
    _at(kis, "19:00")
    assert _vol(kis, "J") == j1 and _vol(kis, "NX") > nx1


def test_non_member_on_nx(kis: Kis) -> None:
    members = set(kis.sim.admin("/truth/nxt", params={"day": DAY.replace("-", "")})["members"])
    rows = kis.sim.admin("/listings", params={"market": "kospi"})["listings"]
    code = next(r["code"] for r in rows if r["code"] not in members)
    _at(kis, "10:00")
    body = _price(kis, "NX", code)
    assert body["rt_cd"] == "7" and body["msg_cd"] == "KIOK0560"
    assert _price(kis, "J", code)["rt_cd"] == "0"
    assert _price(kis, "UN", code)["output"]["acml_vol"] == _price(kis, "J", code)["output"]["acml_vol"]
