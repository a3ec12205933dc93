"""Slot manager on plain data: dwell, de-duplication, priority order, pins, capacity, keys, acks, ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from observer_assets.track_b.slots import Decision, SlotManager
from observer_assets.track_b.triggers import Candidate
from observer_resources.calendar import KST

T0 = datetime(2025, 3, 4, 9, 30, tzinfo=KST)
S = timedelta(seconds=1)


def code(i: int) -> str:
    return f"{i:06d}"


def cand(i: int | str, trigger: str = "volume_surge", score: float = 6.0, at: datetime = T0) -> Candidate:
    return Candidate(code(i) if isinstance(i, int) else i, trigger, score, at)  # type: ignore[arg-type]


def ack_all(m: SlotManager, now: datetime) -> None:
    """The exchange confirms every pending subscribe and unsubscribe."""
    for key in m.keys:
        for s in m.slots():
            if s.key != key:
                continue
            if s.state == "pending_subscribe":
                m.on_ack(key, s.code, "subscribed", now)
            elif s.state == "pending_unsubscribe":
                for new in m.on_ack(key, s.code, "unsubscribed", now):
                    m.on_ack(key, new, "subscribed", now)


def full_manager(n: int = 41, trigger: str = "volatility", score: float = 6.0, keys=("k1",), **kw) -> SlotManager:
    kw.setdefault("capacity", n)
    m = SlotManager(list(keys), **kw)
    m.offer([cand(900_000 + i, trigger, score) for i in range(n * len(keys))], T0)
    ack_all(m, T0)
    return m


def reasons(d: Decision) -> dict[str, str]:
    return {e.symbol: e.reason for e in d.overflow}


# --- dwell -------------------------------------------------------------------------------------------


def test_dwell_blocks_replacement_before_120s_and_allows_it_after() -> None:
    m = full_manager()
    d = m.offer([cand(1, "volume_surge", 7.0, T0 + 119 * S)], T0 + 119 * S)
    assert reasons(d) == {code(1): "dwell"}
    entry = d.overflow[0]
    assert entry.detail["replaceable_at"] == T0 + 120 * S
    assert d.unsubscribe == {"k1": []} and code(1) not in m.desired("k1")

    later = T0 + 120 * S
    d2 = m.offer([cand(2, "volume_surge", 7.0, later)], later)
    assert d2.overflow == []
    assert len(d2.unsubscribe["k1"]) == 1
    old = d2.unsubscribe["k1"][0]
    # unsubscribe first: the old code leaves desired, the new one waits for the unsubscribe ack
    assert old not in m.desired("k1") and code(2) not in m.desired("k1")
    assert len(m.desired("k1")) == 40 and len(m.registered("k1")) == 41
    moved = m.on_ack("k1", old, "unsubscribed", later + S)
    assert moved == [code(2)]
    s = m.held(code(2))
    assert s is not None and s.state == "pending_subscribe" and s.allocated_at == later + S
    m.on_ack("k1", code(2), "subscribed", later + 2 * S)
    assert m.held(code(2)).state == "registered"
    assert len(m.registered("k1")) == 41


def test_new_occupant_has_its_own_dwell() -> None:
    m = full_manager(n=1)
    t1 = T0 + 200 * S
    m.offer([cand(1, "velocity", 20.0, t1)], t1)
    ack_all(m, t1)
    # a stronger surge 60 s after code(1) moved in: code(1) has not dwelt yet
    d = m.offer([cand(2, "volume_surge", 9.0, t1 + 60 * S)], t1 + 60 * S)
    assert reasons(d) == {code(2): "dwell"}
    assert [s.code for s in m.slots()] == [code(1)]


# --- de-duplication ---------------------------------------------------------------------------------------


def test_duplicate_within_120s_is_ignored_and_recorded_after_120s_it_counts_again() -> None:
    m = full_manager(n=1, trigger="volume_surge", score=50.0)
    d1 = m.offer([cand(1, "volume_surge", 6.0)], T0)
    assert reasons(d1) == {code(1): "lower_priority"}
    d2 = m.offer([cand(1, "volume_surge", 6.0, T0 + 119 * S)], T0 + 119 * S)
    assert reasons(d2) == {code(1): "duplicate_within_120s"}
    assert d2.overflow[0].detail["retry_after"] == T0 + 120 * S
    d3 = m.offer([cand(1, "volume_surge", 60.0, T0 + 120 * S)], T0 + 120 * S)
    assert d3.overflow == []  # considered again: 60 > 50 and the holder dwelt 120 s -> replaces
    assert d3.unsubscribe == {"k1": [code(900_000)]}


def test_dedupe_counts_from_the_last_considered_offer_not_from_ignored_ones() -> None:
    m = full_manager(n=1, trigger="volume_surge", score=50.0)
    m.offer([cand(1, "volatility", 6.0)], T0)
    for k in range(1, 4):  # ignored re-offers every 30 s do not extend the window
        m.offer([cand(1, "volatility", 6.0, T0 + 30 * k * S)], T0 + 30 * k * S)
    d = m.offer([cand(1, "volatility", 6.0, T0 + 120 * S)], T0 + 120 * S)
    assert reasons(d) == {code(1): "lower_priority"}


def test_an_escalated_trigger_is_not_a_duplicate() -> None:
    m = full_manager(n=1, trigger="velocity", score=12.0)
    t = T0 + 300 * S
    d1 = m.offer([cand(1, "volatility", 9.0, t)], t)
    assert reasons(d1) == {code(1): "lower_priority"}
    # 30 s later the same symbol surges: a stronger class is a new signal, not a repeat
    d2 = m.offer([cand(1, "volume_surge", 6.0, t + 30 * S)], t + 30 * S)
    assert d2.overflow == [] and d2.unsubscribe == {"k1": [code(900_000)]}


def test_same_symbol_twice_in_one_batch_uses_the_higher_priority() -> None:
    m = SlotManager(["k1"], capacity=2)
    d = m.offer([cand(1, "volatility", 9.0), cand(1, "volume_surge", 5.5)], T0)
    assert [(s.code, s.trigger) for s in m.slots()] == [(code(1), "volume_surge")]
    assert [(e.symbol, e.trigger_type, e.reason) for e in d.overflow] == [
        (code(1), "volatility", "superseded_in_batch")
    ]


# --- priority order -------------------------------------------------------------------------------------


def test_volume_surge_beats_velocity_beats_volatility() -> None:
    m = SlotManager(["k1"], capacity=1)
    batch = [cand(3, "volatility", 50.0), cand(2, "velocity", 40.0), cand(1, "volume_surge", 5.0)]
    d = m.offer(batch, T0)
    assert [s.code for s in m.slots()] == [code(1)]
    assert reasons(d) == {code(2): "lower_priority", code(3): "lower_priority"}

    m2 = SlotManager(["k1"], capacity=2)
    m2.offer(batch, T0)
    assert [s.code for s in m2.slots()] == [code(1), code(2)]


def test_equal_class_orders_by_score_and_replacement_needs_strictly_lower() -> None:
    m = SlotManager(["k1"], capacity=1)
    m.offer([cand(1, "volume_surge", 5.1), cand(2, "volume_surge", 8.0)], T0)
    assert [s.code for s in m.slots()] == [code(2)]
    ack_all(m, T0)
    later = T0 + 600 * S
    d = m.offer([cand(3, "volume_surge", 8.0, later)], later)  # equal priority: never replaces
    assert reasons(d) == {code(3): "lower_priority"}
    d = m.offer([cand(4, "volume_surge", 8.01, later)], later)
    assert d.overflow == [] and d.unsubscribe == {"k1": [code(2)]}


def test_replacement_takes_the_lowest_priority_slot() -> None:
    m = SlotManager(["k1"], capacity=3)
    m.offer([cand(1, "velocity", 15.0), cand(2, "volatility", 6.0), cand(3, "volatility", 9.0)], T0)
    ack_all(m, T0)
    t = T0 + 121 * S
    d = m.offer([cand(4, "volatility", 7.0, t)], t)
    assert d.unsubscribe == {"k1": [code(2)]}  # 6 % < 7 %; 9 % and velocity are higher
    d = m.offer([cand(5, "volatility", 7.0, t)], t)
    assert reasons(d) == {code(5): "all_slots_occupied"}  # the only lower slot is already being replaced


def test_already_held_symbol_is_raised_not_rejected() -> None:
    m = SlotManager(["k1"], capacity=2)
    m.offer([cand(1, "volatility", 6.0)], T0)
    d = m.offer([cand(1, "volume_surge", 7.0, T0 + 10 * S)], T0 + 10 * S)
    s = m.held(code(1))
    assert (s.trigger, s.score, s.allocated_at) == ("volume_surge", 7.0, T0)  # dwell still counts from T0
    assert d.overflow == [] and d.ledger.actions[0]["action"] == "raise"
    d = m.offer([cand(1, "volatility", 60.0, T0 + 20 * S)], T0 + 20 * S)  # lower: no change, no rejection
    assert m.held(code(1)).trigger == "volume_surge" and d.overflow == []


# --- manual pins ------------------------------------------------------------------------------------------


def test_pins_always_hold_a_slot_and_are_never_replaced() -> None:
    m = SlotManager(["k1"], capacity=3, pins=["005930", "000660"])
    assert m.desired("k1") == ["005930", "000660"]
    m.offer([cand(1, "volatility", 6.0)], T0)
    ack_all(m, T0)
    far = T0 + timedelta(hours=3)
    d = m.offer([cand(2, "volume_surge", 99.0, far), cand(3, "volume_surge", 98.0, far)], far)
    assert d.unsubscribe == {"k1": [code(1)]}  # only the unpinned slot goes
    assert reasons(d) == {code(3): "all_slots_occupied"}
    assert {s.code for s in m.slots() if s.pinned} == {"005930", "000660"}
    # even a manual candidate offered at runtime does not displace a pin
    d = m.offer([cand("123456", "manual", 100.0, far + 300 * S)], far + 300 * S)
    assert {s.code for s in m.slots() if s.pinned} == {"005930", "000660"}


def test_more_pins_than_capacity_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"3 manual pins configured, but 1 app key\(s\) x 2 slots hold at most 2"):
        SlotManager(["k1"], capacity=2, pins=["005930", "000660", "035720"])
    SlotManager(["k1", "k2"], capacity=2, pins=["005930", "000660", "035720"])  # 2 keys: fits
    with pytest.raises(ValueError, match="symbol codes"):
        SlotManager(["k1"], pins=["00 593"])


def test_set_pins_at_runtime_wins_over_dwell_and_releases_old_pins() -> None:
    m = SlotManager(["k1"], capacity=2, pins=["005930"])
    m.offer([cand(1, "volume_surge", 9.0)], T0)
    ack_all(m, T0)
    t = T0 + 10 * S  # code(1) has dwelt only 10 s: a pin does not wait
    d = m.set_pins(["005930", "035720"], t)
    assert d.unsubscribe == {"k1": [code(1)]}
    assert m.on_ack("k1", code(1), "unsubscribed", t + S) == ["035720"]
    assert {s.code: s.pinned for s in m.slots()} == {"005930": True, "035720": True}
    ack_all(m, t + S)
    # the pin list shrinks: 005930 keeps streaming at the lowest priority until anything replaces it
    d = m.set_pins(["035720"], t + 2 * S)
    s = m.held("005930")
    assert s is not None and not s.pinned and s.trigger == "unpinned"
    # (it was allocated at the first evaluation, T0, and dwell still applies to it)
    d = m.offer([cand(2, "volatility", 5.0, t + 3 * S)], t + 3 * S)
    assert reasons(d) == {code(2): "dwell"}
    d = m.offer([cand(3, "volatility", 5.0, T0 + 120 * S)], T0 + 120 * S)
    assert d.unsubscribe == {"k1": ["005930"]}
    with pytest.raises(ValueError, match="at most 2"):
        m.set_pins(["005930", "000660", "035720"], t + 4 * S)
    assert m.pins == ["035720"]  # a refused pin list changes nothing


def test_pins_spread_over_keys() -> None:
    m = SlotManager(["k1", "k2"], capacity=41, pins=[code(i) for i in range(10)])
    assert len(m.desired("k1")) == 5 and len(m.desired("k2")) == 5


# --- capacity and several keys ------------------------------------------------------------------------------


def test_never_more_than_41_per_key_counting_pending() -> None:
    m = SlotManager(["k1"])
    d = m.offer([cand(i, "volatility", 5.0 + i / 100) for i in range(100)], T0)
    assert len(m.desired("k1")) == 41 and len(d.subscribe["k1"]) == 41
    assert len(d.overflow) == 59 and {e.reason for e in d.overflow} == {"lower_priority"}
    # the 41 with the highest scores hold the slots
    assert {s.code for s in m.slots()} == {code(i) for i in range(59, 100)}
    ack_all(m, T0)
    # a burst of stronger candidates after the dwell: every slot is being replaced at once, and still
    # desired + registered-but-leaving never exceeds 41
    t = T0 + 130 * S
    d = m.offer([cand(1000 + i, "volume_surge", 6.0) for i in range(60)], t)
    assert len(d.unsubscribe["k1"]) == 41 and len(d.overflow) == 19
    assert len(m.registered("k1")) == 41 and m.desired("k1") == []
    assert len(m.slots()) == 41
    ack_all(m, t + S)
    assert len(m.registered("k1")) == 41 and len(m.desired("k1")) == 41


def test_several_keys_get_disjoint_balanced_sets() -> None:
    m = SlotManager(["k1", "k2", "k3"])
    m.offer([cand(i, "volatility", 6.0) for i in range(100)], T0)
    sets = [set(m.desired(k)) for k in m.keys]
    assert sorted(len(s) for s in sets) == [33, 33, 34]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    d = m.offer([cand(100 + i, "volatility", 6.0, T0 + S) for i in range(50)], T0 + S)
    assert [len(m.desired(k)) for k in m.keys] == [41, 41, 41]
    assert len(d.overflow) == 27
    assert len({c for k in m.keys for c in m.desired(k)}) == 123
    with pytest.raises(KeyError, match="unknown app key"):
        m.desired("k9")


# --- acks --------------------------------------------------------------------------------------------------


def test_registered_set_comes_from_acks_not_from_what_was_sent() -> None:
    m = SlotManager(["k1"], capacity=3)
    d = m.offer([cand(1), cand(2), cand(3)], T0)
    assert d.subscribe == {"k1": [code(1), code(2), code(3)]}
    assert m.registered("k1") == []
    m.on_ack("k1", code(1), "subscribed", T0)
    m.on_ack("k1", code(2), "already", T0)
    m.on_ack("k1", code(3), "error", T0)
    assert m.registered("k1") == [code(1), code(2)]
    assert m.desired("k1") == [code(1), code(2), code(3)]  # the error stays wanted: the session retries


def test_max_over_frees_the_slot_and_marks_the_key_full_until_an_unsubscribe_ack() -> None:
    m = SlotManager(["k1", "k2"], capacity=2)
    m.offer([cand(1), cand(2)], T0)
    m.on_ack("k1", code(1), "subscribed", T0)
    m.on_ack("k2", code(2), "max_over", T0)
    assert m.held(code(2)) is None and m.is_full("k2")
    d = m.offer([cand(3, score=5.5, at=T0 + S)], T0 + S, {"ws": "up"})
    # reported in the next ledger with the refused symbol's trigger and score
    assert [(e.symbol, e.reason, e.priority_score) for e in d.overflow] == [(code(2), "max_over", 6.0)]
    assert m.held(code(3)).key == "k1"  # k2 has more free slots but is full
    d = m.offer([cand(4, score=5.5, at=T0 + 2 * S)], T0 + 2 * S)
    assert reasons(d) == {code(4): "all_slots_occupied"}
    assert d.overflow[0].detail == {"session_full": ["k2"]}
    m.on_ack("k2", "999999", "unsubscribed", T0 + 3 * S)  # the server freed something on k2
    assert not m.is_full("k2")
    m.offer([cand(5, score=5.5, at=T0 + 4 * S)], T0 + 4 * S)
    assert m.held(code(5)).key == "k2"


def test_reconnect_resubscribes_everything_and_completes_pending_replacements() -> None:
    m = full_manager(n=3, keys=("k1",), capacity=3)
    t = T0 + 200 * S
    d = m.offer([cand(1, "volume_surge", 9.0, t)], t)
    old = d.unsubscribe["k1"][0]
    codes = m.on_reconnect("k1", t + S)
    # the new session has nothing registered: the leaving symbol is gone, its successor moves in
    assert code(1) in codes and old not in codes and len(codes) == 3
    assert all(s.state == "pending_subscribe" for s in m.slots())
    assert m.registered("k1") == []


def test_sync_with_the_sessions_registered_set() -> None:
    m = full_manager(n=2, keys=("k1",), capacity=2)
    t = T0 + 200 * S
    d = m.offer([cand(1, "volume_surge", 9.0, t)], t)
    old = d.unsubscribe["k1"][0]
    other = next(c for c in m.desired("k1"))
    assert m.sync("k1", {old, other}, t) == []  # unsubscribe not confirmed yet
    assert m.sync("k1", {other}, t + S) == [code(1)]
    assert m.sync("k1", {other, code(1)}, t + 2 * S) == []
    assert sorted(m.registered("k1")) == sorted([other, code(1)])


# --- overflow ledger ---------------------------------------------------------------------------------------


def test_overflow_ledger_contents() -> None:
    m = SlotManager(["k1", "k2"], capacity=1, pins=["005930"])
    state = {"cpu_pct": 41.5, "mem_pct": 63.0, "mitigation_level": 0, "ws": {"k1": "connected", "k2": "connected"}}
    batch = [
        cand(1, "volume_surge", 7.5, T0 - 5 * S),
        cand(2, "velocity", 14.0, T0 - 3 * S),
        cand(3, "volatility", 6.2, T0 - 2 * S),
    ]
    d = m.offer(batch, T0, state)
    rec = d.ledger
    assert rec.timestamp == T0
    assert rec.system_state == state
    assert [(s["key"], s["index"], s["code"], s["trigger"], s["pinned"]) for s in rec.selected] == [
        ("k1", 0, "005930", "manual", True),
        ("k2", 0, code(1), "volume_surge", False),
    ]
    assert rec.selected[1]["score"] == 7.5 and rec.selected[1]["allocated_at"] == T0
    assert [
        (e.symbol, e.trigger_type, e.priority_score, e.detected_at, e.reason, e.timestamp) for e in rec.rejected
    ] == [
        (code(2), "velocity", 14.0, T0 - 3 * S, "lower_priority", T0),
        (code(3), "volatility", 6.2, T0 - 2 * S, "lower_priority", T0),
    ]
    assert d.overflow == rec.rejected
    assert rec.occupancy["k1"]["pinned"] == 1 and rec.occupancy["k2"]["held"] == 1
    assert {a["action"] for a in rec.actions} == {"pin", "allocate"}

    js = rec.to_json()
    text = json.dumps(js)  # serialisable as it is
    assert "T09:30:00+09:00" in text
    assert js["rejected"][0] == {
        "timestamp": "2025-03-04T09:30:00+09:00",
        "symbol": code(2),
        "trigger_type": "velocity",
        "priority_score": 14.0,
        "detected_at": "2025-03-04T09:29:57+09:00",
        "reason": "lower_priority",
        "detail": {"lowest_priority": [3, 7.5]},
    }
    assert js["system_state"]["ws"] == {"k1": "connected", "k2": "connected"}
    assert js["selected"][1]["allocated_at"] == "2025-03-04T09:30:00+09:00"


def test_ledger_times_are_kst_even_from_utc_input() -> None:
    m = SlotManager(["k1"], capacity=1)
    now_utc = T0.astimezone(UTC)
    m.offer([cand(1)], now_utc)
    d = m.offer([cand(2, at=now_utc)], now_utc)
    assert d.ledger.to_json()["timestamp"] == "2025-03-04T09:30:00+09:00"
    assert d.overflow[0].to_json()["detected_at"] == "2025-03-04T09:30:00+09:00"


def test_offer_rejects_bad_input_clearly() -> None:
    m = SlotManager(["k1"])
    with pytest.raises(ValueError, match="timezone-aware"):
        m.offer([cand(1)], datetime(2025, 3, 4, 9, 30))
    with pytest.raises(TypeError, match="Candidate"):
        m.offer([("005930", "volume_surge", 6.0)], T0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown ack kind"):
        m.on_ack("k1", "005930", "maybe", T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        SlotManager(["k1", "k1"])
    assert m.slots() == []  # nothing half-applied


# --- pins against replacements in flight, bootstrap -----------------------------------------------------------


def test_a_new_pin_cancels_the_replacement_of_its_own_symbol() -> None:
    m = SlotManager(["k1"], capacity=2)
    m.offer([cand(1, "volatility", 6.0), cand(2, "volatility", 7.0)], T0)
    ack_all(m, T0)
    t = T0 + 130 * S
    d = m.offer([cand(3, "volume_surge", 6.0, t)], t)
    assert d.unsubscribe == {"k1": [code(1)]}  # code(1) is leaving, code(3) waits for its slot
    d = m.set_pins([code(1)], t + S)
    # the operator pinned the leaving symbol: it stays; code(3) takes no slot (code(2) dwelt, but pins
    # only evict for themselves) and is recorded
    assert m.held(code(1)).pinned and code(1) in m.desired("k1")
    assert [(e.symbol, e.reason) for e in d.overflow] == [(code(3), "displaced_by_pin")]
    assert m.held(code(3)) is None


def test_a_new_pin_displaces_a_symbol_waiting_for_a_slot() -> None:
    m = SlotManager(["k1"], capacity=1)
    m.offer([cand(1, "volatility", 6.0)], T0)
    ack_all(m, T0)
    t = T0 + 130 * S
    m.offer([cand(2, "volume_surge", 6.0, t)], t)  # code(1) leaving, code(2) waiting
    d = m.set_pins(["005930"], t + S)
    assert [(e.symbol, e.trigger_type, e.reason) for e in d.overflow] == [(code(2), "volume_surge", "displaced_by_pin")]
    assert m.on_ack("k1", code(1), "unsubscribed", t + 2 * S) == ["005930"]
    assert m.desired("k1") == ["005930"] and m.held("005930").pinned


def test_bootstrap_fills_only_free_slots_and_triggers_replace_it_after_dwell() -> None:
    m = SlotManager(["k1", "k2"], capacity=3, pins=["005930"])
    assert m.free_count() == 5
    boot = [Candidate(code(i), "bootstrap", 1e9 - i, T0) for i in range(m.free_count())]
    d = m.offer(boot, T0)
    assert d.overflow == [] and m.free_count() == 0
    ack_all(m, T0)
    t = T0 + 120 * S
    d = m.offer([cand(50, "volatility", 5.0, t)], t)
    # alternating by most free slots: k2 got code 0, 2, 4; the lowest traded value (code 4) goes first
    assert d.unsubscribe == {"k1": [], "k2": [code(4)]}
    assert m.held(code(50)) is not None  # waiting for code(4)'s unsubscribe ack (the lowest traded value)
