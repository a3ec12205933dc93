"""The partitions every asset shares, and the keys' grammar. One module, one object per definition:
assets that use different objects for the same dimension break mappings.

- ``trading_day``: one key per trading day, ``YYYY-MM-DD``. Universe, gap reports, backups.
- ``track_a_slot``: one key per Track A snapshot instant, ``YYYY-MM-DDTHHMM`` (KST, no colon). Exactly the
  day's valid slots from the calendar: 09:00..15:30 on a normal day, 10:00.. on late opens, 10:00..16:30 on
  CSAT day, none on holidays.
- ``track_b_hour``: one key per KST hour of Track B receipt, ``YYYY-MM-DDTHH`` (no colon). Keys come from the
  journal: the compaction sensor adds an hour once its window closed and it holds journal data, so an hour
  exists as a partition only when the capture recorded something in it (holidays and nights never show up).

All are dynamic: a key is added when its instant arrives (by the schedule, the catch-up sensor or the Track B compaction sensor), so today's
partitions exist while the session runs and no future partition ever shows as missing. docs/architecture.md
records the alternatives measured (a 10-minute time window; date x static-slot multi-partitions).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time

import dagster as dg

from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.dates import DateFormatError, parse_iso_date

trading_day_partitions = dg.DynamicPartitionsDefinition(name="trading_day")
track_a_slot_partitions = dg.DynamicPartitionsDefinition(name="track_a_slot")
track_b_hour_partitions = dg.DynamicPartitionsDefinition(name="track_b_hour")

# ASCII digits and fullmatch: no other script's digits, no trailing newline
_DAY_PREFIX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SLOT_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})([0-9]{2})")
_HOUR_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})")


class PartitionKeyError(ValueError):
    """A partition key that is malformed or names no trading day / valid slot."""


def calendar() -> MarketCalendar:
    return calendar_from_env()


def day_key(d: date) -> str:
    return d.isoformat()


def slot_key(t: datetime) -> str:
    return t.astimezone(KST).strftime("%Y-%m-%dT%H%M")


def parse_day_key(key: str, cal: MarketCalendar | None = None) -> date:
    try:
        d = parse_iso_date(key, "trading_day key")
    except DateFormatError as e:
        raise PartitionKeyError(str(e)) from None
    if not (cal or calendar()).is_trading_day(d):
        raise PartitionKeyError(f"trading_day key {key!r}: KRX is closed that day")
    return d


def parse_slot_key(key: str, cal: MarketCalendar | None = None) -> datetime:
    """The slot instant (KST) of a key; refuses keys that are not one of that day's valid slots."""
    m = _SLOT_RE.fullmatch(key or "")
    if not m:
        raise PartitionKeyError(f"track_a_slot key {key!r} must look like YYYY-MM-DDTHHMM")
    try:
        t = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), tzinfo=KST)
    except ValueError as e:
        raise PartitionKeyError(f"track_a_slot key {key!r}: {e}") from None
    slots = (cal or calendar()).track_a_slots(t.date())
    if not slots:
        raise PartitionKeyError(f"track_a_slot key {key!r}: KRX is closed on {t.date()}")
    if t not in slots:
        raise PartitionKeyError(
            f"track_a_slot key {key!r} is not a slot of {t.date()} "
            f"({slots[0].strftime('%H:%M')}..{slots[-1].strftime('%H:%M')} every 10 minutes)"
        )
    return t


def day_start(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), KST)


def hour_key(t: datetime) -> str:
    """The ``track_b_hour`` key of the KST hour holding ``t`` (tz-aware)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise PartitionKeyError(f"hour_key needs a timezone-aware time, got naive {t!r}")
    return t.astimezone(KST).strftime("%Y-%m-%dT%H")


def parse_hour_key(key: str) -> datetime:
    """The start (KST) of a ``track_b_hour`` key. Grammar only: whether the hour holds data is the journal's
    business (an open-calendar demo records on any day), so the trading calendar is not consulted."""
    m = _HOUR_RE.fullmatch(key or "")
    if not m:
        raise PartitionKeyError(f"track_b_hour key {key!r} must look like YYYY-MM-DDTHH")
    try:
        return datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), tzinfo=KST)
    except ValueError as e:
        raise PartitionKeyError(f"track_b_hour key {key!r}: {e}") from None


def trading_day_request(
    context: dg.ScheduleEvaluationContext, run_key_prefix: str, tags: dict[str, str] | None = None
) -> dg.RunRequest | dg.SkipReason:
    """A daily schedule's answer: a run for the scheduled day's trading_day partition (registered first), or a skip
    on a day KRX is closed. Run key ``<prefix>:<YYYY-MM-DD>``, so a day is never asked twice."""
    d = context.scheduled_execution_time.astimezone(KST).date()
    if not calendar().is_trading_day(d):
        return dg.SkipReason(f"{d} is not a trading day")
    key = day_key(d)
    context.instance.add_dynamic_partitions(trading_day_partitions.name, [key])
    return dg.RunRequest(partition_key=key, run_key=f"{run_key_prefix}:{key}", tags=tags or {})


# --- every elapsed key, in time order ---------------------------------------------------------------------------


def elapsed_day_keys(cal: MarketCalendar, start: date, now: datetime) -> list[str]:
    """Every trading day from `start` through today (today included: its universe is built before the open)."""
    today = now.astimezone(KST).date()
    if start > today:
        return []
    return [day_key(d) for d in cal.trading_days(start, today)]


def elapsed_slot_keys(cal: MarketCalendar, start: date, now: datetime) -> list[str]:
    """Every valid Track A slot from `start` up to `now` (a slot exists from its instant on, never before)."""
    now = now.astimezone(KST)
    out: list[str] = []
    for d in cal.trading_days(start, now.date()) if start <= now.date() else []:
        out += [slot_key(t) for t in cal.track_a_slots(d) if t <= now]
    return out


#: deleting a dynamic key costs one transaction (7-8 ms on SQLite): reordering more than this in one sensor tick
#: would risk Dagster's 60 s tick limit (docs/benchmarks.md), so a larger hole is added at the end instead, once
MAX_REORDER = 300


def reorder_plan(
    registered: list[str], expected: list[str], max_reorder: int = MAX_REORDER
) -> tuple[list[str], list[str]]:
    """(keys to delete, keys to add in this order) so that `expected` keys all exist and every key sorts in time
    order (pure). Dagster lists dynamic keys by insertion, so a missing key older than registered ones is added by
    deleting the later ones and adding everything from it on in order; history stays (materializations are kept by
    key, not by registration). When more than `max_reorder` keys would move (history extended far back), the
    missing keys are only appended: complete beats sorted."""
    have = set(registered)
    missing = sorted(set(expected) - have)
    if not missing:
        return [], []
    first = missing[0]
    later = [k for k in registered if k > first]
    if len(later) > max_reorder:
        return [], missing
    return later, sorted(set(missing) | set(later))


def register_elapsed(
    instance: dg.DagsterInstance, cal: MarketCalendar, start: date, now: datetime, first_slot: str | None = None
) -> dict[str, dict[str, int]]:
    """Make every elapsed trading day since `start` and every elapsed Track A slot from `first_slot` (default: the
    start of `start`) a partition, in time order. Returns what was done per definition ({"added", "reordered"})."""
    slots = [k for k in elapsed_slot_keys(cal, start, now) if first_slot is None or k >= first_slot]
    out = {}
    for defn, expected in (
        (trading_day_partitions, elapsed_day_keys(cal, start, now)),
        (track_a_slot_partitions, slots),
    ):
        name = defn.name
        assert name is not None
        delete, add = reorder_plan(list(instance.get_dynamic_partitions(name)), expected)
        for k in delete:
            instance.delete_dynamic_partition(name, k)
        if add:
            instance.add_dynamic_partitions(name, add)
        out[name] = {"added": len(add) - len(delete), "reordered": len(delete)}
    return out


def history_start(
    instance: dg.DagsterInstance, cal: MarketCalendar, now: datetime, configured: date | None = None
) -> tuple[date, str | None]:
    """(first day, first slot key or None for the whole day) of the deployment's history: the configured start's
    whole days; else from the oldest day and the oldest slot already registered; else, on a fresh instance, today
    from the current slot on — slots before a deployment first ran are the gap report's and backfill's business,
    not thousands of partitions to show on its first start."""
    if configured is not None:
        return configured, None
    days = sorted(instance.get_dynamic_partitions(trading_day_partitions.name))
    slots = sorted(k for k in instance.get_dynamic_partitions(track_a_slot_partitions.name) if _SLOT_RE.fullmatch(k))
    firsts = [k[:10] for k in (days[:1] + slots[:1]) if _DAY_PREFIX.fullmatch(k[:10])]
    if firsts:
        return date.fromisoformat(min(firsts)), (slots[0] if slots else None)
    current = cal.slot_at(now)
    return now.astimezone(KST).date(), (slot_key(current) if current else slot_key(now.astimezone(KST)))
