"""KIS real-time WebSocket client (docs/kis-protocol.md §8 "WebSocket protocol", docs/collector-rules.md §5).

One long-lived session per app key, kept alive for as long as ``run()`` runs:

* a fresh approval key per connection attempt; websockets' own keepalive pings off
  (``ping_interval=None``) — KIS's JSON ``PINGPONG`` is answered by echoing the exact text (plus a
  pong frame), because an unanswered PINGPONG is how sockets died silently before;
* subscriptions follow a *desired* set of (TR, code) registrations — every desired code on each TR of
  ``tr_ids``, plus any extra pairs; the *registered* set changes only on server acks (OPSP0000/0002
  registered, 0001/0003 free, 0008 refused = "full"); unsubscribe is ``tr_type "2"``; never more than 41
  registrations, counting every pair;
* any disconnect — exception, clean server close, or the watchdog (no traffic at all for
  ``watchdog_seconds``) — emits ``ws_disconnect`` and reconnects forever with backoff 1, 2, 5, 10,
  20, 30, then 60 s (± jitter), longer after OPSP8996 (key still held); after reconnecting the whole
  desired set is re-subscribed and ``ws_connected`` reports the outage, so the capture can write a
  gap marker (KIS has no replay);
* every record of every frame goes to ``on_trades`` (the first trade TR of ``tr_ids``: one tape, so
  cumulative volumes stay one venue's), ``on_orderbooks``, or ``on_feed`` (whole frames of the other trade TRs,
  expected prices and market status) through a bounded queue, so a slow callback
  never stalls the socket reader for long; if the queue fills, the reader waits (no drop) and
  that is counted and logged. Bad frames are counted, logged and reported, never fatal;
* ``on_frame(raw, recv_dt, msg)`` (optional, synchronous, must be quick) sees every frame exactly as
  received (bytes; malformed ones too) with its receive time and its parse, before anything else is
  done with it: the hook a durable raw archive needs ("archive first"). ``connection_id`` tells which
  socket connection the frame came over.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import websockets
from websockets.asyncio.client import ClientConnection, connect

from observer_resources import clock
from observer_resources.kis import protocol as p
from observer_resources.kis.config import KisConfig
from observer_resources.kis.frames import (
    TRADE_TRS,
    Ack,
    Encrypted,
    FeedFrame,
    Malformed,
    Message,
    OrderBookFrame,
    ParseStats,
    PingPong,
    TradeBatch,
    parse_message,
)
from observer_resources.kis.models import OrderBook, Trade
from observer_resources.kis.ports import TokenProvider

log = logging.getLogger("observer.kis")

OnTrades = Callable[[list[Trade], float, datetime], Awaitable[None] | None]
OnOrderBooks = Callable[[list[OrderBook], float, datetime], Awaitable[None] | None]
OnEvent = Callable[[dict[str, Any]], None]
OnFrame = Callable[[bytes, datetime, Message], None]
OnFeed = Callable[[FeedFrame | TradeBatch, float, datetime], Awaitable[None] | None]
Sub = tuple[str, str]  # one registration: (real-time TR, code)

DEFAULT_BACKOFF = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_LOG_FIRST = 20  # per reason: log the first N bad frames, then every 1000th


class _KeyInUse(Exception):
    """OPSP8996: the previous session still holds this app key."""


class _WatchdogExpired(Exception):
    pass


@dataclass
class WsStats:
    parse: ParseStats = field(default_factory=ParseStats)
    connect_attempts: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    disconnect_reasons: Counter = field(default_factory=Counter)
    seconds_disconnected: float = 0.0  # completed outages (disconnect -> reconnected)
    key_in_use: int = 0
    max_over_refusals: int = 0
    ack_timeouts: int = 0
    resyncs: int = 0
    ack_errors: int = 0
    pingpong_replies: int = 0
    trades_delivered: int = 0
    orderbooks_delivered: int = 0
    feed_records_delivered: int = 0  # expected-price and market-status records
    rejected_records: int = 0
    queue_full: int = 0
    queue_blocked_seconds: float = 0.0
    callback_errors: int = 0
    frame_callback_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("parse", "disconnect_reasons")}
        d["disconnect_reasons"] = dict(self.disconnect_reasons)
        d["parse"] = self.parse.as_dict()
        return d


def _now_kst() -> datetime:
    return clock.now()


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def _valid_code(code: str) -> bool:
    return isinstance(code, str) and 0 < len(code) <= 12 and code.isascii() and code.isalnum()


class KisWebSocketClient:
    def __init__(
        self,
        config: KisConfig,
        tokens: TokenProvider,
        *,
        on_trades: OnTrades | None,
        on_event: OnEvent | None = None,
        on_orderbooks: OnOrderBooks | None = None,
        on_frame: OnFrame | None = None,
        tr_id: str = p.TR_WS_TRADE,
        tr_ids: Iterable[str] | None = None,
        on_feed: OnFeed | None = None,
        backoff: Iterable[float] = DEFAULT_BACKOFF,
        jitter: float = 0.2,
        key_in_use_backoff: float = 30.0,
        subscribe_spacing: float = 0.05,
        watchdog_seconds: float = 60.0,
        ack_timeout: float = 5.0,
        queue_size: int = 10_000,
        max_registrations: int = p.WS_MAX_REGISTRATIONS,
        open_timeout: float = 10.0,
        resync_seconds: float = 30.0,
    ) -> None:
        self.config = config
        self._tokens = tokens
        self._on_trades = on_trades
        self._on_event = on_event
        self._on_orderbooks = on_orderbooks
        self._on_frame = on_frame
        #: the real-time TRs registered for every desired code (each (TR, code) pair is one of the 41)
        self.tr_ids: tuple[str, ...] = tuple(dict.fromkeys(tr_ids)) if tr_ids is not None else (tr_id,)
        if not self.tr_ids or not set(self.tr_ids) <= p.WS_REALTIME_TRS:
            raise ValueError(f"tr_ids must be real-time TRs of docs/kis-protocol.md §8.5, got {self.tr_ids!r}")
        self.tr_id = self.tr_ids[0]
        #: the trade TR whose records go to ``on_trades``; other trade TRs go to ``on_feed`` as whole frames
        self.tape_tr = next((tr for tr in self.tr_ids if tr in TRADE_TRS), self.tr_id)
        self._on_feed = on_feed
        self.backoff = tuple(float(b) for b in backoff) or DEFAULT_BACKOFF
        self.jitter = jitter
        self.key_in_use_backoff = key_in_use_backoff
        self.subscribe_spacing = subscribe_spacing
        self.watchdog_seconds = watchdog_seconds
        self.ack_timeout = ack_timeout
        self.max_registrations = max_registrations
        self.open_timeout = open_timeout
        self.resync_seconds = resync_seconds
        u = urlparse(config.ws_url)
        self.url = config.ws_url.rstrip("/") + "/tryitout" if u.path in ("", "/") else config.ws_url

        self._codes: dict[str, None] = {}  # desired codes, insertion-ordered
        self._desired: dict[Sub, None] = {}  # desired (TR, code) registrations, insertion-ordered
        self._registered: set[Sub] = set()
        self._full = False
        self._pending: dict[Sub, asyncio.Future[Ack]] = {}
        self._ws: ClientConnection | None = None
        self._approval_key: str | None = None
        self._sub_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, list[Any], float, datetime] | None] = asyncio.Queue(queue_size)
        self._running = False
        self._last_rx_mono: float | None = None
        self._last_rx_dt: datetime | None = None
        self._down_since: tuple[float, datetime] | None = None  # (monotonic, KST) of the current outage
        self._bad_seen: Counter = Counter()
        self._close_task: asyncio.Task | None = None
        self._last_trade_at: dict[str, datetime] = {}
        self._conn_seq = 0
        self.stats = WsStats()

    def __repr__(self) -> str:
        return (
            f"KisWebSocketClient({self.config!r}, tr_ids={self.tr_ids!r}, connected={self.connected}, "
            f"registered={len(self._registered)}, desired={len(self._desired)})"
        )

    # --- public state ----------------------------------------------------------------------------

    @property
    def registered(self) -> frozenset[str]:
        """Codes the server acknowledged on the current session for every TR of ``tr_ids``."""
        return frozenset(c for c in self._codes if all((tr, c) in self._registered for tr in self.tr_ids))

    @property
    def registrations(self) -> frozenset[Sub]:
        """(TR, code) pairs the server acknowledged as registered on the current session."""
        return frozenset(self._registered)

    @property
    def desired(self) -> frozenset[str]:
        return frozenset(self._codes)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def connection_id(self) -> int:
        """Ordinal (from 1) of the current, or last, socket connection; 0 before the first. Read it in
        ``on_frame`` to tell which connection a frame came over."""
        return self._conn_seq

    @property
    def full(self) -> bool:
        """The server refused a registration with OPSP0008 on this session."""
        return self._full

    @property
    def last_trade_at(self) -> dict[str, datetime]:
        """Receive time (KST) of the latest trade per code: with acks, the per-subscription liveness
        signal (PINGPONG keeps the socket fresh even when one subscription has stopped delivering)."""
        return dict(self._last_trade_at)

    @property
    def seconds_disconnected(self) -> float:
        """Completed outages plus the current one, if any."""
        cur = time.monotonic() - self._down_since[0] if self._down_since else 0.0
        return self.stats.seconds_disconnected + cur

    # --- control ---------------------------------------------------------------------------------

    async def set_desired(self, codes: Iterable[str], extra: Iterable[Sub] = ()) -> None:
        """Make ``codes`` (each on every TR of ``tr_ids``) plus the ``extra`` (TR, code) pairs the subscribed set:
        unsubscribe (tr_type "2") what is no longer wanted, wait for those acks, then subscribe the new pairs,
        paced. Returns when the server has answered (or the ack timeout passed); while disconnected it only
        records the set (reconnect subscribes it)."""
        wanted: dict[str, None] = {}
        for c in codes:
            if not _valid_code(c):
                raise ValueError(f"not a symbol code: {c!r}")
            wanted[c] = None
        new: dict[Sub, None] = {(tr, c): None for c in wanted for tr in self.tr_ids}
        for tr, c in extra:
            if tr not in p.WS_REALTIME_TRS or not _valid_code(c):
                raise ValueError(f"not a real-time registration: {(tr, c)!r}")
            new[(tr, c)] = None
        if len(new) > self.max_registrations:
            raise ValueError(
                f"{len(new)} registrations wanted ({len(wanted)} codes x {len(self.tr_ids)} TRs + extras), "
                f"but one session holds at most {self.max_registrations}"
            )
        self._codes = wanted
        self._desired = new
        ws = self._ws
        if ws is None:
            return
        try:
            await self._reconcile(ws)
        except websockets.ConnectionClosed:
            log.info("kis ws: connection closed while reconciling; the reconnect will subscribe the desired set")

    async def resubscribe(self, codes: Iterable[str]) -> None:
        """Unregister and register ``codes`` again (those still desired), e.g. a subscription that stopped
        delivering while the session stayed alive. No-op while disconnected."""
        ws = self._ws
        wanted = [(tr, c) for c in dict.fromkeys(codes) for tr in self.tr_ids if (tr, c) in self._desired]
        if ws is None or not wanted:
            return
        try:
            async with self._sub_lock:
                if ws is not self._ws:
                    return
                registered = [c for c in wanted if c in self._registered]
                if registered:
                    await self._send_and_wait(ws, registered, p.TR_TYPE_UNREGISTER)
                room = self.max_registrations - len(self._registered)
                add = [c for c in wanted if c not in self._registered][: max(room, 0)]
                if add:
                    await self._send_and_wait(ws, add, p.TR_TYPE_REGISTER)
            log.info("kis ws: re-subscribed %s", ",".join(f"{tr}:{c}" for tr, c in wanted[:10]))
        except websockets.ConnectionClosed:
            log.info("kis ws: connection closed while re-subscribing; the reconnect will subscribe the desired set")

    def stop(self) -> None:
        """Ask ``run()`` to finish: close the socket, deliver what is queued, return."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            self._close_task = asyncio.get_running_loop().create_task(ws.close())

    async def run(self) -> None:
        """Connect, subscribe, read, reconnect — until ``stop()``."""
        if self._running:
            raise RuntimeError("KisWebSocketClient.run() is already running")
        self._running = True
        consumer = asyncio.create_task(self._consume(), name="kis-ws-consumer")
        try:
            await self._connect_loop()
        finally:
            await self._queue.put(None)
            await consumer
            self._running = False
            self._stop.clear()  # a later run() starts afresh; a stop() before run() makes it return at once
            self._emit({"event": "ws_stopped", "at": _iso(_now_kst())})

    # --- connection loop -------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            attempt_started = False
            was_up = False
            delay_floor = 0.0
            reason = ""
            try:
                approval_key = await self._tokens.approval_key()
                self.stats.connect_attempts += 1
                attempt_started = True
                async with connect(
                    self.url,
                    ping_interval=None,
                    open_timeout=self.open_timeout,
                    close_timeout=2,
                    max_size=8 * 2**20,
                    compression=None,
                    user_agent_header=None,
                ) as ws:
                    self._conn_seq += 1
                    self._ws, self._approval_key = ws, approval_key
                    self._registered.clear()
                    self._full = False
                    self._last_rx_mono, self._last_rx_dt = time.monotonic(), _now_kst()
                    reader = asyncio.create_task(self._reader(ws), name="kis-ws-reader")
                    subscriber = asyncio.create_task(self._reconcile(ws), name="kis-ws-subscribe")
                    try:
                        done, _ = await asyncio.wait({reader, subscriber}, return_when=asyncio.FIRST_COMPLETED)
                        if reader in done:
                            subscriber.cancel()
                            await asyncio.gather(subscriber, return_exceptions=True)
                            reader.result()  # raises why it ended
                            raise websockets.ConnectionClosedOK(None, None)  # pragma: no cover
                        subscriber.result()
                        was_up = True
                        failures = 0
                        self._on_up()
                        resync = asyncio.create_task(self._resync_loop(ws), name="kis-ws-resync")
                        try:
                            await reader
                        finally:
                            resync.cancel()
                            await asyncio.gather(resync, return_exceptions=True)
                    finally:
                        for t in (reader, subscriber):
                            t.cancel()
                        await asyncio.gather(reader, subscriber, return_exceptions=True)
                reason = "closed"
            except _KeyInUse:
                reason = "key_in_use"
                self.stats.key_in_use += 1
                delay_floor = self.key_in_use_backoff
            except _WatchdogExpired as exc:
                reason = str(exc)
            except websockets.ConnectionClosedOK as exc:
                reason = f"server_close ({_close_text(exc)})"
            except websockets.ConnectionClosed as exc:
                reason = f"connection_lost ({_close_text(exc)})"
            except asyncio.CancelledError:
                self._after_disconnect("cancelled", was_up)
                raise
            except Exception as exc:  # DNS, refused, handshake, approval-key failure, ...
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            up = was_up  # connected *and* subscribed; a refused or half-built session is a failed attempt
            self._after_disconnect(reason, up)
            if self._stop.is_set():
                break
            delay = self._delay(failures, delay_floor)
            failures += 1
            if not up:
                self.stats.connect_failures += 1
            log.warning(
                "kis ws: %s (%s); reconnect attempt %d in %.1fs",
                "disconnected" if up else "connect failed",
                reason,
                failures,
                delay,
            )
            # The disconnect's own instant (the one a later ws_connected reports as outage_from), not a second clock read.
            at = self._down_since[1] if (up and self._down_since is not None) else _now_kst()
            self._emit(
                {
                    "event": "ws_disconnect" if up else "ws_connect_failed",
                    "at": _iso(at),
                    "reason": reason,
                    "attempt": failures,
                    "retry_in_seconds": round(delay, 3),
                    "attempt_started": attempt_started,
                    "last_rx_at": _iso(self._last_rx_dt) if (up and self._last_rx_dt) else None,
                }
            )
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _delay(self, failures: int, floor: float) -> float:
        base = self.backoff[min(failures, len(self.backoff) - 1)]
        base = max(base, floor)
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def _on_up(self) -> None:
        now_m, now_dt = time.monotonic(), _now_kst()
        self.stats.connects += 1
        outage = None
        since = None
        if self._down_since is not None:
            outage = now_m - self._down_since[0]
            since = _iso(self._down_since[1])
            self.stats.seconds_disconnected += outage
            self.stats.reconnects += 1
            self._down_since = None
        log.info(
            "kis ws: connected, %d/%d registered%s",
            len(self._registered),
            len(self._desired),
            f" after {outage:.1f}s outage" if outage is not None else "",
        )
        self._emit(
            {
                "event": "ws_connected",
                "at": _iso(now_dt),
                "reconnect": outage is not None,
                "outage_seconds": round(outage, 3) if outage is not None else 0.0,
                "outage_from": since,
                # codes, as the slot rules count them (a code on several TRs, or a status anchor, is not two)
                "registered": len(self.registered),
                "desired": len(self._codes),
                "registrations": len(self._registered),
                "desired_registrations": len(self._desired),
            }
        )

    def _after_disconnect(self, reason: str, was_up: bool) -> None:
        self._ws = None
        self._approval_key = None
        self._registered.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        if was_up and not self._stop.is_set():  # closing on stop() is not an outage
            self.stats.disconnects += 1
            self.stats.disconnect_reasons[reason.split(" ", 1)[0].split(":", 1)[0]] += 1
            if self._down_since is None:
                self._down_since = (time.monotonic(), _now_kst())

    # --- reading ---------------------------------------------------------------------------------

    async def _reader(self, ws: ClientConnection) -> None:
        stats = self.stats.parse
        while True:
            try:
                async with asyncio.timeout(self.watchdog_seconds):
                    raw = await ws.recv(decode=False)
            except TimeoutError:
                raise _WatchdogExpired(f"watchdog: no traffic for {self.watchdog_seconds:g}s") from None
            mono = time.monotonic()
            dt = _now_kst()
            self._last_rx_mono, self._last_rx_dt = mono, dt
            msg = parse_message(raw, stats)  # never raises
            if self._on_frame is not None:
                try:
                    self._on_frame(raw, dt, msg)
                except Exception:
                    self.stats.frame_callback_errors += 1
                    log.exception(
                        "kis ws: on_frame callback failed (frame %d of connection %d)", stats.frames, self._conn_seq
                    )
            kind = type(msg)
            if kind is TradeBatch:
                if msg.records:
                    last = self._last_trade_at
                    for t in msg.records:
                        last[t.code] = dt
                    if msg.tr_id == self.tape_tr:
                        await self._enqueue(("t", msg.records, mono, dt))
                    else:
                        await self._enqueue(("f", [msg], mono, dt))
                if msg.rejected:
                    self._report_rejected(msg)
            elif kind is PingPong:
                await ws.send(msg.raw_text)
                if len(msg.raw_text.encode()) <= 125:
                    await ws.pong(msg.raw_text.encode())
                self.stats.pingpong_replies += 1
            elif kind is Ack:
                self._handle_ack(msg)
            elif kind is OrderBookFrame:
                if msg.records:
                    await self._enqueue(("b", msg.records, mono, dt))
                if msg.rejected:
                    self._report_rejected(msg)
            elif kind is FeedFrame:
                if msg.records:
                    await self._enqueue(("f", [msg], mono, dt))
                if msg.rejected:
                    self._report_rejected(msg)
            elif kind is Encrypted:
                self._report_bad("encrypted", f"{msg.tr_id} x{msg.count}", msg.tr_id)
            else:
                assert isinstance(msg, Malformed)
                self._report_bad(msg.reason, msg.raw_excerpt, msg.tr_id)

    async def _enqueue(self, item: tuple[str, list[Any], float, datetime]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.queue_full += 1
            log.warning(
                "kis ws: consumer is behind (%d batches queued); the reader waits, nothing is dropped",
                self._queue.qsize(),
            )
            t0 = time.monotonic()
            await self._queue.put(item)
            self.stats.queue_blocked_seconds += time.monotonic() - t0

    def _report_bad(self, reason: str, excerpt: str, tr_id: str) -> None:
        self._bad_seen[reason] += 1
        n = self._bad_seen[reason]
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.warning("kis ws: unusable frame #%d (%s) tr_id=%s: %s", n, reason, tr_id or "-", excerpt[:200])
        self._emit(
            {
                "event": "ws_bad_frame",
                "at": _iso(_now_kst()),
                "reason": reason,
                "tr_id": tr_id,
                "excerpt": excerpt[:200],
            }
        )

    def _report_rejected(self, msg: TradeBatch | OrderBookFrame | FeedFrame) -> None:
        for r in msg.rejected:
            self.stats.rejected_records += 1
            self._bad_seen[r.reason] += 1
            n = self._bad_seen[r.reason]
            if n <= _LOG_FIRST or n % 1000 == 0:
                log.warning("kis ws: rejected record #%d (%s) in %s frame: %s", n, r.reason, msg.tr_id, r.detail)
            self._emit(
                {
                    "event": "ws_rejected_record",
                    "at": _iso(_now_kst()),
                    "tr_id": msg.tr_id,
                    "reason": r.reason,
                    "detail": r.detail,
                    "raw": "^".join(r.raw),
                }
            )

    def _handle_ack(self, ack: Ack) -> None:
        if ack.kind == "key_in_use":
            raise _KeyInUse()
        sub = (ack.tr_id, ack.tr_key)
        if sub not in self._pending and sub not in self._desired and sub not in self._registered:
            log.warning("kis ws: ack for a registration never asked %s/%s: %s %s", *sub, ack.msg_cd, ack.msg1)
            return
        code = ack.tr_key
        if ack.kind in ("subscribed", "already"):
            if sub not in self._registered:  # the instant the server starts sending it (the completeness proof)
                self._emit({"event": "ws_registered", "at": _iso(_now_kst()), "tr_id": ack.tr_id, "code": code})
            self._registered.add(sub)
        elif ack.kind in ("unsubscribed", "not_registered"):
            self._registered.discard(sub)
        elif ack.kind == "max_over":
            self._registered.discard(sub)
            self._full = True
            self.stats.max_over_refusals += 1
            log.warning(
                "kis ws: %s refused (%s %s): session full at %d registrations",
                code,
                ack.msg_cd,
                ack.msg1,
                len(self._registered),
            )
            self._emit(
                {
                    "event": "ws_max_over",
                    "at": _iso(_now_kst()),
                    "code": code,
                    "tr_id": ack.tr_id,
                    "registered": len(self._registered),
                }
            )
        else:
            self.stats.ack_errors += 1
            log.warning("kis ws: error ack for %s/%s: %s %s %s", ack.tr_id, code, ack.rt_cd, ack.msg_cd, ack.msg1)
        fut = self._pending.pop(sub, None)
        if fut is not None and not fut.done():
            fut.set_result(ack)

    # --- subscriptions -----------------------------------------------------------------------------

    async def _reconcile(self, ws: ClientConnection) -> None:
        async with self._sub_lock:
            if ws is not self._ws:
                return
            desired = list(self._desired)
            wanted = set(desired)
            drop = [k for k in sorted(self._registered) if k not in wanted]
            if drop:
                await self._send_and_wait(ws, drop, p.TR_TYPE_UNREGISTER)
            add = [k for k in desired if k not in self._registered]
            room = self.max_registrations - len(self._registered)
            if len(add) > room:
                log.warning(
                    "kis ws: %d registrations to add but room for %d (unsubscribe acks missing?); deferring %s",
                    len(add),
                    room,
                    ",".join(f"{tr}:{c}" for tr, c in add[room:][:10]),
                )
                add = add[: max(room, 0)]
            if add:
                await self._send_and_wait(ws, add, p.TR_TYPE_REGISTER)

    async def _resync_loop(self, ws: ClientConnection) -> None:
        """Every ``resync_seconds``, retry what the server has not confirmed (an ack that never came,
        an error ack), unless the session said it is full."""
        while ws is self._ws:
            await asyncio.sleep(self.resync_seconds)
            wanted = set(self._desired)
            missing = wanted - self._registered
            if (missing and not self._full) or (self._registered - wanted):
                self.stats.resyncs += 1
                log.info(
                    "kis ws: resync: %d desired registrations unconfirmed, %d stale",
                    len(missing),
                    len(self._registered - wanted),
                )
                try:
                    await self._reconcile(ws)
                except websockets.ConnectionClosed:
                    return

    async def _send_and_wait(self, ws: ClientConnection, subs: list[Sub], tr_type: str) -> None:
        loop = asyncio.get_running_loop()
        futs: dict[Sub, asyncio.Future[Ack]] = {}
        for i, sub in enumerate(subs):
            if i and self.subscribe_spacing > 0:
                await asyncio.sleep(self.subscribe_spacing)
            if ws is not self._ws:
                raise websockets.ConnectionClosedError(None, None)
            fut = loop.create_future()
            self._pending[sub] = fut
            futs[sub] = fut
            await ws.send(self._request(sub, tr_type))
        if not futs:
            return
        done, pending = await asyncio.wait(futs.values(), timeout=self.ack_timeout)
        if pending:
            late = [k for k, f in futs.items() if not f.done()]
            for k in late:
                if self._pending.get(k) is futs[k]:
                    del self._pending[k]
                futs[k].cancel()
            self.stats.ack_timeouts += len(late)
            log.warning(
                "kis ws: no ack within %.1fs for %s of %d registrations (tr_type %s): %s",
                self.ack_timeout,
                len(late),
                len(subs),
                tr_type,
                ",".join(f"{tr}:{c}" for tr, c in late[:10]),
            )

    def _request(self, sub: Sub, tr_type: str) -> str:
        return json.dumps(
            {
                "header": {
                    "approval_key": self._approval_key,
                    "custtype": "P",
                    "tr_type": tr_type,
                    "content-type": "utf-8",
                },
                "body": {"input": {"tr_id": sub[0], "tr_key": sub[1]}},
            }
        )

    # --- delivery ----------------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            kind, records, mono, dt = item
            if kind == "t":
                cb, what, arg = self._on_trades, "trades", records
                self.stats.trades_delivered += len(records)
            elif kind == "b":
                cb, what, arg = self._on_orderbooks, "orderbook", records
                self.stats.orderbooks_delivered += len(records)
            else:
                cb, what, arg = self._on_feed, "feed", records[0]
                if type(arg) is TradeBatch:
                    self.stats.trades_delivered += len(arg.records)
                else:
                    self.stats.feed_records_delivered += len(arg.records)
            if cb is None:
                continue
            try:
                res = cb(arg, mono, dt)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                self.stats.callback_errors += 1
                log.exception("kis ws: the %s callback failed on %d records", what, len(records))

    def _emit(self, event: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("kis ws: on_event callback failed for %s", event.get("event"))


def _close_text(exc: websockets.ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code}{' ' + rcvd.reason if rcvd.reason else ''}"
