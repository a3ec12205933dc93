"""Track B slot allocation and the overflow ledger (docs/collector-rules.md §4.3, §4.4). Pure: no sockets, no clock.

Each configured app key has one WebSocket session with ``capacity`` (41) slots; N keys give N disjoint
slot sets (a symbol is never held by two keys). The manager decides *which* symbols should be streamed;
the capture process carries that out (``desired(key)`` is what a session should be subscribed to) and
reports the exchange's acks back (:meth:`on_ack`, :meth:`sync`, :meth:`on_reconnect`), so the registered
set always comes from acks, never from what was merely sent (§17 #3).

Allocation for each candidate, highest priority first (priority = ``(RANK[trigger], score)``):

1. **Already held** (in a slot or waiting to move into one): take the new trigger and score if its
   priority is higher; otherwise nothing changes. Held symbols are never "rejected".
2. **De-duplicated**: a symbol not held and offered again within ``dedupe`` (120 s) of its last
   considered offer is ignored and recorded (``duplicate_within_120s``) — unless the new trigger class is
   higher than the last one's: an escalation (volatility -> volume surge) is a new signal, not a repeat.
3. **Free slot**: the lowest free index on the key with the most free slots (balances the keys); a key
   the exchange declared full (``OPSP0008``) takes no new symbol until an unsubscribe is acknowledged.
4. **Replace**: the lowest-priority non-pinned slot whose priority is *strictly lower* and whose dwell
   since allocation is ``>= dwell`` (120 s). A registered symbol is unsubscribed first; the new one moves
   in only when that unsubscribe is acknowledged, so a key never holds more than ``capacity`` symbols,
   counting pending ones. A slot whose subscribe was never confirmed is swapped at once.
5. **Overflow**: otherwise the candidate goes to the ledger with its trigger, score and reason.

Manual pins (configuration) always hold a slot, spread over the keys, and are never replaced; a new pin
evicts the lowest-priority symbol regardless of dwell. Slots are released only by replacement (an
idle-expiry rule is an open decision in the intent).

Rejection reasons in the ledger: ``lower_priority`` (every slot is taken by an equal or higher priority),
``dwell`` (a lower-priority slot exists but none has dwelt 120 s; ``detail.replaceable_at`` says when
the first can), ``all_slots_occupied`` (lower-priority slots exist but are already being replaced, or
the only free slots are on a session the exchange declared full), ``duplicate_within_120s``,
``superseded_in_batch`` (the same symbol came twice in one batch; the higher priority was used),
``being_unsubscribed`` (the symbol is leaving its slot right now), ``displaced_by_pin`` (a pin took the
slot this symbol was waiting for) and ``max_over`` (the exchange refused the subscription).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal

from observer_assets.track_b.triggers import RANK, Candidate, sort_candidates
from observer_resources.calendar import KST
from observer_resources.kis.protocol import WS_MAX_REGISTRATIONS

SlotState = Literal["pending_subscribe", "registered", "pending_unsubscribe"]
AckKind = Literal["subscribed", "already", "unsubscribed", "not_registered", "max_over", "error"]
ACK_KINDS = frozenset({"subscribed", "already", "unsubscribed", "not_registered", "max_over", "error"})

PIN_SCORE = 1.0
PIN_PRIORITY = (RANK["manual"], PIN_SCORE)
UNPINNED_PRIORITY = (RANK["bootstrap"], 0.0)  # a released pin keeps streaming until anything replaces it


def _aware(dt: datetime, what: str) -> None:
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (KST), got {dt!r}")


def _valid_code(code: Any) -> bool:
    return isinstance(code, str) and 0 < len(code) <= 12 and code.isascii() and code.isalnum()


def _jsonable(v: Any) -> Any:
    """Datetimes as ISO with +09:00, tuples as lists, mappings and lists recursively."""
    if isinstance(v, datetime):
        return v.astimezone(KST).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True)
class Pending:
    """A symbol waiting for its slot's previous occupant to be unsubscribed."""

    code: str
    trigger: str
    score: float
    priority: tuple[int, float]
    pinned: bool
    detected_at: datetime | None
    since: datetime  # when the replacement was decided


@dataclass
class Slot:
    key: str
    index: int  # 0 .. capacity-1
    code: str
    trigger: str  # a TriggerKind, or "unpinned" for a released pin
    score: float
    priority: tuple[int, float]
    allocated_at: datetime | None  # None only for pins placed at construction before any evaluation
    pinned: bool = False
    state: SlotState = "pending_subscribe"
    detected_at: datetime | None = None
    successor: Pending | None = None  # set while state == "pending_unsubscribe"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "index": self.index,
            "code": self.code,
            "trigger": self.trigger,
            "score": self.score,
            "priority": list(self.priority),
            "allocated_at": self.allocated_at,
            "pinned": self.pinned,
            "state": self.state,
            "detected_at": self.detected_at,
            "successor": self.successor.code if self.successor else None,
        }


@dataclass(frozen=True)
class LedgerEntry:
    """One rejected candidate (one line of ``system/overflow/YYYYMMDD.jsonl``)."""

    timestamp: datetime
    symbol: str
    trigger_type: str
    priority_score: float
    detected_at: datetime | None
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "timestamp": self.timestamp,
                "symbol": self.symbol,
                "trigger_type": self.trigger_type,
                "priority_score": self.priority_score,
                "detected_at": self.detected_at,
                "reason": self.reason,
                "detail": dict(self.detail),
            }
        )


@dataclass(frozen=True)
class LedgerRecord:
    """One evaluation: what is held (``selected``), what was turned away (``rejected``), what changed
    (``actions``), per-key occupancy, and the system state passed in (CPU, memory, mitigation, WS...)."""

    timestamp: datetime
    selected: list[dict[str, Any]]
    rejected: list[LedgerEntry]
    system_state: Mapping[str, Any]
    actions: list[dict[str, Any]] = field(default_factory=list)
    occupancy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp": _jsonable(self.timestamp),
            "selected": _jsonable(self.selected),
            "rejected": [e.to_json() for e in self.rejected],
            "system_state": _jsonable(self.system_state),
            "actions": _jsonable(self.actions),
            "occupancy": _jsonable(self.occupancy),
        }


@dataclass(frozen=True)
class Decision:
    """What one evaluation changed. ``subscribe``/``unsubscribe`` are this evaluation's deltas per key
    (every key present, lists possibly empty); ``desired(key)`` stays the full truth to subscribe to.
    ``overflow`` is every candidate not given a slot (the same entries as ``ledger.rejected``)."""

    subscribe: dict[str, list[str]]
    unsubscribe: dict[str, list[str]]
    overflow: list[LedgerEntry]
    ledger: LedgerRecord


@dataclass(frozen=True)
class _Loc:
    key: str
    slot: Slot
    role: Literal["occupant", "successor", "draining"]


class SlotManager:
    def __init__(
        self,
        keys: Sequence[str],
        *,
        capacity: int = WS_MAX_REGISTRATIONS,
        dwell: timedelta = timedelta(seconds=120),
        dedupe: timedelta = timedelta(seconds=120),
        pins: Sequence[str] = (),
        now: datetime | None = None,
    ) -> None:
        keys = list(keys)
        if not keys:
            raise ValueError("SlotManager needs at least one app key (one WebSocket session per key)")
        if len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"app key ids must be distinct non-empty strings, got {keys!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if dwell < timedelta(0) or dedupe < timedelta(0):
            raise ValueError("dwell and dedupe must not be negative")
        if now is not None:
            _aware(now, "now")
        self.keys: tuple[str, ...] = tuple(keys)
        self.capacity = capacity
        self.dwell = dwell
        self.dedupe = dedupe
        self._slots: dict[str, list[Slot | None]] = {k: [None] * capacity for k in self.keys}
        self._full: dict[str, bool] = {k: False for k in self.keys}
        self._pins: list[str] = []
        self._last_offer: dict[str, tuple[datetime, int]] = {}
        self._carry_rejected: list[LedgerEntry] = []  # from acks, reported with the next decision
        self._carry_actions: list[dict[str, Any]] = []
        self.stats: Counter[str] = Counter()
        pins = self._check_pins(pins)
        for code in pins:  # reported in the first decision's actions
            self._add_pin(code, now, [], {k: [] for k in self.keys}, {k: [] for k in self.keys}, self._carry_actions)
        self._pins = pins

    def __repr__(self) -> str:
        occ = ", ".join(f"{k}:{self._held_count(k)}/{self.capacity}" for k in self.keys)
        return f"SlotManager({occ}, pins={len(self._pins)})"

    # --- read ------------------------------------------------------------------------------------

    @property
    def total_capacity(self) -> int:
        return self.capacity * len(self.keys)

    @property
    def pins(self) -> list[str]:
        return list(self._pins)

    def slots(self) -> list[Slot]:
        """Copies of every occupied slot, by key order then index."""
        return [replace(s) for k in self.keys for s in self._slots[k] if s is not None]

    def desired(self, key: str) -> list[str]:
        """What the key's session should be subscribed to now (by slot index): every slot except those
        being unsubscribed. A waiting successor joins when the unsubscribe is acknowledged."""
        return [s.code for s in self._key_slots(key) if s is not None and s.state != "pending_unsubscribe"]

    def registered(self, key: str) -> list[str]:
        """What the exchange confirmed as registered on the key's session, by acks: registered slots and
        slots being unsubscribed (still registered until the unsubscribe ack)."""
        return [s.code for s in self._key_slots(key) if s is not None and s.state != "pending_subscribe"]

    def is_full(self, key: str) -> bool:
        """The exchange refused a subscription on this key (OPSP0008) and no unsubscribe ack came since."""
        self._key_slots(key)
        return self._full[key]

    def free_count(self) -> int:
        """Free slots on sessions that can take a symbol now (not marked full): how many bootstrap
        candidates to offer at the window start."""
        return sum(self.capacity - self._held_count(k) for k in self.keys if not self._full[k])

    def held(self, code: str) -> Slot | None:
        loc = self._find(code)
        return replace(loc.slot) if loc is not None else None

    def occupancy(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for k in self.keys:
            slots = [s for s in self._slots[k] if s is not None]
            out[k] = {
                "capacity": self.capacity,
                "held": len(slots),
                "registered": sum(s.state == "registered" for s in slots),
                "pending_subscribe": sum(s.state == "pending_subscribe" for s in slots),
                "pending_unsubscribe": sum(s.state == "pending_unsubscribe" for s in slots),
                "pinned": sum(s.pinned for s in slots),
                "free": self.capacity - len(slots),
                "full": self._full[k],
            }
        return out

    # --- evaluate --------------------------------------------------------------------------------

    def offer(
        self, candidates: Iterable[Candidate], now: datetime, system_state: Mapping[str, Any] | None = None
    ) -> Decision:
        """Allocate slots to ``candidates`` (module doc, steps 1-5) at ``now`` (data time)."""
        _aware(now, "now")
        cands = list(candidates)
        for c in cands:
            if not isinstance(c, Candidate):
                raise TypeError(f"offer() takes Candidate objects, got {type(c).__name__}: {c!r}")
        self._fix_unset_times(now)
        rejected = self._carry_rejected
        actions = self._carry_actions
        self._carry_rejected, self._carry_actions = [], []
        sub: dict[str, list[str]] = {k: [] for k in self.keys}
        unsub: dict[str, list[str]] = {k: [] for k in self.keys}
        self._expire_offers(now)

        best: dict[str, Candidate] = {}
        for c in cands:
            if c.code not in best or c.priority > best[c.code].priority:
                best[c.code] = c
        for c in cands:
            if best[c.code] is not c:
                rejected.append(
                    self._entry(
                        c,
                        now,
                        "superseded_in_batch",
                        {"kept_trigger": best[c.code].trigger, "kept_score": best[c.code].score},
                    )
                )
        self.stats["offered"] += len(cands)

        for c in sort_candidates(best.values()):
            loc = self._find(c.code)
            if loc is not None and loc.role == "draining":
                rejected.append(self._entry(c, now, "being_unsubscribed", {"key": loc.key, "index": loc.slot.index}))
                continue
            if loc is not None:
                self._last_offer[c.code] = (now, RANK[c.trigger])
                self._raise(loc, c, now, actions)
                continue
            last = self._last_offer.get(c.code)
            if last is not None and now - last[0] < self.dedupe and RANK[c.trigger] <= last[1]:
                rejected.append(
                    self._entry(
                        c, now, "duplicate_within_120s", {"last_offer": last[0], "retry_after": last[0] + self.dedupe}
                    )
                )
                continue
            self._last_offer[c.code] = (now, RANK[c.trigger])
            key = self._pick_free_key()
            if key is not None:
                slot = self._place(key, c.code, c.trigger, c.score, c.priority, False, c.detected_at, now)
                sub[key].append(c.code)
                actions.append(
                    {
                        "action": "allocate",
                        "key": key,
                        "index": slot.index,
                        "code": c.code,
                        "trigger": c.trigger,
                        "score": c.score,
                    }
                )
                self.stats["allocations"] += 1
                continue
            target = self._replace_target(c.priority, now)
            if target is not None:
                self._replace(
                    target,
                    Pending(c.code, c.trigger, c.score, c.priority, False, c.detected_at, now),
                    now,
                    sub,
                    unsub,
                    actions,
                )
                continue
            reason, detail = self._why_not(c.priority, now)
            rejected.append(self._entry(c, now, reason, detail))

        return self._decision(now, sub, unsub, rejected, actions, system_state)

    def set_pins(self, pins: Sequence[str], now: datetime, system_state: Mapping[str, Any] | None = None) -> Decision:
        """Replace the manual pins (configuration, changeable at runtime). New pins take a free slot or
        evict the lowest-priority symbol regardless of dwell; removed pins keep streaming at the lowest
        priority until something replaces them."""
        _aware(now, "now")
        new = self._check_pins(pins)
        self._fix_unset_times(now)
        rejected = self._carry_rejected
        actions = self._carry_actions
        self._carry_rejected, self._carry_actions = [], []
        sub: dict[str, list[str]] = {k: [] for k in self.keys}
        unsub: dict[str, list[str]] = {k: [] for k in self.keys}
        keep = set(new)
        for k in self.keys:
            for s in self._slots[k]:
                if s is None:
                    continue
                if s.pinned and s.code not in keep:
                    s.pinned, s.trigger, s.score, s.priority = False, "unpinned", 0.0, UNPINNED_PRIORITY
                    actions.append({"action": "unpin", "key": k, "index": s.index, "code": s.code})
                if s.successor is not None and s.successor.pinned and s.successor.code not in keep:
                    s.successor = replace(
                        s.successor, pinned=False, trigger="unpinned", score=0.0, priority=UNPINNED_PRIORITY
                    )
                    actions.append({"action": "unpin", "key": k, "index": s.index, "code": s.successor.code})
        for code in new:
            self._add_pin(code, now, rejected, sub, unsub, actions)
        self._pins = new
        return self._decision(now, sub, unsub, rejected, actions, system_state)

    # --- acks --------------------------------------------------------------------------------------

    def on_ack(self, key: str, code: str, kind: AckKind, now: datetime) -> list[str]:
        """Apply one exchange ack for ``code`` on ``key``'s session. Returns codes that became wanted
        because of it (a successor moving into a slot just freed), which the session must subscribe.

        ``subscribed``/``already`` -> registered; ``unsubscribed``/``not_registered`` -> a slot being
        vacated passes to its successor (a slot that was not being vacated goes back to pending, it is
        still wanted); ``unsubscribed`` also ends the key's "full" mark; ``max_over`` -> the key is
        marked full, the refused symbol loses its slot (recorded in the next ledger) unless it is a pin,
        which stays pending; ``error`` -> the symbol stays pending (the session retries)."""
        slots = self._key_slots(key)
        if kind not in ACK_KINDS:
            raise ValueError(f"unknown ack kind {kind!r}; expected one of {sorted(ACK_KINDS)}")
        _aware(now, "now")
        self.stats[f"ack_{kind}"] += 1
        if kind == "unsubscribed":
            self._full[key] = False
        if kind == "max_over":
            self._full[key] = True
        slot = next((s for s in slots if s is not None and s.code == code), None)
        if slot is None:
            return []  # not ours (a swapped-out pending symbol, a stale registration): nothing to hold
        if kind in ("subscribed", "already"):
            if slot.state == "pending_subscribe":
                slot.state = "registered"
            return []
        if kind in ("unsubscribed", "not_registered"):
            if slot.state == "pending_unsubscribe":
                return self._vacate(slot, now)
            slot.state = "pending_subscribe"
            return []
        if kind == "max_over":
            if slot.state == "pending_unsubscribe":
                return self._vacate(slot, now)
            if slot.pinned:
                slot.state = "pending_subscribe"
                return []
            self._slots[key][slot.index] = None
            self._carry_rejected.append(
                LedgerEntry(
                    now,
                    slot.code,
                    slot.trigger,
                    slot.score,
                    slot.detected_at,
                    "max_over",
                    {"key": key, "index": slot.index},
                )
            )
            self._carry_actions.append(
                {"action": "release", "key": key, "index": slot.index, "code": slot.code, "cause": "max_over"}
            )
            return []
        return []  # error: stays as it is; the session retries what is unconfirmed

    def sync(self, key: str, registered: Iterable[str], now: datetime) -> list[str]:
        """Reconcile ``key`` with the session's ack-derived registered set (e.g. the WebSocket client's
        ``registered`` after ``set_desired`` returned): slots being vacated whose symbol is gone pass to
        their successor, others become registered or pending as the set says. Returns codes that became
        wanted (successors moving in)."""
        slots = self._key_slots(key)
        _aware(now, "now")
        reg = set(registered)
        moved: list[str] = []
        for s in list(slots):
            if s is None:
                continue
            if s.state == "pending_unsubscribe":
                if s.code not in reg:
                    moved += self._vacate(s, now)
                    new = self._slots[key][s.index]
                    if new is not None and new.code in reg:
                        new.state = "registered"
            else:
                s.state = "registered" if s.code in reg else "pending_subscribe"
        return moved

    def on_reconnect(self, key: str, now: datetime | None = None) -> list[str]:
        """A new session for ``key`` starts with nothing registered: every slot goes back to
        pending_subscribe, slots being vacated pass to their successor, the "full" mark ends. Returns
        the codes to re-subscribe (``desired(key)``)."""
        slots = self._key_slots(key)
        if now is not None:
            _aware(now, "now")
        self._full[key] = False
        for s in list(slots):
            if s is None:
                continue
            if s.state == "pending_unsubscribe":
                self._vacate(s, now)
            else:
                s.state = "pending_subscribe"
        return self.desired(key)

    # --- internals -----------------------------------------------------------------------------------

    def _key_slots(self, key: str) -> list[Slot | None]:
        try:
            return self._slots[key]
        except KeyError:
            raise KeyError(f"unknown app key id {key!r}; configured: {list(self.keys)}") from None

    def _check_pins(self, pins: Sequence[str]) -> list[str]:
        if isinstance(pins, str):
            raise TypeError("pins must be a sequence of codes, not one string")
        out = list(dict.fromkeys(pins))
        bad = [p for p in out if not _valid_code(p)]
        if bad:
            raise ValueError(f"pins must be symbol codes, got {bad!r}")
        if len(out) > self.total_capacity:
            raise ValueError(
                f"{len(out)} manual pins configured, but {len(self.keys)} app key(s) x "
                f"{self.capacity} slots hold at most {self.total_capacity}; remove pins or add keys"
            )
        return out

    def _fix_unset_times(self, now: datetime) -> None:
        for k in self.keys:
            for s in self._slots[k]:
                if s is not None and s.allocated_at is None:
                    s.allocated_at = now

    def _expire_offers(self, now: datetime) -> None:
        old = [c for c, (t, _) in self._last_offer.items() if now - t >= self.dedupe]
        for c in old:
            del self._last_offer[c]

    def _held_count(self, key: str) -> int:
        return sum(s is not None for s in self._slots[key])

    def _find(self, code: str) -> _Loc | None:
        for k in self.keys:
            for s in self._slots[k]:
                if s is None:
                    continue
                if s.code == code:
                    return _Loc(k, s, "draining" if s.state == "pending_unsubscribe" else "occupant")
                if s.successor is not None and s.successor.code == code:
                    return _Loc(k, s, "successor")
        return None

    def _pick_free_key(self, allow_full: bool = False) -> str | None:
        best, best_free = None, 0
        for k in self.keys:
            if self._full[k] and not allow_full:
                continue
            free = self.capacity - self._held_count(k)
            if free > best_free:
                best, best_free = k, free
        return best

    def _place(
        self,
        key: str,
        code: str,
        trigger: str,
        score: float,
        priority: tuple[int, float],
        pinned: bool,
        detected_at: datetime | None,
        now: datetime | None,
    ) -> Slot:
        slots = self._slots[key]
        i = slots.index(None)
        s = Slot(key, i, code, trigger, float(score), priority, now, pinned, "pending_subscribe", detected_at)
        slots[i] = s
        return s

    def _raise(self, loc: _Loc, c: Candidate, now: datetime, actions: list[dict[str, Any]]) -> None:
        s = loc.slot
        if loc.role == "successor":
            p = s.successor
            assert p is not None
            if not p.pinned and c.priority > p.priority:
                s.successor = replace(
                    p, trigger=c.trigger, score=c.score, priority=c.priority, detected_at=c.detected_at
                )
                actions.append(
                    {
                        "action": "raise",
                        "key": loc.key,
                        "index": s.index,
                        "code": c.code,
                        "trigger": c.trigger,
                        "score": c.score,
                        "waiting": True,
                    }
                )
                self.stats["raises"] += 1
            return
        if not s.pinned and c.priority > s.priority:
            actions.append(
                {
                    "action": "raise",
                    "key": loc.key,
                    "index": s.index,
                    "code": c.code,
                    "from_trigger": s.trigger,
                    "from_score": s.score,
                    "trigger": c.trigger,
                    "score": c.score,
                }
            )
            s.trigger, s.score, s.priority, s.detected_at = c.trigger, float(c.score), c.priority, c.detected_at
            self.stats["raises"] += 1

    def _replaceable(self, s: Slot | None) -> bool:
        return s is not None and not s.pinned and s.successor is None and s.state != "pending_unsubscribe"

    def _replace_target(self, priority: tuple[int, float], now: datetime) -> Slot | None:
        best: Slot | None = None
        for k in self.keys:
            for s in self._slots[k]:
                if not self._replaceable(s) or not s.priority < priority:
                    continue
                if s.allocated_at is None or now - s.allocated_at < self.dwell:
                    continue
                if best is None or (s.priority, s.allocated_at) < (best.priority, best.allocated_at):
                    best = s
        return best

    def _replace(
        self,
        target: Slot,
        new: Pending,
        now: datetime,
        sub: dict[str, list[str]],
        unsub: dict[str, list[str]],
        actions: list[dict[str, Any]],
    ) -> None:
        key, old = target.key, target.code
        act = {
            "action": "replace",
            "key": key,
            "index": target.index,
            "old_code": old,
            "old_trigger": target.trigger,
            "old_score": target.score,
            "old_allocated_at": target.allocated_at,
            "code": new.code,
            "trigger": new.trigger,
            "score": new.score,
            "pinned": new.pinned,
        }
        unsub[key].append(old)
        if target.state == "registered":
            target.state = "pending_unsubscribe"
            target.successor = new
            act["waiting_for_unsubscribe_ack"] = True
        else:  # never confirmed registered: nothing to wait for
            self._slots[key][target.index] = Slot(
                key,
                target.index,
                new.code,
                new.trigger,
                new.score,
                new.priority,
                now,
                new.pinned,
                "pending_subscribe",
                new.detected_at,
            )
            sub[key].append(new.code)
            act["waiting_for_unsubscribe_ack"] = False
        actions.append(act)
        self.stats["replacements"] += 1

    def _vacate(self, s: Slot, now: datetime | None) -> list[str]:
        """The slot's symbol is gone from the exchange: its successor moves in (or the slot frees)."""
        p = s.successor
        if p is None:
            self._slots[s.key][s.index] = None
            return []
        at = now if now is not None else p.since
        self._slots[s.key][s.index] = Slot(
            s.key, s.index, p.code, p.trigger, p.score, p.priority, at, p.pinned, "pending_subscribe", p.detected_at
        )
        self._carry_actions.append(
            {"action": "move_in", "key": s.key, "index": s.index, "code": p.code, "old_code": s.code, "at": at}
        )
        return [p.code]

    def _why_not(self, priority: tuple[int, float], now: datetime) -> tuple[str, dict[str, Any]]:
        lower_dwelling = [
            s for k in self.keys for s in self._slots[k] if self._replaceable(s) and s.priority < priority
        ]
        if lower_dwelling:
            at = min(s.allocated_at for s in lower_dwelling if s.allocated_at is not None) + self.dwell
            return "dwell", {"replaceable_at": at, "lowest_priority": list(min(s.priority for s in lower_dwelling))}
        full_free = [k for k in self.keys if self._full[k] and self._held_count(k) < self.capacity]
        if full_free:
            return "all_slots_occupied", {"session_full": full_free}
        busy_lower = [
            s
            for k in self.keys
            for s in self._slots[k]
            if s is not None and not self._replaceable(s) and s.priority < priority
        ]
        if busy_lower:  # lower, but pinned or already being replaced
            return "all_slots_occupied", {"lower_but_not_replaceable": len(busy_lower)}
        held = [s.priority for k in self.keys for s in self._slots[k] if s is not None]
        return "lower_priority", {"lowest_priority": list(min(held))} if held else {}

    def _add_pin(
        self,
        code: str,
        now: datetime | None,
        rejected: list[LedgerEntry],
        sub: dict[str, list[str]],
        unsub: dict[str, list[str]],
        actions: list[dict[str, Any]],
    ) -> None:
        loc = self._find(code)
        if loc is not None:
            s = loc.slot
            if loc.role == "occupant":
                if not s.pinned:
                    s.pinned, s.trigger, s.score, s.priority = True, "manual", PIN_SCORE, PIN_PRIORITY
                    actions.append({"action": "pin", "key": loc.key, "index": s.index, "code": code})
                return
            if loc.role == "successor":
                assert s.successor is not None
                if not s.successor.pinned:
                    s.successor = replace(
                        s.successor, pinned=True, trigger="manual", score=PIN_SCORE, priority=PIN_PRIORITY
                    )
                    actions.append({"action": "pin", "key": loc.key, "index": s.index, "code": code, "waiting": True})
                return
            # draining: the pin wins; cancel the replacement, the waiting symbol looks elsewhere
            displaced = s.successor
            s.successor, s.state = None, "pending_subscribe"
            s.pinned, s.trigger, s.score, s.priority = True, "manual", PIN_SCORE, PIN_PRIORITY
            sub[loc.key].append(code)
            actions.append(
                {
                    "action": "pin",
                    "key": loc.key,
                    "index": s.index,
                    "code": code,
                    "cancelled_replacement_by": displaced.code if displaced else None,
                }
            )
            if displaced is not None and displaced.pinned:
                self._add_pin(displaced.code, now, rejected, sub, unsub, actions)
            elif displaced is not None:
                self._rehome(displaced, now, rejected, sub, actions)
            return
        key = self._pick_free_key()
        if key is not None:
            s = self._place(key, code, "manual", PIN_SCORE, PIN_PRIORITY, True, None, now)
            sub[key].append(code)
            actions.append({"action": "pin", "key": key, "index": s.index, "code": code})
            return
        victim = self._pin_victim()
        if victim is not None:
            # only set_pins() gets here (at construction every slot is free), and it always has a time
            assert now is not None
            pin = Pending(code, "manual", PIN_SCORE, PIN_PRIORITY, True, None, now)
            if victim.successor is not None:  # a symbol waiting for this slot gives way to the pin
                w = victim.successor
                victim.successor = pin
                rejected.append(
                    LedgerEntry(
                        now,
                        w.code,
                        w.trigger,
                        w.score,
                        w.detected_at,
                        "displaced_by_pin",
                        {"pin": code, "key": victim.key},
                    )
                )
                actions.append(
                    {
                        "action": "pin",
                        "key": victim.key,
                        "index": victim.index,
                        "code": code,
                        "displaced_waiting": w.code,
                    }
                )
            else:
                self._replace(victim, pin, now, sub, unsub, actions)
            return
        key = self._pick_free_key(allow_full=True)  # only a session marked full has room: wait there
        if key is None:  # cannot happen: pins <= total capacity was checked
            raise RuntimeError(f"no slot for pin {code}")
        s = self._place(key, code, "manual", PIN_SCORE, PIN_PRIORITY, True, None, now)
        sub[key].append(code)
        actions.append({"action": "pin", "key": key, "index": s.index, "code": code})

    def _pin_victim(self) -> Slot | None:
        """The lowest-priority non-pinned holder (dwell ignored: pins always win)."""
        best: tuple[tuple[int, float], Slot] | None = None
        for k in self.keys:
            for s in self._slots[k]:
                if s is None:
                    continue
                if s.state == "pending_unsubscribe":
                    if s.successor is None or s.successor.pinned:
                        continue
                    pr = s.successor.priority
                elif s.pinned:
                    continue
                else:
                    pr = s.priority
                if best is None or pr < best[0]:
                    best = (pr, s)
        return best[1] if best else None

    def _rehome(
        self,
        p: Pending,
        now: datetime | None,
        rejected: list[LedgerEntry],
        sub: dict[str, list[str]],
        actions: list[dict[str, Any]],
    ) -> None:
        key = self._pick_free_key()
        if key is not None:
            s = self._place(key, p.code, p.trigger, p.score, p.priority, p.pinned, p.detected_at, now)
            sub[key].append(p.code)
            actions.append(
                {
                    "action": "allocate",
                    "key": key,
                    "index": s.index,
                    "code": p.code,
                    "trigger": p.trigger,
                    "score": p.score,
                }
            )
            return
        rejected.append(LedgerEntry(now or p.since, p.code, p.trigger, p.score, p.detected_at, "displaced_by_pin", {}))

    def _entry(self, c: Candidate, now: datetime, reason: str, detail: Mapping[str, Any]) -> LedgerEntry:
        return LedgerEntry(now, c.code, c.trigger, float(c.score), c.detected_at, reason, dict(detail))

    def _decision(
        self,
        now: datetime,
        sub: dict[str, list[str]],
        unsub: dict[str, list[str]],
        rejected: list[LedgerEntry],
        actions: list[dict[str, Any]],
        system_state: Mapping[str, Any] | None,
    ) -> Decision:
        for e in rejected:
            self.stats[f"rejected_{e.reason}"] += 1
        record = LedgerRecord(
            timestamp=now,
            selected=[s.as_dict() for s in self.slots()],
            rejected=list(rejected),
            system_state=dict(system_state or {}),
            actions=list(actions),
            occupancy=self.occupancy(),
        )
        return Decision(subscribe=sub, unsubscribe=unsub, overflow=list(rejected), ledger=record)
