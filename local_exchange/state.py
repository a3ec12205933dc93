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
    rest_url: str = ""
    ws_url: str = ""
