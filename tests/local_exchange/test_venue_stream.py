"""The NXT and unified trade and book feeds over real loopback (docs/local-exchange.md "WebSocket").

A KRX-calendar exchange frozen at 10:00 on an ordinary Tuesday (KRX's regular session and NXT's main session
both run), registrations made while frozen so the subscription instant is exact, then the clock runs at
SPEED and is frozen again, so every record the client got can be checked against the exchange's tapes
(``truth/ticks``) and against what the exchange says it sent (``truth/feed``).
"""

from __future__ import annotations

from typing import Any

import pytest

from observer_resources.kis import protocol as p

from ._wire import Kis, Received, WsClient, parse_data_frame, run

DAY = "2026-03-03"  # a Tuesday; Monday was the substitute holiday for 1 March
START = f"{DAY}T10:00:00+09:00"
CODE = "005930"  # a real large cap: always an NXT member, busy on both venues
SPEED = 20
ASK1, BID1, BOOK_VOL = (p.H0UNASP0_FIELDS.index(n) for n in ("ASKP1", "BIDP1", "ACML_VOL"))
KMID, NMID = p.H0UNASP0_FIELDS.index("KMID_PRC"), p.H0UNASP0_FIELDS.index("NMID_PRC")
#: the previous-day comparisons, which on the unified feed count NXT's previous day too
PRDY_FIELDS = {
    p.H0STCNT0_INDEX[n]
    for n in ("PRDY_VOL_VRSS_ACML_VOL_RATE", "PRDY_SMNS_HOUR_ACML_VOL", "PRDY_SMNS_HOUR_ACML_VOL_RATE")
}


@pytest.fixture
def sim(sim_factory: Any) -> Any:
    return sim_factory(
        "--mode", "real", "--clock", "krx", "--seed", "7", "--listings", "300", "--speed", "0", "--start", START
    )


def _tape(sim: Any, venue: str, code: str = CODE, frm: str = "000000") -> list[dict[str, Any]]:
    """The venue's trades of DAY from ``frm`` up to the sim's now."""
    params = {"code": code, "day": DAY.replace("-", ""), "venue": venue, "records": "0", "revealed": "1", "from": frm}
    return sim.admin("truth/ticks", params=params)["ticks"]


def _feed(sim: Any, key: str, tr_id: str, code: str = CODE) -> dict[str, Any]:
    return sim.admin("truth/feed", params={"appkey": key, "tr_id": tr_id, "code": code})


def _delivered(feed: dict[str, Any]) -> list[list[str]]:
    """The records the exchange says the client received, in order (a duplicated frame twice)."""
    return [e["record"] for e in feed["entries"] if e["status"] in ("sent", "duplicate")]


def _busiest_outsider(sim: Any, members: set[str]) -> str:
    """The listing outside NXT with the most KRX trades in the first minutes after START."""
    rows = sim.admin("listings", params={"order": "activity", "limit": "60"})["listings"]
    outsiders = [r["code"] for r in rows if r["code"] not in members][:8]
    params = {"day": DAY.replace("-", ""), "from": "100001", "to": "100300", "records": "0"}
    counts = {c: sim.admin("truth/ticks", params={**params, "code": c})["count"] for c in outsiders}
    best = max(outsiders, key=lambda c: counts[c])
    assert counts[best] > 0, counts
    return best


async def _stream(sim: Any, kis: Kis, subs: list[tuple[str, str]], seconds: float) -> tuple[Received, str]:
    """Register ``subs`` on a frozen clock, run it at SPEED for ``seconds`` real seconds, freeze it, drain.

    Returns what the client got and the sim instant the clock stopped at."""
    async with WsClient(sim.ws_url, kis.approval()) as c:
        for tr, code in subs:
            await c.send(tr, code)
            ack = await c.control()
            assert ack["header"]["tr_id"] == tr and ack["body"]["msg_cd"] == "OPSP0000", ack
        sim.admin("clock", {"speed": SPEED})
        await c.collect(seconds)
        end = sim.admin("clock", {"speed": 0})["now"]
        await c.collect(1.0)  # the emit loop runs every 50 ms: everything revealed by `end` is out
        return c.got, end


def _hms(iso: str) -> str:
    return iso[11:19].replace(":", "")


def _at_or_before(tape: list[dict[str, Any]], hms: str) -> dict[str, Any] | None:
    last = None
    for t in tape:
        if t["time"] > hms:
            break
        last = t
    return last


def test_unified_and_nxt_feeds_stream_the_venues_tapes(sim: Any, creds: tuple[str, str]) -> None:
    kis = Kis(sim, creds)
    members = set(sim.admin("truth/nxt")["members"])
    assert CODE in members
    outsider = _busiest_outsider(sim, members)
    subs = [(tr, CODE) for tr in ("H0NXCNT0", "H0UNCNT0", "H0NXASP0", "H0UNASP0")]
    subs += [(tr, outsider) for tr in ("H0STCNT0", "H0NXCNT0", "H0UNCNT0", "H0NXASP0")]
    got, end = run(_stream(sim, kis, subs, 6.0))
    end_hms = _hms(end)

    # widths: 46 for every trade feed, 65 for the NXT and unified books
    seen = set()
    for text in got.data:
        _, tr, records = parse_data_frame(text)
        seen.add(tr)
        assert all(len(r) == p.WS_FEED_WIDTHS[tr] for r in records), tr
    assert {"H0NXCNT0", "H0UNCNT0", "H0NXASP0", "H0UNASP0", "H0STCNT0"} <= seen
    assert p.WS_FEED_WIDTHS["H0UNCNT0"] == 46 and p.WS_FEED_WIDTHS["H0UNASP0"] == 65

    # H0NXCNT0 is NXT's tape after the subscription instant, in order, none lost or duplicated
    nxt_all = _tape(sim, "NXT")
    nxt = [t for t in nxt_all if t["time"] > "100000"]
    nx = got.records("H0NXCNT0", CODE)
    assert len(nx) >= 5
    assert [(r[1], int(r[2]), int(r[12]), int(r[13]), int(r[14])) for r in nx] == [
        (t["time"], t["price"], t["qty"], t["acml_vol"], t["acml_value"]) for t in nxt
    ]
    sent = sim.admin("truth/sent", params={"appkey": kis.key, "code": CODE, "tr_id": "H0NXCNT0"})
    assert [e["index"] for e in sent["entries"]] == [t["index"] for t in nxt]
    assert sent["by_status"] == {"sent": len(nxt)}

    # H0UNCNT0: KRX and NXT merged by time (KRX first within a second); cumulative volume and value are KRX's
    # plus NXT's at every record
    krx_all = _tape(sim, "KRX")
    krx = [t for t in krx_all if t["time"] > "100000"]
    cur = {
        "KRX": (krx[0]["acml_vol"] - krx[0]["qty"], krx[0]["acml_value"] - krx[0]["price"] * krx[0]["qty"]),
        "NXT": (nxt[0]["acml_vol"] - nxt[0]["qty"], nxt[0]["acml_value"] - nxt[0]["price"] * nxt[0]["qty"]),
    }
    merged = sorted(
        [(t["time"], 0, "KRX", t) for t in krx] + [(t["time"], 1, "NXT", t) for t in nxt], key=lambda x: x[:2]
    )
    expected = []
    for hms, _, venue, t in merged:
        cur[venue] = (t["acml_vol"], t["acml_value"])
        expected.append((hms, t["price"], t["qty"], cur["KRX"][0] + cur["NXT"][0], cur["KRX"][1] + cur["NXT"][1]))
    un = got.records("H0UNCNT0", CODE)
    assert [(r[1], int(r[2]), int(r[12]), int(r[13]), int(r[14])) for r in un] == expected
    assert all(int(r[13]) > int(k[13]) for r, k in zip(un[1:], un))

    # a non-member: nothing on NXT's feeds, its KRX trades on the unified one (the same records as H0STCNT0
    # but the previous-day comparisons, which on the unified feed count NXT's previous day too)
    assert got.records("H0NXCNT0", outsider) == [] and got.records("H0NXASP0", outsider) == []
    st, uo = got.records("H0STCNT0", outsider), got.records("H0UNCNT0", outsider)
    assert uo and len(uo) == len(_tape(sim, "KRX", outsider, "100001"))
    strip = [[f for i, f in enumerate(r) if i not in PRDY_FIELDS] for r in st]
    assert [[f for i, f in enumerate(r) if i not in PRDY_FIELDS] for r in uo] == strip

    # books: about one a simulated second, each venue's book around that venue's last trade
    nb, ub = got.records("H0NXASP0", CODE), got.records("H0UNASP0", CODE)
    span = (int(end_hms[:2]) - 10) * 3600 + int(end_hms[2:4]) * 60 + int(end_hms[4:]) + 1  # seconds 10:00:00..end
    for book in (nb, ub):
        secs = [r[1] for r in book]
        assert secs == sorted(set(secs)) and "100000" <= secs[0] and secs[-1] <= end_hms
        assert span // 4 <= len(book) <= span  # a busy shared machine may let the 50 ms loop skip seconds
        assert all(int(r[ASK1]) > int(r[BID1]) > 0 for r in book)
        assert all((r[KMID + 1], r[KMID + 2], r[NMID + 1], r[NMID + 2]) == ("0", "0", "0", "0") for r in book)
    for r in nb:
        last = _at_or_before(nxt_all, r[1])
        assert last is not None and last["price"] in (int(r[ASK1]), int(r[BID1]))
        assert int(r[BOOK_VOL]) == last["acml_vol"]
        assert int(r[NMID]) == (int(r[ASK1]) + int(r[BID1])) // 2  # its own book is NXT's
    nmid = {r[1]: r[NMID] for r in nb}
    for r in ub:
        k, n = _at_or_before(krx_all, r[1]), _at_or_before(nxt_all, r[1])
        assert k is not None and n is not None
        assert int(r[BOOK_VOL]) == k["acml_vol"] + n["acml_vol"]
        last = k if (k["time"], 0) > (n["time"], 1) else n  # the later print; NXT's within the same second
        assert last["price"] in (int(r[ASK1]), int(r[BID1]))
        if r[1] in nmid:
            assert r[NMID] == nmid[r[1]]
    for r in ub[:3]:  # KRX's midpoint is that of the book REST quotes at the same instant
        q = sim.admin("truth/quote", params={"code": CODE, "at": f"{DAY}T{r[1][:2]}:{r[1][2:4]}:{r[1][4:]}+09:00"})
        assert int(r[KMID]) == (q["ask1"] + q["bid1"]) // 2

    # the ground truth holds exactly what the client received, feed by feed
    for tr, code in subs:
        feed = _feed(sim, kis.key, tr, code)
        assert _delivered(feed) == got.records(tr, code), (tr, code)
        assert set(feed["by_status"]) <= {"sent"}


def test_faults_on_the_venue_trade_feeds_are_recorded(sim: Any, creds: tuple[str, str]) -> None:
    kis = Kis(sim, creds)
    key = kis.key
    sim.admin("faults", {"kind": "ws_skip", "code": CODE, "n": 3, "tr_id": "H0NXCNT0", "appkey": key})
    sim.admin("faults", {"kind": "ws_duplicate", "n": 2, "tr_id": "H0UNCNT0", "appkey": key})

    async def scenario() -> tuple[Received, str]:
        async with WsClient(sim.ws_url, kis.approval()) as c:
            for tr in ("H0STCNT0", "H0NXCNT0", "H0UNCNT0"):
                await c.send(tr, CODE)
                assert (await c.control())["body"]["msg_cd"] == "OPSP0000"
            sim.admin("clock", {"speed": SPEED})
            await c.collect(3.0)
            sim.admin("faults", {"kind": "ws_silent", "seconds": 2, "appkey": key})
            await c.collect(4.0)
            end = sim.admin("clock", {"speed": 0})["now"]
            await c.collect(1.0)
            return c.got, end

    got, _ = run(scenario())
    nxt = [t for t in _tape(sim, "NXT") if t["time"] > "100000"]
    un_tape = [t for t in _tape(sim, "UN") if t["time"] > "100000"]
    for tr, tape in (("H0NXCNT0", nxt), ("H0UNCNT0", un_tape)):
        feed = _feed(sim, key, tr)
        # what the client got is what the exchange says it delivered, duplicates included
        assert _delivered(feed) == got.records(tr, CODE), tr
        # every tick of the tape since the subscription is accounted for, once (a duplicate repeats a sent one)
        handled = [e["index"] for e in feed["entries"] if e["status"] != "duplicate"]
        assert handled == [t["index"] for t in tape], tr
    nx_feed, un_feed = _feed(sim, key, "H0NXCNT0"), _feed(sim, key, "H0UNCNT0")
    # ws_skip withheld NXT's first three ticks only: the first record the client got breaks the volume identity
    assert [e["status"] for e in nx_feed["entries"][:4]] == ["skipped"] * 3 + ["sent"]
    first = got.records("H0NXCNT0", CODE)[0]
    assert int(first[13]) - int(first[12]) == nxt[2]["acml_vol"] != nxt[0]["acml_vol"] - nxt[0]["qty"]
    # ws_silent withheld the unified tape's ticks of the window (NXT's too, if it printed then)
    assert un_feed["by_status"]["lost_silent"] > 0
    # ws_duplicate repeated two unified frames and left KRX's feed alone
    assert un_feed["by_status"]["duplicate"] > 0
    dup_frames = {e["frame"] for e in un_feed["entries"] if e["status"] == "duplicate"}
    assert len(dup_frames) == 2
    krx = sim.admin("truth/sent", params={"appkey": key, "code": CODE})
    assert "duplicate" not in krx["by_status"] and "skipped" not in krx["by_status"]
    faults = {f["kind"]: f for f in sim.admin("faults")["log"]}
    assert faults["ws_skip"]["applied"] == 3 and faults["ws_skip"]["events"][0]["tr_id"] == "H0NXCNT0"
    assert faults["ws_duplicate"]["applied"] == 2 and all(
        e["tr_id"] == "H0UNCNT0" for e in faults["ws_duplicate"]["events"]
    )


def test_the_shared_layouts_reproduce_krx_records_exactly() -> None:
    """The venue feeds' book derivation (venue_book.krx_book) gives KRX's own book, so fed KRX's tape the shared
    layouts rebuild KRX's records byte for byte: the venue feeds cannot drift from H0STCNT0 / H0STASP0."""
    from datetime import date, datetime

    from local_exchange.market import Market
    from local_exchange.records import orderbook_fields, trade_fields
    from local_exchange.venue_book import krx_book
    from observer_resources.calendar import KST

    m = Market(seed=7, listings=300)
    d = date.fromisoformat(DAY)
    t, pt = m.day_ticks(CODE, d), m.day_ticks(CODE, m.previous_trading_day(d))
    shares = m.by_code[CODE].listed_shares
    for i in (0, 1, 17, len(t) // 2, len(t) - 1):
        k = pt.index_at(int(t.sec[i]))
        rec = trade_fields(
            t,
            i,
            book=krx_book(m, t, i + 1),
            listed_shares=shares,
            prdy_vol=int(pt.acml_vol[-1]),
            prdy_same=int(pt.acml_vol[k - 1]) if k else 0,
        )
        assert rec == m.trade_record(t, i)
    at = datetime(d.year, d.month, d.day, 10, 0, 7, tzinfo=KST)
    n = t.index_at(36007)
    book, before = krx_book(m, t, n), krx_book(m, t, n - 1)
    assert orderbook_fields(CODE, 36007, book, before, int(t.acml_vol[n - 1])) == m.orderbook_record(CODE, at)
