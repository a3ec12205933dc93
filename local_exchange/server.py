"""Run the local exchange: in-process (:class:`SimServer`) or as a child process for tests.

Tests run the exchange in a **subprocess** (:func:`run_sim_process`) so that they talk to it over
real loopback HTTP and WebSocket exactly as the production client does, and so that a sim bug
cannot share state with the code under test. The child prints one ``observer-sim ready ...`` line
once both listeners are up; the parent waits for it (with a clear error that includes the child's
stderr if it never comes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from local_exchange.accounts import AccountBook, AccountSpec
from local_exchange.clock import SimClock
from local_exchange.faults import FaultBook
from local_exchange.state import SimState
from local_exchange.stats import Stats

log = logging.getLogger("observer.sim")

DEFAULT_REST_PORT = 18700
DEFAULT_WS_PORT = 18701
READY_RE = re.compile(r"^observer-sim ready rest=(?P<rest>\S+) ws=(?P<ws>\S+)(?P<rest_of>.*)$")


class SimServer:
    """The exchange in this process: REST (+ admin, masters) and WebSocket listeners."""

    def __init__(
        self,
        *,
        mode: str = "real",
        seed: int = 0,
        listings: int = 2600,
        activity: float = 1.0,
        clock_mode: str = "krx",
        speed: float = 1.0,
        start: datetime | None = None,
        fields: int = 46,
        ping_interval: float = 10.0,
        ping_grace: float = 60.0,
        hold_after_disconnect: float = 2.0,
        rate_real: float = 20.0,
        rate_paper: float = 2.0,
        accounts: list[AccountSpec] | None = None,
        emit_interval: float = 0.05,
    ):
        from local_exchange.market import Market
        from local_exchange.ws import WsHub

        if mode not in ("real", "paper"):
            raise ValueError(f"mode must be 'real' or 'paper', got {mode!r}")
        if clock_mode not in ("krx", "open"):
            raise ValueError(f"clock must be 'krx' or 'open', got {clock_mode!r}")
        if fields not in (46, 47):
            raise ValueError(f"fields must be 46 or 47, got {fields!r}")
        clock = SimClock(start=start, speed=speed)
        market = Market(seed=seed, listings=listings, clock_mode=clock_mode, fields47=fields == 47, activity=activity)
        self.state = SimState(
            market=market,
            clock=clock,
            accounts=AccountBook(mode=mode, accounts=accounts, rate_real=rate_real, rate_paper=rate_paper),  # type: ignore[arg-type]
            faults=FaultBook(clock.now, lambda: clock.speed),
            stats=Stats(),
            mode=mode,
            seed=seed,
            clock_mode=clock_mode,
            fields47=fields == 47,
        )
        self.state.hub = WsHub(
            self.state,
            ping_interval=ping_interval,
            ping_grace=ping_grace,
            hold_after_disconnect=hold_after_disconnect,
            emit_interval=emit_interval,
        )
        self._runners: list[web.AppRunner] = []

    @property
    def market(self) -> Any:
        return self.state.market

    @property
    def clock(self) -> SimClock:
        return self.state.clock

    @property
    def rest_url(self) -> str:
        return self.state.rest_url

    @property
    def ws_url(self) -> str:
        return self.state.ws_url

    async def start(
        self, host: str = "127.0.0.1", rest_port: int = DEFAULT_REST_PORT, ws_port: int = DEFAULT_WS_PORT
    ) -> None:
        from local_exchange.app import make_rest_app, make_ws_app

        # Generate today's trades before listening: a cold quote of the whole universe costs 1-2.5 s of CPU, and a
        # server busy with that answers queued requests in a burst, compressing them into its 1 s rate window
        # (measured: 3 EGW00201 on a 2,500-symbol sweep paced at 18/s). KIS does not stall like that.
        await asyncio.to_thread(self._warm_today)
        rest_app = make_rest_app(self.state)
        ws_app = make_ws_app(self.state.hub)
        ports = []
        for app, port in ((rest_app, rest_port), (ws_app, ws_port)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            self._runners.append(runner)
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            ports.append(runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        self.state.rest_url = f"http://{shown}:{ports[0]}"
        self.state.ws_url = f"ws://{shown}:{ports[1]}"

    def _warm_today(self) -> None:
        day = self.clock.now().date()
        if self.market.is_trading_day(day):
            for listing in self.market.listings:
                self.market.day_ticks(listing.code, day)

    async def stop(self) -> None:
        if self.state.hub is not None:
            await self.state.hub.close_all()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


# --- subprocess runner (tests) ----------------------------------------------------------------
class SimStartError(RuntimeError):
    """The child exchange did not come up; the message carries its stderr."""


class SimProcess:
    """A running ``python -m local_exchange`` child. Use as a context manager or call stop()."""

    def __init__(self, proc: subprocess.Popen, rest_url: str, ws_url: str, stderr_path: Path, ready_line: str):
        self.proc = proc
        self.rest_url = rest_url
        self.ws_url = ws_url
        self.ready_line = ready_line
        self._stderr_path = stderr_path
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        import httpx

        self._http = httpx.Client(base_url=rest_url, timeout=30.0)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def admin(self, path: str, json: Any = None, *, method: str | None = None, params: dict | None = None) -> Any:
        """Call ``/__sim__/<path>``; POST when ``json`` is given. Raises with the body on HTTP errors."""
        url = "/__sim__/" + path.lstrip("/")
        verb = method or ("POST" if json is not None else "GET")
        r = self._http.request(verb, url, json=json, params=params)
        if r.status_code >= 400:
            raise RuntimeError(f"sim admin {verb} {url} -> HTTP {r.status_code}: {r.text}")
        return r.json()

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL as a last resort; returns the exit code."""
        try:
            self._http.close()
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:
            self._stderr_path.unlink()
        except OSError:
            pass
        return self.proc.returncode

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sim_process(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> SimProcess:
    """Start the exchange as a child on free ports (``--rest-port 0 --ws-port 0``) and wait until ready."""
    argv = [sys.executable, "-m", "local_exchange", "--rest-port", "0", "--ws-port", "0", *map(str, args)]
    fd, name = tempfile.mkstemp(prefix="observer-sim-", suffix=".stderr")
    stderr_path = Path(name)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    with os.fdopen(fd, "wb") as err:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=child_env, text=True, bufsize=1
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            m = READY_RE.match(line.strip())
            if m:
                return SimProcess(proc, m["rest"], m["ws"], stderr_path, line.strip())
    finally:
        sel.close()
    code = proc.poll()
    if code is None:
        proc.kill()
        proc.wait(5)
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    stderr_path.unlink(missing_ok=True)
    reason = f"exited with code {code}" if code is not None else f"printed no ready line within {timeout:.0f}s"
    raise SimStartError(f"observer-sim {reason}: {' '.join(argv[1:])}\n--- child stderr ---\n{stderr}")
