"""Which real-time feeds a Track B slot holds, written ``kind:venue`` (docs/collector-rules.md §4.7).

A KIS session holds 41 registrations, and each (TR, code) pair is one, so the feeds chosen per symbol decide how
many symbols a session can follow. Kinds: ``trades``, ``book`` (10-level order book; NXT and unified add the
midpoint fields), ``expected`` (expected prices, sent only during auctions) — each held for every symbol in a slot
— and ``status`` (market status: the venue's phase), held once per session on an anchor code, because one code is
enough to hear the venue change phase. Venues: ``KRX``, ``NXT``, ``UN`` (the unified view of both).

Pure: text in, TR ids out.
"""

from __future__ import annotations

from dataclasses import dataclass

from observer_resources.kis import protocol as p

KINDS = ("trades", "book", "expected", "status")
VENUES = ("KRX", "NXT", "UN")
_TR: dict[tuple[str, str], str] = {
    ("trades", "KRX"): p.TR_WS_TRADE,
    ("trades", "NXT"): p.TR_WS_TRADE_NXT,
    ("trades", "UN"): p.TR_WS_TRADE_UN,
    ("book", "KRX"): p.TR_WS_ORDERBOOK,
    ("book", "NXT"): p.TR_WS_ORDERBOOK_NXT,
    ("book", "UN"): p.TR_WS_ORDERBOOK_UN,
    ("expected", "KRX"): p.TR_WS_EXPECTED,
    ("expected", "NXT"): p.TR_WS_EXPECTED_NXT,
    ("expected", "UN"): p.TR_WS_EXPECTED_UN,
    ("status", "KRX"): p.TR_WS_STATUS,
    ("status", "NXT"): p.TR_WS_STATUS_NXT,
    ("status", "UN"): p.TR_WS_STATUS_UN,
}
#: every real-time TR -> (kind, venue)
FEED_OF_TR: dict[str, tuple[str, str]] = {tr: kv for kv, tr in _TR.items()}


@dataclass(frozen=True)
class FeedPlan:
    """``per_code``: the TRs registered for every symbol in a slot; ``anchored``: status TRs held once per session."""

    per_code: tuple[str, ...]
    anchored: tuple[str, ...] = ()

    def capacity(self, registrations: int = p.WS_MAX_REGISTRATIONS) -> int:
        """Symbols one session can follow with this plan."""
        return (registrations - len(self.anchored)) // len(self.per_code)

    @property
    def text(self) -> str:
        return ",".join(":".join(FEED_OF_TR[tr]) for tr in (*self.per_code, *self.anchored))

    def __str__(self) -> str:
        return self.text


def parse_feeds(text: str) -> FeedPlan:
    """``"trades:UN,book:KRX,status:KRX"`` -> FeedPlan; a ValueError naming the bad entry otherwise."""
    per_code: list[str] = []
    anchored: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        kind, _, venue = item.partition(":")
        kind, venue = kind.strip().lower(), venue.strip().upper()
        if (kind, venue) not in _TR:
            raise ValueError(
                f"feed {item!r}: write kind:venue with kind one of {', '.join(KINDS)} "
                f"and venue one of {', '.join(VENUES)} (e.g. trades:UN)"
            )
        tr = _TR[(kind, venue)]
        if tr in per_code or tr in anchored:
            raise ValueError(f"feed {item!r} is listed twice")
        (anchored if kind == "status" else per_code).append(tr)
    if not any(FEED_OF_TR[tr][0] == "trades" for tr in per_code):
        raise ValueError(f"feeds {text!r}: at least one trades:VENUE feed is needed (the tape is what Track B is for)")
    plan = FeedPlan(tuple(per_code), tuple(anchored))
    if plan.capacity() < 1:
        raise ValueError(f"feeds {text!r} leave no room for a symbol in {p.WS_MAX_REGISTRATIONS} registrations")
    return plan
