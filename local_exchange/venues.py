"""Which listings trade on Nextrade (NXT) on a given day: the sim's ground truth for KIS's NXT flags.

NXT trades a subset of KRX listings: the KOSPI 200 and KOSDAQ 150 constituents plus the largest non-index stocks,
re-selected every quarter, and it drops a few stocks mid-quarter to keep its share of their volume under its cap
(docs/local-exchange.md, "Venues"). KIS publishes this only through `search-stock-info` (CTPF1002R), never in the
master files, so a collector that needs it must ask per code, and the sim must answer from one definition.

Pure and deterministic per (seed, listings, day): a period's list depends on the market caps at its start only.
Index membership follows master.py's rule (a market's largest common shares by base price x listed shares, cut
by `master.index_cuts`, plus the real large caps), evaluated on the period's first day.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from local_exchange.listings import KNOWN_CODES, Listing
from local_exchange.master import index_cuts
from observer_resources.calendar import CalendarRangeError

NXT_LAUNCH = date(2025, 3, 4)  # Nextrade's first trading day
# At the default 2,600 listings the quarter's list holds 700 stocks and 650 after the mid-quarter cut (as in the
# first quarter of 2026); smaller sims keep the same proportions.
DEFAULT_LISTINGS = 2600
MEMBERS_AT_DEFAULT = 650
DROPPED_AT_DEFAULT = 50
DROP_DAY_OF_MONTH = 12  # the cut takes effect on the first trading day on or after the 12th of a quarter's 2nd month
_INDEX = {"kospi": "kospi200", "kosdaq": "kosdaq150"}
_WARNING_ALARMS = ("02", "03")  # investment warning / risk: NXT does not take them
_INDEX_DAYS_KEPT = 8


@dataclass(frozen=True)
class NxtPeriod:
    """One selection period: from the launch or a quarter's first day to the day before the next quarter."""

    start: date
    end: date
    selected: tuple[str, ...]  # the list as it starts the period, in code order
    index_members: frozenset[str]  # KOSPI 200 / KOSDAQ 150 constituents on `start`, as master.py flags them
    dropped: tuple[str, ...]  # leave NXT on `drop_day`
    drop_day: date | None  # None when the period has no mid-quarter cut (the launch period)
    halted: frozenset[str]  # members whose NXT trading is halted for the whole period

    def members(self, day: date) -> frozenset[str]:
        """The codes that trade on NXT on `day` (a day inside the period)."""
        if self.drop_day is not None and day >= self.drop_day:
            return frozenset(self.selected) - set(self.dropped)
        return frozenset(self.selected)


def quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def _next_quarter(start: date) -> date:
    m = start.month + 3
    return date(start.year + (m > 12), (m - 1) % 12 + 1, 1)


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _scaled(n_listings: int, at_default: int) -> int:
    return max(1, round(at_default * n_listings / DEFAULT_LISTINGS))


def _common(x: Listing) -> bool:
    return x.is_stock and not x.preferred and not x.spac


def _eligible(x: Listing) -> bool:
    """A stock NXT may list: no SPACs, nothing halted, in liquidation, administrative, or under warning."""
    return (
        x.is_stock
        and not x.spac
        and not (x.halted or x.liquidation or x.administrative)
        and x.alarm not in _WARNING_ALARMS
    )


def index_members(market: Any, day: date) -> frozenset[str]:
    """KOSPI 200 and KOSDAQ 150 constituents on `day`, by master.py's rule (the master file of `day` flags
    exactly these)."""
    out: set[str] = set()
    for which, index in _INDEX.items():
        commons = sorted(
            (x for x in market.listings if x.market == which and _common(x)),
            key=lambda x: (-market.prev_close(x.code, day) * x.listed_shares, x.code),
        )
        cut = index_cuts(which, len(commons))[index]
        out.update(x.code for i, x in enumerate(commons) if i < cut or x.code in KNOWN_CODES)
    return frozenset(out)


def _first_trading_day_from(market: Any, day: date, limit: date) -> date | None:
    d = day
    while d <= limit:
        try:
            if market.is_trading_day(d):
                return d
        except CalendarRangeError:
            return None
        d += timedelta(days=1)
    return None


def select_period(market: Any, start: date) -> NxtPeriod:
    """The NXT list of the period starting `start` (NXT_LAUNCH or a quarter's first day)."""
    end = _next_quarter(quarter_start(start)) - timedelta(days=1)
    n = len(market.listings)
    target = _scaled(n, MEMBERS_AT_DEFAULT)
    n_drop = _scaled(n, DROPPED_AT_DEFAULT)
    idx = index_members(market, start)
    pool = [x for x in market.listings if _eligible(x)]
    in_index = [x for x in pool if x.code in idx]
    others = sorted(
        (x for x in pool if x.code not in idx),
        key=lambda x: (-market.prev_close(x.code, start) * x.listed_shares, x.code),
    )
    extras = others[: max(target - len(in_index), 0) + n_drop]
    selected = tuple(sorted(x.code for x in in_index + extras))

    second_month = date(start.year, start.month + 1, DROP_DAY_OF_MONTH) if start.day == 1 else None
    drop_day = _first_trading_day_from(market, second_month, end) if second_month else None
    seed = market.seed
    droppable = sorted((x.code for x in extras if x.code not in KNOWN_CODES), key=lambda c: _hash(seed, start, c))
    dropped = tuple(sorted(droppable[:n_drop])) if drop_day else ()
    stay = [c for c in selected if c not in dropped and c not in KNOWN_CODES]
    n_halt = 1 if n < DEFAULT_LISTINGS // 2 else 2
    halted = frozenset(sorted(stay, key=lambda c: _hash(seed, start, "halt", c))[:n_halt])
    return NxtPeriod(start, end, selected, idx, dropped, drop_day, halted)


class Venues:
    """NXT membership for one market, cached per period (a period costs one pass over the listings' caps)."""

    def __init__(self, market: Any):
        self.market = market
        self._periods: dict[date, NxtPeriod] = {}
        self._index_days: dict[date, frozenset[str]] = {}
        self._lock = threading.Lock()

    def index_on(self, day: date) -> frozenset[str]:
        """index_members(market, day), cached for the few most recent days asked (one pass over the caps each)."""
        with self._lock:
            hit = self._index_days.get(day)
        if hit is None:
            hit = index_members(self.market, day)
            with self._lock:
                self._index_days[day] = hit
                while len(self._index_days) > _INDEX_DAYS_KEPT:
                    self._index_days.pop(next(iter(self._index_days)))
        return hit

    def period(self, day: date) -> NxtPeriod | None:
        """The selection period containing `day`; None before NXT's launch."""
        if day < NXT_LAUNCH:
            return None
        start = max(quarter_start(day), NXT_LAUNCH)
        with self._lock:
            hit = self._periods.get(start)
        if hit is None:
            hit = select_period(self.market, start)
            with self._lock:
                self._periods[start] = hit
        return hit

    def members(self, day: date) -> frozenset[str]:
        p = self.period(day)
        return p.members(day) if p is not None else frozenset()

    def status(self, code: str, day: date) -> tuple[bool, bool]:
        """(trades on NXT, NXT trading halted) as KIS's cptt_trad_tr_psbl_yn / nxt_tr_stop_yn report them."""
        p = self.period(day)
        if p is None or code not in p.members(day):
            return False, False
        return True, code in p.halted


_BY_MARKET: weakref.WeakKeyDictionary[Any, Venues] = weakref.WeakKeyDictionary()
_BY_MARKET_LOCK = threading.Lock()


def venues_for(market: Any) -> Venues:
    """The one Venues of a market, so the REST handler and the admin API answer from the same cache."""
    with _BY_MARKET_LOCK:
        v = _BY_MARKET.get(market)
        if v is None:
            v = _BY_MARKET[market] = Venues(market)
        return v
