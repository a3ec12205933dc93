"""Runtime fault injection for the local exchange (docs/kis-protocol.md §10.5 "Fault injection").

A fault is posted as ``{"kind": ..., params}`` to ``POST /__sim__/faults``. The book validates it,
keeps it while it is active (a count of uses left, or a real-time window) and logs when it was
applied and when it ended, in both sim time (KST) and wall time, so a test can compare what its
client saw with the exact drop windows. The REST and WebSocket servers consult the book; they
never guess. App keys appear in the log only as :func:`appkey_id`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from local_exchange.accounts import appkey_id

MALFORMED_VARIANTS = ("truncated_json", "field_count", "non_numeric", "unknown_tr")
#: trade-feed faults an optional ``tr_id`` confines to one trade TR (without it they act on every trade TR)
_TR_KINDS = ("ws_skip", "ws_burst", "ws_duplicate")
_TRADE_TRS = ("H0STCNT0", "H0NXCNT0", "H0UNCNT0")


@dataclass(frozen=True)
class KindSpec:
    counted: bool  # uses a count ``n``
    window: bool  # lasts ``seconds`` of real time
    needs_code: bool = False
    default_n: int | None = 1
    doc: str = ""


KINDS: dict[str, KindSpec] = {
    "ws_drop": KindSpec(False, False, doc="drop every matching session now; close_frame true|false"),
    "ws_silent": KindSpec(False, True, doc="matching sessions send nothing (no PINGPONG, no data) for seconds"),
    "ws_stall": KindSpec(
        False, False, needs_code=True, doc="one code's data stops (until re-registered, or for seconds)"
    ),
    "ws_duplicate": KindSpec(True, False, doc="the next n data frames are sent twice"),
    "ws_malformed": KindSpec(True, False, doc="n malformed frames (variant: " + ", ".join(MALFORMED_VARIANTS) + ")"),
    "ws_skip": KindSpec(True, False, needs_code=True, doc="the next n ticks of code are not sent"),
    "ws_burst": KindSpec(
        False, False, needs_code=True, default_n=None, doc="hold code's ticks until one frame of exactly records"
    ),
    "ws_encrypted": KindSpec(True, False, doc="n encrypted (1|...) frames"),
    "ws_key_in_use": KindSpec(False, True, doc="new sessions refused with OPSP8996 for seconds"),
    "rest_5xx": KindSpec(True, False, doc="the next n REST calls answer HTTP status (502|503) with a non-KIS body"),
    "rest_rate_limit": KindSpec(True, False, doc="the next n REST calls answer EGW00201"),
    "rest_slow": KindSpec(True, False, doc="the next n REST calls are delayed by seconds"),
    "token_expire_now": KindSpec(False, False, doc="every issued token expires now"),
    "token_refuse": KindSpec(True, False, doc="the next n tokenP calls answer 403 EGW00133"),
}


class FaultError(ValueError):
    """A fault request that cannot be applied; the message says why."""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="milliseconds") if t is not None else None


@dataclass
class Fault:
    id: int
    kind: str
    appkey: str | None = field(repr=False)
    code: str | None
    params: dict[str, Any]
    created_sim: datetime
    created_real: float  # unix epoch seconds
    remaining: int | None = None
    until_mono: float | None = None  # window end, monotonic
    ends_sim: datetime | None = None  # planned window end on the sim clock
    ends_real: float | None = None
    ended_sim: datetime | None = None
    ended_real: float | None = None
    applied: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    session_ids: set[int] = field(default_factory=set)  # sessions a window/immediate fault targets
    done: bool = False

    def matches(self, appkey: str | None = None, code: str | None = None) -> bool:
        if self.appkey is not None and appkey != self.appkey:
            return False
        if self.code is not None and code is not None and code != self.code:
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        params = dict(self.params)
        if self.appkey is not None:
            params["appkey"] = appkey_id(self.appkey)
        return {
            "id": self.id,
            "kind": self.kind,
            "params": params,
            "status": "done" if self.done else "active",
            "remaining": self.remaining,
            "applied": self.applied,
            "start_sim": _iso(self.created_sim),
            "start_real": round(self.created_real, 3),
            "end_sim": _iso(self.ended_sim or self.ends_sim),
            "end_real": round(r, 3) if (r := self.ended_real or self.ends_real) is not None else None,
            "sessions": sorted(self.session_ids),
            "events": self.events[-1000:],
        }


class FaultBook:
    """Active faults plus the log of every fault ever posted (until reset)."""

    MAX_EVENTS = 1000

    def __init__(self, now_sim: Callable[[], datetime], speed: Callable[[], float]):
        self._now_sim = now_sim
        self._speed = speed
        self._ids = itertools.count(1)
        self._faults: list[Fault] = []  # the log: every fault posted since start/reset
        self._active: list[Fault] = []

    # --- posting ----------------------------------------------------------------------------
    def add(self, body: dict[str, Any]) -> Fault:
        if not isinstance(body, dict):
            raise FaultError("fault body must be a JSON object with 'kind'")
        kind = body.get("kind")
        spec = KINDS.get(kind)  # type: ignore[arg-type]
        if spec is None:
            raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        params = {k: v for k, v in body.items() if k not in ("kind", "appkey")}
        appkey = body.get("appkey")
        if appkey is not None and not isinstance(appkey, str):
            raise FaultError("appkey must be a string")
        code = body.get("code")
        if spec.needs_code and not (isinstance(code, str) and code):
            raise FaultError(f"{kind} needs 'code' (a symbol)")
        if code is not None and not isinstance(code, str):
            raise FaultError("code must be a string")
        now_sim, now_real, now_mono = self._now_sim(), time.time(), time.monotonic()
        fault = Fault(next(self._ids), kind, appkey, code, params, now_sim, now_real)
        if spec.counted:
            n = body.get("n", spec.default_n)
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise FaultError(f"{kind}: n must be a positive integer")
            fault.remaining = n
        seconds = body.get("seconds")
        if spec.window or kind in ("rest_slow", "ws_stall"):
            if seconds is None and kind != "ws_stall":
                raise FaultError(f"{kind} needs 'seconds'")
            if seconds is not None:
                if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds <= 0:
                    raise FaultError(f"{kind}: seconds must be a positive number")
                if kind != "rest_slow":
                    fault.until_mono = now_mono + float(seconds)
                    fault.ends_real = now_real + float(seconds)
                    fault.ends_sim = now_sim + timedelta(seconds=float(seconds) * self._speed())
        tr_id = body.get("tr_id")
        if tr_id is not None and (kind not in _TR_KINDS or tr_id not in _TRADE_TRS):
            raise FaultError(f"tr_id confines {', '.join(_TR_KINDS)} to one of {', '.join(_TRADE_TRS)}")
        if kind == "ws_drop":
            cf = body.get("close_frame", True)
            if not isinstance(cf, bool):
                raise FaultError("ws_drop: close_frame must be true or false")
            params["close_frame"] = cf
        if kind == "ws_malformed":
            variant = body.get("variant")
            if variant is not None and variant not in MALFORMED_VARIANTS:
                raise FaultError(f"ws_malformed: variant must be one of {', '.join(MALFORMED_VARIANTS)}")
        if kind == "ws_burst":
            records = body.get("records")
            if not isinstance(records, int) or isinstance(records, bool) or not 1 <= records <= 999:
                raise FaultError("ws_burst: records must be an integer 1..999")
        if kind == "rest_5xx":
            status = body.get("status", 503)
            if status not in (500, 502, 503, 504):
                raise FaultError("rest_5xx: status must be 500, 502, 503 or 504")
            params["status"] = status
        self._faults.append(fault)
        self._active.append(fault)
        return fault

    def clear(self) -> int:
        """End every active fault (kept in the log)."""
        n = 0
        for f in list(self._active):
            if not f.done:
                self.finish(f)
                n += 1
        self._active.clear()
        return n

    def reset(self) -> None:
        self._faults.clear()
        self._active.clear()

    # --- consulting -------------------------------------------------------------------------
    def _expire(self) -> None:
        if not self._active:
            return
        now = time.monotonic()
        for f in self._active:
            if not f.done and f.until_mono is not None and now >= f.until_mono:
                f.done = True
                f.ended_sim = f.ends_sim
                f.ended_real = f.ends_real
        if any(f.done for f in self._active):
            self._active = [f for f in self._active if not f.done]

    def active(self, kind: str, *, appkey: str | None = None, code: str | None = None) -> list[Fault]:
        self._expire()
        return [f for f in self._active if f.kind == kind and f.matches(appkey, code)]

    def first(self, kind: str, *, appkey: str | None = None, code: str | None = None) -> Fault | None:
        found = self.active(kind, appkey=appkey, code=code)
        return found[0] if found else None

    def use(self, fault: Fault, event: dict[str, Any] | None = None, n: int = 1) -> None:
        """Record one application; a counted fault ends when its count is used up."""
        fault.applied += n
        if event is not None and len(fault.events) < self.MAX_EVENTS:
            event.setdefault("at_sim", _iso(self._now_sim()))
            fault.events.append(event)
        if fault.remaining is not None:
            fault.remaining = max(0, fault.remaining - n)
            if fault.remaining == 0:
                self.finish(fault)

    def finish(self, fault: Fault) -> None:
        if not fault.done:
            fault.done = True
            fault.ended_sim = self._now_sim()
            fault.ended_real = time.time()

    def to_json(self) -> dict[str, Any]:
        self._expire()
        return {
            "active": [f.to_json() for f in self._faults if not f.done],
            "log": [f.to_json() for f in self._faults],
            "kinds": {k: v.doc for k, v in KINDS.items()},
        }
