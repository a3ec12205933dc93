"""Mitigation levels on sample sequences (docs/collector-rules.md §4.6): holds, blips, recovery, level 2, causes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from observer_assets.track_b.mitigation import LevelChange, Mitigation, Sample, sample_bucket_s
from observer_resources.calendar import KST

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=KST)
CALM = {"cpu_pct": 30.0, "mem_pct": 50.0, "write_latency_ms": 20.0, "queue_lag_s": 0.05}


def at(seconds: float, **over: float) -> Sample:
    return Sample(T0 + timedelta(seconds=seconds), **{**CALM, **over})


def run(m: Mitigation, start: float, end: float, step: float = 10.0, **over: float) -> list[LevelChange]:
    """Samples every `step` s over [start, end] (inclusive); returns the changes they caused."""
    out = []
    t = start
    while t <= end + 1e-9:
        ch = m.update(at(t, **over))
        if ch:
            out.append(ch)
        t += step
    return out


def test_enter_level1_after_5_minutes_sustained_not_at_4_59() -> None:
    m = Mitigation()
    assert run(m, 0, 299, step=1, cpu_pct=85.0) == []  # 0 .. 4:59
    assert m.level == 0 and m.rate_hz() == 2.0
    ch = m.update(at(300, cpu_pct=85.0))
    assert ch is not None and (ch.old, ch.new) == (0, 1)
    assert m.level == 1 and m.rate_hz() == 1.0
    assert "cpu_pct=85 >= 80 for 300s" in ch.cause
    assert ch.values == {**CALM, "cpu_pct": 85.0}
    assert ch.at == T0 + timedelta(seconds=300)
    ev = ch.to_event()
    assert ev["event"] == "mitigation_level_change" and ev["at"] == "2025-03-04T10:05:00+09:00"
    assert ev["rate_hz"] == 1.0 and ev["values"]["cpu_pct"] == 85.0


def test_a_blip_restarts_the_hold() -> None:
    m = Mitigation()
    assert run(m, 0, 240, queue_lag_s=3.0) == []
    assert m.update(at(250)) is None  # one calm sample
    assert run(m, 260, 550, queue_lag_s=3.0) == []  # 4:50 since the blip
    ch = m.update(at(560, queue_lag_s=3.0))  # 5:00 since 260
    assert ch is not None and ch.new == 1 and "queue_lag_s=3 >= 2" in ch.cause


def test_each_condition_counts_on_its_own() -> None:
    # memory high for 3 min, then write latency high for 3 min: no single condition held 5 min
    m = Mitigation()
    assert run(m, 0, 180, mem_pct=90.0) == []
    assert run(m, 190, 370, write_latency_ms=600.0) == []
    assert m.level == 0
    # write latency stays high (since 190 s) and memory rises again at 380 s: latency held 5 min at 490 s
    changes = run(m, 380, 700, write_latency_ms=600.0, mem_pct=88.0)
    assert [(c.new, c.at) for c in changes] == [(1, T0 + timedelta(seconds=490))]
    assert changes[0].cause == "level 1 entry: write_latency_ms=600 >= 500 for 300s"  # memory: only 110 s
    assert changes[0].values["mem_pct"] == 88.0  # but every measured value is in the event


def test_recover_after_10_minutes_of_all_conditions() -> None:
    m = Mitigation()
    run(m, 0, 300, cpu_pct=85.0)
    assert m.level == 1
    # in between (CPU 70: not entry, not recovery) the level holds
    assert run(m, 310, 2000, cpu_pct=70.0) == []
    assert m.level == 1
    assert run(m, 2010, 2609) == []  # 9:59 of calm
    ch = m.update(at(2610))
    assert ch is not None and (ch.old, ch.new) == (1, 0) and ch.cause.startswith("recovery")
    assert "cpu_pct < 65" in ch.cause and "queue_lag_s < 0.5" in ch.cause
    assert m.rate_hz() == 2.0


def test_recovery_needs_every_condition() -> None:
    m = Mitigation()
    run(m, 0, 300, cpu_pct=85.0)
    assert run(m, 310, 3000, mem_pct=80.0) == []  # CPU calm, memory 80 % (>= 75 %): no recovery
    assert m.level == 1


def test_level2_entry_and_stepwise_recovery() -> None:
    m = Mitigation()
    changes = run(m, 0, 300, cpu_pct=95.0)
    assert [(c.old, c.new) for c in changes] == [(0, 2)]  # a sustained level-2 condition goes straight to 2
    assert "level 2 entry" in changes[0].cause and m.rate_hz() == 0.5
    # level 2 -> 1 when no level-1 entry condition held for 10 min (CPU 70 is enough: < 80)
    changes = run(m, 310, 910, cpu_pct=70.0)
    assert [(c.old, c.new, c.at) for c in changes] == [(2, 1, T0 + timedelta(seconds=910))]
    # level 1 -> 0 needs its own 10 minutes of the stricter recovery thresholds
    assert run(m, 920, 1500) == []
    changes = run(m, 1510, 1520)
    assert [(c.old, c.new) for c in changes] == [(1, 0)]
    assert (m.changes, m.level) == (3, 0)


def test_level2_from_level1_and_disabled_level2() -> None:
    m = Mitigation()
    run(m, 0, 300, cpu_pct=85.0)
    assert m.level == 1
    changes = run(m, 310, 610, write_latency_ms=1500.0, cpu_pct=85.0)
    assert [(c.old, c.new) for c in changes] == [(1, 2)]
    assert "write_latency_ms=1500 >= 1000" in changes[0].cause
    off = Mitigation(level2=False)
    changes = run(off, 0, 1200, cpu_pct=99.0)
    assert [(c.old, c.new) for c in changes] == [(0, 1)] and off.level == 1


def test_buckets_and_bad_samples() -> None:
    assert [sample_bucket_s(lv) for lv in (0, 1, 2)] == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="0, 1 or 2"):
        sample_bucket_s(3)
    with pytest.raises(ValueError, match="cpu_pct"):
        at(0, cpu_pct=float("nan"))
    with pytest.raises(ValueError, match="timezone-aware"):
        Sample(datetime(2025, 3, 4, 10), 1, 1, 1, 1)
    m = Mitigation()
    m.update(at(10))
    with pytest.raises(ValueError, match="time order"):
        m.update(at(5))
