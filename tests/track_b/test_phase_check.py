"""The market-status feed checked against the phase table: agreement inside a phase and around a boundary,
disagreement on a late open the table does not know and on a code the documentation does not list."""

from __future__ import annotations

from datetime import date, datetime

from observer_assets.track_b.phase_check import check, reading
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.kis import protocol as p

KRX = MarketCalendar("krx")
DAY = date(2026, 12, 1)


def at(hh: int, mm: int, ss: int = 0, d: date = DAY) -> datetime:
    return datetime(d.year, d.month, d.day, hh, mm, ss, tzinfo=KST)


def krx_status(phase: str | None, code: str = "005930") -> tuple[str, ...]:
    return (code, "N", "", p.STATUS_PHASE_CODES[phase], "00", "1", "0", "00", "N", "N", p.STATUS_EXCH_CODES["KRX"])


def test_a_status_inside_its_phase_agrees():
    r = reading("H0STMKO0", krx_status("regular"))
    assert r.venue == "KRX" and r.code == "005930" and not r.halted
    v = check(KRX, r, at(11, 0))
    assert v.agrees and v.expected_phases == ("regular",)


def test_around_a_boundary_either_side_agrees_beyond_the_tolerance_not():
    early = reading("H0STMKO0", krx_status("regular"))
    assert check(KRX, early, at(8, 59, 30)).agrees  # announced as it happened, received just before 09:00 here
    assert not check(KRX, early, at(8, 45)).agrees  # the table says the opening auction runs until 09:00
    late = reading("H0STMKO0", krx_status("opening_auction"))
    assert check(KRX, late, at(9, 0, 40)).agrees and not check(KRX, late, at(9, 5)).agrees


def test_a_late_open_the_table_does_not_know_is_a_disagreement():
    # the exchange still in its opening auction at 09:40, as on a day it delayed the open
    v = check(KRX, reading("H0STMKO0", krx_status("opening_auction")), at(9, 40))
    assert not v.agrees and v.received == "12" and v.expected == ("20",) and v.expected_phases == ("regular",)


def test_between_phases_and_on_a_closed_day_the_table_expects_no_phase():
    nxt = reading("H0NXMKO0", (*krx_status(None)[:-1], p.STATUS_EXCH_CODES["NXT"]))
    assert nxt.venue == "NXT"
    assert check(KRX, nxt, at(8, 55)).agrees  # NXT's break 08:50-09:00:30
    assert check(KRX, reading("H0STMKO0", krx_status(None)), at(11, 0, d=date(2026, 12, 5))).agrees  # Saturday
    assert not check(KRX, reading("H0STMKO0", krx_status("regular")), at(11, 0, d=date(2026, 12, 5))).agrees


def test_the_unified_feed_names_its_venue_and_an_unknown_code_never_agrees():
    un = reading("H0UNMKO0", krx_status("main")[1:-1] + (p.STATUS_EXCH_CODES["NXT"],))
    assert un.venue == "NXT" and un.code is None and check(KRX, un, at(10, 0)).agrees
    odd = reading("H0STMKO0", (*krx_status("regular")[:3], "57", *krx_status("regular")[4:]))
    v = check(KRX, odd, at(11, 0))
    assert not v.agrees and "does not list" in v.note
    after = check(KRX, reading("H0STMKO0", krx_status("regular")), at(15, 30))
    assert not after.agrees and "regular" not in after.expected_phases  # the regular session ended at 15:20
