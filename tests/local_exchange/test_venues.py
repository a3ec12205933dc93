"""NXT membership in the sim (local_exchange/venues.py), the admin ground truth, and search-stock-info (CTPF1002R)
on the wire (docs/local-exchange.md "Venues", docs/kis-protocol.md §6.10)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from local_exchange.listings import KNOWN_CODES
from local_exchange.market import Market
from local_exchange.master import build_master_zip
from local_exchange.venues import Venues, index_members
from observer_resources.kis.masters import parse_master_zip

from ._wire import Kis

DAY = date(2026, 3, 10)  # Q1 2026: the list starts 2026-01-01 and is cut on 2026-02-12
DOCS = Path(__file__).parents[2] / "docs" / "kis-protocol.md"


def appendix_fields(path: str, tr_id: str) -> list[str]:
    """The TR's field list as docs/kis-protocol.md Appendix A gives it (so the docs and the server cannot drift)."""
    head = f"| `{path}` {tr_id}"
    row = next(line for line in DOCS.read_text(encoding="utf-8").splitlines() if line.startswith(head))
    return [f.strip() for f in row.split("|")[2].split(",")]


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=3)  # the default 2,600 listings, KRX calendar


def cap(market: Market, code: str, day: date) -> int:
    return market.prev_close(code, day) * market.by_code[code].listed_shares


def test_quarter_list_is_index_members_plus_the_largest_others(market: Market) -> None:
    p = Venues(market).period(DAY)
    assert (p.start, p.end, p.drop_day) == (date(2026, 1, 1), date(2026, 3, 31), date(2026, 2, 12))
    assert len(p.selected) == 700 and len(p.members(date(2026, 2, 11))) == 700 and len(p.members(DAY)) == 650
    assert len(p.dropped) == 50 and not set(p.dropped) & p.members(DAY)
    assert {"005930", "000660", "247540"} <= p.members(DAY)  # the real large caps are index members
    # NXT takes no halted, administrative, delisting or warning-level stock, index member or not
    clean = {
        x.code
        for x in market.listings
        if not (x.halted or x.administrative or x.liquidation) and x.alarm not in ("02", "03")
    }
    assert p.index_members & clean <= set(p.selected)
    others = [x for x in market.listings if x.is_stock and not x.spac and x.code in clean - p.index_members]
    chosen = [x for x in others if x.code in p.selected]
    left = [x for x in others if x.code not in p.selected]
    assert min(cap(market, x.code, p.start) for x in chosen) >= max(cap(market, x.code, p.start) for x in left)
    assert 1 <= len(p.halted) <= 2 and p.halted <= p.members(DAY) and not p.halted & KNOWN_CODES


def test_launch_next_quarter_and_smaller_sims(market: Market) -> None:
    v = Venues(market)
    assert v.members(date(2025, 3, 3)) == frozenset() and v.period(date(2025, 3, 3)) is None
    launch = v.period(date(2025, 3, 4))
    assert (
        launch.start == date(2025, 3, 4) and launch.drop_day is None and len(launch.members(date(2025, 3, 31))) == 700
    )
    assert v.period(date(2026, 4, 1)).start == date(2026, 4, 1)
    small = Venues(Market(seed=3, listings=600)).period(DAY)
    assert (len(small.selected), len(small.members(DAY))) == (162, 150)  # the same proportions as 700 / 650 of 2,600
    assert Venues(Market(seed=3, listings=600)).period(DAY) == small  # deterministic per seed


def test_index_members_are_the_master_files_constituents() -> None:
    market = Market(seed=5, listings=400)
    day = date(2026, 4, 1)
    kospi = parse_master_zip(build_master_zip(market, "kospi", day), "kospi")
    kosdaq = parse_master_zip(build_master_zip(market, "kosdaq", day), "kosdaq")
    flagged = {r.code for r in kospi if r.kospi200} | {r.code for r in kosdaq if r.kosdaq150}
    assert flagged and index_members(market, day) == flagged


# --- over the wire (the shared sim: open clock, seed 7, 600 listings) ----------------------------------------------


def stock_info(kis: Kis, code: str, kind: str = "300") -> dict:
    return kis.get("search-stock-info", "CTPF1002R", {"PRDT_TYPE_CD": kind, "PDNO": code}).json()


def test_search_stock_info_reports_the_ground_truth(sim, creds) -> None:
    sim.admin("clock", {"at": "2026-02-11T12:00:00+09:00", "speed": 0})
    kis = Kis(sim, creds)
    truth = sim.admin("truth/nxt")
    assert truth["day"] == "20260211" and truth["period"]["drop_day"] == "20260212"
    halted, dropped = truth["halted"][0], truth["dropped"][0]["code"]
    member = next(c for c in truth["members"] if c not in truth["halted"] and c != dropped)
    outsider = next(x["code"] for x in sim.admin("listings")["listings"] if x["code"] not in truth["members"])

    body = stock_info(kis, member)
    assert (body["rt_cd"], body["msg_cd"], body["msg1"].rstrip()) == ("0", "KIOK0530", "조회되었습니다")
    out = body["output"]
    assert list(out) == appendix_fields("search-stock-info", "CTPF1002R") and all(
        isinstance(v, str) for v in out.values()
    )
    assert out["pdno"] == "00000A" + member and out["prdt_type_cd"] == "300"
    flags = {
        c: tuple(stock_info(kis, c)["output"][k] for k in ("cptt_trad_tr_psbl_yn", "nxt_tr_stop_yn"))
        for c in (member, outsider, halted, dropped)
    }
    assert flags == {member: ("Y", "N"), outsider: ("N", "N"), halted: ("Y", "Y"), dropped: ("Y", "N")}
    sim.admin("clock", {"at": "2026-02-12T09:00:00+09:00", "speed": 0})  # the token (24 h) still lives
    assert dropped not in sim.admin("truth/nxt")["members"]
    assert stock_info(kis, dropped)["output"]["cptt_trad_tr_psbl_yn"] == "N"


def test_search_stock_info_errors(sim, creds, sim_factory, make_creds) -> None:
    kis = Kis(sim, creds)
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    assert stock_info(kis, "999990")["rt_cd"] == "7"
    assert stock_info(kis, code, "301")["rt_cd"] == "7"  # futures and options: nothing listed in the sim
    bad = stock_info(kis, code, "9")
    assert (bad["rt_cd"], bad["msg_cd"]) == ("2", "OPSQ2001")
    missing = kis.get("search-stock-info", "CTPF1002R", {"PRDT_TYPE_CD": "300"}).json()
    assert (missing["rt_cd"], missing["msg1"]) == ("1", "ERROR INPUT FIELD NOT FOUND [PDNO]")

    paper = sim_factory("--mode", "paper", "--clock", "open", "--listings", "50")
    r = Kis(paper, make_creds(31)).get("search-stock-info", "CTPF1002R", {"PRDT_TYPE_CD": "300", "PDNO": code})
    assert r.status_code == 500 and r.json()["msg1"] == "모의투자 TR 이 아닙니다."


def test_admin_truth_before_launch(sim) -> None:
    truth = sim.admin("truth/nxt", params={"day": "20250303"})
    assert truth["period"] is None and truth["members"] == [] and truth["launch"] == "20250304"
    assert re.fullmatch(r"\d{8}", sim.admin("truth/nxt", params={"day": "2025-03-04"})["period"]["start"])
