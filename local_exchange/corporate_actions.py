"""Corporate actions of the synthetic market: stock splits and rights issues, and the raw series they imply.

The model (docs/local-exchange.md, "Corporate actions"): the close chain every other part of the exchange is built
from (ticks, minute bars, quotes, previous closes) is the **adjusted** series — prices on today's share basis. A day
before an event traded on the old basis, so its **raw** prices are the chain's times the ratio of every later event
(``raw = adjusted x ratio``, 5 for a 1:5 split), put back on the tick grid, and its raw volume is the chain's divided
by that ratio; traded value is the same in both. Events are drawn only up to ``EVENTS_UNTIL``, far enough back that
no day before an event is ever served at tick level (minute history reaches back 366 days): nothing the exchange
served before this module existed changes, and what it serves at tick level never contradicts a raw daily bar.

Deterministic: a listing's events come from (seed, listing index) alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import numpy as np

from local_exchange.ticks import round_to_grid

EVENTS_FROM = date(2018, 3, 2)
EVENTS_UNTIL = date(2023, 12, 28)  # the last ex-date drawn: every pre-event day is > 366 days before 2025
_TAG_EVENTS = 7
_SPLITS = (5, 10)  # 1:5 and 1:10 face-value splits: each old share becomes 5 or 10
P_LISTING_HAS_EVENTS = 0.3

#: ``flng_cls_code`` (락 구분 코드) of FHKST03010100/FHKST01010400 rows: 00 none, 01 ex-rights, 02 ex-dividend, ...
FLNG_NONE, FLNG_EX_RIGHTS = "00", "01"


@dataclass(frozen=True)
class CorporateAction:
    """One event. ``ratio`` = raw / adjusted for every day before ``ex_date`` (5 for a 1:5 split); ``factor`` is
    its inverse, the adjustment factor a raw price is multiplied by to be on today's basis."""

    code: str
    ex_date: date
    kind: str  # "split" | "rights"
    ratio: Fraction

    @property
    def factor(self) -> float:
        return float(1 / self.ratio)

    def markers(self) -> dict[str, str]:
        """The row fields KIS marks the ex-date with: 락 구분 (ex-rights for a rights issue), the split flag and ratio."""
        if self.kind == "rights":
            return {"flng_cls_code": FLNG_EX_RIGHTS, "mod_yn": "N", "prtt_rate": "0.00"}
        return {"flng_cls_code": FLNG_NONE, "mod_yn": "Y", "prtt_rate": f"{float(self.ratio):.2f}"}

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "ex_date": self.ex_date.isoformat(),
            "kind": self.kind,
            "ratio": float(self.ratio),
            "ratio_fraction": f"{self.ratio.numerator}/{self.ratio.denominator}",
            "factor": round(self.factor, 6),
            **self.markers(),
        }


def _draw(market: Any, idx: int) -> tuple[CorporateAction, ...]:
    lst = market.listings[idx]
    if lst.halted:
        return ()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([market.seed & 0xFFFFFFFF, idx, _TAG_EVENTS])))
    if rng.random() >= P_LISTING_HAS_EVENTS:
        return ()
    n = 1 + int(rng.random() < 0.35)
    span = (EVENTS_UNTIL - EVENTS_FROM).days
    out: dict[date, CorporateAction] = {}
    for _ in range(n):
        d = EVENTS_FROM + timedelta(days=int(rng.integers(0, span + 1)))
        while not market.is_trading_day(d):  # the ex-date is a trading day: the one on or before the draw
            d -= timedelta(days=1)
        if rng.random() < 0.4:
            kind, ratio = "split", Fraction(int(_SPLITS[int(rng.integers(0, len(_SPLITS)))]))
        else:  # a rights issue below the market price: factor 0.80..0.97
            kind, ratio = "rights", Fraction(10_000, int(rng.integers(8_000, 9_701)))
        out.setdefault(d, CorporateAction(lst.code, d, kind, ratio))
    return tuple(sorted(out.values(), key=lambda e: e.ex_date))


def actions_of(market: Any, code: str) -> tuple[CorporateAction, ...]:
    """The listing's events, oldest first (cached on the market)."""
    cache: dict[str, tuple[CorporateAction, ...]] = market.__dict__.setdefault("_corporate_actions", {})
    got = cache.get(code)
    if got is None:
        got = cache[code] = _draw(market, market._idx(code))
    return got


def ratio_on(market: Any, code: str, d: date) -> Fraction:
    """raw / adjusted on day d: the product of the ratios of every event after d (1 when none)."""
    r = Fraction(1)
    for e in actions_of(market, code):
        if e.ex_date > d:
            r *= e.ratio
    return r


def markers_on(market: Any, code: str, d: date) -> dict[str, str]:
    """The marker fields of day d's row: the event's on its ex-date, KIS's "nothing" otherwise."""
    for e in actions_of(market, code):
        if e.ex_date == d:
            return e.markers()
    return {"flng_cls_code": FLNG_NONE, "mod_yn": "N", "prtt_rate": "0.00"}


def raw_price(adjusted: int, ratio: Fraction) -> int:
    return adjusted if ratio == 1 else round_to_grid(float(adjusted * ratio))


def raw_volume(adjusted: int, ratio: Fraction) -> int:
    return adjusted if ratio == 1 else int(round(float(adjusted / ratio)))


def as_raw(market: Any, code: str, bar: Any) -> Any:
    """A daily bar (adjusted, as the chain makes it) on the day's own share basis. The previous close is scaled by
    the same day's ratio: on an ex-date KIS's base price is the adjusted one, so the day's change stays the day's."""
    r = ratio_on(market, code, bar.day)
    if r == 1:
        return bar
    return type(bar)(
        bar.day,
        raw_price(bar.open, r),
        raw_price(bar.high, r),
        raw_price(bar.low, r),
        raw_price(bar.close, r),
        raw_volume(bar.volume, r),
        bar.value,
        raw_price(bar.prev_close, r),
    )
