"""Strict ISO dates and instants for what a person types: CLI arguments, partition keys, job config.

Python 3.11's ``date.fromisoformat`` also accepts ``20261203``, ``2026W011`` and ``2026-W01-1``, and
``datetime.fromisoformat`` as much again; a slip in one of those forms silently names another day. Here only
``YYYY-MM-DD`` is a date, and ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` (``T`` or a space, then optionally ``Z`` or
``±HH:MM``) an instant — ASCII digits only, nothing before or after.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import NamedTuple

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)


class DateFormatError(ValueError):
    """A typed date or instant that is not in the one accepted form, or names no real day/time."""


def parse_iso_date(text: str, what: str = "date") -> date:
    """``YYYY-MM-DD`` as a date; anything else raises :class:`DateFormatError` naming ``what`` and the value."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise DateFormatError(f"{what} {text!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        raise DateFormatError(f"{what} {text!r} is not a date (YYYY-MM-DD): {e}") from None


def parse_iso_datetime(text: str, what: str = "time") -> datetime:
    """``YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|±HH:MM]`` as a datetime (naive when no offset is given: the caller
    decides what that means); anything else raises :class:`DateFormatError`."""
    if not isinstance(text, str) or not _DATETIME.fullmatch(text):
        raise DateFormatError(f"{what} {text!r} is not an ISO 8601 time (e.g. 2026-03-10T15:00:00+09:00)")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise DateFormatError(f"{what} {text!r} is not an ISO 8601 time: {e}") from None


def parse_aware_datetime(text: str, what: str = "time") -> datetime:
    """An instant with its UTC offset; a naive one is refused, since nothing says which zone it meant."""
    at = parse_iso_datetime(text, what)
    if at.tzinfo is None:
        raise DateFormatError(f"{what} {text!r} needs an explicit UTC offset (e.g. +09:00)")
    return at


_WINDOW = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*")


class ClockSpan(NamedTuple):
    """A (start, end) pair of clock times within one day that prints as it is written, ``HH:MM-HH:MM``."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_day_window(text: str, what: str = "window") -> ClockSpan:
    """``HH:MM-HH:MM`` within one day -> (start, end), start before end; a ValueError naming ``what`` otherwise."""
    m = _WINDOW.fullmatch(text or "")
    if not m:
        raise ValueError(f"{what} must look like '09:30-15:00', got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (h1 <= 23 and h2 <= 23 and m1 <= 59 and m2 <= 59):
        raise ValueError(f"{what} has an impossible time: {text!r}")
    start, end = time(h1, m1), time(h2, m2)
    if end <= start:
        raise ValueError(f"{what} must end after it starts: {text!r}")
    return ClockSpan(start, end)
