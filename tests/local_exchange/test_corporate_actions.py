"""The exchange's corporate actions and its tick-free deep past, as pure functions of the market (no server)."""

from datetime import date, datetime

from local_exchange import corporate_actions as ca
from local_exchange import history
from local_exchange.market import Market
from local_exchange.ticks import price_limits, round_to_grid
from observer_resources.calendar import KST

AS_OF = datetime(2026, 12, 4, 21, 0, tzinfo=KST)


def _events(m: Market) -> list[ca.CorporateAction]:
    return [e for x in m.listings for e in ca.actions_of(m, x.code)]


def test_events_are_deterministic_placed_on_trading_days_of_the_deep_past():
    a, b = Market(seed=3, listings=200), Market(seed=3, listings=200)
    ev = _events(a)
    assert ev == _events(b) and ev != _events(Market(seed=4, listings=200))
    assert 30 <= len({e.code for e in ev}) <= 90  # about 30 % of listings
    assert {e.kind for e in ev} == {"split", "rights"}
    for e in ev:
        assert ca.EVENTS_FROM <= e.ex_date <= ca.EVENTS_UNTIL and a.is_trading_day(e.ex_date)
        assert e.ratio in (5, 10) if e.kind == "split" else 1 < e.ratio <= 10_000 / 8_000


def test_raw_is_adjusted_times_the_later_events_and_equal_from_the_last_ex_date():
    m = Market(seed=3, listings=200)
    e = next(x for x in _events(m) if x.kind == "split")
    bars = m.daily_bars(e.code, date(2023, 12, 31), 2000, as_of=AS_OF)  # newest first
    for b in bars:
        r = ca.as_raw(m, e.code, b)
        ratio = ca.ratio_on(m, e.code, b.day)
        assert r.value == b.value
        if b.day >= max(x.ex_date for x in ca.actions_of(m, e.code)):
            assert r == b
        else:
            assert r.close == round_to_grid(float(b.close * ratio)) and r.volume == round(float(b.volume / ratio))
    assert ca.markers_on(m, e.code, e.ex_date) == {
        "flng_cls_code": "00",
        "mod_yn": "Y",
        "prtt_rate": f"{float(e.ratio):.2f}",
    }
    assert ca.markers_on(m, e.code, date(2026, 11, 2))["mod_yn"] == "N"


def test_the_deep_past_has_closed_form_bars_and_recent_days_still_summarise_their_ticks():
    m = Market(seed=3, listings=50)
    code = next(x.code for x in m.listings if not x.halted)
    old = m.daily_bars(code, date(2023, 12, 29), 60, as_of=AS_OF)
    assert old == Market(seed=3, listings=50).daily_bars(code, date(2023, 12, 29), 60, as_of=AS_OF)
    for b in old:
        assert (
            b.day < history.TICKS_FROM and b.close == m.close(code, b.day) and b.prev_close == m.prev_close(code, b.day)
        )
        lo, hi = price_limits(b.prev_close)
        assert lo <= b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high <= hi and b.volume > 0
    (recent,) = m.daily_bars(code, date(2025, 6, 2), 1, as_of=AS_OF)
    t = m.day_ticks(code, recent.day)
    assert (recent.open, recent.close, recent.volume) == (int(t.price[0]), int(t.price[-1]), int(t.acml_vol[-1]))
