"""Daily closing prices: a mean-reverting chain per symbol from a fixed anchor.

The whole chain is drawn at once from (seed, symbol index), so the close of any day is the same no
matter which day was asked first — the intraday generator pins each day's last trade to it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from local_exchange.ticks import price_limits, round_to_grid, round_to_grid_array

KAPPA = 1.0 / 80.0  # OU mean reversion per day (half-life ~55 trading days)
_SHOCK_CLIP = 5.0  # innovations clipped at +-5 sd: daily moves stay far inside the 30 % limit
_BLOCK = 8192  # AR(1) in closed form per block; phi**-8192 ~ 1e44 is still exact enough in float64


@lru_cache(maxsize=8)
def _powers(phi: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(_BLOCK, dtype=np.float64)
    pw, inv = phi**k, phi**-k
    pw.setflags(write=False)
    inv.setflags(write=False)
    return pw, inv


def _ar1(eps: np.ndarray, phi: float, y0: float) -> np.ndarray:
    """y[t] = phi * y[t-1] + eps[t], y[-1] = y0, vectorised per block (no per-day Python loop)."""
    n = eps.shape[0]
    out = np.empty(n)
    pw, inv = _powers(phi)
    prev = y0
    for a in range(0, n, _BLOCK):
        e = eps[a : a + _BLOCK]
        m = e.shape[0]
        y = out[a : a + m]
        np.multiply(e, inv[:m], out=y)
        y.cumsum(out=y)
        y += phi * prev
        y *= pw[:m]
        prev = float(y[-1])
    return out


class CloseChain:
    """Closes by chain index (0 = the virtual day before the anchor), rounded to the grid on read.

    Rounding lazily keeps building a chain cheap (it is drawn for ~3,200 days at once); the draw
    is checked so that rounding can never carry a day's move past the price limits, and a chain
    that fails the check (very low prices) is materialised and clamped day by day instead.
    """

    __slots__ = ("_base", "_log", "_ints")

    def __init__(self, base_level: float, log_dev: np.ndarray | None, ints: np.ndarray | None) -> None:
        self._base = base_level
        self._log = log_dev
        self._ints = ints

    def __getitem__(self, k: int) -> int:
        if self._ints is not None:
            return int(self._ints[k])
        return round_to_grid(self._base * math.exp(float(self._log[k])))  # type: ignore[index]

    def __len__(self) -> int:
        arr = self._ints if self._ints is not None else self._log
        return int(arr.shape[0])  # type: ignore[union-attr]


# |daily log move| below log(1.26) and prices >= 100 KRW: grid rounding then stays inside the limits
_SAFE_LOG_MOVE = math.log(1.26)
_SAFE_MIN_PRICE = 100.0


def close_chain(
    rng: np.random.Generator, *, n_days: int, base_level: float, volatility: float, flat: bool
) -> CloseChain:
    """Closes for n_days + 1 days (element 0 is the virtual day before the anchor), KRW on the grid.

    log close = log(base_level) + y, y an AR(1) (discrete OU) with a stationary start; a flat
    chain (a halted listing) never moves.
    """
    if flat:
        out = np.full(n_days + 1, round_to_grid(base_level), dtype=np.int64)
        out.setflags(write=False)
        return CloseChain(base_level, None, out)
    phi = 1.0 - KAPPA
    sd_stat = volatility / math.sqrt(1.0 - phi * phi)
    eps = rng.standard_normal(n_days + 2)
    y0 = float(min(max(eps[0], -3.0), 3.0)) * sd_stat
    eps = eps[1:]
    np.minimum(eps, _SHOCK_CLIP, out=eps)
    np.maximum(eps, -_SHOCK_CLIP, out=eps)
    eps *= volatility
    eps[0] = 0.0
    y = _ar1(eps, phi, y0)
    y.setflags(write=False)
    if float(np.abs(np.diff(y)).max()) < _SAFE_LOG_MOVE and base_level * math.exp(float(y.min())) >= _SAFE_MIN_PRICE:
        return CloseChain(base_level, y, None)
    closes = round_to_grid_array(base_level * np.exp(y))
    for i in range(1, closes.shape[0]):
        lo, hi = price_limits(int(closes[i - 1]))
        closes[i] = min(max(int(closes[i]), lo), hi)
    closes.setflags(write=False)
    return CloseChain(base_level, None, closes)
