"""Which codes each app key's session held through the day, replayed from the capture's own events (pure).

A disconnect, a restart or a stop can lose only what was subscribed then. The capture records every change of its
slot set (``slot_change``), its start and its stop (``capture_started`` / ``capture_stopped``: a process starts
with no slots and a stopped one holds none), its window (``capture_started.window``, ``stop_at``) and, at every
(re)connect, how many codes it wanted (``ws_connected.desired``). Replaying them gives the codes each key held at
any instant. The replay is *known* only when the day's log shows the capture's life (a ``capture_started``) and
agrees with the counts the sessions reported; otherwise the report says it cannot tell, and a gap counts as one
that could have lost data.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ADD = frozenset({"allocate", "pin"})
SWAP = frozenset({"replace", "move_in"})  # ``code`` comes in, ``old_code`` leaves (a waiting replace: on move_in)
LEAVE = frozenset({"release"})
# ``raise`` changes a priority and ``unpin`` a pin (an unpinned code streams until something replaces it): no change
RESET = frozenset({"capture_started", "capture_stopped"})


@dataclass(frozen=True)
class Held:
    """The codes held on a key (or all keys) over an interval; ``known`` False when the events cannot tell."""

    known: bool
    codes: frozenset[str]
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {"known": self.known, "codes": len(self.codes), "sample": sorted(self.codes)[:20], "basis": self.basis}


def _us(v: Any) -> int | None:
    try:
        t = datetime.fromisoformat(str(v))
    except (TypeError, ValueError):
        return None
    return int(round(t.timestamp() * 1_000_000)) if t.tzinfo is not None else None


class Holdings:
    """The replayed slot sets: one state (codes per key, trusted per key) after every event that changes one."""

    def __init__(self, events: Iterable[Mapping[str, Any]]):
        self.capture_seen = False
        self.spans: list[tuple[int, int]] = []  # capture windows (start, stop) in µs
        self._times: list[int] = []
        self._states: list[tuple[dict[str, frozenset[str]], frozenset[str]]] = []  # (codes per key, untrusted keys)
        codes: dict[str, frozenset[str]] = {}
        untrusted: frozenset[str] = frozenset()
        timed = []
        for e in events:
            et = e.get("event_type")
            at = _us(e.get("timestamp")) if et in RESET or et in ("slot_change", "ws_connected") else None
            if at is not None:
                timed.append((at, et, e))
        timed.sort(key=lambda x: x[0])  # stable: the log's order among equal instants
        for at, et, e in timed:
            if et in RESET:
                codes, untrusted = {}, frozenset()
                if et == "capture_started":
                    self.capture_seen = True
                    w = e.get("window") if isinstance(e.get("window"), Mapping) else {}
                    lo, hi = _us(w.get("start")), _us(e.get("stop_at") or w.get("end"))
                    if lo is not None and hi is not None:
                        self.spans.append((lo, hi))
            elif et == "slot_change":
                key, act = str(e.get("key") or ""), e.get("action")
                held = set(codes.get(key, ()))
                if act in ADD and e.get("code"):
                    held.add(str(e["code"]))
                elif act in SWAP and e.get("code"):
                    held.add(str(e["code"]))
                    if e.get("old_code") and (act == "move_in" or not e.get("waiting_for_unsubscribe_ack")):
                        held.discard(str(e["old_code"]))
                elif act in LEAVE and e.get("code"):
                    held.discard(str(e["code"]))
                else:
                    continue
                codes = {**codes, key: frozenset(held)}
            else:  # ws_connected: the session wanted more codes than the replay has, so the replay missed some
                key, want = str(e.get("key_id") or ""), e.get("desired")
                if not isinstance(want, int) or want <= len(codes.get(key, ())):
                    continue
                untrusted = untrusted | {key}
            self._times.append(at)
            self._states.append((codes, untrusted))

    def span(self) -> tuple[int, int] | None:
        """The capture's window over the day (µs), when its start event said so."""
        if not self.spans:
            return None
        return min(a for a, _ in self.spans), max(b for _, b in self.spans)

    def during(self, key: str | None, a: int, b: int) -> Held:
        """Codes held at ``a`` or taken up before ``b`` on ``key`` (every key when None)."""
        i = bisect.bisect_right(self._times, a)
        states = ([self._states[i - 1]] if i else []) + self._states[i : bisect.bisect_left(self._times, b)]
        held: set[str] = set()
        trusted = True
        for codes, untrusted in states:
            keys = list(codes) if key is None else [key]
            held.update(c for k in keys for c in codes.get(k, ()))
            trusted = trusted and not (untrusted if key is None else untrusted & {key})
        if not self.capture_seen:
            return Held(False, frozenset(held), "no capture_started event in the day's log")
        if not trusted:
            return Held(False, frozenset(held), "a session wanted more codes than its slot_change events account for")
        return Held(True, frozenset(held), "slot_change events since the capture started")


#: the trade feeds' TR ids, by the tape the gap report names
TAPE_OF_TRADE_TR = {"H0STCNT0": "KRX", "H0NXCNT0": "NXT", "H0UNCNT0": "unified"}


def registrations(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """(tape, code) -> when the server acknowledged each registration of its trade feed (``ws_registered``), µs,
    sorted: a code's frames flow from then, so what a session lost is counted from then."""
    out: dict[tuple[str, str], list[int]] = {}
    for e in events:
        if e.get("event_type") != "ws_registered" or e.get("tr_id") not in TAPE_OF_TRADE_TR:
            continue
        at = _us(e.get("timestamp"))
        if at is not None:
            out.setdefault((TAPE_OF_TRADE_TR[e["tr_id"]], str(e.get("code"))), []).append(at)
    return {k: sorted(v) for k, v in out.items()}
