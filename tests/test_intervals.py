"""Union of intervals: overlaps counted once, for integer and datetime intervals alike."""

from datetime import datetime, timedelta

from observer_resources.intervals import union_length


def test_overlapping_nested_and_disjoint_intervals_are_counted_once():
    assert union_length([(0, 10), (5, 15), (20, 30), (22, 25), (30, 31)], 0) == 15 + 10 + 1
    assert union_length([(20, 30), (0, 10)], 0) == 20  # order does not matter
    assert union_length([], 0) == 0


def test_datetime_intervals_give_a_timedelta():
    t = datetime(2026, 11, 26, 13, 0)
    iv = [
        (t, t + timedelta(minutes=3)),
        (t + timedelta(minutes=1), t + timedelta(minutes=5)),
        (t + timedelta(hours=1), t + timedelta(hours=1, seconds=30)),
    ]
    assert union_length(iv, timedelta(0)) == timedelta(minutes=5, seconds=30)
    assert union_length([], timedelta(0)) == timedelta(0)
