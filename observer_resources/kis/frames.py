"""Parse KIS WebSocket messages (docs/kis-protocol.md §8 "WebSocket protocol"). Pure: no I/O, never raises.

Every inbound message becomes exactly one ``Message``:

* ``TradeBatch`` / ``OrderBookFrame`` — a data frame ``flag|tr_id|NNN|payload`` with **all** N
  records (the earlier system kept only the first, losing ticks when the market was busiest).
  The record width is derived from ``len(fields) // N`` so a 47th field does not break parsing.
  A record whose numbers do not parse is rejected alone (``rejected``); its frame-mates survive.
* ``Ack`` — a subscribe/unsubscribe reply, classified by ``msg_cd``.
* ``PingPong`` — the JSON heartbeat, to be echoed back verbatim.
* ``Encrypted`` — a ``1|`` frame (execution notices); not decrypted, not a crash.
* ``Malformed`` — anything else, with a short reason and an excerpt.

``ParseStats.observe`` counts them, so a reader can report what it could not use.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.models import OrderBook, Trade

#: tick TRs sharing the 46-field H0STCNT0 layout (KRX, NXT, combined) (§8.5)
TRADE_TRS = frozenset({p.TR_WS_TRADE, p.TR_WS_TRADE_NXT, p.TR_WS_TRADE_UN})
#: book TRs: the NXT and unified ones add six midpoint fields after the H0STASP0 layout
ORDERBOOK_TRS = frozenset({p.TR_WS_ORDERBOOK, p.TR_WS_ORDERBOOK_NXT, p.TR_WS_ORDERBOOK_UN})
#: expected-price TRs (trade layout, sent during auctions) and market-status TRs: kept as checked field tuples
EXPECTED_TRS = frozenset({p.TR_WS_EXPECTED, p.TR_WS_EXPECTED_NXT, p.TR_WS_EXPECTED_UN})
STATUS_TRS = frozenset({p.TR_WS_STATUS, p.TR_WS_STATUS_NXT, p.TR_WS_STATUS_UN})
FEED_TRS = EXPECTED_TRS | STATUS_TRS
#: the fewest fields a record of each parsed TR may have (more are tolerated, as a 47th trade field is)
_MIN_WIDTH = {tr: p.WS_FEED_WIDTHS[tr] for tr in TRADE_TRS | ORDERBOOK_TRS | FEED_TRS}
EXCERPT_LEN = 200

AckKind = Literal["subscribed", "unsubscribed", "already", "not_registered", "max_over", "key_in_use", "error"]
_ACK_KINDS: dict[str, AckKind] = {
    p.OPSP_SUBSCRIBED: "subscribed",
    p.OPSP_UNSUBSCRIBED: "unsubscribed",
    p.OPSP_ALREADY: "already",
    p.OPSP_NOT_REGISTERED: "not_registered",
    p.OPSP_MAX_OVER: "max_over",
    p.OPSP_KEY_IN_USE: "key_in_use",
}


# --- messages --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record of a data frame that could not be typed; ``raw`` keeps its fields so nothing is lost."""

    index: int
    reason: str  # 'non_numeric' | 'bad_time'
    detail: str
    raw: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TradeBatch:
    tr_id: str
    records: list[Trade]
    raw_count: int  # NNN as sent
    width: int  # fields per record
    rejected: tuple[RejectedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderBookFrame:
    tr_id: str
    records: list[OrderBook]
    raw_count: int = 0
    width: int = 0
    rejected: tuple[RejectedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedFrame:
    """Expected-price or market-status records: each a tuple of its fields in the TR's layout
    (``observer_resources.kis.protocol.WS_FEED_FIELDS``), checked but not typed."""

    tr_id: str
    records: list[tuple[str, ...]]
    raw_count: int = 0
    width: int = 0
    rejected: tuple[RejectedRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    tr_id: str
    tr_key: str
    rt_cd: str
    msg_cd: str
    msg1: str
    kind: AckKind
    encrypt: str


@dataclass(frozen=True, slots=True)
class PingPong:
    raw_text: str  # echo exactly this back


@dataclass(frozen=True, slots=True)
class Encrypted:
    tr_id: str
    count: int


@dataclass(frozen=True, slots=True)
class Malformed:
    reason: str
    raw_excerpt: str
    tr_id: str = ""


Message = TradeBatch | OrderBookFrame | FeedFrame | Ack | PingPong | Encrypted | Malformed


# --- stats -----------------------------------------------------------------------------------------


@dataclass
class ParseStats:
    """What a reader saw. ``malformed`` counts by reason: every ``Malformed`` message (including
    ``unknown_tr``) plus every rejected record of an otherwise good frame."""

    frames: int = 0  # every message observed
    data_frames: int = 0
    records: int = 0  # records parsed into Trade/OrderBook
    malformed: Counter = field(default_factory=Counter)
    unknown_tr: int = 0
    encrypted: int = 0
    pingpong: int = 0
    acks: int = 0

    def observe(self, msg: Message) -> None:
        self.frames += 1
        t = type(msg)
        if t is TradeBatch or t is OrderBookFrame or t is FeedFrame:
            self.data_frames += 1
            self.records += len(msg.records)  # type: ignore[union-attr]
            for r in msg.rejected:  # type: ignore[union-attr]
                self.malformed[r.reason] += 1
        elif t is PingPong:
            self.pingpong += 1
        elif t is Ack:
            self.acks += 1
        elif t is Encrypted:
            self.encrypted += 1
        else:
            reason = msg.reason  # type: ignore[union-attr]
            self.malformed[reason] += 1
            if reason == "unknown_tr":
                self.unknown_tr += 1

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict:
        return {
            "frames": self.frames,
            "data_frames": self.data_frames,
            "records": self.records,
            "malformed": dict(self.malformed),
            "malformed_total": self.malformed_total,
            "unknown_tr": self.unknown_tr,
            "encrypted": self.encrypted,
            "pingpong": self.pingpong,
            "acks": self.acks,
        }


# --- parsing ---------------------------------------------------------------------------------------


def decode(raw: str | bytes) -> str | None:
    """UTF-8, falling back to CP949 (a stray Korean field must not crash the reader); None if neither."""
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return bytes(raw).decode("cp949")
    except UnicodeDecodeError:
        return None


def _excerpt(text: str) -> str:
    return text[:EXCERPT_LEN]


def parse_message(raw: str | bytes, stats: ParseStats | None = None) -> Message:
    """Classify and parse one WebSocket message. Never raises; updates ``stats`` when given."""
    try:
        msg = _parse(raw)
    except Exception as exc:  # a parser bug must not kill the reader; report it as data
        text = raw[:EXCERPT_LEN] if isinstance(raw, str) else repr(bytes(raw)[:EXCERPT_LEN])
        msg = Malformed("parser_error", _excerpt(f"{type(exc).__name__}: {exc} | {text}"))
    if stats is not None:
        stats.observe(msg)
    return msg


def _parse(raw: str | bytes) -> Message:
    text = decode(raw)
    if text is None:
        return Malformed("undecodable", _excerpt(repr(bytes(raw)[:EXCERPT_LEN])))
    if not text or text.isspace():
        return Malformed("empty", "")
    c = text[0]
    if (c == "0" or c == "1") and text[1:2] == "|":
        return _parse_data(text)
    if c == "{" or text.lstrip()[:1] == "{":
        return _parse_json(text)
    if text.strip() == p.TR_PINGPONG:  # tolerate a bare heartbeat; echoing it is harmless
        return PingPong(text)
    return Malformed("bad_frame", _excerpt(text))


def _parse_json(text: str) -> Message:
    try:
        obj = json.loads(text)
    except ValueError:
        return Malformed("truncated_json", _excerpt(text))
    header = obj.get("header") if isinstance(obj, dict) else None
    if not isinstance(header, dict):
        return Malformed("bad_json", _excerpt(text))
    tr_id = str(header.get("tr_id") or "")
    if tr_id == p.TR_PINGPONG:
        return PingPong(text)
    body = obj.get("body")
    if not isinstance(body, dict) or "msg_cd" not in body and "rt_cd" not in body:
        return Malformed("bad_json", _excerpt(text), tr_id)
    msg_cd = str(body.get("msg_cd") or "")
    msg1 = str(body.get("msg1") or "")
    kind = _ACK_KINDS.get(msg_cd)
    up = msg1.upper()
    if "ALREADY IN USE" in up:
        kind = "key_in_use"
    elif "ALREADY IN SUBSCRIBE" in up:  # one mock sent this text with OPSP0001
        kind = "already"
    elif "MAX SUBSCRIBE OVER" in up:
        kind = "max_over"
    elif kind is None:
        kind = "error"
    return Ack(
        tr_id,
        str(header.get("tr_key") or ""),
        str(body.get("rt_cd") or ""),
        msg_cd,
        msg1,
        kind,
        str(header.get("encrypt") or ""),
    )


def _parse_data(text: str) -> Message:
    parts = text.split("|", 3)
    if len(parts) != 4:
        return Malformed("bad_frame", _excerpt(text))
    flag, tr_id, count_s, payload = parts
    try:
        count = int(count_s)
    except ValueError:
        return Malformed("bad_count", _excerpt(text), tr_id)
    if count <= 0:
        return Malformed("bad_count", _excerpt(text), tr_id)
    if flag == "1":
        return Encrypted(tr_id, count)
    is_trade = tr_id in TRADE_TRS
    if not is_trade and tr_id not in ORDERBOOK_TRS and tr_id not in FEED_TRS:
        return Malformed("unknown_tr", _excerpt(text), tr_id)
    fields = payload.split("^")
    n = len(fields)
    if n % count:
        return Malformed("field_count", _excerpt(f"{n} fields for {count} records: {text}"), tr_id)
    width = n // count
    if width < _MIN_WIDTH[tr_id]:
        return Malformed("short_record", _excerpt(f"{width} fields per record: {text}"), tr_id)
    fields = tuple(fields)  # slices are then the records' raw tuples, no extra copy
    if tr_id in FEED_TRS:
        return _feed_frame(tr_id, fields, count, width)
    make = _trade if is_trade else _book
    records = []
    rejected: list[RejectedRecord] = []
    for i in range(count):
        rec = fields[i * width : (i + 1) * width] if count > 1 else fields
        try:
            records.append(make(rec, width))
        except (ValueError, TypeError):
            if is_trade:
                try:
                    records.append(_trade_tolerant(rec, width))
                    continue
                except (ValueError, TypeError):
                    pass
            rejected.append(_diagnose(i, rec, is_trade))
    if is_trade:
        return TradeBatch(tr_id, records, count, width, tuple(rejected))
    return OrderBookFrame(tr_id, records, count, width, tuple(rejected))


# exchange_dt cache: ticks of one second share it, and datetime() is the costliest step per record
_DT_CACHE: dict[str, datetime] = {}


def _exchange_dt(day: str, hhmmss: str) -> datetime:
    key = day + hhmmss
    dt = _DT_CACHE.get(key)
    if dt is None:
        if len(day) != 8 or len(hhmmss) != 6 or not key.isdigit():
            raise ValueError(f"bad date/time {day!r} {hhmmss!r}")
        dt = datetime(
            int(day[:4]), int(day[4:6]), int(day[6:]), int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:]), tzinfo=KST
        )
        if len(_DT_CACHE) > 100_000:
            _DT_CACHE.clear()
        _DT_CACHE[key] = dt
    return dt


class _Memo(dict):
    """str -> number memo for fields that repeat tick after tick (price, OHLC, bid/ask, change):
    a dict hit costs a fraction of int()/float() on this hot path. Bounded."""

    __slots__ = ("conv",)

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def __missing__(self, key: str):
        value = self.conv(key)
        if len(self) >= 50_000:
            self.clear()
        self[key] = value
        return value


_IM = _Memo(int)
_FM = _Memo(float)


def _trade(f: tuple[str, ...], width: int) -> Trade:
    """Fast path: strict (any non-numeric or empty numeric field raises; the caller then retries
    with ``_trade_tolerant`` or rejects the record)."""
    (
        code,
        hhmmss,
        prpr,
        sign,
        vrss,
        ctrt,
        vwap,
        oprc,
        hgpr,
        lwpr,
        askp,
        bidp,
        vol,
        acml,
        pbmn,
        sell_cnt,
        buy_cnt,
        net_cnt,
        cttr,
        sell_qty,
        buy_qty,
        ccld,
        shnu,
        prdy_rate,
        _o_h,
        _o_s,
        _o_v,
        _h_h,
        _h_s,
        _h_v,
        _l_h,
        _l_s,
        _l_v,
        day,
        mkop,
        trht,
        ask_sz,
        bid_sz,
        tot_ask,
        tot_bid,
        _tnrt,
        _psv,
        _psr,
        hour_cls,
        _trtm,
        vi,
    ) = f if width == 46 else f[:46]
    if width == 46:
        extra: tuple[str, ...] = ()
        market_cls = None
    else:
        extra = f[46:]
        market_cls = extra[0] or None  # MARKET_CLS_CODE (§8.6); empty = not sent
    im = _IM
    dt = _DT_CACHE.get(day + hhmmss) or _exchange_dt(day, hhmmss)
    return Trade(
        code or _no_code(),
        hhmmss,
        dt,
        im[prpr],
        im[vrss],
        sign,
        _FM[ctrt],
        float(vwap),
        im[oprc],
        im[hgpr],
        im[lwpr],
        im[askp] or None,
        im[bidp] or None,
        im[vol],
        int(acml),
        int(pbmn),
        int(sell_cnt),
        int(buy_cnt),
        int(net_cnt),
        float(cttr),
        int(sell_qty),
        int(buy_qty),
        ccld,
        float(shnu),
        float(prdy_rate),
        mkop,
        trht == "Y",
        int(ask_sz),
        int(bid_sz),
        int(tot_ask),
        int(tot_bid),
        hour_cls,
        im[vi] or None,
        market_cls,
        extra,
        f,
    )


def _no_code() -> str:
    raise ValueError("empty MKSC_SHRN_ISCD")


def _trade_tolerant(f: tuple[str, ...], width: int) -> Trade:
    """Slow path: ASKP1/BIDP1/VI_STND_PRC may be empty (absent) -> None."""
    g = list(f)
    for i in (10, 11, 45):
        if g[i] == "":
            g[i] = "0"
    t = _trade(tuple(g), width)
    t.raw = f
    return t


def _book(f: tuple[str, ...], width: int) -> OrderBook:
    ints = [int(x) if x else 0 for x in f[3:50]]
    return OrderBook(
        f[0],
        f[1],
        f[2],
        tuple(ints[0:10]),
        tuple(ints[10:20]),
        tuple(ints[20:30]),
        tuple(ints[30:40]),
        ints[40],
        ints[41],
        ints[44],
        ints[45],
        int(f[53] or 0),
        tuple(f[59:]),
        tuple(f),
    )


_TRADE_NUMERIC = tuple(
    (i, name)
    for i, name in enumerate(p.H0STCNT0_FIELDS)
    if i not in (0, 1, 3, 21, 24, 25, 27, 28, 30, 31, 33, 34, 35, 43, 44)
)


def _feed_frame(tr_id: str, fields: tuple[str, ...], count: int, width: int) -> FeedFrame:
    """Expected prices need a trade time and a price; a status record needs a two-digit phase code."""
    records: list[tuple[str, ...]] = []
    rejected: list[RejectedRecord] = []
    status = tr_id in STATUS_TRS
    phase_at = p.WS_FEED_FIELDS[tr_id].index("MKOP_CLS_CODE") if status else -1
    for i in range(count):
        rec = fields[i * width : (i + 1) * width]
        if status:
            code = rec[phase_at]
            if len(code) != 2 or not code.isdigit():
                rejected.append(RejectedRecord(i, "bad_status", f"MKOP_CLS_CODE={code!r}", rec))
                continue
        else:
            hhmmss, price = rec[1], rec[2]
            if len(hhmmss) != 6 or not hhmmss.isdigit():
                rejected.append(RejectedRecord(i, "bad_time", f"time={hhmmss!r}", rec))
                continue
            if not price.lstrip("-").isdigit():
                rejected.append(RejectedRecord(i, "non_numeric", f"price={price!r}", rec))
                continue
        records.append(rec)
    return FeedFrame(tr_id, records, count, width, tuple(rejected))


def _diagnose(index: int, rec: tuple[str, ...], is_trade: bool) -> RejectedRecord:
    """Slow path: say which field broke a record (only runs for bad records)."""
    raw = tuple(rec)
    if is_trade:
        if not rec[0]:
            return RejectedRecord(index, "non_numeric", "MKSC_SHRN_ISCD empty", raw)
        for i, name in _TRADE_NUMERIC:
            v = rec[i]
            if name in ("ASKP1", "BIDP1", "VI_STND_PRC") and v == "":
                continue
            try:
                float(v) if "." in v else int(v)
            except ValueError:
                return RejectedRecord(index, "non_numeric", f"{name}={v[:40]!r}", raw)
        try:
            _exchange_dt(rec[33], rec[1])
        except ValueError as exc:
            return RejectedRecord(index, "bad_time", str(exc)[:EXCERPT_LEN], raw)
        return RejectedRecord(index, "non_numeric", "unparsed field", raw)
    for i in (*range(3, 50), 53):
        v = rec[i]
        if v:
            try:
                int(v)
            except ValueError:
                return RejectedRecord(index, "non_numeric", f"{p.H0STASP0_FIELDS[i]}={v[:40]!r}", raw)
    return RejectedRecord(index, "non_numeric", "unparsed field", raw)
