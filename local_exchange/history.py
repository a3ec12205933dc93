"""Daily bars of the deep past without ticks: a closed-form day around the close chain.

A day's bar is otherwise summarised from its generated ticks (about 3 ms of CPU a day for a busy listing), which
made a year of history for 2,500 symbols cost the exchange ~36 minutes of CPU: a history backfill would measure
the exchange, not the client. Days before ``TICKS_FROM`` are never served at tick level with a clock from 2025 on
(minute history reaches back 366 days), so their bar is drawn directly: open near the previous close, high and low
beyond the open and the close, volume around the listing's own typical day. Close and previous close are the
chain's, as for every day. Deterministic from (seed, listing index, day).
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np

from local_exchange.ticks import price_limits, round_to_grid

TICKS_FROM = date(2024, 1, 1)  # days before this have closed-form bars; from it on, bars summarise the ticks
REFERENCE_DAY = date(2024, 1, 2)  # the listing's volume scale: its summary of this day (one tick day per listing)
_TAG_HISTORY = 3


def history_bar(
    seed32: int, idx: int, d: date, *, prev: int, close: int, volatility: float, ref_volume: int, ref_trades: int
) -> tuple[int, int, int, int, int, int, int]:
    """(open, high, low, close, volume, value, trades) of day d, inside the day's price limits."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed32, idx, d.toordinal(), _TAG_HISTORY])))
    z = rng.standard_normal(4)
    lo_lim, hi_lim = price_limits(prev)
    opn = min(max(round_to_grid(prev * math.exp(0.3 * volatility * float(z[0]))), lo_lim), hi_lim)
    hi = max(opn, close, min(round_to_grid(max(opn, close) * math.exp(0.5 * volatility * abs(float(z[1])))), hi_lim))
    lo = min(opn, close, max(round_to_grid(min(opn, close) * math.exp(-0.5 * volatility * abs(float(z[2])))), lo_lim))
    scale = math.exp(0.5 * float(z[3]) - 0.125)  # mean 1
    volume = max(0, int(round(ref_volume * scale)))
    value = int(round(volume * (opn + hi + lo + close) / 4))
    trades = max(1 if volume else 0, int(round(ref_trades * scale)))
    return opn, hi, lo, close, volume, value, trades
