"""Restored Track A rows: a slot's snapshot rebuilt from KIS minute bars when the live one is missing or short.

KIS cannot replay a past instant, but it still serves minute bars: today's (`inquire-time-itemchartprice`, 30 bars a
call) and earlier days' (`inquire-time-dailychartprice`, 120 a call). A bar stamped HH:MM covers the trades of
[HH:MM:00, HH:MM+1:00). The state at the slot instant is therefore rebuilt from the bars that *ended* by the slot
(start < slot): price = the close of the last such bar, cumulative value = its `acml_tr_pbmn`, cumulative volume =
the sum of their `cntg_vol`. Bars are whole minutes, so only the trades stamped within the slot's own first second
(HH:MM:00) are not in the restored row; everything else equals the exchange's state at the slot. Bid/ask do not exist
in bars and stay null. Rows say so: `source = "restored"`, `restored_from` = the endpoint. Of the columns the
quotes carry and bars do not (book totals, change sign, session phase, expected auction, halt/VI/status, limits,
open/high/low) none is guessed: they are null. `key_id` is the key that fetched the bars; `late_s` is how long after
the slot the bars were fetched, not how stale the values are (they describe the slot instant).

Cumulative volume needs every bar of the day before the slot or, equivalently, the chart's current total
(`output1.acml_vol`) minus the bars since the slot. For today the second is cheaper (a backfill usually runs soon
after the gap: one call); for earlier days the bars from the open are summed (≤ 4 calls of 120 bars).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pyarrow as pa

from observer_assets.track_a.snapshot import VENUE_OF_MARKET, snapshot_table, upgrade_snapshot_table
from observer_resources import clock
from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisError
from observer_resources.kis.models import MinuteBar

ENDPOINT_TODAY = "inquire-time-itemchartprice"
ENDPOINT_PAST = "inquire-time-dailychartprice"
TR_OF = {ENDPOINT_TODAY: p.TR_TIME_ITEMCHART, ENDPOINT_PAST: p.TR_TIME_DAILYCHART}


class NotRestorable(ValueError):
    """The bars cannot give this symbol's state at the slot (e.g. no bar ended before it)."""


def restored_row(
    code: str,
    slot_ts: datetime,
    bars: Sequence[MinuteBar],
    *,
    acml_vol: int,
    name: str | None,
    prev_close: int | None,
    endpoint: str,
    fetched_at: datetime,
    key_id: str | None = None,
    market: str = "J",
) -> dict:
    """One snapshot row at `slot_ts` from the bars (any order) and the cumulative volume at the slot (pure)."""
    before = sorted((b for b in bars if b.at < slot_ts and b.at.date() == slot_ts.date()), key=lambda b: b.at)
    if not before:
        raise NotRestorable(f"{code}: no minute bar ended before {slot_ts.isoformat()}")
    last = before[-1]
    price = last.close
    change = price - prev_close if prev_close is not None else None
    rate = round(100.0 * change / prev_close, 2) if change is not None and prev_close else None
    return {
        "slot_ts": slot_ts,
        "code": code,
        "name": name,
        "price": price,
        "change": change,
        "change_rate": rate,
        # open/high/low of the day need every bar since the open; the today path does not fetch them all.
        "open": None,
        "high": None,
        "low": None,
        "prev_close": prev_close,
        "volume": acml_vol,
        "trade_value": last.acml_value,
        "bid": None,
        "ask": None,
        "bid_size": None,
        "ask_size": None,
        "upper_limit": None,
        "lower_limit": None,
        "source": "restored",
        "restored_from": endpoint,
        "tr_id": TR_OF[endpoint],
        "fetched_at": fetched_at,
        "key_id": key_id,
        "venue": VENUE_OF_MARKET[market],
    }


def volume_at_slot_from_total(total_now: int, bars: Sequence[MinuteBar], slot_ts: datetime) -> int:
    """Cumulative volume before the slot = the chart's current total minus the bars since the slot (pure)."""
    return total_now - sum(b.volume for b in bars if b.at >= slot_ts and b.at.date() == slot_ts.date())


def volume_at_slot_from_open(bars: Sequence[MinuteBar], slot_ts: datetime) -> int:
    """Cumulative volume before the slot = the sum of the day's bars before it (bars must start at the open)."""
    return sum(b.volume for b in bars if b.at < slot_ts and b.at.date() == slot_ts.date())


def rows_table(rows: Sequence[Mapping]) -> pa.Table:
    return snapshot_table(rows)


def merge(live: pa.Table | None, restored: pa.Table) -> pa.Table:
    """Live rows win: restored rows only for codes the live table lacks; sorted by code. Either side may be a table
    written with an earlier schema: the result has the current one."""
    restored = upgrade_snapshot_table(restored)
    if live is None or live.num_rows == 0:
        merged = restored
    else:
        have = set(live["code"].to_pylist())
        keep = [c not in have for c in restored["code"].to_pylist()]
        merged = pa.concat_tables([upgrade_snapshot_table(live), restored.filter(pa.array(keep, pa.bool_()))])
    return merged.sort_by("code")


async def restore_one(
    client,
    code: str,
    slot_ts: datetime,
    *,
    today: bool,
    session_open: datetime,
    session_close: datetime,
    name: str | None,
    prev_close: int | None,
    market: str = "J",
) -> dict:
    """Fetch the bars one symbol needs on ``market`` (its venue's or the unified bars; ``session_open`` and
    ``session_close`` bound that market's day) and build its restored row. Raises KisError / NotRestorable."""
    before = slot_ts - timedelta(minutes=1)
    fetched_at = clock.now()
    if today:
        # Page whichever side of the slot is shorter: bars exist only up to now, and across a 12-hour two-venue day
        # a slot near the open costs one call from the open against twenty back from the evening.
        end = min(session_close, fetched_at.astimezone(session_close.tzinfo))
        if slot_ts - session_open < end - slot_ts:
            mb = await client.minute_bars_all(
                code, until=before.strftime("%H%M%S"), since=session_open.strftime("%H%M%S"), market=market
            )
            return restored_row(
                code,
                slot_ts,
                mb.bars,
                acml_vol=volume_at_slot_from_open(mb.bars, slot_ts),
                name=name or (mb.summary.name if mb.summary else None),
                prev_close=prev_close if prev_close is not None else (mb.summary.prev_close if mb.summary else None),
                endpoint=ENDPOINT_TODAY,
                fetched_at=fetched_at,
                market=market,
            )
        mb = await client.minute_bars_all(
            code, until=end.strftime("%H%M%S"), since=before.strftime("%H%M%S"), market=market
        )
        if mb.summary is None:
            raise NotRestorable(f"{code}: the chart answer carried no output1 (current total volume)")
        vol = volume_at_slot_from_total(mb.summary.acml_vol, mb.bars, slot_ts)
        prev = prev_close if prev_close is not None else mb.summary.prev_close
        return restored_row(
            code,
            slot_ts,
            mb.bars,
            acml_vol=vol,
            name=name or mb.summary.name,
            prev_close=prev,
            endpoint=ENDPOINT_TODAY,
            fetched_at=fetched_at,
            market=market,
        )
    bars: dict[datetime, MinuteBar] = {}
    hour = before
    for _ in range(16):  # ≤ 120 bars a call: a 6.5 h day is 4 calls; the guard stops a server that ignores paging
        page = await client.past_minute_bars(code, slot_ts.date(), hour.strftime("%H%M%S"), market=market)
        day_bars = [b for b in page.bars if b.at.date() == slot_ts.date()]
        for b in day_bars:
            bars.setdefault(b.at, b)
        if not day_bars or len(day_bars) < len(page.bars):
            break  # reached the previous day: this day's bars are complete
        earliest = day_bars[0].at
        if earliest <= session_open:
            break
        nxt = earliest - timedelta(minutes=1)
        if nxt >= hour:
            break
        hour = nxt
    got = [bars[k] for k in sorted(bars)]
    return restored_row(
        code,
        slot_ts,
        got,
        acml_vol=volume_at_slot_from_open(got, slot_ts),
        name=name,
        prev_close=prev_close,
        endpoint=ENDPOINT_PAST,
        fetched_at=fetched_at,
        market=market,
    )


async def restore_slot(
    kis,
    codes: Sequence[str],
    slot_ts: datetime,
    *,
    today: bool,
    session_open: datetime,
    session_close: datetime,
    names: Mapping[str, str],
    prev_closes: Mapping[str, int],
    concurrency: int = 8,
    markets: Mapping[str, str] | None = None,
    market_days: Mapping[str, tuple[datetime, datetime]] | None = None,
) -> tuple[pa.Table, dict[str, str]]:
    """Restored rows for `codes` (a table in SNAPSHOT_SCHEMA) and the codes that could not be restored, with why.
    ``markets``: each code's market code (default J); ``market_days``: a market's (first, last) instant of the day
    when it is not the session's."""
    markets = markets or {}
    market_days = market_days or {}
    rows: list[dict] = []
    failures: dict[str, str] = {}
    sem = asyncio.Semaphore(concurrency)
    async with kis.rest_client() as client:

        async def one(code: str) -> None:
            m = markets.get(code, "J")
            day_open, day_close = market_days.get(m, (session_open, session_close))
            async with sem:
                try:
                    rows.append(
                        await restore_one(
                            client,
                            code,
                            slot_ts,
                            today=today,
                            session_open=day_open,
                            session_close=day_close,
                            name=names.get(code),
                            prev_close=prev_closes.get(code),
                            market=m,
                        )
                    )
                except NotRestorable as e:
                    failures[code] = str(e)
                except KisError as e:
                    failures[code] = f"{type(e).__name__} {getattr(e, 'code', '')}".strip()

        await asyncio.gather(*(one(c) for c in codes))
    key_id = kis.kis_config().key_id  # rest_client() is this resource's own key (a pool's first)
    for r in rows:
        r["key_id"] = key_id
    rows.sort(key=lambda r: r["code"])
    return rows_table(rows), failures
