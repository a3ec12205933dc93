"""Interval arithmetic shared by the gap detector and the compaction's disconnect figures (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def union_length(intervals: Iterable[tuple[Any, Any]], zero: Any) -> Any:
    """Total length covered by possibly overlapping ``[a, b)`` intervals, counted once; ``zero`` is the length
    type's zero (``0`` for microsecond integers, ``timedelta(0)`` for datetimes), returned when there are none."""
    total, cur_a, cur_b = zero, None, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total
