"""The local exchange's WebSocket server: KIS's real-time stream (docs/kis-protocol.md §8, §10.4).

One connection is a *session* once its first message names an approval key; the key's app key may
hold one session at a time (a second gets OPSP8996 and is closed) and keeps the slot for
``hold_after_disconnect`` seconds after a disconnect, as KIS does. Each session has its own emit
loop (every ~50 ms real time) that sends, per trade registration (``H0STCNT0`` KRX, ``H0NXCNT0`` NXT,
``H0UNCNT0`` the unified tape), every trade of that venue the sim clock has revealed since the
subscription instant, in order, all new ticks of one symbol in one frame (chunked at 99 records);
book registrations (``H0STASP0``, ``H0NXASP0``, ``H0UNASP0``) get one record of that venue's book about
every simulated second while the venue trades the symbol. Market-status registrations (``H0STMKO0`` /
``H0NXMKO0`` / ``H0UNMKO0``) get the venue's current phase when they start and one record at each phase
change; expected-price ones (``H0STANC0`` / ``H0NXANC0`` / ``H0UNANC0``) one record per simulated second
while the venue runs an auction. JSON PINGPONG heartbeats go out every ``ping_interval`` real seconds; a
client that neither echoes one nor pongs within ``ping_grace`` is dropped.

Everything the trade feeds send (or withhold because of an injected fault) is recorded per (app key,
TR, symbol) in :class:`SentLog`, so tests can compare what their client received with the truth; the
records every other feed sends are kept in :class:`FeedLog` (both served by ``truth_feed_json``).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import math
import secrets
import string
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from local_exchange.accounts import appkey_id
from local_exchange.faults import MALFORMED_VARIANTS, Fault
from local_exchange.nxt import is_trading as nxt_is_trading
from local_exchange.records import expected_record, status_record
from local_exchange.venue_book import venue_orderbook_record
from local_exchange.venue_records import venue_trade_records
from local_exchange.venues import venues_for
from observer_resources.calendar import KST, CalendarRangeError, Phase
from observer_resources.calendar.market import MarketCalendar
from observer_resources.kis import protocol as p

if TYPE_CHECKING:
    from local_exchange.state import SimState

log = logging.getLogger("observer.sim.ws")

MAX_RECORDS_PER_FRAME = 99
ORDERBOOK_EVERY_S = 1.0
EXPECTED_EVERY_S = 1.0
SUPPORTED_TRS = p.WS_REALTIME_TRS
#: the venue each status / expected-price TR reports ("UN": KRX's phase when it runs one, else NXT's)
STATUS_TRS: dict[str, str] = {p.TR_WS_STATUS: "KRX", p.TR_WS_STATUS_NXT: "NXT", p.TR_WS_STATUS_UN: "UN"}
EXPECTED_TRS: dict[str, str] = {p.TR_WS_EXPECTED: "KRX", p.TR_WS_EXPECTED_NXT: "NXT", p.TR_WS_EXPECTED_UN: "UN"}
#: the tape each trade TR streams and the book each book TR sends ("UN": KRX and NXT merged by time)
TRADE_TRS: dict[str, str] = {p.TR_WS_TRADE: "KRX", p.TR_WS_TRADE_NXT: "NXT", p.TR_WS_TRADE_UN: "UN"}
BOOK_TRS: dict[str, str] = {p.TR_WS_ORDERBOOK: "KRX", p.TR_WS_ORDERBOOK_NXT: "NXT", p.TR_WS_ORDERBOOK_UN: "UN"}
_UNSET = object()

# Control answers whose exact KIS text is undocumented (sim's choice; docs/local-exchange.md).
OPSP_INVALID_APPROVAL = ("1", "OPSP0011", "invalid approval : NOT FOUND")
OPSP_JSON_ERROR = ("9", "OPSP9999", "JSON PARSING ERROR : invalid json format")
OPSP_INVALID_TR_ID = ("9", "OPSP9997", "invalid tr_id")
OPSP_INVALID_TR_TYPE = ("9", "OPSP9996", "invalid tr_type")

# SentLog statuses
SENT, DUPLICATE, SKIPPED, LOST_SILENT, LOST_STALL = range(5)
STATUS_NAMES = ("sent", "duplicate", "skipped", "lost_silent", "lost_stall")


def _rand(n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _sec(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def control_frame(tr_id: str, tr_key: str, rt_cd: str, msg_cd: str, msg1: str, output: dict | None = None) -> str:
    body: dict[str, Any] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if output is not None:
        body["output"] = output
    return json.dumps(
        {"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def pingpong_frame(at: datetime) -> str:
    return json.dumps(
        {"header": {"tr_id": p.TR_PINGPONG, "datetime": at.strftime("%Y%m%d%H%M%S")}}, separators=(",", ":")
    )


def data_frame(tr_id: str, records: list[list[str]]) -> str:
    """``0|TR|NNN|f^f^...``: all records' fields joined by ``^``, no separator between records."""
    return f"0|{tr_id}|{len(records):03d}|" + "^".join("^".join(r) for r in records)


class SentLog:
    """Per (app key, trade TR, code): every tick the stream sent or withheld, compactly (arrays, not dicts).

    ``index`` is the tick's position in that TR's tape of ``day`` (KRX's, NXT's or the unified one)."""

    @dataclass
    class _Cols:
        frame: array = field(default_factory=lambda: array("q"))
        session: array = field(default_factory=lambda: array("i"))
        day: array = field(default_factory=lambda: array("i"))
        index: array = field(default_factory=lambda: array("i"))
        sent_ms: array = field(default_factory=lambda: array("q"))
        status: array = field(default_factory=lambda: array("b"))

    def __init__(self) -> None:
        self._d: dict[tuple[str, str, str], SentLog._Cols] = {}

    def add(
        self,
        appkey: str,
        code: str,
        *,
        tr_id: str = p.TR_WS_TRADE,
        frame: int,
        session: int,
        day: date,
        indices: Iterable[int],
        at: datetime,
        status: int,
    ) -> None:
        cols = self._d.get((appkey, tr_id, code))
        if cols is None:
            cols = self._d[(appkey, tr_id, code)] = SentLog._Cols()
        ms = int(at.timestamp() * 1000)
        dord = day.toordinal()
        for i in indices:
            cols.frame.append(frame)
            cols.session.append(session)
            cols.day.append(dord)
            cols.index.append(i)
            cols.sent_ms.append(ms)
            cols.status.append(status)

    def rows(
        self, appkey: str, code: str, tr_id: str = p.TR_WS_TRADE
    ) -> list[tuple[int, int, date, int, datetime, str]]:
        cols = self._d.get((appkey, tr_id, code))
        if cols is None:
            return []
        return [
            (
                cols.frame[k],
                cols.session[k],
                date.fromordinal(cols.day[k]),
                cols.index[k],
                datetime.fromtimestamp(cols.sent_ms[k] / 1000, KST),
                STATUS_NAMES[cols.status[k]],
            )
            for k in range(len(cols.frame))
        ]

    def clear(self) -> None:
        self._d.clear()


class FeedLog:
    """Per (app key, TR, code): the records the non-trade feeds sent (book, status, expected price), with frame
    number and sim time.

    Bounded per key (the newest ``keep`` records), since a book feed sends one record a second."""

    def __init__(self, keep: int = 20_000) -> None:
        self.keep = keep
        self._d: dict[tuple[str, str, str], list[tuple[int, int, datetime, tuple[str, ...]]]] = {}

    def add(
        self, appkey: str, tr_id: str, code: str, *, frame: int, session: int, at: datetime, record: list[str]
    ) -> None:
        rows = self._d.setdefault((appkey, tr_id, code), [])
        rows.append((frame, session, at, tuple(record)))
        if len(rows) > self.keep:
            del rows[: len(rows) - self.keep]

    def rows(self, appkey: str, tr_id: str, code: str) -> list[tuple[int, int, datetime, tuple[str, ...]]]:
        return list(self._d.get((appkey, tr_id, code), ()))

    def clear(self) -> None:
        self._d.clear()


@dataclass
class Registration:
    tr_id: str
    tr_key: str
    key: str = field(default_factory=lambda: _rand(32))
    iv: str = field(default_factory=lambda: _rand(16))
    day: date | None = None
    ticks: Any = None  # DayTicks of ``day`` or None (unknown code / closed day)
    cursor: int = 0  # next tick index to send
    stalled_until: float = 0.0  # monotonic; math.inf = until re-registered
    last_ob_sec: int = -1
    last_ob_day: date | None = None
    status_key: Any = _UNSET  # (day, venue, phase name, halted) of the last status record sent
    src_pos: Any = None  # a frame source's position in this registration's frames (FrameSource.start)


class WsSession:
    """One WebSocket connection (and, once bound, the app key's one KIS session)."""

    _ids = itertools.count(1)

    def __init__(self, hub: WsHub, ws: web.WebSocketResponse, request: web.Request):
        self.id = next(WsSession._ids)
        self.hub = hub
        self.ws = ws
        self.request = request
        self.appkey: str | None = None
        self.regs: dict[tuple[str, str], Registration] = {}
        self.frames_sent = 0
        self.opened_mono = time.monotonic()
        self.last_ping_mono = self.opened_mono
        self.unanswered_since: float | None = None
        self.silent_until = 0.0
        self.closed = False
        self._lock = asyncio.Lock()

    # --- sending ------------------------------------------------------------------------
    async def send(self, text: str, *, data: bool = False) -> int | None:
        """Send one text frame; returns its number on this session (None if the socket is gone)."""
        if self.closed or self.ws.closed:
            return None
        async with self._lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self.closed = True
                return None
            self.frames_sent += 1
            if data:
                self.hub.state.stats.inc("ws_frames_sent_total", self.appkey)
            return self.frames_sent

    async def close(self, *, close_frame: bool = True, code: int = 1000, message: bytes = b"") -> None:
        if close_frame:
            try:
                await self.ws.close(code=code, message=message)
            except Exception:  # noqa: BLE001 - peer already gone; nothing left to tell it
                pass
        else:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
        self.closed = True

    def silent(self, now_mono: float) -> bool:
        return now_mono < self.silent_until


class WsHub:
    """All WebSocket sessions of the exchange, the app-key slots and the sent-tick log."""

    def __init__(
        self,
        state: SimState,
        *,
        ping_interval: float = 10.0,
        ping_grace: float = 60.0,
        hold_after_disconnect: float = 2.0,
        emit_interval: float = 0.05,
    ):
        self.state = state
        self.ping_interval = ping_interval
        self.ping_grace = ping_grace
        self.hold_after_disconnect = hold_after_disconnect
        self.emit_interval = emit_interval
        self.sessions: dict[int, WsSession] = {}
        self.by_appkey: dict[str, WsSession] = {}
        self.held_until: dict[str, float] = {}
        self.sent = SentLog()
        self.feeds = FeedLog()
        # (app key, TR, code) -> (session, sim instant, day, first tape index) of every registration: where each
        # session's stream of a code starts, so a test can bound a loss by the re-registration that ended it
        self.registrations: dict[tuple[str, str, str], list[tuple[int, datetime, date, int]]] = {}
        self.calendar = MarketCalendar(mode="open" if state.clock_mode == "open" else "krx")
        self._phases: dict[date, dict[str, tuple[Phase, ...]]] = {}
        self._nxt_members: tuple[date | None, frozenset[str]] = (None, frozenset())

    # --- stats --------------------------------------------------------------------------
    def active_counts(self) -> tuple[int, dict[str, int]]:
        by = {k: 1 for k, s in self.by_appkey.items() if not s.closed}
        return sum(by.values()), by

    # --- market access ------------------------------------------------------------------
    def day_ticks(self, code: str, day: date) -> Any:
        """The day's DayTicks, or None for an unknown code or a closed day (the market caches them)."""
        m = self.state.market
        if code not in m.by_code:
            return None
        try:
            return m.day_ticks(code, day) if m.is_trading_day(day) else None
        except CalendarRangeError:
            return None

    def venue_day(self, code: str, day: date, venue: str) -> Any:
        """One venue's tape of the day (``Market.venue_ticks``, which keeps the merges; an empty one on NXT for a
        code NXT does not trade that day), or None for an unknown code or a closed day."""
        krx = self.day_ticks(code, day)
        if krx is None or venue == "KRX":
            return krx
        return self.state.market.venue_ticks(code, day, venue)

    def venue_phases(self, day: date) -> dict[str, tuple[Phase, ...]]:
        """Each venue's phases on ``day`` (empty on a closed day), cached for the few latest days asked."""
        hit = self._phases.get(day)
        if hit is None:
            try:
                hit = {v: vd.phases for v, vd in self.calendar.venues(day).items()}
            except CalendarRangeError:
                hit = {}
            self._phases[day] = hit
            while len(self._phases) > 4:
                self._phases.pop(next(iter(self._phases)))
        return hit

    def phase_at(self, now: datetime, venue: str) -> tuple[str, Phase | None, Phase | None]:
        """(venue reported, running phase or None, the venue's next phase or None); "UN" prefers KRX's phase."""
        days = self.venue_phases(now.date())
        for v in ("KRX", "NXT") if venue == "UN" else (venue,):
            phases = days.get(v, ())
            cur = next((ph for ph in phases if ph.start <= now < ph.end), None)
            if cur is not None or venue != "UN" or v == "NXT":
                nxt = next((ph for ph in phases if ph.start > now), None)
                return v, cur, nxt
        return venue, None, None  # unreachable: the loop returns on its last venue

    def listed_on(self, code: str, venue: str, day: date) -> bool:
        """Whether ``code`` is a listing the venue's feeds report: any listing on KRX and unified, members on NXT."""
        if code not in self.state.market.by_code:
            return False
        if venue != "NXT":
            return True
        if self._nxt_members[0] != day:
            self._nxt_members = (day, venues_for(self.state.market).members(day))
        return code in self._nxt_members[1]

    # --- connection handling ------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        session = WsSession(self, ws, request)
        self.sessions[session.id] = session
        emitter = asyncio.create_task(self._emit_loop(session), name=f"sim-ws-emit-{session.id}")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(session, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._on_text(session, msg.data.decode("utf-8", "replace"))
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self._heartbeat_reply(session)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
                if session.closed:
                    break
        finally:
            session.closed = True
            emitter.cancel()
            await asyncio.gather(emitter, return_exceptions=True)
            self._release(session)
            if not ws.closed:
                await ws.close()
        return ws

    def _release(self, session: WsSession) -> None:
        self.sessions.pop(session.id, None)
        if session.appkey is not None and self.by_appkey.get(session.appkey) is session:
            del self.by_appkey[session.appkey]
            self.held_until[session.appkey] = time.monotonic() + self.hold_after_disconnect

    def _heartbeat_reply(self, session: WsSession) -> None:
        session.unanswered_since = None

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            await s.close(code=1001, message=b"server shutdown")

    # --- client messages ----------------------------------------------------------------
    async def _on_text(self, session: WsSession, text: str) -> None:
        if session.silent(time.monotonic()):
            return  # a silent server answers nothing
        try:
            msg = json.loads(text)
            header = msg["header"]
            if not isinstance(header, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await session.send(control_frame("", "", *OPSP_JSON_ERROR))
            return
        if header.get("tr_id") == p.TR_PINGPONG:
            self._heartbeat_reply(session)
            return
        body = msg.get("body") if isinstance(msg.get("body"), dict) else {}
        inp = body.get("input") if isinstance(body.get("input"), dict) else {}
        tr_id = str(inp.get("tr_id") or "")
        tr_key = str(inp.get("tr_key") or "")
        owner = self.state.accounts.approval_owner(header.get("approval_key"))
        if owner is None:
            await session.send(control_frame(tr_id, tr_key, *OPSP_INVALID_APPROVAL))
            return
        if session.appkey is None:
            if not await self._bind(session, owner):
                return
        elif owner != session.appkey:
            await session.send(control_frame(tr_id, tr_key, *OPSP_INVALID_APPROVAL))
            return
        tr_type = str(header.get("tr_type") or "")
        if tr_type not in ("1", "2", "0"):
            await session.send(control_frame(tr_id, tr_key, *OPSP_INVALID_TR_TYPE))
            return
        if tr_id not in SUPPORTED_TRS:
            await session.send(control_frame(tr_id, tr_key, *OPSP_INVALID_TR_ID))
            return
        if tr_type == p.TR_TYPE_REGISTER:
            await self._register(session, tr_id, tr_key)
        else:
            await self._unregister(session, tr_id, tr_key)

    async def _bind(self, session: WsSession, appkey: str) -> bool:
        now = time.monotonic()
        faults = self.state.faults
        holder = self.by_appkey.get(appkey)
        fault = faults.first("ws_key_in_use", appkey=appkey)
        if (
            (holder is not None and holder is not session and not holder.closed)
            or self.held_until.get(appkey, 0) > now
            or fault is not None
        ):
            if fault is not None:
                faults.use(fault, {"session": session.id})
            self.state.stats.inc("ws_sessions_refused_total", appkey)
            rt, msg1 = p.OPSP_MESSAGES[p.OPSP_KEY_IN_USE]
            await session.send(control_frame("(null)", "", rt, p.OPSP_KEY_IN_USE, msg1))
            await session.close()
            return False
        session.appkey = appkey
        self.by_appkey[appkey] = session
        self.state.stats.inc("ws_sessions_total", appkey)
        return True

    async def _ack(
        self, session: WsSession, tr_id: str, tr_key: str, msg_cd: str, reg: Registration | None = None
    ) -> None:
        rt, msg1 = p.OPSP_MESSAGES[msg_cd]
        output = {"iv": reg.iv, "key": reg.key} if reg is not None else None
        await session.send(control_frame(tr_id, tr_key, rt, msg_cd, msg1, output))

    async def _register(self, session: WsSession, tr_id: str, tr_key: str) -> None:
        k = (tr_id, tr_key)
        if k in session.regs:
            await self._ack(session, tr_id, tr_key, p.OPSP_ALREADY)
            return
        if len(session.regs) >= p.WS_MAX_REGISTRATIONS:
            await self._ack(session, tr_id, tr_key, p.OPSP_MAX_OVER)
            return
        reg = Registration(tr_id, tr_key)
        now = self.state.clock.now()
        source = self.state.frame_source
        if source is not None:  # recorded or relayed frames instead of the synthetic market
            refusal = source.refusal(tr_id, tr_key)
            if refusal is not None:
                await session.send(control_frame(tr_id, tr_key, *refusal))
                return
            reg.src_pos = source.start(tr_id, tr_key, now)
            session.regs[k] = reg
            await self._ack(session, tr_id, tr_key, p.OPSP_SUBSCRIBED, reg)
            return
        reg.day = now.date()
        reg.ticks = self.venue_day(tr_key, reg.day, TRADE_TRS[tr_id]) if tr_id in TRADE_TRS else None
        reg.cursor = reg.ticks.index_at(_sec(now)) if reg.ticks is not None else 0
        session.regs[k] = reg
        if session.appkey is not None:
            self.registrations.setdefault((session.appkey, tr_id, tr_key), []).append(
                (session.id, now, reg.day, reg.cursor)
            )
        await self._ack(session, tr_id, tr_key, p.OPSP_SUBSCRIBED, reg)
        if tr_id in STATUS_TRS:
            await self._emit_status(session, reg, now)

    async def _unregister(self, session: WsSession, tr_id: str, tr_key: str) -> None:
        reg = session.regs.pop((tr_id, tr_key), None)
        if reg is None:
            await self._ack(session, tr_id, tr_key, p.OPSP_NOT_REGISTERED)
        else:
            await self._ack(session, tr_id, tr_key, p.OPSP_UNSUBSCRIBED, reg)

    # --- faults applied at posting time -------------------------------------------------
    def matching_sessions(self, fault: Fault) -> list[WsSession]:
        return [
            s for s in self.sessions.values() if not s.closed and (fault.appkey is None or s.appkey == fault.appkey)
        ]

    async def apply_fault(self, fault: Fault) -> None:
        """Faults that act on existing sessions the moment they are posted."""
        faults = self.state.faults
        if fault.kind == "ws_drop":
            close_frame = bool(fault.params.get("close_frame", True))
            for s in self.matching_sessions(fault):
                fault.session_ids.add(s.id)
                self.state.stats.inc("ws_dropped_total", s.appkey)
                faults.use(
                    fault,
                    {"session": s.id, "close_frame": close_frame, "appkey": appkey_id(s.appkey) if s.appkey else None},
                )
                await s.close(close_frame=close_frame, code=1000, message=b"")
            faults.finish(fault)
        elif fault.kind == "ws_silent":
            for s in self.matching_sessions(fault):
                fault.session_ids.add(s.id)
                s.silent_until = fault.until_mono or 0.0
        elif fault.kind == "ws_stall":
            until = fault.until_mono if fault.until_mono is not None else math.inf
            for s in self.matching_sessions(fault):
                for (tr_id, key), reg in s.regs.items():
                    if key == fault.code:
                        reg.stalled_until = until
                        fault.session_ids.add(s.id)
                        faults.use(fault, {"session": s.id, "tr_id": tr_id})
            if fault.until_mono is None:
                faults.finish(fault)

    # --- the emit loop ------------------------------------------------------------------
    async def _emit_loop(self, session: WsSession) -> None:
        try:
            while not session.closed:
                await asyncio.sleep(self.emit_interval)
                if session.closed or session.ws.closed:
                    break
                await self._emit_once(session)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a broken emitter must not go silent unnoticed
            log.exception("emit loop of session %d failed; closing it", session.id)
            await session.close(code=1011, message=b"internal error")

    async def _emit_once(self, session: WsSession) -> None:
        now_mono = time.monotonic()
        now = self.state.clock.now()
        if session.silent(now_mono):
            self._withhold_all(session, now, LOST_SILENT)
            session.last_ping_mono = now_mono
            session.unanswered_since = None
            return
        if session.unanswered_since is not None and now_mono - session.unanswered_since > self.ping_grace:
            log.info("session %d dropped: no PINGPONG answer within %.1fs", session.id, self.ping_grace)
            self.state.stats.inc("ws_dropped_total", session.appkey)
            await session.close(code=1000, message=b"PINGPONG timeout")
            return
        if now_mono - session.last_ping_mono >= self.ping_interval:
            session.last_ping_mono = now_mono
            if await session.send(pingpong_frame(now)) is not None:
                self.state.stats.inc("ws_pingpong_sent_total", session.appkey)
                if session.unanswered_since is None:
                    session.unanswered_since = now_mono
        if session.appkey is None:
            return
        await self._inject(session, now)
        if self.state.frame_source is not None:
            await self._emit_source(session, now)
            return
        for reg in list(session.regs.values()):
            if session.closed:
                return
            if reg.tr_id in TRADE_TRS:
                await self._emit_trades(session, reg, now, now_mono)
            elif reg.tr_id == p.TR_WS_ORDERBOOK:
                await self._emit_orderbook(session, reg, now, now_mono)
            elif reg.tr_id in BOOK_TRS:
                await self._emit_venue_book(session, reg, now, now_mono)
            elif reg.tr_id in STATUS_TRS:
                await self._emit_status(session, reg, now)
            elif reg.tr_id in EXPECTED_TRS and reg.stalled_until <= now_mono:
                await self._emit_expected(session, reg, now)

    async def _emit_source(self, session: WsSession, now: datetime) -> None:
        """Every registration's frames the frame source has for it up to ``now``, each sent as it came."""
        source = self.state.frame_source
        stats = self.state.stats
        for reg in list(session.regs.values()):
            frames, pos = source.take(reg.tr_id, reg.tr_key, reg.src_pos, now)
            sent = 0
            for text in frames:
                if session.closed or await session.send(text, data=True) is None:
                    break
                sent += 1
                if reg.tr_id in TRADE_TRS:
                    stats.inc("ws_ticks_sent_total", session.appkey, _record_count(text))
                elif reg.tr_id in BOOK_TRS:
                    stats.inc("ws_orderbook_frames_total", session.appkey)
            reg.src_pos = pos if sent == len(frames) else source.rewind(pos, len(frames) - sent)
            if sent:
                source.sent(session.appkey or "", session.id, reg.tr_id, reg.tr_key, frames[:sent], now)
            if session.closed:
                return

    def _roll_day(self, reg: Registration, now: datetime) -> list[tuple[Any, int, int]]:
        """Move a trade registration to ``now``'s day; returns leftover (ticks, lo, hi) of the old day."""
        day = now.date()
        if reg.day == day:
            return []
        leftover = []
        forward = reg.day is None or day > reg.day
        if forward and reg.ticks is not None and reg.cursor < len(reg.ticks):
            leftover.append((reg.ticks, reg.cursor, len(reg.ticks)))
        old_day = reg.day
        reg.day = day
        reg.ticks = self.venue_day(reg.tr_key, day, TRADE_TRS[reg.tr_id])
        reg.cursor = 0 if forward else (reg.ticks.index_at(_sec(now)) if reg.ticks is not None else 0)
        if old_day is not None and forward and (day - old_day).days > 1:
            log.info("clock moved %s -> %s: ticks of the days between are not streamed", old_day, day)
        return leftover

    def _withhold_all(self, session: WsSession, now: datetime, status: int) -> None:
        for reg in session.regs.values():
            if reg.tr_id not in TRADE_TRS:
                continue
            for ticks, lo, hi in self._roll_day(reg, now):
                self._log(session, reg, ticks, range(lo, hi), now, status)
            if reg.ticks is None:
                continue
            end = reg.ticks.index_at(_sec(now))
            if end > reg.cursor:
                self._log(session, reg, reg.ticks, range(reg.cursor, end), now, status)
                reg.cursor = end

    def _log(
        self,
        session: WsSession,
        reg: Registration,
        ticks: Any,
        indices: range,
        now: datetime,
        status: int,
        frame: int = 0,
    ) -> None:
        assert session.appkey is not None
        self.sent.add(
            session.appkey,
            reg.tr_key,
            tr_id=reg.tr_id,
            frame=frame,
            session=session.id,
            day=ticks.day,
            indices=indices,
            at=now,
            status=status,
        )

    def _fault(self, kind: str, session: WsSession, code: str | None, tr_id: str) -> Fault | None:
        """The first active fault of ``kind`` for this session's ``code`` on ``tr_id`` (a fault without a
        ``tr_id`` param applies to every trade TR)."""
        for f in self.state.faults.active(kind, appkey=session.appkey, code=code):
            if f.params.get("tr_id") in (None, tr_id):
                return f
        return None

    async def _emit_trades(self, session: WsSession, reg: Registration, now: datetime, now_mono: float) -> None:
        code, tr_id = reg.tr_key, reg.tr_id
        batches = self._roll_day(reg, now)
        if reg.ticks is not None:
            end = reg.ticks.index_at(_sec(now))
            if end > reg.cursor:
                batches.append((reg.ticks, reg.cursor, end))
                reg.cursor = end
        faults = self.state.faults
        for ticks, lo, hi in batches:
            if reg.stalled_until > now_mono:
                self._log(session, reg, ticks, range(lo, hi), now, LOST_STALL)
                continue
            while lo < hi and (f := self._fault("ws_skip", session, code, tr_id)) is not None:
                k = min(f.remaining or 0, hi - lo)
                self._log(session, reg, ticks, range(lo, lo + k), now, SKIPPED)
                faults.use(f, {"session": session.id, "tr_id": tr_id, "skipped": [lo, lo + k]}, n=k)
                lo += k
            burst = self._fault("ws_burst", session, code, tr_id)
            if burst is not None and lo < hi:
                n = int(burst.params["records"])
                if hi - lo >= n:
                    frame_no = await self._send_trades(session, reg, ticks, lo, lo + n, now)
                    if frame_no is None:
                        return
                    faults.use(burst, {"session": session.id, "tr_id": tr_id, "frame": frame_no, "records": n})
                    faults.finish(burst)
                    lo += n
                elif ticks is reg.ticks:
                    reg.cursor = lo  # hold: the ticks stay pending until n have accumulated
                    return
            for a in range(lo, hi, MAX_RECORDS_PER_FRAME):
                if await self._send_trades(session, reg, ticks, a, min(hi, a + MAX_RECORDS_PER_FRAME), now) is None:
                    return

    def trade_records(self, tr_id: str, ticks: Any, lo: int, hi: int) -> list[list[str]]:
        """The records of ticks [lo, hi) of ``tr_id``'s tape: KRX's are ``Market.trade_record`` itself."""
        m = self.state.market
        venue = TRADE_TRS[tr_id]
        if venue == "KRX":
            return [m.trade_record(ticks, i) for i in range(lo, hi)]
        return venue_trade_records(m, ticks, lo, hi, venue)

    async def _send_trades(
        self, session: WsSession, reg: Registration, ticks: Any, lo: int, hi: int, now: datetime
    ) -> int | None:
        frame = data_frame(reg.tr_id, self.trade_records(reg.tr_id, ticks, lo, hi))
        frame_no = await session.send(frame, data=True)
        if frame_no is None:
            return None
        stats = self.state.stats
        stats.inc("ws_ticks_sent_total", session.appkey, hi - lo)
        self._log(session, reg, ticks, range(lo, hi), now, SENT, frame_no)
        dup = self._fault("ws_duplicate", session, None, reg.tr_id)
        if dup is not None:
            dup_no = await session.send(frame, data=True)
            if dup_no is not None:
                stats.inc("ws_ticks_sent_total", session.appkey, hi - lo)
                self._log(session, reg, ticks, range(lo, hi), now, DUPLICATE, dup_no)
                self.state.faults.use(
                    dup,
                    {
                        "session": session.id,
                        "frame": dup_no,
                        "of_frame": frame_no,
                        "tr_id": reg.tr_id,
                        "code": reg.tr_key,
                    },
                )
        return frame_no

    async def _emit_orderbook(self, session: WsSession, reg: Registration, now: datetime, now_mono: float) -> None:
        if reg.stalled_until > now_mono:
            return
        m = self.state.market
        li = m.by_code.get(reg.tr_key)
        if li is None or li.halted:
            return
        day = now.date()
        try:
            sess = m.session(day)
        except CalendarRangeError:
            sess = None
        if sess is None:
            return
        first, close = sess
        if not (first <= now <= close):
            return
        sec = _sec(now)
        if reg.last_ob_day == day and sec - reg.last_ob_sec < ORDERBOOK_EVERY_S:
            return
        reg.last_ob_day, reg.last_ob_sec = day, sec
        if await self._send_feed(session, reg, m.orderbook_record(reg.tr_key, now), now) is not None:
            self.state.stats.inc("ws_orderbook_frames_total", session.appkey)

    def krx_live(self, code: str, now: datetime) -> bool:
        """Whether KRX's book of ``code`` is live at ``now``: its session (first trade .. closing print), no halt."""
        m = self.state.market
        li = m.by_code.get(code)
        if li is None or li.halted:
            return False
        try:
            sess = m.session(now.date())
        except CalendarRangeError:
            return False
        return sess is not None and sess[0] <= now <= sess[1]

    def nxt_live(self, code: str, now: datetime) -> bool:
        """Whether NXT trades ``code`` at ``now``: one of NXT's continuous phases, for a member NXT trades today."""
        _, cur, _ = self.phase_at(now, "NXT")
        if cur is None or cur.kind != "continuous" or code not in self.state.market.by_code:
            return False
        return nxt_is_trading(self.state.market, code, now.date())

    async def _emit_venue_book(self, session: WsSession, reg: Registration, now: datetime, now_mono: float) -> None:
        """H0NXASP0 / H0UNASP0: about one record a simulated second while that venue trades the code (the unified
        book while KRX or NXT does)."""
        if reg.stalled_until > now_mono:
            return
        venue = BOOK_TRS[reg.tr_id]
        code, day = reg.tr_key, now.date()
        krx_live, nxt_live = self.krx_live(code, now), self.nxt_live(code, now)
        if not (nxt_live if venue == "NXT" else krx_live or nxt_live):
            return
        sec = _sec(now)
        if reg.last_ob_day == day and sec - reg.last_ob_sec < ORDERBOOK_EVERY_S:
            return
        ticks = self.venue_day(code, day, venue)
        if ticks is None:
            return
        reg.last_ob_day, reg.last_ob_sec = day, sec
        record = venue_orderbook_record(self.state.market, ticks, now, venue, krx_live=krx_live, nxt_live=nxt_live)
        if await self._send_feed(session, reg, record, now) is not None:
            self.state.stats.inc("ws_orderbook_frames_total", session.appkey)

    async def _send_feed(self, session: WsSession, reg: Registration, record: list[str], now: datetime) -> int | None:
        frame_no = await session.send(data_frame(reg.tr_id, [record]), data=True)
        if frame_no is not None and session.appkey is not None:
            self.feeds.add(
                session.appkey, reg.tr_id, reg.tr_key, frame=frame_no, session=session.id, at=now, record=record
            )
        return frame_no

    async def _emit_status(self, session: WsSession, reg: Registration, now: datetime) -> None:
        """The venue's phase, once at registration and again whenever it, the day or the halt changes (never stalled)."""
        venue = STATUS_TRS[reg.tr_id]
        if not self.listed_on(reg.tr_key, venue, now.date()):
            return
        shown, cur, nxt = self.phase_at(now, venue)
        halted = bool(self.state.market.by_code[reg.tr_key].halted)
        if shown == "NXT" and not halted:
            halted = venues_for(self.state.market).status(reg.tr_key, now.date())[1]
        key = (now.date(), shown, cur.name if cur else None, halted)
        if key == reg.status_key:
            return
        reg.status_key = key
        record = status_record(
            reg.tr_key,
            venue=shown,
            phase=cur.name if cur else None,
            kind=cur.kind if cur else None,
            next_phase=nxt.name if nxt else None,
            halted=halted,
            width=p.WS_FEED_WIDTHS[reg.tr_id],
        )
        await self._send_feed(session, reg, record, now)

    async def _emit_expected(self, session: WsSession, reg: Registration, now: datetime) -> None:
        """About one expected-price record per simulated second while the venue runs an auction phase."""
        venue = EXPECTED_TRS[reg.tr_id]
        day = now.date()
        if not self.listed_on(reg.tr_key, venue, day):
            return
        _, cur, _ = self.phase_at(now, venue)
        if cur is None or cur.kind != "auction" or self.state.market.by_code[reg.tr_key].halted:
            return
        sec = _sec(now)
        if reg.last_ob_day == day and sec - reg.last_ob_sec < EXPECTED_EVERY_S:
            return
        ticks = self.day_ticks(reg.tr_key, day)
        if ticks is None:
            return
        reg.last_ob_day, reg.last_ob_sec = day, sec
        n = ticks.index_at(sec)
        record = expected_record(
            reg.tr_key,
            day_yyyymmdd=day.strftime("%Y%m%d"),
            sec=sec,
            price=int(ticks.price[n - 1]) if n else int(ticks.prev_close),
            prev_close=int(ticks.prev_close),
            volume=int(ticks.acml_vol[n - 1]) if n else 0,
            phase=cur.name,
            halted=False,
            width=p.WS_FEED_WIDTHS[reg.tr_id],
        )
        await self._send_feed(session, reg, record, now)

    async def _inject(self, session: WsSession, now: datetime) -> None:
        """Send pending malformed / encrypted frames to this (bound) session."""
        faults = self.state.faults
        f = faults.first("ws_malformed", appkey=session.appkey)
        while f is not None and not session.closed:
            variant = f.params.get("variant") or MALFORMED_VARIANTS[f.applied % len(MALFORMED_VARIANTS)]
            frame_no = await session.send(self._malformed(session, variant, now), data=True)
            if frame_no is None:
                return
            faults.use(f, {"session": session.id, "frame": frame_no, "variant": variant})
            f = faults.first("ws_malformed", appkey=session.appkey)
        f = faults.first("ws_encrypted", appkey=session.appkey)
        while f is not None and not session.closed:
            payload = base64.b64encode(secrets.token_bytes(48 * (1 + f.applied % 3))).decode("ascii")
            frame_no = await session.send(f"1|H0STCNI0|001|{payload}", data=True)
            if frame_no is None:
                return
            faults.use(f, {"session": session.id, "frame": frame_no})
            f = faults.first("ws_encrypted", appkey=session.appkey)

    def _malformed(self, session: WsSession, variant: str, now: datetime) -> str:
        code = next((k for (t, k) in session.regs if t in TRADE_TRS), "005930")
        width = 47 if self.state.fields47 else len(p.H0STCNT0_FIELDS)
        fields = [code, now.strftime("%H%M%S")] + ["0"] * (width - 2)
        if variant == "truncated_json":
            return '{"header":{"tr_id":"H0STCNT0","tr_key":"' + code + '","encrypt":"N"},"body":{"rt_cd":"0","msg'
        if variant == "field_count":
            return f"0|{p.TR_WS_TRADE}|002|" + "^".join(fields[: width - 5])
        if variant == "non_numeric":
            bad = list(fields)
            for name in ("STCK_PRPR", "CNTG_VOL", "ACML_VOL"):
                bad[p.H0STCNT0_INDEX[name]] = "x?"
            return f"0|{p.TR_WS_TRADE}|001|" + "^".join(bad)
        return "0|H0ZZZZZ0|001|" + "^".join(fields)  # unknown_tr


def _record_count(frame: str) -> int:
    """The NNN record count of a ``0|TR|NNN|...`` data frame (1 when it does not say)."""
    parts = frame.split("|", 3)
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return 1


def register_ws_routes(app: web.Application, hub: WsHub) -> None:
    """``/``, ``/tryitout`` and ``/tryitout/<TR>`` (docs/kis-protocol.md §1 "Hosts and ports")."""
    app.router.add_get("/", hub.handle)
    app.router.add_get("/tryitout", hub.handle)
    app.router.add_get("/tryitout/{tr}", hub.handle)


def truth_feed_json(hub: WsHub, appkey: str, tr_id: str, code: str) -> dict[str, Any]:
    """``GET /__sim__/truth/feed``: what the ``tr_id`` stream sent ``appkey`` for ``code``, record by record.

    Trade TRs list every tick the stream handled (``status`` as in ``truth/sent``; a withheld tick carries the
    record it would have had); the other feeds list the records sent."""
    return truth_feed_builder(hub, appkey, tr_id, code)()


def truth_feed_builder(hub: WsHub, appkey: str, tr_id: str, code: str) -> Callable[[], dict[str, Any]]:
    """Read the logs and tapes now (on the event loop, which appends to them) and return the function that
    rebuilds the trade records, which is slow and may run in a worker thread."""
    if tr_id not in SUPPORTED_TRS:
        raise ValueError(f"tr_id must be one of {', '.join(sorted(SUPPORTED_TRS))}, got {tr_id!r}")
    out: dict[str, Any] = {"appkey": appkey_id(appkey), "tr_id": tr_id, "code": code}
    if tr_id not in TRADE_TRS:
        feed_rows = hub.feeds.rows(appkey, tr_id, code)

        def build_feed() -> dict[str, Any]:
            entries = [
                {
                    "frame": frame,
                    "session": session,
                    "status": STATUS_NAMES[SENT],
                    "sent_at_sim": at.isoformat(timespec="milliseconds"),
                    "record": list(rec),
                }
                for frame, session, at, rec in feed_rows
            ]
            return out | {"count": len(entries), "by_status": _by_status(entries), "entries": entries}

        return build_feed
    rows = hub.sent.rows(appkey, code, tr_id)
    tapes = {day: hub.venue_day(code, day, TRADE_TRS[tr_id]) for day in {r[2] for r in rows}}

    def build_trades() -> dict[str, Any]:
        records: dict[tuple[date, int], list[str]] = {}
        for day, ticks in tapes.items():
            run: list[int] = []  # consecutive ticks in one call: the previous day is looked up once per call
            for i in [*sorted({r[3] for r in rows if r[2] == day}), -1]:
                if run and i != run[-1] + 1:
                    for k, rec in zip(run, hub.trade_records(tr_id, ticks, run[0], run[-1] + 1), strict=True):
                        records[(day, k)] = rec
                    run = []
                run.append(i)
        entries = [
            {
                "frame": frame or None,
                "session": session,
                "status": status,
                "day": day.strftime("%Y%m%d"),
                "index": idx,
                "sent_at_sim": at.isoformat(timespec="milliseconds"),
                "record": records[(day, idx)],
            }
            for frame, session, day, idx, at, status in rows
        ]
        return out | {"count": len(entries), "by_status": _by_status(entries), "entries": entries}

    return build_trades


def _by_status(entries: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    return counts


def truth_sent_json(hub: WsHub, appkey: str, code: str, tr_id: str = p.TR_WS_TRADE) -> dict[str, Any]:
    """``GET /__sim__/truth/sent``: what the ``tr_id`` trade stream (default H0STCNT0) did with each tick of
    ``code`` for ``appkey``; ``index`` is the tick's position in that TR's tape."""
    entries = []
    cache: dict[date, Any] = {}
    venue = TRADE_TRS[tr_id]
    for frame, session, day, idx, at, status in hub.sent.rows(appkey, code, tr_id):
        ticks = cache.get(day)
        if ticks is None:
            ticks = cache[day] = hub.venue_day(code, day, venue)
        sec = int(ticks.sec[idx])
        entries.append(
            {
                "frame": frame or None,
                "session": session,
                "status": status,
                "day": day.strftime("%Y%m%d"),
                "index": idx,
                "time": f"{sec // 3600:02d}{sec // 60 % 60:02d}{sec % 60:02d}",
                "price": int(ticks.price[idx]),
                "qty": int(ticks.qty[idx]),
                "acml_vol": int(ticks.acml_vol[idx]),
                "sent_at_sim": at.isoformat(timespec="milliseconds"),
            }
        )
    out = {"appkey": appkey_id(appkey), "code": code, "count": len(entries), "by_status": _by_status(entries)}
    if tr_id != p.TR_WS_TRADE:
        out["tr_id"] = tr_id
    registrations = [
        {
            "session": session,
            "registered_at_sim": at.isoformat(timespec="milliseconds"),
            "day": day.strftime("%Y%m%d"),
            "first_index": first,
        }
        for session, at, day, first in hub.registrations.get((appkey, tr_id, code), [])
    ]
    return out | {"registrations": registrations, "entries": entries}


__all__ = [
    "WsHub",
    "WsSession",
    "SentLog",
    "FeedLog",
    "register_ws_routes",
    "truth_sent_json",
    "truth_feed_json",
    "truth_feed_builder",
    "control_frame",
    "data_frame",
    "pingpong_frame",
]
