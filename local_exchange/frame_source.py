"""A pluggable source of WebSocket data frames: the exchange's server speaking for something other than its market.

The synthetic market is the exchange's own source. A :class:`FrameSource` set on the state
(``SimState.frame_source``) replaces it for the stream: a recorded day (``observer replay``) or the capture's live
journal (``observer relay``). Everything else stays the exchange's: approval keys, one session per app key, acks,
the 41-registration limit, PINGPONG, faults, stats. The source only says, per registration (tr_id, code), which
frames are due and whether the registration is refused.

Frames are routed by (tr_id, code) as received: :func:`route_frame` splits a data frame into its records' codes
(a KIS frame carries one code's records, but nothing on the wire promises it) and keeps each group's records
exactly as they came.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from observer_resources.kis import protocol as p


class FrameSource(Protocol):
    """What the WebSocket hub asks a frame source (all called on the event loop; must not block)."""

    def refusal(self, tr_id: str, tr_key: str) -> tuple[str, str, str] | None:
        """(rt_cd, msg_cd, msg1) of an error answer to this registration, or None to accept it."""

    def start(self, tr_id: str, tr_key: str, now: datetime) -> Any:
        """The position of a new registration: frames after it are due, none before."""

    def take(self, tr_id: str, tr_key: str, pos: Any, now: datetime) -> tuple[list[str], Any]:
        """(frames due at ``now`` after ``pos``, in order; the position after them)."""

    def rewind(self, pos: Any, n: int) -> Any:
        """``pos`` (as ``take`` returned it) moved back over its last ``n`` frames, which were not sent."""

    def sent(self, appkey: str, session: int, tr_id: str, tr_key: str, frames: list[str], now: datetime) -> None:
        """Record what was emitted (the admin API's "what was sent")."""


#: the record width(s) each data TR may carry: H0STCNT0-shaped trade records may have the 47th MARKET_CLS_CODE
_WIDTHS: dict[str, tuple[int, ...]] = {
    tr: (w, w + 1) if tr in (p.TR_WS_TRADE, p.TR_WS_TRADE_NXT, p.TR_WS_TRADE_UN) else (w,)
    for tr, w in p.WS_FEED_WIDTHS.items()
}


def route_frame(text: str) -> list[tuple[str, str, str]] | None:
    """``[(tr_id, code, frame), ...]`` of a plain data frame ``0|TR|NNN|f^f^...``, one entry per code in the order
    the codes first appear (the original text when one code holds every record), or None for anything a
    registration cannot be served from: control JSON, PINGPONG, encrypted (``1|``) frames, an unknown TR, a record
    count that does not divide the fields."""
    if not text.startswith("0|"):
        return None
    parts = text.split("|", 3)
    if len(parts) != 4:
        return None
    _, tr_id, nnn, data = parts
    widths = _WIDTHS.get(tr_id)
    try:
        n = int(nnn)
    except ValueError:
        return None
    if widths is None or n <= 0:
        return None
    fields = data.split("^")
    width = next((w for w in widths if len(fields) == n * w), None)
    if width is None:
        return None
    codes = [fields[i * width] for i in range(n)]
    if all(c == codes[0] for c in codes):
        return [(tr_id, codes[0], text)]
    groups: dict[str, list[list[str]]] = {}
    for i, c in enumerate(codes):
        groups.setdefault(c, []).append(fields[i * width : (i + 1) * width])
    return [(tr_id, c, f"0|{tr_id}|{len(rs):03d}|" + "^".join("^".join(r) for r in rs)) for c, rs in groups.items()]
