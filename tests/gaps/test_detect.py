"""Gap detection rules on hand-built tables: each fault kind gives exactly its gap, nothing else."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pyarrow as pa

from observer_assets.gaps.detect import GAP_SCHEMA, DayInputs, detect
from observer_assets.track_b.compaction import TICK_SCHEMA
from observer_resources.calendar import KST
from observer_resources.events import Gap

DAY = date(2026, 3, 10)
UNI = ["000010", "000020", "000030", "000040"]
TS = pa.timestamp("us", tz="Asia/Seoul")


def at(h: int, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(2026, 3, 10, h, m, tzinfo=KST) + timedelta(seconds=s)


SLOTS = [at(9, m) for m in range(0, 60, 10)] + [at(10, 0)]


def snap(slot: datetime, codes=UNI, *, late_s: float = 5.0, source: str = "live", restored_from=None) -> pa.Table:
    n = len(codes)
    return pa.table(
        {
            "code": list(codes),
            "source": [source] * n,
            "restored_from": pa.array([restored_from] * n, pa.string()),
            "fetched_at": pa.array([slot + timedelta(seconds=late_s)] * n, TS),
        }
    )


def fails(rows: dict[str, str]) -> pa.Table:
    return pa.table({"code": list(rows), "error": list(rows.values())})


def ticks(
    spec: list[tuple[str, datetime, int]], key: str = "k1", drop: set[int] | None = None, source: str | None = None
) -> pa.Table:
    """Ticks of (code, rx, qty) with consistent cumulative volume and trade counts; `drop` removes indices
    (after the cumulative values were computed: a lost tick)."""
    acml: dict[str, int] = {}
    cnt: dict[str, int] = {}
    rows = []
    for i, (code, rx, q) in enumerate(spec):
        acml[code] = acml.get(code, 0) + q
        cnt[code] = cnt.get(code, 0) + 1
        if drop and i in drop:
            continue
        rows.append(
            {
                "code": code,
                "receive_ts": rx,
                "acml_vol": acml[code],
                "qty": q,
                "buy_cnt": cnt[code],
                "sell_cnt": 0,
                "key_id": key,
            }
        )
    t = pa.Table.from_pylist(
        rows,
        schema=pa.schema([TICK_SCHEMA.field(c) if c != "receive_ts" else pa.field("receive_ts", TS) for c in rows[0]]),
    )
    if source:
        t = t.append_column("source", pa.array([source] * t.num_rows)).append_column(
            "restored_from", pa.array(["conclusions"] * t.num_rows)
        )
    return t


def busy(code: str, start: datetime, seconds: int, every: float = 1.0, qty: int = 10) -> list:
    return [(code, start + timedelta(seconds=i * every), qty) for i in range(int(seconds / every))]


def inputs(**kw) -> DayInputs:
    base = dict(day=DAY, as_of=at(10, 5), slots=SLOTS, universe=UNI, snapshots={s: snap(s) for s in SLOTS}, failures={})
    base.update(kw)
    return DayInputs(**base)


def kinds(rep) -> list[tuple]:
    return sorted((r["kind"], r["symbol"], r["slot_ts"]) for r in rep.rows.to_pylist())


def test_clean_day_has_no_gaps() -> None:
    rep = detect(inputs(ticks=ticks(busy("000010", at(9, 30), 600))))
    assert rep.rows.num_rows == 0 and rep.rows.schema == GAP_SCHEMA
    assert rep.verdict["anomaly_day"] is False and rep.verdict["rules_fired"] == []
    cov = rep.coverage.to_pylist()
    assert [c["slot"] for c in cov] == [f"T{s:%H%M}" for s in SLOTS]
    assert all((c["state"], c["coverage_ratio"], c["missing"]) == ("live", 1.0, 0) for c in cov)
    assert rep.summary["track_b"]["ticks"] == 600 and rep.summary["track_b"]["losses"] == 0


def test_track_a_faults_exactly() -> None:
    snaps = {s: snap(s) for s in SLOTS}
    del snaps[at(9, 20)]  # missing slot
    snaps[at(9, 30)] = snap(at(9, 30), UNI[:2])  # partial: 000030 rate-limited, 000040 absent without failure
    snaps[at(9, 40)] = snap(at(9, 40), late_s=300)  # late, major
    snaps[at(9, 50)] = snap(at(9, 50), late_s=700)  # late, critical
    del snaps[at(10, 0)]  # inside its grace at 10:01: not a gap yet
    rep = detect(
        inputs(snapshots=snaps, failures={at(9, 30): fails({"000030": "RateLimitedError EGW00201"})}, as_of=at(10, 1))
    )
    rows = {(r["kind"], r["symbol"], r["slot_ts"]): r for r in rep.rows.to_pylist()}
    assert sorted(rows) == sorted(
        [
            ("track_a_missing_slot", None, at(9, 20)),
            ("track_a_missing_symbol", "000030", at(9, 30)),
            ("track_a_missing_symbol", "000040", at(9, 30)),
            ("rate_limit", None, at(9, 30)),
            ("track_a_late", None, at(9, 40)),
            ("track_a_late", None, at(9, 50)),
        ]
    )
    ms = rows[("track_a_missing_slot", None, at(9, 20))]
    assert ms["severity"] == "critical" and ms["status"] == "open" and ms["restore_how"] == "minute_bars_past"
    assert ms["reason"] == "unknown"  # no failure, no event, runs not looked up: nothing says why
    assert rows[("track_a_missing_symbol", "000030", at(9, 30))]["reason"] == "rate_limit"
    assert rows[("track_a_missing_symbol", "000030", at(9, 30))]["error_code"] == "EGW00201"
    assert rows[("track_a_missing_symbol", "000040", at(9, 30))]["reason"] == "unknown"  # absent, nothing recorded
    assert rows[("track_a_late", None, at(9, 40))]["severity"] == "major"
    assert rows[("track_a_late", None, at(9, 50))]["severity"] == "critical"
    assert {r["reason"] for k, r in rows.items() if k[0] == "track_a_late"} == {"unknown"}  # never api_error
    cov = {c["slot"]: c for c in rep.coverage.to_pylist()}
    assert (cov["T0930"]["coverage_ratio"], cov["T0930"]["missing"], cov["T0930"]["failures"]) == (0.5, 2, 1)
    assert (cov["T0920"]["state"], cov["T0920"]["reason"]) == ("missing", "unknown")
    assert (cov["T0950"]["late_seconds"], cov["T0950"]["reason"]) == (700.0, "unknown")
    assert (cov["T1000"]["state"], cov["T1000"]["missing"]) == ("pending", None)
    assert "critical_gap" in [r["rule"] for r in rep.verdict["rules_fired"]]


def test_missing_slot_becomes_major_then_critical_with_time_and_never_in_the_future() -> None:
    snaps = {s: snap(s) for s in SLOTS if s < at(9, 50)}
    rep = detect(inputs(snapshots=snaps, as_of=at(9, 55)))  # 09:50 is 5 min overdue, 10:00 is in the future
    assert [(r["kind"], r["slot_ts"], r["severity"]) for r in rep.rows.to_pylist()] == [
        ("track_a_missing_slot", at(9, 50), "major")
    ]


def test_restored_rows_close_the_gaps_with_provenance() -> None:
    snaps = {s: snap(s) for s in SLOTS}
    snaps[at(9, 20)] = snap(at(9, 20), source="restored", restored_from="minute_bars_today", late_s=3600)
    part = snap(at(9, 30), UNI[:3])
    snaps[at(9, 30)] = pa.concat_tables(
        [part, snap(at(9, 30), ["000040"], source="restored", restored_from="minute_bars_today", late_s=3600)]
    )
    rep = detect(inputs(snapshots=snaps, today=True))
    rows = rep.rows.to_pylist()
    assert [(r["kind"], r["symbol"], r["status"], r["restored_from"]) for r in rows] == [
        ("track_a_missing_slot", None, "restored", "minute_bars_today"),
        ("track_a_missing_symbol", "000040", "restored", "minute_bars_today"),
    ]
    assert rep.summary["backfill_targets"] == 0  # restored rows' late fetch is not a late snapshot


def test_track_b_loss_silence_and_disconnect() -> None:
    spec = busy("000010", at(9, 30), 1200)  # 09:30:00 .. 09:49:59, one trade a second
    quiet = [("000020", at(9, 30), 5), ("000020", at(9, 30, 45), 5), ("000020", at(9, 33), 5), ("000020", at(9, 40), 5)]
    lost = 100  # 09:31:40: one tick lost on the wire
    disc = set(range(600, 660))  # 09:40:00..09:40:59 lost in a disconnect
    t = ticks(spec + quiet, drop={lost} | disc)
    gap = Gap("g1", "scalp", "ws_disconnect", "major", None, at(9, 39, 59.5), at(9, 41, 0.5), {"key_id": "k1"})
    rep = detect(inputs(ticks=t, gap_markers=[gap]))
    rows = rep.rows.to_pylist()
    assert sorted((r["kind"], r["symbol"]) for r in rows) == sorted(
        [
            ("track_b_loss", "000010"),
            ("ws_disconnect", None),
            ("track_b_silence", "000020"),
            ("track_b_silence", "000020"),
            ("track_b_silence", "000020"),
        ]
    )
    loss = next(r for r in rows if r["kind"] == "track_b_loss")
    assert loss["missing_volume"] == 10 and loss["missing_trades"] == 1 and loss["data_lost"]
    assert loss["start"] == at(9, 31, 39) and loss["end"] == at(9, 31, 41)
    d = next(r for r in rows if r["kind"] == "ws_disconnect")
    assert d["missing_volume"] == 600 and d["missing_trades"] == 60 and d["seconds"] == 61.0
    assert json.loads(d["evidence"])["losses"]["000010"]["breaks"] == 1
    sil = sorted((r["start"], r["end"], r["severity"]) for r in rows if r["kind"] == "track_b_silence")
    # 45 s, 135 s, and 09:33..09:40 minus the disconnect window's start (09:39:59.5)
    assert sil == [
        (at(9, 30), at(9, 30, 45), "minor"),
        (at(9, 30, 45), at(9, 33), "major"),
        (at(9, 33), at(9, 39, 59.5), "critical"),
    ]
    assert all(not r["data_lost"] and r["status"] == "info" for r in rows if r["kind"] == "track_b_silence")
    # a quiet symbol is never a loss; the verdict does not count silences as critical gaps
    assert rep.summary["track_b"]["losses"] == 1 + 1


def test_loss_restored_from_conclusions_and_release_is_not_a_loss() -> None:
    spec = busy("000010", at(9, 30), 120)
    live = ticks(spec, drop={50})
    rest = ticks(spec, source="restored").filter(pa.compute.equal(pa.array(range(120)), 50))
    t = pa.concat_tables(
        [
            live.append_column("source", pa.array(["live"] * live.num_rows)).append_column(
                "restored_from", pa.nulls(live.num_rows, pa.string())
            ),
            rest,
        ]
    )
    rep = detect(inputs(ticks=t, today=True))
    (row,) = rep.rows.to_pylist()
    assert (row["kind"], row["status"], row["restored_from"]) == ("track_b_loss", "restored", "conclusions")

    # the code left its slot at 09:30:30 and came back: the volume jump is unsubscribed time, not a loss
    spec2 = busy("000030", at(9, 30), 30) + busy("000030", at(9, 35), 30)
    ev = [
        {
            "event_type": "slot_change",
            "timestamp": at(9, 30, 30).isoformat(),
            "action": "replace",
            "old_code": "000030",
            "code": "000099",
        }
    ]
    t2 = ticks(spec2[:30] + [("000030", at(9, 32), 500)] + spec2[30:], drop={30})
    rep2 = detect(inputs(ticks=t2, events=ev))
    assert rep2.rows.num_rows == 0
    # released at the very instant its last tick was received (a clock that ticks in steps stamps both alike)
    ev[0]["timestamp"] = spec2[29][1].isoformat()
    assert detect(inputs(ticks=t2, events=ev)).rows.num_rows == 0


def test_ticks_after_as_of_are_not_judged_and_verdict_rules() -> None:
    t = ticks(busy("000010", at(9, 30), 600), drop={500})  # the loss is at 09:38:20, after as_of
    markers = [
        Gap(f"g{i}", "scalp", "ws_disconnect", "major", None, at(9, 0, i * 10), at(9, 0, i * 10 + 1), {})
        for i in range(20)
    ]
    rep = detect(
        inputs(
            ticks=t,
            as_of=at(9, 35),
            gap_markers=markers,
            snapshots={s: snap(s) for s in SLOTS},
            anomaly={"rules": [{"rule": "ws_failure_5min"}]},
        )
    )
    assert not any(r["kind"] == "track_b_loss" for r in rep.rows.to_pylist())
    fired = {r["rule"] for r in rep.verdict["rules_fired"]}
    assert fired == {"ws_reconnects", "anomaly_marker"}
    assert rep.verdict["measured"]["reconnects"] == 20


def test_restore_assets_rows_close_a_disconnect_loss() -> None:
    """Rows of track_b_restored (code, acml_vol, qty, restored_from; no receipt time) fill the holes exactly."""
    spec = busy("000010", at(9, 30), 120)
    disc = set(range(60, 70))
    full = ticks(spec)
    gap = Gap("g9", "scalp", "ws_disconnect", "major", None, at(9, 30, 59.5), at(9, 31, 10.5), {"key_id": "k1"})
    rest = full.filter(pa.array([i in disc for i in range(full.num_rows)])).select(["code", "acml_vol", "qty"])
    rest = rest.append_column("restored_from", pa.array(["inquire-time-itemconclusion"] * rest.num_rows))
    before = detect(inputs(ticks=ticks(spec, drop=disc), gap_markers=[gap], today=True)).rows.to_pylist()
    assert [(r["kind"], r["status"], r["missing_volume"]) for r in before] == [("ws_disconnect", "open", 100)]
    partial = detect(
        inputs(ticks=ticks(spec, drop=disc), gap_markers=[gap], today=True, restored_ticks=rest.slice(0, 9))
    ).rows.to_pylist()
    assert partial[0]["status"] == "open"  # 9 of 10 trades found: the hole stays open
    after = detect(
        inputs(ticks=ticks(spec, drop=disc), gap_markers=[gap], today=True, restored_ticks=rest)
    ).rows.to_pylist()
    assert [(r["kind"], r["status"]) for r in after] == [("ws_disconnect", "restored")]
    assert after[0]["restored_from"] == "inquire-time-itemconclusion"


def test_partly_restored_slot_is_restored_and_keeps_what_history_could_not_give() -> None:
    snaps = {s: snap(s) for s in SLOTS}
    snaps[at(9, 20)] = snap(at(9, 20), UNI[:3], source="restored", restored_from="minute_bars_past")
    (row,) = detect(inputs(snapshots=snaps)).rows.to_pylist()
    assert (row["kind"], row["status"], row["restored_from"]) == (
        "track_a_missing_slot",
        "restored",
        "minute_bars_past",
    )
    ev = json.loads(row["evidence"])
    assert ev["still_missing"] == 1 and ev["still_missing_symbols"] == ["000040"]


def test_every_row_says_its_venue_and_phase() -> None:
    """A KRX-only slot, a two-venue slot's unified symbol, a slot at the closing cross, NXT's evening, a Track B loss
    in the session and one in a break: each row names the venue it is about and that venue's phase then."""
    from datetime import time

    from observer_assets.track_a.venues import slot_markets
    from observer_resources.calendar.market import MarketCalendar

    cal = MarketCalendar(track_a_window=(time(8, 0), time(20, 0)))
    uni_t = pa.table({"code": UNI, "nxt_tradable": [True, False, False, False]})
    slots = [at(9, 0), at(10, 0), at(15, 30), at(19, 0)]
    markets = {s: slot_markets(uni_t, cal, s) for s in slots}
    snaps = {s: snap(s, [c for c in markets[s] if c != "000010"]) for s in slots}  # 000010 missing every time
    snaps[at(15, 30)] = snap(at(15, 30), late_s=700)  # late: a slot-wide row
    rep = detect(
        inputs(
            slots=slots,
            snapshots=snaps,
            slot_universe=markets,
            phases=cal.phases(DAY),
            as_of=at(19, 30),
            ticks=ticks(busy("000020", at(9, 30), 120), drop={50}),
        )
    )
    got = {(r["kind"], r["symbol"], r["slot_ts"]): (r["venue"], r["phase"]) for r in rep.rows.to_pylist()}
    assert got[("track_a_missing_symbol", "000010", at(9, 0))] == ("unified", "KRX:regular")  # NXT opens 09:00:30
    assert got[("track_a_missing_symbol", "000010", at(10, 0))] == ("unified", "KRX:regular+NXT:main")
    # at 19:00 only 000010 trades (NXT's after-market), so without it the slot is empty: a missing slot
    assert got[("track_a_missing_slot", None, at(19, 0))] == ("unified", "NXT:after_market")
    assert got[("track_a_late", None, at(15, 30))] == ("KRX+unified", "KRX:closing_auction+NXT:after_market_orders")
    (loss,) = [v for k, v in got.items() if k[0] == "track_b_loss"]
    assert loss == ("KRX", "KRX:regular")
    assert {r["venue"] is not None and r["phase"] is not None for r in rep.rows.to_pylist()} == {True}


def test_a_phase_is_named_where_it_runs_ends_or_pauses() -> None:
    from observer_assets.gaps.detect_common import phase_label
    from observer_resources.calendar.market import MarketCalendar

    phases = MarketCalendar().phases(DAY)
    assert phase_label(phases, "KRX", at(9, 0)) == "KRX:regular"
    assert phase_label(phases, "KRX", at(15, 30)) == "KRX:closing_auction"  # the instant it ends
    assert phase_label(phases, "KRX", at(15, 35)) == "break"
    assert phase_label(phases, "NXT", at(8, 55)) == "break"
    assert phase_label(phases, "KRX", at(7, 0)) == phase_label(phases, "unified", at(21, 0)) == "closed"


def test_each_tape_is_judged_by_its_own_volume_and_quiet_breaks_are_not_silences() -> None:
    """KRX's tape, the unified one and NXT's, on a day with phases: a lost unified trade is a loss of the unified
    tape (its own id and venue) while KRX's tape of the same code is whole; quiet time in a break between phases
    or in an auction is no silence, the same quiet time inside a continuous phase is."""
    from observer_resources.calendar.market import MarketCalendar

    phases = MarketCalendar().phases(DAY)  # KRX 08:30-09:00 auction, 09:00-15:20 regular; NXT break 08:50-09:00:30
    krx = ticks([*busy("000020", at(9, 30), 60), ("000020", at(9, 31, 30), 10)])  # 29 s quiet in the session
    unified = ticks(
        [*busy("000020", at(9, 30), 60), ("000020", at(9, 31, 30), 10)],
        drop={30},  # one unified trade lost
    )
    nxt = ticks(
        [
            ("000030", at(8, 49, 55), 5),  # NXT's pre-market ends 08:50
            ("000030", at(9, 0, 31), 5),  # its main session opens 09:00:30: 10 min of break, no silence
            ("000030", at(9, 1, 0), 5),  # 29 s quiet in the main session: a silence
        ]
    )
    quiet_auction = ticks([("000040", at(8, 31), 5), ("000040", at(9, 0), 5)], key="k1")  # KRX's opening auction
    krx = pa.concat_tables([krx, quiet_auction])
    rep = detect(inputs(phases=phases, as_of=at(10, 0), ticks=krx, venue_ticks={"unified": unified, "NXT": nxt}))
    rows = rep.rows.to_pylist()
    losses = [(r["venue"], r["symbol"], r["missing_volume"]) for r in rows if r["kind"] == "track_b_loss"]
    assert losses == [("unified", "000020", 10)]
    silences = sorted((r["venue"], r["symbol"], r["start"], r["end"]) for r in rows if r["kind"] == "track_b_silence")
    assert silences == [
        ("KRX", "000020", at(9, 30, 59), at(9, 31, 30)),
        ("NXT", "000030", at(9, 0, 31), at(9, 1, 0)),
        ("unified", "000020", at(9, 30, 59), at(9, 31, 30)),
    ]
    assert {r["phase"] for r in rows if r["kind"].startswith("track_b")} >= {"KRX:regular", "NXT:main"}
    ids = [r["gap_id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert rep.summary["track_b"]["venues"]["unified"]["losses"] == 1
    assert rep.summary["track_b"]["venues"]["NXT"]["silences"] == 1
