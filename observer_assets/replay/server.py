"""`observer replay DAY`: the local exchange's REST + WebSocket servers serving a recorded day.

The server is the exchange's own (``local_exchange``: accounts, tokens, rate limits, one session per app key, acks,
PINGPONG, the 41-registration limit, faults, stats); only the stream's frames come from a
:class:`RecordedSource` and the quotation TRs from :mod:`observer_assets.replay.quotes`.

The replay clock is the exchange's ``SimClock``: it starts at ``--from`` (default: the first recorded frame) on the
recorded day and runs at ``--speed``; a frame is due once the clock passes its receive time. Tokens are issued on
the wall clock instead, so a client that checks a token's expiry against its own clock (python-kis) accepts it on
a day long past. The admin API (``/admin/replay/...``) reads and sets the clock, lists the gaps and says what was
emitted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from local_exchange.accounts import AccountBook, appkey_id
from local_exchange.app import make_rest_app, make_ws_app
from local_exchange.clock import SimClock
from local_exchange.faults import FaultBook
from local_exchange.state import SimState
from local_exchange.stats import Stats
from local_exchange.ws import STATUS_TRS, WsHub
from observer_assets.replay.quotes import RecordedQuotes, handlers
from observer_assets.replay.recording import Recording, RecordingError, from_us, gaps_of, load, us
from observer_resources.calendar import KST

log = logging.getLogger("observer.replay")
EMITTED_KEEP = 200_000  # frames kept per (app key, TR, code) for /admin/replay/emitted


class EmittedLog:
    """What the stream sent, per (app key, TR, code): frame texts with the session and the replay instant."""

    def __init__(self, keep: int = EMITTED_KEEP) -> None:
        self.keep = keep
        self._d: dict[tuple[str, str, str], list[tuple[int, str, str]]] = {}
        self.counts: Counter = Counter()

    def add(self, appkey: str, session: int, tr_id: str, code: str, frames: list[str], now: datetime) -> None:
        rows = self._d.setdefault((appkey, tr_id, code), [])
        at = now.isoformat(timespec="microseconds")
        rows.extend((session, at, f) for f in frames)
        if len(rows) > self.keep:
            del rows[: len(rows) - self.keep]
        self.counts[tr_id] += len(frames)

    def to_json(self, appkey: str, tr_id: str, code: str) -> dict[str, Any]:
        rows = self._d.get((appkey, tr_id, code), [])
        return {
            "appkey": appkey_id(appkey),
            "tr_id": tr_id,
            "code": code,
            "count": len(rows),
            "entries": [{"session": s, "sent_at": at, "frame": f} for s, at, f in rows],
        }


class RecordedSource:
    """Frames of a :class:`Recording`, due when the replay clock passes their receive time."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec
        self.epoch = 0
        self.seek_us = 0
        self.emitted = EmittedLog()

    def refusal(self, tr_id: str, tr_key: str) -> tuple[str, str, str] | None:
        return None  # a code the recording does not hold answers like an untraded code: accepted, silent

    def start(self, tr_id: str, tr_key: str, now: datetime) -> Any:
        s = self.rec.streams.get((tr_id, tr_key))
        if s is None:
            return (self.epoch, 0)
        i = s.index_after(us(now))
        # a status feed answers a registration with the venue's current phase: the latest recorded one, if any
        return (self.epoch, i - 1 if i and tr_id in STATUS_TRS else i)

    def take(self, tr_id: str, tr_key: str, pos: Any, now: datetime) -> tuple[list[str], Any]:
        s = self.rec.streams.get((tr_id, tr_key))
        if s is None:
            return [], pos
        epoch, i = pos
        if epoch != self.epoch:  # the clock was set: carry on from the new instant
            i = s.index_after(self.seek_us)
        hi = s.index_after(us(now))
        return (s.frames[i:hi] if hi > i else []), (self.epoch, max(i, hi))

    def rewind(self, pos: Any, n: int) -> Any:
        return (pos[0], pos[1] - n)

    def sent(self, appkey: str, session: int, tr_id: str, tr_key: str, frames: list[str], now: datetime) -> None:
        self.emitted.add(appkey, session, tr_id, tr_key, frames, now)

    def seek(self, at: datetime) -> None:
        self.epoch += 1
        self.seek_us = us(at)


def make_state(source: Any, clock: SimClock, rest_handlers: dict) -> SimState:
    """The exchange's state with no synthetic market: the source's frames, the recorded TRs, wall-clock tokens."""
    state = SimState(
        market=None,
        clock=clock,
        accounts=AccountBook(mode="real"),
        faults=FaultBook(clock.now, lambda: clock.speed),
        stats=Stats(),
        mode="real",
        seed=0,
        clock_mode="open",
        fields47=False,
        frame_source=source,
        rest_handlers=rest_handlers,
        token_clock=SimClock(),
    )
    return state


class Served:
    """REST + WebSocket listeners over a state (what SimServer.start does, without a market to warm)."""

    def __init__(self, state: SimState, *, ping_interval: float, ping_grace: float, hold_after_disconnect: float,
                 emit_interval: float = 0.05) -> None:  # fmt: skip
        self.state = state
        state.hub = WsHub(
            state,
            ping_interval=ping_interval,
            ping_grace=ping_grace,
            hold_after_disconnect=hold_after_disconnect,
            emit_interval=emit_interval,
        )
        self._runners: list[web.AppRunner] = []

    def add_admin(self, app: web.Application) -> None:
        """Routes of the server's own admin API."""

    async def start(self, host: str, rest_port: int, ws_port: int) -> None:
        rest_app = make_rest_app(self.state, market=False)
        self.add_admin(rest_app)
        ports = []
        for app, port in ((rest_app, rest_port), (make_ws_app(self.state.hub), ws_port)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            ports.append(runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        self.state.rest_url = f"http://{shown}:{ports[0]}"
        self.state.ws_url = f"ws://{shown}:{ports[1]}"

    async def stop(self) -> None:
        await self.state.hub.close_all()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: __import__("json").dumps(o, ensure_ascii=False))


class ReplayServer(Served):
    """A recorded day re-served: the recording's frames on the stream, its Track A and minute bars on REST."""

    def __init__(
        self,
        rec: Recording,
        quotes: RecordedQuotes,
        *,
        root: Any,
        local: Path,
        speed: float = 1.0,
        start: datetime | None = None,
        end: datetime | None = None,
        ping_interval: float = 10.0,
        ping_grace: float = 60.0,
        hold_after_disconnect: float = 2.0,
    ) -> None:
        self.rec = rec
        self.quotes = quotes
        self.root, self.local = root, local
        self.source = RecordedSource(rec)
        day0 = datetime.combine(rec.day, datetime.min.time(), KST)
        self.t_from = start or (rec.first.replace(microsecond=0) if rec.first else day0)
        self.t_to = end
        clock = SimClock(start=self.t_from, speed=speed)
        state = make_state(self.source, clock, handlers(quotes))
        super().__init__(
            state, ping_interval=ping_interval, ping_grace=ping_grace, hold_after_disconnect=hold_after_disconnect
        )
        self._gaps: dict[str, Any] | None = None

    def clock_json(self) -> dict[str, Any]:
        now = self.state.clock.now()
        last = self.rec.last
        return {
            "now": now.isoformat(),
            "speed": self.state.clock.speed,
            "day": self.rec.day.isoformat(),
            "from": self.t_from.isoformat(),
            "to": self.t_to.isoformat() if self.t_to else None,
            "last_frame": last.isoformat() if last else None,
            "finished": last is None or now > last,
        }

    def add_admin(self, app: web.Application) -> None:
        async def clock_get(request: web.Request) -> web.Response:
            return _json(self.clock_json())

        async def clock_post(request: web.Request) -> web.Response:
            try:
                body = await request.json() if request.can_read_body else {}
                at = datetime.fromisoformat(body["at"]) if body.get("at") else None
                if at is not None and at.tzinfo is None:
                    at = at.replace(tzinfo=KST)
                speed = body.get("speed")
                if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float)):
                    raise ValueError("speed must be a number >= 0")
                if at is not None and at.astimezone(KST).date() != self.rec.day:
                    raise ValueError(f"at must be on the replayed day {self.rec.day}")
                self.state.clock.set(at=at, speed=speed)
            except (ValueError, TypeError, AttributeError) as exc:
                return _json({"error": str(exc)}, status=400)
            if at is not None:
                self.source.seek(at)
            return _json(self.clock_json())

        async def gaps(request: web.Request) -> web.Response:
            if self._gaps is None:
                self._gaps = await asyncio.to_thread(gaps_of, self.root, self.local, self.rec.day, self.rec)
            return _json(self._gaps)

        async def summary(request: web.Request) -> web.Response:
            q = self.quotes
            body = self.rec.summary() | {
                "track_a_slots": q.slots,
                "minute_bars": q.minute_bars,
                "emitted_by_tr": dict(self.source.emitted.counts),
            }
            return _json(body)

        async def emitted(request: web.Request) -> web.Response:
            try:
                key, tr, code = (request.query[k] for k in ("appkey", "tr_id", "code"))
            except KeyError as exc:
                return _json({"error": f"missing query parameter {exc}"}, status=400)
            return _json(self.source.emitted.to_json(key, tr, code))

        async def recorded(request: web.Request) -> web.Response:
            """The recording's frames of one (tr_id, code) with their receive times: what a session registered
            before the first frame would be sent."""
            try:
                tr, code = request.query["tr_id"], request.query["code"]
            except KeyError as exc:
                return _json({"error": f"missing query parameter {exc}"}, status=400)
            s = self.rec.streams.get((tr, code))
            rows = [] if s is None else [{"rx": from_us(t).isoformat(), "frame": f} for t, f in zip(s.rx, s.frames)]
            return _json({"tr_id": tr, "code": code, "count": len(rows), "entries": rows})

        r = app.router
        r.add_get("/admin/replay/clock", clock_get)
        r.add_post("/admin/replay/clock", clock_post)
        r.add_get("/admin/replay/gaps", gaps)
        r.add_get("/admin/replay/summary", summary)
        r.add_get("/admin/replay/emitted", emitted)
        r.add_get("/admin/replay/recorded", recorded)


# --- the command ---------------------------------------------------------------------------------------------------
def dirs(data_dir: str | None) -> tuple[Any, Path]:
    """(the lake, the local directory) of the day: ``--data-dir`` for both, else the settings'."""
    from observer_resources.storage import lake

    if data_dir:
        d = Path(data_dir)
        if not d.is_dir():
            raise RecordingError(f"--data-dir {data_dir} is not a directory")
        return d, d
    return lake.data_dir(), lake.existing_local_dir()


def build_replay(args: argparse.Namespace, day: date) -> ReplayServer:
    """Load the day and build its server (slow part: reading the journal); raises RecordingError."""
    if args.speed < 0:
        raise RecordingError(f"--speed must be >= 0, got {args.speed}")
    root, local = dirs(args.data_dir)
    t0 = time.monotonic()
    rec = load(local, root, day, t_from=args.t_from, t_to=args.t_to, source=args.source)
    quotes = RecordedQuotes(root, day, {c for _, c in rec.streams})
    day0 = datetime.combine(day, datetime.min.time(), KST)
    start = day0 + _hm(args.t_from) if args.t_from else None
    end = day0 + _hm(args.t_to) if args.t_to else None
    log.info(
        "loaded %s from the %s: %d frames of %d streams, %d Track A slots, %d minute bars in %.1fs",
        day, rec.source, rec.frames, len(rec.streams), quotes.slots, quotes.minute_bars, time.monotonic() - t0,
    )  # fmt: skip
    return ReplayServer(
        rec,
        quotes,
        root=root,
        local=local,
        speed=args.speed,
        start=start,
        end=end,
        ping_interval=args.ping_interval,
        ping_grace=args.ping_grace,
        hold_after_disconnect=args.hold_after_disconnect,
    )


def _hm(text: str) -> timedelta:
    h, m = (int(x) for x in text.split(":"))
    return timedelta(hours=h, minutes=m)


async def serve_until_signal(server: Served, ready: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(server.host, server.rest_port, server.ws_port)  # type: ignore[attr-defined]
    sys.stdout.write(ready.format(rest=server.state.rest_url, ws=server.state.ws_url) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


def replay_main(args: argparse.Namespace, day: date) -> int:
    """``observer replay``: exit 2 with one line on a day that cannot be replayed or a port that is taken."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = build_replay(args, day)
    except RecordingError as exc:
        print(f"observer replay: {exc}", file=sys.stderr)
        return 2
    server.host, server.rest_port, server.ws_port = args.host, args.rest_port, args.ws_port  # type: ignore[attr-defined]
    rec = server.rec
    ready = (
        "observer-replay ready rest={rest} ws={ws} "
        f"day={rec.day} source={rec.source} frames={rec.frames} from={server.t_from.strftime('%H:%M:%S')} "
        f"speed={args.speed:g}"
    )
    try:
        return asyncio.run(serve_until_signal(server, ready))
    except OSError as exc:
        print(f"observer replay: cannot serve on {args.host}: {exc}", file=sys.stderr)
        return 2
