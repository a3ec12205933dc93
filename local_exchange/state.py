"""What the REST, WebSocket and admin handlers share: one object, in a module of its own so the handlers and the
server that builds them import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from local_exchange.accounts import AccountBook
from local_exchange.clock import SimClock
from local_exchange.faults import FaultBook
from local_exchange.stats import Stats


@dataclass
class SimState:
    """Everything the REST, WebSocket and admin handlers share."""

    market: Any
    clock: SimClock
    accounts: AccountBook
    faults: FaultBook
    stats: Stats
    mode: str
    seed: int
    clock_mode: str
    fields47: bool
    hub: Any = None  # WsHub, set right after construction (it needs the state)
    # replay / relay (local_exchange/frame_source.py): the stream's frames come from a FrameSource, the REST TRs
    # from other handlers, and tokens live on the wall clock while the day's clock runs elsewhere
    frame_source: Any = None
    rest_handlers: Any = None  # dict[str, Handler] replacing rest.HANDLERS
    token_clock: Any = None  # a SimClock (or anything with now()) for tokens; default: ``clock``
    rest_url: str = ""
    ws_url: str = ""
