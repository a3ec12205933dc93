"""Track B triggers on plain data: Track A snapshot histories and tick sequences (docs/collector-rules.md §4.2)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from observer_assets.track_b.triggers import (
    RANK,
    Candidate,
    SnapRow,
    Snapshot,
    StreamTriggers,
    TriggerConfig,
    bootstrap_candidates,
    snapshot_candidates,
    snapshot_from_rows,
)
from observer_resources.calendar import KST

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=KST)
CFG = TriggerConfig()  # production thresholds: surge 5x, volatility 5 %, velocity 10/s


def snaps(
    series: dict[str, list[tuple[int | None, int | None]]],
    step_min: int = 10,
    start: datetime = T0,
    trade_value: dict[str, int] | None = None,
) -> list[Snapshot]:
    """series: code -> [(price, cumulative volume) per snapshot]; None drops the row."""
    n = max(len(v) for v in series.values())
    out = []
    for i in range(n):
        rows = {}
        for code, pts in series.items():
            if i < len(pts) and pts[i] is not None:
                price, vol = pts[i]
                rows[code] = SnapRow(price, vol, (trade_value or {}).get(code, (vol or 0) * (price or 0)))
        out.append(Snapshot(start + timedelta(minutes=step_min * i), rows))
    return out


# --- snapshots: volume surge ---------------------------------------------------------------------------


def test_surge_uses_interval_volume_not_cumulative() -> None:
    # Intervals 1000, 1000, 6000: a 6x surge. The cumulative figure (8,000 + opening 100,000) is never
    # compared: a symbol with a huge cumulative but flat intervals must not fire.
    h = snaps(
        {
            "005930": [(100, 100_000), (100, 101_000), (100, 102_000), (100, 108_000)],
            "000660": [(100, 5_000_000), (100, 5_010_000), (100, 5_020_000), (100, 5_030_000)],
        }
    )
    cands = snapshot_candidates(h, CFG)
    assert [c.code for c in cands] == ["005930"]
    c = cands[0]
    assert c.trigger == "volume_surge"
    assert c.score == pytest.approx(6.0)
    assert c.detail["interval_volume"] == 6000
    assert c.detail["baseline_volume"] == pytest.approx(1000)
    assert c.detail["history"] == 2
    assert c.detected_at == h[-1].ts


def test_surge_baseline_excludes_current_interval() -> None:
    # Intervals 1000, 1000, 5000. Against the previous two the ratio is 5.0 (fires at 5x); had the
    # current interval been in its own baseline, the mean would be 2333 and the ratio 2.14 (no fire).
    h = snaps({"005930": [(100, 0), (100, 1000), (100, 2000), (100, 7000)]})
    cands = snapshot_candidates(h, CFG)
    assert len(cands) == 1 and cands[0].score == pytest.approx(5.0)


def test_surge_needs_two_history_points() -> None:
    # 09:00, 09:10, 09:20: only one earlier interval -> no baseline yet, whatever the jump.
    h = snaps({"005930": [(100, 0), (100, 1000), (100, 50_000)]})
    assert snapshot_candidates(h, CFG) == []
    # with surge_min_history=1 the same data fires (the rule is the configured count, not luck)
    one = snapshot_candidates(h, TriggerConfig(surge_min_history=1))
    assert [c.code for c in one] == ["005930"] and one[0].score == pytest.approx(49.0)


def test_surge_baseline_window_limits_history() -> None:
    # Early intervals were huge (100,000 each); only earlier intervals that start within the 30 minutes
    # before the current snapshot count: at 10:00 the current interval is (09:50,10:00] and the
    # baseline is (09:30,09:40] and (09:40,09:50] = 1,000 each -> 6x. With all history it would be 0.1x.
    vols = [0, 100_000, 200_000, 300_000, 301_000, 302_000, 308_000]
    h = snaps({"005930": [(100, v) for v in vols]})
    c = snapshot_candidates(h, CFG)
    assert len(c) == 1 and c[0].score == pytest.approx(6.0)
    assert c[0].detail["history"] == 2
    # a 60-minute window takes the huge intervals in and the surge disappears
    assert snapshot_candidates(h, TriggerConfig(surge_window=timedelta(minutes=60))) == []


def test_surge_cumulative_drop_is_not_an_interval() -> None:
    # A cumulative that goes down (bad data) gives no interval; the next pair still works.
    h = snaps({"005930": [(100, 10_000), (100, 11_000), (100, 500), (100, 1_500), (100, 2_500), (100, 12_500)]})
    c = snapshot_candidates(h, CFG)
    # intervals: 1000, (drop skipped), 1000, 1000, 10000 -> baseline (last 30 min) = 1000, 1000 -> 10x
    assert len(c) == 1 and c[0].score == pytest.approx(10.0)
    # and the drop itself is never a candidate: history ending at the drop gives nothing
    assert snapshot_candidates(h[:3], CFG) == []


def test_surge_normalises_a_missed_cycle() -> None:
    # 09:00, 09:10, 09:20, then 09:40 (09:30 missed): 2000 in 20 minutes is the same rate as 1000/10 min.
    h = [
        Snapshot(T0 + timedelta(minutes=m), {"005930": SnapRow(100, v, v * 100)})
        for m, v in ((0, 0), (10, 1000), (20, 2000), (40, 4000))
    ]
    assert snapshot_candidates(h, CFG) == []


def test_zero_baseline_gives_no_ratio() -> None:
    h = snaps({"005930": [(100, 0), (100, 0), (100, 0), (100, 9000)]})
    assert snapshot_candidates(h, CFG) == []


def test_surge_fires_at_ratio_and_not_below() -> None:
    h_at = snaps({"A00001": [(100, 0), (100, 1000), (100, 2000), (100, 7000)]})
    h_below = snaps({"A00001": [(100, 0), (100, 1000), (100, 2000), (100, 6999)]})
    assert len(snapshot_candidates(h_at, CFG)) == 1
    assert snapshot_candidates(h_below, CFG) == []


# --- snapshots: volatility ---------------------------------------------------------------------------------


def test_volatility_on_consecutive_snapshots() -> None:
    # 10,000 -> 10,000 -> 10,600: +6 % over the last interval fires; the earlier price does not matter.
    h = snaps({"035720": [(9_000, 0), (10_000, 10), (10_600, 20)]})
    c = snapshot_candidates(h, CFG)
    assert [x.trigger for x in c] == ["volatility"]
    assert c[0].score == pytest.approx(6.0)
    assert c[0].detail["ref_price"] == 10_000
    # 9,000 -> 10,000 happened one interval earlier; it is not this interval's move
    h2 = snaps({"035720": [(9_000, 0), (10_000, 10), (10_100, 20)]})
    assert snapshot_candidates(h2, CFG) == []


def test_volatility_down_move_and_missing_previous_row() -> None:
    h = snaps({"035720": [(10_000, 0), (9_400, 10)]})
    c = snapshot_candidates(h, CFG)
    assert c[0].trigger == "volatility" and c[0].score == pytest.approx(6.0)
    # the symbol missing from the previous snapshot: not consecutive, no candidate
    h_gap = snaps({"035720": [(10_000, 0), None, (9_000, 10)], "005930": [(1, 1), (1, 1), (1, 1)]})
    assert snapshot_candidates(h_gap, CFG) == []


def test_one_candidate_per_symbol_sorted_by_design_order_and_capped() -> None:
    # 005930: surge (6x) and +10 % volatility -> one candidate, the surge (higher class).
    # 000660: velocity is not computable from snapshots; volatility 7 %. 035720: volatility 12 %.
    h = snaps(
        {
            "005930": [(100, 0), (100, 1000), (100, 2000), (110, 8000)],
            "000660": [(100, 0), (100, 1000), (100, 2000), (107, 3000)],
            "035720": [(100, 0), (100, 1000), (100, 2000), (112, 3000)],
        }
    )
    c = snapshot_candidates(h, CFG)
    assert [(x.code, x.trigger) for x in c] == [
        ("005930", "volume_surge"),
        ("035720", "volatility"),
        ("000660", "volatility"),
    ]
    assert snapshot_candidates(h, TriggerConfig(max_candidates=2)) == c[:2]
    # min_score drops each score below it before the per-symbol choice: a floor of 8 removes the 6x surge
    # (005930 then counts with its 10 % move) and 000660's 7 % move
    assert [(x.code, x.trigger) for x in snapshot_candidates(h, TriggerConfig(min_score=8.0))] == [
        ("035720", "volatility"),
        ("005930", "volatility"),
    ]


def test_snapshot_history_must_be_in_time_order() -> None:
    h = snaps({"005930": [(100, 0), (100, 1000), (100, 2000)]})
    with pytest.raises(ValueError, match="increasing time order"):
        snapshot_candidates([h[1], h[0], h[2]], CFG)


def test_snapshot_from_rows_and_bootstrap_by_traded_value() -> None:
    snap = snapshot_from_rows(
        T0,
        [
            {"code": "005930", "price": 70_000, "volume": 1_000, "trade_value": 70_000_000},
            {"code": "000660", "price": 150_000, "volume": 1_000, "trade_value": 150_000_000},
            {"code": "035720", "price": 50_000, "volume": 0, "trade_value": 0},  # no trades: not a candidate
            {"code": "373220", "price": None, "volume": None, "trade_value": None},
            {"code": "A00002", "price": 1_000, "volume": 150_000, "trade_value": 150_000_000},  # tie -> by code
        ],
    )
    b = bootstrap_candidates(snap, 41)
    assert [(c.code, c.trigger, c.score) for c in b] == [
        ("000660", "bootstrap", 150_000_000.0),
        ("A00002", "bootstrap", 150_000_000.0),
        ("005930", "bootstrap", 70_000_000.0),
    ]
    assert [c.code for c in bootstrap_candidates(snap, 2)] == ["000660", "A00002"]
    with pytest.raises(ValueError, match="without a code"):
        snapshot_from_rows(T0, [{"price": 1}])


def test_candidate_validation_and_priority() -> None:
    c = Candidate("005930", "velocity", 12.0, T0)
    assert c.priority == (RANK["velocity"], 12.0)
    assert Candidate("1", "volume_surge", 0.5, T0).priority > Candidate("2", "velocity", 99.0, T0).priority
    with pytest.raises(ValueError, match="unknown trigger"):
        Candidate("005930", "hunch", 1.0, T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        Candidate("005930", "velocity", 1.0, datetime(2025, 3, 4, 9, 30))
    with pytest.raises(ValueError, match="finite"):
        Candidate("005930", "velocity", float("nan"), T0)
    assert c.to_json()["detected_at"] == "2025-03-04T09:00:00+09:00"


# --- live stream -------------------------------------------------------------------------------------


def feed(st: StreamTriggers, code: str, ticks: list[tuple[datetime, int, int]], acml0: int = 0) -> int:
    acml = acml0
    for dt, price, qty in ticks:
        acml += qty
        st.observe(code, dt, price, qty, acml)
    return acml


def test_stream_velocity_from_exchange_time() -> None:
    st = StreamTriggers(CFG)
    base = T0.replace(hour=10)
    # 120 trades within 10 s -> 12 trades/s; another symbol with 50 trades in 10 s -> 5/s (below 10).
    feed(st, "005930", [(base + timedelta(seconds=i // 12), 70_000, 1) for i in range(120)])
    feed(st, "000660", [(base + timedelta(seconds=i // 5), 150_000, 1) for i in range(50)])
    now = base + timedelta(seconds=9)
    c = st.candidates(now)
    assert [(x.code, x.trigger) for x in c] == [("005930", "velocity")]
    assert c[0].score == pytest.approx(12.0)
    assert c[0].detected_at == now
    # 30 s later (data time) there are no trades in the window: nothing, whatever the wall clock says
    assert st.candidates(now + timedelta(seconds=30)) == []


def test_stream_volatility_one_minute_window() -> None:
    st = StreamTriggers(CFG)
    base = T0.replace(hour=10)
    feed(
        st,
        "035720",
        [(base, 10_000, 1), (base + timedelta(seconds=20), 10_200, 1), (base + timedelta(seconds=50), 10_550, 1)],
    )
    c = st.candidates(base + timedelta(seconds=50))
    assert [(x.code, x.trigger) for x in c] == [("035720", "volatility")]
    assert c[0].score == pytest.approx(5.5)
    # at base+61 s the 10,000 trade left the window: 10,200 -> 10,550 is 3.4 %, no trigger
    assert st.candidates(base + timedelta(seconds=61)) == []


def test_stream_surge_per_minute_interval_against_previous_ten() -> None:
    st = StreamTriggers(CFG)
    base = T0.replace(hour=10)
    acml = 5_000_000  # the day's cumulative before we started streaming: never part of any interval
    ticks = []
    for minute in range(12):  # 10:00 (partly observed) .. 10:11: 100 shares per minute
        ticks.append((base + timedelta(minutes=minute, seconds=30), 20_000, 100))
    acml = feed(st, "005930", ticks, acml)
    assert st.candidates(base + timedelta(minutes=11, seconds=59)) == []
    # 10:12: 1,000 shares so far -> 10x the mean of 10:02..10:11
    feed(
        st,
        "005930",
        [
            (base + timedelta(minutes=12, seconds=5), 20_000, 600),
            (base + timedelta(minutes=12, seconds=10), 20_000, 400),
        ],
        acml,
    )
    c = st.candidates(base + timedelta(minutes=12, seconds=10))
    assert [(x.code, x.trigger) for x in c] == [("005930", "volume_surge")]
    assert c[0].score == pytest.approx(10.0)
    assert c[0].detail["baseline_volume"] == pytest.approx(100.0)
    assert c[0].detail["history"] == 10
    # at 10:13:00 the surge minute is the previous minute: still reported (a minute-end burst is not lost)
    c2 = st.candidates(base + timedelta(minutes=13))
    assert c2 and c2[0].trigger == "volume_surge" and c2[0].detail["minute_offset"] == -1


def test_stream_surge_needs_history_and_skips_the_first_minute() -> None:
    st = StreamTriggers(CFG)
    base = T0.replace(hour=10)
    # first minute (partly observed) has a big volume, then one normal minute, then a burst:
    feed(
        st,
        "005930",
        [
            (base + timedelta(seconds=50), 20_000, 5_000),
            (base + timedelta(minutes=1, seconds=10), 20_000, 100),
            (base + timedelta(minutes=2, seconds=10), 20_000, 5_000),
        ],
    )
    # only one usable baseline minute (10:01) -> no surge although the ratio would be 50
    assert st.candidates(base + timedelta(minutes=2, seconds=10)) == []


def test_stream_ignores_trades_after_now_and_replays_identically() -> None:
    rng = random.Random(11)
    base = T0.replace(hour=10)
    ticks = []
    acml = 0
    t = base
    for _ in range(3_000):
        t += timedelta(milliseconds=rng.choice([50, 100, 400, 900, 2000]))
        qty = rng.choice([1, 5, 10, 50, 500]) * (20 if rng.random() < 0.02 else 1)
        acml += qty
        ticks.append((t.replace(microsecond=0), rng.randint(9_500, 10_600), qty, acml))
    times = [base + timedelta(seconds=30 * k) for k in range(1, 60)]

    def run() -> list[list[Candidate]]:
        st = StreamTriggers(TriggerConfig(surge_ratio=3.0, volatility_pct=4.0, velocity_tps=2.0))
        out, i = [], 0
        for now in times:
            while i < len(ticks) and ticks[i][0] <= now:
                dt, p, q, a = ticks[i]
                st.observe("005930", dt, p, q, a)
                i += 1
            out.append(st.candidates(now))
        return out

    first, second = run(), run()
    assert first == second
    assert any(first), "the random stream should fire at least one trigger with these thresholds"
    # a trade later than `now` does not change the answer at `now`
    st = StreamTriggers(CFG)
    feed(st, "035720", [(base, 10_000, 1), (base + timedelta(seconds=10), 10_600, 1)])
    at = st.candidates(base + timedelta(seconds=10))
    st.observe("035720", base + timedelta(seconds=20), 10_000, 1, 3)
    assert st.candidates(base + timedelta(seconds=10)) == at


def test_stream_rejects_bad_trades_clearly() -> None:
    st = StreamTriggers(CFG)
    with pytest.raises(ValueError, match="timezone-aware"):
        st.observe("005930", datetime(2025, 3, 4, 10), 100, 1, 1)
    with pytest.raises(ValueError, match="price"):
        st.observe("005930", T0, 0, 1, 1)
    with pytest.raises(ValueError, match="acml_vol"):
        st.observe("005930", T0, 100, 1, -1)
    assert st.codes() == []  # nothing half-recorded


def test_stream_new_day_starts_fresh() -> None:
    st = StreamTriggers(CFG)
    feed(st, "035720", [(T0, 10_000, 1), (T0 + timedelta(seconds=10), 11_000, 1)])
    assert st.candidates(T0 + timedelta(seconds=10))
    nxt = T0 + timedelta(days=1)
    st.observe("035720", nxt, 10_000, 1, 1)
    assert st.candidates(nxt) == []


def test_stream_counts_ticks_too_old_for_any_window() -> None:
    st = StreamTriggers(CFG)
    st.observe("005930", T0 + timedelta(minutes=5), 100, 1, 10)
    st.observe("005930", T0, 100, 1, 5)  # 5 minutes late: outside every window kept
    assert st.stale_ignored == 1
