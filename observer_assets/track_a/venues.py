"""Which quote each universe member gets at a Track A slot (pure: the universe, the calendar and an instant in).

On the KRX-only day (``OBSERVER_TRACK_A_WINDOW=session``) every member is quoted on KRX (``J``) at every slot, as
Observer always did. On the two-venue day (a window such as ``08:00-20:00``) a slot quotes what trades then:

- a member NXT trades that day (``nxt_tradable``) is quoted **unified** (``UN``) at every slot where either venue is
  in a phase: its price is the market's last trade and its volume KRX + NXT, one consistent series all day, at the
  cost of one row per member (docs/architecture.md, "Track A across the day", has the alternatives measured);
- any other member is quoted on **KRX** (``J``), and only where KRX is in a phase; outside them nothing trades it.

A member whose NXT status is unknown (null) is treated as KRX-only and counted, so the caller can say so.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from observer_resources.calendar.market import MarketCalendar


def slot_markets(universe: pa.Table, cal: MarketCalendar, slot_ts: datetime) -> dict[str, str]:
    """code -> KIS market code for every member the slot quotes, in the universe's (code) order."""
    codes = universe["code"].to_pylist()
    venues = cal.venues_at_slot(slot_ts)
    if not cal.two_venue_day:
        return dict.fromkeys(codes, "J") if venues else {}
    nxt = universe["nxt_tradable"].to_pylist() if "nxt_tradable" in universe.column_names else [None] * len(codes)
    out: dict[str, str] = {}
    for code, on_nxt in zip(codes, nxt, strict=True):
        if on_nxt and venues:
            out[code] = "UN"
        elif "KRX" in venues:
            out[code] = "J"
    return out


def unknown_nxt_status(universe: pa.Table) -> int:
    """Members whose NXT status the universe does not know (quoted as KRX-only on the two-venue day)."""
    if "nxt_tradable" not in universe.column_names:
        return universe.num_rows
    return universe["nxt_tradable"].null_count
