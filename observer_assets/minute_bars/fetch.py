"""KIS's 1-minute bars of one trading day: which tape each member is asked on, and paging the chart TR.

The plan (pure) follows Track A: a member Track A quotes on the unified tape at any slot of the day is asked on
``UN``, every other one on ``J`` (KRX), so the day's bars describe the same prices the snapshots did. A code the
Track B capture streamed on another tape (``NX``, or ``J`` for an NXT member) is asked on that tape too, so the
completeness proof compares like with like (docs/collector-rules.md §8.6).

Paging (docs/kis-protocol.md §6.5, §6.6): ``inquire-time-dailychartprice`` answers up to 120 bars of a chosen day
ending at a chosen minute, newest first. Asking from the day's last minute and stepping to one minute before the
earliest bar received covers an 08:00-20:00 unified day (about 700 bars) in 6 calls and KRX's 09:00-15:30 session
in 4; the plan's ``bound`` is that count. A paper key has no such TR: it pages today's
``inquire-time-itemchartprice`` (30 bars a call) and cannot fetch an earlier day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import pyarrow as pa

from observer_assets.track_a.venues import slot_markets
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.kis import protocol as p
from observer_resources.kis.models import MinuteBar

ENDPOINT_PAST = "inquire-time-dailychartprice"
ENDPOINT_TODAY = "inquire-time-itemchartprice"
ROWS = {ENDPOINT_PAST: p.TIME_DAILYCHART_ROWS, ENDPOINT_TODAY: p.TIME_ITEMCHART_ROWS}
#: the tape each KIS market code describes, in the venue words the rest of the lake uses
VENUE_OF_MARKET = {"J": "KRX", "NX": "NXT", "UN": "UN"}
MARKET_OF_TRADE_TR = {p.TR_WS_TRADE: "J", p.TR_WS_TRADE_NXT: "NX", p.TR_WS_TRADE_UN: "UN"}

TS = pa.timestamp("us", tz="Asia/Seoul")
MINUTE_BARS_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("venue", pa.string()),  # KRX | NXT | UN: the tape the bars are of
        ("market", pa.string()),  # the FID_COND_MRKT_DIV_CODE asked: J | NX | UN
        ("minute", TS),  # the bar's start, HH:MM:00
        ("open", pa.int64()),
        ("high", pa.int64()),
        ("low", pa.int64()),
        ("close", pa.int64()),
        ("volume", pa.int64()),  # cntg_vol: the minute's volume
        ("value", pa.int64()),  # acml_tr_pbmn as KIS serves it: the day's value up to the bar's end
        ("source", pa.string()),  # the endpoint
        ("fetched_at", TS),
    ]
)


@dataclass(frozen=True)
class Ask:
    """One (code, market) to fetch, with the minutes its tape can trade that day and the calls that take."""

    code: str
    market: str
    first: datetime  # the tape's first minute of the day
    last: datetime  # its last minute
    bound: int  # calls at most: ceil(minutes / rows per call)

    @property
    def venue(self) -> str:
        return VENUE_OF_MARKET[self.market]


def tape_span(cal: MarketCalendar, day: date, market: str) -> tuple[datetime, datetime] | None:
    """(first minute, last minute) the tape of ``market`` can print on ``day`` within what Observer collects: on the
    two-venue day the phases of KRX (``J``), NXT (``NX``) or either (``UN``) cut to the Track A window; otherwise
    KRX's session. None when the tape has no phase that day."""
    if not cal.two_venue_day:
        s = cal.session(day)
        return (s.open.replace(second=0, microsecond=0), s.close.replace(second=0, microsecond=0)) if s else None
    assert cal.track_a_window is not None
    lo, hi = (datetime.combine(day, w, KST) for w in cal.track_a_window)
    venues = {"J": ("KRX",), "NX": ("NXT",), "UN": ("KRX", "NXT")}[market]
    phases = [ph for ph in cal.phases(day) if ph.venue in venues and ph.end > lo and ph.start < hi]
    if not phases:
        return None
    first = max(lo, min(ph.start for ph in phases)).replace(second=0, microsecond=0)
    # a phase's end instant prints (KRX's closing auction at 15:30:00): that minute has a bar
    last = min(hi, max(ph.end for ph in phases)).replace(second=0, microsecond=0)
    return first, last


def plan(
    universe: pa.Table,
    cal: MarketCalendar,
    day: date,
    *,
    captured: Mapping[str, Sequence[str]] | None = None,
    rows_per_call: int = p.TIME_DAILYCHART_ROWS,
) -> list[Ask]:
    """What to fetch for ``day`` (pure): every member on the market Track A quoted it on, then every code the
    capture streamed on a tape the first ask does not cover (``captured``: code -> markets)."""
    markets: dict[str, str] = {}
    for slot in cal.track_a_slots(day):
        for code, m in slot_markets(universe, cal, slot).items():
            if markets.get(code) != "UN":
                markets[code] = m
    pairs = list(markets.items())
    for code, ms in sorted((captured or {}).items()):
        pairs += [(code, m) for m in sorted(set(ms)) if (code, m) not in pairs]
    out = []
    for code, m in pairs:
        span = tape_span(cal, day, m)
        if span is None:
            continue
        minutes = int((span[1] - span[0]).total_seconds() // 60) + 1
        out.append(Ask(code, m, span[0], span[1], max(1, math.ceil(minutes / rows_per_call))))
    return out


def next_hour(bars: Sequence[MinuteBar], day: date, ask: Ask, rows_asked: int) -> str | None:
    """The FID_INPUT_HOUR_1 of the next page after a page holding ``bars`` (any order), or None when the day is
    complete: the page reached the tape's first minute, fell short of a full page, or held nothing of ``day``."""
    mine = [b.at for b in bars if b.at.date() == day]
    if not mine or len(bars) < rows_asked:
        return None
    earliest = min(mine)
    if earliest <= ask.first or len(mine) < len(bars):
        return None  # the page ran into the previous day or the tape's first minute: nothing earlier to ask
    return (earliest - timedelta(minutes=1)).strftime("%H%M%S")


def rows_of(ask: Ask, bars: Sequence[MinuteBar], *, source: str, fetched_at: datetime, day: date) -> list[dict]:
    """Table rows of ``ask``'s bars on ``day`` within its tape's span, one per minute (the first page's copy of a
    minute two pages both hold wins: pages never disagree on a finished day)."""
    seen: dict[datetime, dict] = {}
    for b in bars:
        at = b.at.astimezone(KST)
        if at.date() != day or not (ask.first <= at <= ask.last) or at in seen:
            continue
        seen[at] = {
            "code": ask.code,
            "venue": ask.venue,
            "market": ask.market,
            "minute": at.replace(second=0, microsecond=0),
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
            "value": b.acml_value,
            "source": source,
            "fetched_at": fetched_at,
        }
    return [seen[k] for k in sorted(seen)]


def last_hour(ask: Ask) -> str:
    return ask.last.strftime("%H%M%S")


def day_end(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), KST)
