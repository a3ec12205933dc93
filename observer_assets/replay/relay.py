"""`observer relay`: what the Track B capture receives, re-served live over the KIS WebSocket protocol.

KIS allows one session per app key and the capture holds it, so local clients cannot have their own; the relay
gives them the capture's. It **tails the capture's journal** rather than tapping the capture process: the journal is
already the one durable, CRC-sealed record of every frame, written by one writer, so the relay needs no change to
the capture, cannot slow it down or take it down, and serves only what Observer actually recorded. A line is
served once it is whole (ends in a newline) and its CRC matches; a torn or corrupt line is counted, never sent.

Read-only: a client registers a (tr_id, code) the capture holds (its registration acks in the journal, or frames
already seen) and gets those frames from then on; any other registration gets an error answer shaped like KIS's
(``rt_cd`` 1, ``msg_cd`` :data:`NOT_HELD_MSG_CD`). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import deque
from datetime import date, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from local_exchange.clock import SimClock
from local_exchange.frame_source import route_frame
from observer_assets.replay.quotes import RecordedQuotes, handlers
from observer_assets.replay.recording import RecordingError, us
from observer_assets.replay.server import EmittedLog, Served, _json, dirs, make_state, serve_until_signal
from observer_assets.track_b.journal_format import line_ok, segments
from observer_resources.calendar import KST
from observer_resources.kis import protocol as p

log = logging.getLogger("observer.relay")
#: the relay's answer to a registration it cannot serve (its own code, in KIS's control-answer shape)
NOT_HELD_MSG_CD = "OPSP9990"
KEEP_FRAMES = 50_000  # frames kept per (tr_id, code) for late readers of a stream
QUOTES_REFRESH_S = 60.0


class JournalTail:
    """New sealed lines of every key's segments of a day, from where the last call stopped."""

    def __init__(self, local: Path) -> None:
        self.local = local
        self.offsets: dict[Path, int] = {}
        self.bad_lines = 0
        self.lines = 0

    def poll(self, day: date) -> list[tuple[str | None, dict[str, Any]]]:
        """(key id, decoded line) of every line sealed since the last poll; an unfinished last line waits."""
        out: list[tuple[str | None, dict[str, Any]]] = []
        for path in segments(self.local, day):
            start = self.offsets.get(path, 0)
            try:
                if path.stat().st_size < start:  # quarantined and begun again by the capture: a new file
                    start = 0
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            key = path.parent.name[4:] if path.parent.name.startswith("key=") else None
            for ln in data[:end].split(b"\n"):
                if not ln:
                    continue
                if not line_ok(ln):
                    self.bad_lines += 1
                    continue
                try:
                    out.append((key, json.loads(ln)))
                except ValueError:
                    self.bad_lines += 1
                    continue
                self.lines += 1
            self.offsets[path] = start + end + 1
        return out


class LiveStream:
    """One (tr_id, code)'s frames as they arrive, the newest KEEP_FRAMES of them; positions are absolute."""

    __slots__ = ("frames", "base")

    def __init__(self) -> None:
        self.frames: deque[str] = deque(maxlen=KEEP_FRAMES)
        self.base = 0  # absolute position of frames[0]

    @property
    def end(self) -> int:
        return self.base + len(self.frames)

    def add(self, frame: str) -> None:
        if len(self.frames) == KEEP_FRAMES:
            self.base += 1
        self.frames.append(frame)


class LiveSource:
    """Frames of the capture's journal, due as soon as they are tailed."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, str], LiveStream] = {}
        self.held: dict[str | None, set[tuple[str, str]]] = {}  # per capture key: its registrations (acks)
        self.emitted = EmittedLog(keep=1000)
        self.frames = 0
        self.last_rx_us = 0

    def ingest(self, key: str | None, line: dict[str, Any]) -> None:
        if line.get("t", "frame") != "frame":
            return
        text = line.get("p")
        if not isinstance(text, str):
            return
        self.last_rx_us = us(datetime.fromisoformat(line["rx"]))
        if text.startswith("{"):
            self._control(key, text)
            return
        for tr_id, code, frame in route_frame(text) or ():
            s = self.streams.get((tr_id, code))
            if s is None:
                s = self.streams[(tr_id, code)] = LiveStream()
            s.add(frame)
            self.frames += 1
            self.held.setdefault(key, set()).add((tr_id, code))

    def _control(self, key: str | None, text: str) -> None:
        """The capture's registration acks say what it holds: OPSP0000 adds, OPSP0001 removes."""
        try:
            msg = json.loads(text)
            header, body = msg["header"], msg.get("body") or {}
            tr_id, tr_key, msg_cd = header.get("tr_id"), header.get("tr_key"), body.get("msg_cd")
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if tr_id not in p.WS_REALTIME_TRS or not tr_key:
            return
        held = self.held.setdefault(key, set())
        if msg_cd in (p.OPSP_SUBSCRIBED, p.OPSP_ALREADY):
            held.add((tr_id, tr_key))
        elif msg_cd == p.OPSP_UNSUBSCRIBED:
            held.discard((tr_id, tr_key))

    def holds(self, tr_id: str, tr_key: str) -> bool:
        return any((tr_id, tr_key) in h for h in self.held.values())

    # --- FrameSource ---
    def refusal(self, tr_id: str, tr_key: str) -> tuple[str, str, str] | None:
        if self.holds(tr_id, tr_key):
            return None
        return ("1", NOT_HELD_MSG_CD, f"NOT HELD BY RELAY : {tr_id} {tr_key}")

    def start(self, tr_id: str, tr_key: str, now: datetime) -> Any:
        s = self.streams.get((tr_id, tr_key))
        return s.end if s is not None else 0

    def take(self, tr_id: str, tr_key: str, pos: Any, now: datetime) -> tuple[list[str], Any]:
        s = self.streams.get((tr_id, tr_key))
        if s is None or pos >= s.end:
            return [], pos
        i = max(pos, s.base) - s.base
        return [s.frames[k] for k in range(i, len(s.frames))], s.end

    def rewind(self, pos: Any, n: int) -> Any:
        return pos - n

    def sent(self, appkey: str, session: int, tr_id: str, tr_key: str, frames: list[str], now: datetime) -> None:
        self.emitted.add(appkey, session, tr_id, tr_key, frames, now)


class RelayServer(Served):
    """The exchange's server over :class:`LiveSource`, fed by a :class:`JournalTail` of today's segments."""

    def __init__(self, root: Any, local: Path, *, poll: float = 0.01, **kw: Any) -> None:
        self.root, self.local, self.poll = root, local, poll
        self.source = LiveSource()
        self.tail = JournalTail(local)
        clock = SimClock()
        self.day = clock.now().date()
        self.quotes = RecordedQuotes(root, self.day)
        self._handlers = handlers(self.quotes)
        super().__init__(make_state(self.source, clock, self._handlers), emit_interval=0.01, **kw)
        self._task: asyncio.Task | None = None
        self._quotes_at = time.monotonic()
        self.last_poll_s = 0.0

    async def catch_up(self) -> None:
        """Read today's journal so far (what the capture holds), before serving."""
        await self._poll_once()

    async def _poll_once(self) -> None:
        day = self.state.clock.now().date()
        if day != self.day:  # midnight: the new day's segments, from their start
            self.day, self.tail.offsets = day, {}
        t0 = time.monotonic()
        lines = await asyncio.to_thread(self.tail.poll, day)
        for key, line in lines:
            self.source.ingest(key, line)
        self.last_poll_s = time.monotonic() - t0
        if time.monotonic() - self._quotes_at > QUOTES_REFRESH_S:
            self._quotes_at = time.monotonic()
            q = await asyncio.to_thread(RecordedQuotes, self.root, day)
            self.state.rest_handlers = handlers(q)
            self.quotes = q

    async def _follow(self) -> None:
        while True:
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failing tail must be seen, and retried, not end the relay
                log.exception("reading the journal failed; retrying")
            await asyncio.sleep(self.poll)

    async def start(self, host: str, rest_port: int, ws_port: int) -> None:
        await self.catch_up()
        await super().start(host, rest_port, ws_port)
        self._task = asyncio.create_task(self._follow(), name="relay-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await super().stop()

    def add_admin(self, app: web.Application) -> None:
        async def status(request: web.Request) -> web.Response:
            held: dict[str, list[str]] = {}
            for h in self.source.held.values():
                for tr, code in h:
                    held.setdefault(tr, []).append(code)
            src = self.source
            return _json(
                {
                    "day": self.day.isoformat(),
                    "keys": sorted(k for k in src.held if k),
                    "held": {tr: sorted(set(c)) for tr, c in sorted(held.items())},
                    "frames": src.frames,
                    "lines": self.tail.lines,
                    "bad_lines": self.tail.bad_lines,
                    "last_rx": datetime.fromtimestamp(src.last_rx_us / 1e6, KST).isoformat()
                    if src.last_rx_us
                    else None,
                    "last_poll_ms": round(self.last_poll_s * 1000, 3),
                    "sessions": len(self.state.hub.sessions),
                    "emitted_by_tr": dict(src.emitted.counts),
                }
            )

        app.router.add_get("/admin/relay/status", status)


def relay_main(args: argparse.Namespace) -> int:
    """``observer relay``: exit 2 with one line when the journal's directory is missing or a port is taken."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        root, local = dirs(args.data_dir)
    except RecordingError as exc:
        print(f"observer relay: {exc}", file=sys.stderr)
        return 2
    if args.poll <= 0:
        print(f"observer relay: --poll must be > 0, got {args.poll}", file=sys.stderr)
        return 2
    server = RelayServer(
        root,
        local,
        poll=args.poll,
        ping_interval=args.ping_interval,
        ping_grace=args.ping_grace,
        hold_after_disconnect=args.hold_after_disconnect,
    )
    server.host, server.rest_port, server.ws_port = "127.0.0.1", args.rest_port, args.ws_port  # type: ignore[attr-defined]
    ready = f"observer-relay ready rest={{rest}} ws={{ws}} day={server.day} journal={local}"
    try:
        return asyncio.run(serve_until_signal(server, ready))
    except OSError as exc:
        print(f"observer relay: cannot serve: {exc}", file=sys.stderr)
        return 2
