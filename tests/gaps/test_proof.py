"""The completeness proof's rules (pure): which minutes are judged, and how a difference is classed."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa

from observer_assets.gaps.detect import detect
from observer_assets.gaps.detect_common import DayInputs
from observer_assets.gaps.detect_proof import prove
from observer_assets.minute_bars.fetch import MINUTE_BARS_SCHEMA
from observer_resources.calendar import KST

DAY = date(2026, 12, 22)


def kst(h: int, m: int, s: int = 0) -> datetime:
    return datetime(2026, 12, 22, h, m, s, tzinfo=KST)


def _tape(trades: list[tuple[datetime, int, int]], code: str = "005930") -> pa.Table:
    """Ticks in the compacted table's columns the proof reads: (trade time, price, qty) in trade order."""
    acml, rows = 0, []
    for t, price, qty in trades:
        acml += qty
        rows.append({"code": code, "exchange_ts": t, "receive_ts": t, "price": price, "qty": qty, "acml_vol": acml})
    return pa.Table.from_pylist(rows)


def _bars(trades: list[tuple[datetime, int, int]], code: str = "005930", market: str = "J") -> pa.Table:
    by: dict[datetime, list] = {}
    for t, price, qty in trades:
        by.setdefault(t.replace(second=0), []).append((price, qty))
    rows = [
        {
            "code": code,
            "venue": {"J": "KRX", "UN": "UN"}[market],
            "market": market,
            "minute": m,
            "open": ps[0][0],
            "high": max(p for p, _ in ps),
            "low": min(p for p, _ in ps),
            "close": ps[-1][0],
            "volume": sum(q for _, q in ps),
            "value": 0,
            "source": "inquire-time-dailychartprice",
            "fetched_at": kst(20, 10),
        }
        for m, ps in sorted(by.items())
    ]
    return pa.Table.from_pylist(rows, schema=MINUTE_BARS_SCHEMA)


TRADES = [(kst(10, m, s), 70_000 + m * 10 + s // 20, 5 + s // 10) for m in range(0, 12) for s in (5, 25, 45)]
EVENTS = [
    {"event_type": "capture_started", "timestamp": kst(9, 30).isoformat(), "window": {}},
    {
        "event_type": "slot_change",
        "timestamp": kst(10, 0, 30).isoformat(),
        "key": "k1",
        "action": "allocate",
        "code": "005930",
    },
    {
        "event_type": "slot_change",
        "timestamp": kst(10, 10, 10).isoformat(),
        "key": "k1",
        "action": "release",
        "code": "005930",
    },
]


def _inputs(live: list, **kw) -> DayInputs:
    return DayInputs(
        day=DAY,
        as_of=kst(20, 40),
        slots=[],
        universe=["005930"],
        ticks=_tape(live),
        minute_bars=_bars(TRADES),
        events=EVENTS,
        **kw,
    )


def test_whole_held_minutes_only_and_a_clean_tape_is_proven():
    table, rows, summary = prove(_inputs(TRADES), [])
    minutes = [m.astimezone(KST).strftime("%H:%M") for m in table["minute"].to_pylist()]
    # held 10:00:30..10:10:10: 10:00 is partial (taken mid-minute), 10:10 too (let go mid-minute)
    assert minutes == [f"10:{m:02d}" for m in range(1, 10)]
    assert set(table["status"].to_pylist()) == {"agree"} and rows == []
    assert summary["proven"] is True and summary["by_status"]["agree"] == 9


def test_an_unrecorded_loss_differs_and_a_recorded_one_is_explained():
    lost = {TRADES[3 * 4 + 1], TRADES[3 * 7 + 2]}  # one trade at 10:04, one at 10:07
    live = [t for t in TRADES if t not in lost]
    disconnect = {
        "kind": "ws_disconnect",
        "gap_id": "g1",
        "symbol": None,
        "venue": "KRX",
        "start": kst(10, 6, 50),
        "end": kst(10, 7, 50),
    }
    table, rows, summary = prove(_inputs(live), [disconnect])
    status = {
        m.astimezone(KST).strftime("%H:%M"): s for m, s in zip(table["minute"].to_pylist(), table["status"].to_pylist())
    }
    assert {m: s for m, s in status.items() if s != "agree"} == {"10:04": "differs", "10:07": "explained"}
    assert summary["proven"] is False
    (row,) = rows
    assert (row["kind"], row["reason"], row["symbol"], row["venue"], row["missing_volume"]) == (
        "track_b_unproven",
        "minute_bars_disagree",
        "005930",
        "KRX",
        TRADES[13][2],
    )
    assert (row["start"], row["end"]) == (kst(10, 4), kst(10, 5))


def test_restored_trades_complete_the_minute_and_the_report_lists_only_the_unexplained():
    lost = TRADES[3 * 5 + 1]
    live = [t for t in TRADES if t != lost]
    restored = _tape([lost])
    restored = restored.set_column(
        restored.schema.get_field_index("acml_vol"), "acml_vol", pa.array([sum(q for *_, q in TRADES[:16])])
    )
    table, rows, _ = prove(_inputs(live, restored_ticks=restored), [])
    by = dict(
        zip([m.astimezone(KST).strftime("%H:%M") for m in table["minute"].to_pylist()], table["status"].to_pylist())
    )
    assert by["10:05"] == "restored" and rows == []
    # through the whole report: no minute bars, no proof (and the summary says why)
    rep = detect(
        DayInputs(day=DAY, as_of=kst(20, 40), slots=[], universe=["005930"], ticks=_tape(TRADES), events=EVENTS)
    )
    assert rep.summary["proof"]["proven"] is False and "no minute bars" in rep.summary["proof"]["why"]
