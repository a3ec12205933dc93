"""The real KRX names the exchange carries at the top of its market: the codes people try first must answer.

In process: which listings every sim size keeps, that nothing generated takes a real code, and that the real
ones are the largest by market cap and index members. Over loopback HTTP: a quote, a name, the masters and
the product info for 005930, as a first curl would see them.
"""

from __future__ import annotations

from datetime import date

import httpx
import pytest

from local_exchange.listings import KNOWN_LISTINGS, generate_listings
from local_exchange.market import Market
from local_exchange.master import build_master_zip
from local_exchange.rest import HANDLERS
from observer_resources.kis.masters import parse_master_zip

from ._wire import Kis

DAY = date(2026, 3, 10)
REAL = {
    "005930": "삼성전자",
    "005935": "삼성전자우",
    "000660": "SK하이닉스",
    "373220": "LG에너지솔루션",
    "207940": "삼성바이오로직스",
    "005380": "현대차",
    "000270": "기아",
    "068270": "셀트리온",
    "035420": "NAVER",
    "035720": "카카오",
    "051910": "LG화학",
    "006400": "삼성SDI",
    "005490": "POSCO홀딩스",
    "105560": "KB금융",
    "055550": "신한지주",
    "012330": "현대모비스",
    "066570": "LG전자",
    "017670": "SK텔레콤",
    "030200": "KT",
    "015760": "한국전력",
    "247540": "에코프로비엠",
    "086520": "에코프로",
    "196170": "알테오젠",
    "028300": "HLB",
}
KOSDAQ = {"247540", "086520", "196170", "028300"}
# plausible price bands (KRW), wide enough for years of the daily chain's drift
BANDS = {"005930": (30_000, 150_000), "000660": (80_000, 400_000), "207940": (450_000, 2_000_000)}


def test_the_table_is_the_brief() -> None:
    assert {k.code: k.name for k in KNOWN_LISTINGS} == REAL
    assert {k.code for k in KNOWN_LISTINGS if k.market == "kosdaq"} == KOSDAQ


@pytest.mark.parametrize(("seed", "n"), [(0, 2600), (7, 600), (5, 300), (11, 600), (3, 400)])
def test_every_sim_size_carries_the_real_names_and_generates_around_them(seed: int, n: int) -> None:
    xs = generate_listings(seed, n)
    assert len(xs) == n and len({x.code for x in xs}) == n and len({x.name for x in xs}) == n
    by_code = {x.code: x for x in xs}
    for code, name in REAL.items():
        x = by_code[code]
        assert x.name == name and x.market == ("kosdaq" if code in KOSDAQ else "kospi") and x.is_stock
        assert not (x.halted or x.liquidation or x.administrative) and x.alarm == "00" and x.activity >= 0.1
        assert x.isin == f"KR7{code}00" + x.isin[-1]
    pref = by_code["005935"]
    assert pref.preferred and pref.parent == "005930" and not by_code["005930"].preferred
    # nothing generated shares a real code's first five digits (a generated preferred would derive a real code)
    prefixes = {c[:5] for c in REAL}
    assert all(x.code[:5] not in prefixes for x in xs if x.code not in REAL and len(x.code) == 6)
    # 삼성전자 leads the busy head; every real common share is busy when the sim has room for it
    assert max(xs, key=lambda x: x.activity).code == "005930"


def test_same_seed_same_market_with_the_real_names() -> None:
    assert generate_listings(9, 600) == generate_listings(9, 600)
    a, b = generate_listings(9, 600), generate_listings(10, 600)
    assert [x for x in a if x.code in REAL] == [x for x in b if x.code in REAL]  # a fixed head ...
    assert {x.code for x in a} - set(REAL) != {x.code for x in b} - set(REAL)  # ... over a generated body
    prices = [Market(seed=s, listings=300).prev_close("005930", DAY) for s in (9, 10)]
    assert prices[0] != prices[1]  # the real names' prices are the seed's own


def test_a_tiny_sim_keeps_the_head_of_the_table() -> None:
    xs = {x.code: x for x in generate_listings(5, 20)}
    assert len(xs) == 20 and {"005930", "005935", "000660", "247540"} <= set(xs)
    assert xs["005935"].parent == "005930"
    (only,) = generate_listings(5, 1)  # one slot: the mix gives it to KOSDAQ, whose largest name takes it
    assert only.code == "247540"


@pytest.mark.parametrize(("seed", "n"), [(4, 2600), (5, 300)])
def test_real_names_are_the_largest_and_in_their_index(seed: int, n: int) -> None:
    market = Market(seed=seed, listings=n)
    for d in (date(2018, 1, 3), date(2022, 6, 15), DAY, date(2030, 12, 30)):
        cap = {x.code: market.prev_close(x.code, d) * x.listed_shares for x in market.listings}
        top = sorted(cap, key=lambda c: -cap[c])[: len(REAL)]
        assert set(top) == set(REAL), d
        assert top[0] == "005930"
    for code, (lo, hi) in BANDS.items():
        assert lo <= market.prev_close(code, DAY) <= hi, code
    rows = {}
    for which in ("kospi", "kosdaq"):
        rows.update({r.code: r for r in parse_master_zip(build_master_zip(market, which, DAY), which)})
    for code, name in REAL.items():
        r = rows[code]
        assert r.name == name
        if code == "005935":
            assert r.preferred and r.fields["preferred_code"] == "1" and not r.kospi200
        elif code in KOSDAQ:
            assert r.kosdaq150 and r.fields["cap_size"] == "1" and not r.preferred
        else:
            assert r.kospi200 and r.fields["cap_size"] == "1" and not r.preferred
        assert not (r.unfaithful_disclosure or r.warning_notice or r.low_liquidity), code
    assert rows["005930"].fields["krx_semi"] == rows["000660"].fields["krx_semi"] == "Y"
    assert rows["005935"].sector_large == rows["005930"].sector_large


def test_the_first_curl_answers_for_samsung_electronics(sim, make_creds) -> None:
    kis = Kis(sim, make_creds(601))
    try:
        q = kis.ok("inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
        o = q["output"]
        price, base = int(o["stck_prpr"]), int(o["stck_sdpr"])
        assert o["stck_shrn_iscd"] == "005930" and 30_000 <= price <= 150_000 and 30_000 <= base <= 150_000
        assert int(o["stck_llam"]) <= price <= int(o["stck_mxpr"]) and int(o["acml_vol"]) > 0
        assert int(o["lstn_stcn"]) == 5_969_782_550 and int(o["hts_avls"]) > 1_000_000  # hundreds of trillions
        multi = kis.ok(
            "intstock-multprice", "FHKST11300006", {"FID_COND_MRKT_DIV_CODE_1": "J", "FID_INPUT_ISCD_1": "005930"}
        )
        (row,) = multi["output"]
        assert (row["inter_shrn_iscd"], row["inter_kor_isnm"]) == ("005930", "삼성전자")
        info = kis.ok("search-info", "CTPF1604R", {"PDNO": "005930", "PRDT_TYPE_CD": "300"})["output"]
        assert (info["shtn_pdno"], info["prdt_name"], info["std_pdno"]) == ("005930", "삼성전자", "KR7005930003")
        pref = kis.ok("search-info", "CTPF1604R", {"PDNO": "005935", "PRDT_TYPE_CD": "300"})["output"]
        assert pref["prdt_name"] == "삼성전자우"
        if "search-stock-info" in HANDLERS:  # CTPF1002R, where the exchange serves it
            stock = kis.ok("search-stock-info", "CTPF1002R", {"PRDT_TYPE_CD": "300", "PDNO": "005930"})["output"]
            assert (stock["prdt_abrv_name"], stock["std_pdno"]) == ("삼성전자", "KR7005930003")
            assert stock["pdno"].endswith("005930") and stock["mket_id_cd"] == "STK"
    finally:
        kis.close()
    kospi = httpx.get(f"{sim.rest_url}/common/master/kospi_code.mst.zip", timeout=60)
    assert kospi.status_code == 200
    rows = {r.code: r for r in parse_master_zip(kospi.content, "kospi")}
    assert rows["005930"].name == "삼성전자" and rows["005930"].kospi200
    assert rows["005935"].name == "삼성전자우" and rows["005935"].preferred
    kosdaq = httpx.get(f"{sim.rest_url}/common/master/kosdaq_code.mst.zip", timeout=60)
    rows = {r.code: r for r in parse_master_zip(kosdaq.content, "kosdaq")}
    assert rows["247540"].name == "에코프로비엠" and rows["247540"].kosdaq150
