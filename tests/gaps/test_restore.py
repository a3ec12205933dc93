"""Track A restore from minute bars against the local exchange's ground truth (real HTTP, real files, real instance).

Bar semantics (the sim and KIS): a bar stamped HH:MM covers [HH:MM:00, HH:MM+1:00). A restored row is built from
the bars that ended by the slot, so it equals the exchange's state one second before the slot; the only trades it
cannot hold are those stamped within the slot's first second — the test proves both statements tick by tick.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import build_universe, kis_for

from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.orchestration.runs import BACKFILL_TAGS, KIS_REST_TAGS
from observer_assets.track_a import restore
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.kis.models import MinuteBar
from observer_resources.storage import lake
from observer_resources.storage.layout import slot_dir, universe_path

ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "50"}  # the trimmed universe (tests/support.py) is smaller


def truth(sim, code: str, at: datetime) -> dict:
    return sim.admin("truth/quote", params={"code": code, "at": at.isoformat()})


def backfill(inst, kis, key):
    inst.add_dynamic_partitions("track_a_slot", [key])
    return dg.materialize(
        [track_a_snapshot, universe],
        selection=[track_a_snapshot],
        partition_key=key,
        instance=inst,
        resources={"kis": kis},
        tags={**BACKFILL_TAGS, **KIS_REST_TAGS},
    )


def past_slot(minutes_back: int) -> datetime:
    now = datetime.now(KST)
    slot = calendar().slot_at(now) - timedelta(minutes=minutes_back)
    # the day's first slot has no minute bar before it to restore from
    if slot.date() != now.date() or slot == calendar().track_a_slots(slot.date())[0]:
        pytest.skip("too close to midnight for a past slot of today")
    return slot


def assert_matches_truth(sim, row: dict, slot: datetime) -> None:
    """The restored row equals the state one second before the slot; the slot's own first second is the only
    difference from the state at the slot, and the truth's ticks account for it exactly."""
    before = truth(sim, row["code"], slot - timedelta(seconds=1))
    assert (row["price"], row["volume"], row["trade_value"]) == (
        before["price"],
        before["acml_vol"],
        before["acml_value"],
    )
    at = truth(sim, row["code"], slot)
    hhmmss = slot.strftime("%H%M%S")
    ticks = sim.admin(
        "truth/ticks",
        params={"code": row["code"], "day": slot.strftime("%Y%m%d"), "from": hhmmss, "to": hhmmss, "records": "0"},
    )["ticks"]
    assert at["acml_vol"] - row["volume"] == sum(t["qty"] for t in ticks)
    assert at["price"] == (ticks[-1]["price"] if ticks else row["price"])


def test_restore_fills_only_missing_symbols_and_whole_missing_slots(env, small_sim):
    today = datetime.now(KST).date()
    kis = kis_for(small_sim, env, 1)
    with dg.instance_for_test() as inst:
        codes = build_universe(inst, kis, today)
        root = lake.data_dir()

        # An incomplete live snapshot: 30 of 40 symbols, values marked so any rewrite would show.
        slot = past_slot(30)
        live_codes = codes[:30]
        live = pa.table({f.name: [None] * len(live_codes) for f in SNAPSHOT_SCHEMA}, schema=SNAPSHOT_SCHEMA)
        live = live.set_column(live.schema.get_field_index("code"), "code", pa.array(live_codes))
        for col, val in (("price", 123), ("volume", 7), ("bid", 122), ("ask", 124)):
            live = live.set_column(live.schema.get_field_index(col), col, pa.array([val] * 30, pa.int64()))
        live = live.set_column(live.schema.get_field_index("source"), "source", pa.array(["live"] * 30))
        live = live.set_column(
            live.schema.get_field_index("slot_ts"), "slot_ts", pa.array([slot] * 30, live.schema.field("slot_ts").type)
        )
        path = slot_dir(root, slot) / "snapshot.parquet"
        lake.write_table_atomic(path, live)

        res = backfill(inst, kis, slot_key(slot))
        assert res.success
        md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
        assert md["mode"].value == "restored" and md["restored_from"].value == restore.ENDPOINT_TODAY
        assert (md["live_rows"].value, md["restored_now"].value, md["coverage_pct"].value) == (30, 10, 100.0)
        out = pq.read_table(path)
        assert out.schema.equals(SNAPSHOT_SCHEMA) and out["code"].to_pylist() == sorted(codes)
        rows = {r["code"]: r for r in out.to_pylist()}
        # Live rows untouched, byte for byte in value.
        assert [rows[c] for c in live_codes] == live.to_pylist()
        for c in codes[30:]:
            r = rows[c]
            assert r["source"] == "restored" and r["restored_from"] == "inquire-time-itemchartprice"
            assert r["tr_id"] == "FHKST03010200" and r["bid"] is None and r["ask"] is None
            assert r["slot_ts"] == slot
            assert_matches_truth(small_sim, r, slot)

        # A complete slot: a second backfill run asks KIS nothing and changes nothing.
        before = small_sim.admin("stats")["requests_total"]
        res = backfill(inst, kis, slot_key(slot))
        assert (
            res.asset_materializations_for_node("track_a_snapshot")[0].metadata["mode"].value
            == "complete: nothing to restore"
        )
        assert small_sim.admin("stats")["requests_total"] == before
        assert pq.read_table(path).equals(out)

        # A whole missing slot (no backfill tag: a run for a slot no longer current restores too).
        slot2 = past_slot(50)
        key2 = slot_key(slot2)
        inst.add_dynamic_partitions("track_a_slot", [key2])
        res = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=key2,
            instance=inst,
            resources={"kis": kis},
            tags=KIS_REST_TAGS,
        )
        md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
        assert md["restore_reason"].value == "slot no longer current"
        out2 = pq.read_table(slot_dir(root, slot2) / "snapshot.parquet").to_pylist()
        assert [r["code"] for r in out2] == sorted(codes)
        assert all(r["source"] == "restored" for r in out2)
        for r in out2[::4]:
            assert_matches_truth(small_sim, r, slot2)
        assert not (slot_dir(root, slot2, "raw/track_a") / "raw.jsonl").exists()  # no fake live archive


def test_restore_of_an_earlier_day_uses_past_minute_bars(env, small_sim):
    cal = calendar()
    today = datetime.now(KST).date()
    yday = cal.previous_trading_day(today)
    kis = kis_for(small_sim, env, 2)
    with dg.instance_for_test() as inst:
        build_universe(inst, kis, today)
        root = lake.data_dir()
        # Yesterday's universe: the same members (previous closes are only used for change/change_rate).
        lake.write_table_atomic(universe_path(root, yday), pq.read_table(universe_path(root, today)).slice(0, 8))
        slot = datetime.combine(yday, datetime.min.time(), KST).replace(hour=14, minute=20)
        res = backfill(inst, kis, slot_key(slot))
        assert res.success
        md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
        assert md["restored_from"].value == restore.ENDPOINT_PAST and md["restored_now"].value == 8
        for r in pq.read_table(slot_dir(root, slot) / "snapshot.parquet").to_pylist():
            assert r["source"] == "restored" and r["tr_id"] == "FHKST03010230"
            assert_matches_truth(small_sim, r, slot)


def _bar(h: int, m: int, close: int, vol: int, value: int) -> MinuteBar:
    return MinuteBar(
        at=datetime(2026, 3, 3, h, m, tzinfo=KST),
        close=close,
        open=close,
        high=close,
        low=close,
        volume=vol,
        acml_value=value,
        raw={},
    )


def test_pure_rules():
    slot = datetime(2026, 3, 3, 9, 10, tzinfo=KST)
    bars = [_bar(9, 8, 100, 5, 500), _bar(9, 9, 101, 3, 803), _bar(9, 10, 105, 9, 1748)]
    assert restore.volume_at_slot_from_total(17, bars, slot) == 8
    assert restore.volume_at_slot_from_open(bars, slot) == 8
    row = restore.restored_row(
        "005930", slot, bars, acml_vol=8, name="X", prev_close=100, endpoint=restore.ENDPOINT_TODAY, fetched_at=slot
    )
    assert (row["price"], row["trade_value"], row["change"], row["change_rate"]) == (101, 803, 1, 1.0)
    with pytest.raises(restore.NotRestorable, match="no minute bar ended before"):
        restore.restored_row(
            "005930",
            slot,
            bars[2:],
            acml_vol=0,
            name=None,
            prev_close=None,
            endpoint=restore.ENDPOINT_TODAY,
            fetched_at=slot,
        )
    live = restore.rows_table([{**row, "source": "live", "price": 1}])
    merged = restore.merge(live, restore.rows_table([row, {**row, "code": "000001"}]))
    assert merged["code"].to_pylist() == ["000001", "005930"] and merged["price"].to_pylist() == [101, 1]


# --- Track B -------------------------------------------------------------------------------------------------------
def _truth_ticks(sim, code: str, lo: datetime, hi: datetime, venue: str = "KRX") -> list[dict]:
    return sim.admin(
        "truth/ticks",
        params={
            "code": code,
            "day": lo.strftime("%Y%m%d"),
            "from": lo.strftime("%H%M%S"),
            "to": hi.strftime("%H%M%S"),
            "records": "0",
            "venue": venue,
        },
    )["ticks"]


def _live_rows(code: str, truth_rows: list[dict], drop: set[int], at) -> list[dict]:
    """The compacted live ticks of ``truth_rows`` with the ``drop`` indices lost: the next tick flags the gap."""
    rows, prev = [], None
    for i, t in enumerate(truth_rows):
        if i in drop:
            continue
        mv = (t["acml_vol"] - t["qty"] - prev) if prev is not None else 0
        ts = at(t)
        rows.append(
            {
                "code": code,
                "exchange_ts": ts,
                "receive_ts": ts,
                "price": t["price"],
                "qty": t["qty"],
                "acml_vol": t["acml_vol"],
                "quality_flag": "gap" if mv else "ok",
                "missing_volume": mv,
                "key_id": "key-test",
                "conn_id": "run1/1",
            }
        )
        prev = t["acml_vol"]
    return rows


def test_track_b_ticks_lost_in_a_disconnect_are_restored_from_conclusions(env, small_sim):
    """Live ticks with two holes (a disconnect window and a skipped trade) written as the compaction writes them;
    the restore asset fetches exactly the lost trades, flagged restored, in its own dataset; live files untouched."""
    from observer_assets.track_b import restore as tb
    from observer_assets.track_b.compaction import TICK_SCHEMA
    from observer_resources.events import EventLog
    from observer_resources.storage.layout import ticks_path, venue_ticks_path

    now = datetime.fromisoformat(small_sim.admin("clock")["now"]).astimezone(KST)
    lo, hi = now - timedelta(minutes=8), now - timedelta(minutes=2)
    if lo.hour != hi.hour:  # keep one hour partition: the six minutes before whichever hour has begun
        hi = hi.replace(minute=0, second=0, microsecond=0) - timedelta(seconds=1)
        lo = hi - timedelta(minutes=6)
    if lo.date() != now.date():
        pytest.skip("too close to midnight for a window of live ticks on the day")
    listing = small_sim.admin("listings", params={"order": "activity", "limit": "2"})["listings"]
    codes = [x["code"] for x in listing]
    rows, lost = [], {}

    def at(t: dict) -> datetime:
        return datetime.combine(lo.date(), datetime.strptime(t["time"], "%H%M%S").time(), KST)

    win = None  # the disconnect: one second either side of the first hole (trades share a second at 1 s resolution)
    for n, code in enumerate(codes):
        truth_rows = _truth_ticks(small_sim, code, lo, hi)
        assert len(truth_rows) > 20, "an active symbol trades often"
        if n == 0:  # 7 in a row, inside the window (the first and last minutes are partial: the proof skips them)
            k = len(truth_rows) // 2
            drop = set(range(k, k + 7))
            win = (at(truth_rows[k]) - timedelta(seconds=1), at(truth_rows[k + 6]) + timedelta(seconds=1))
        else:  # one skipped trade well clear of the disconnect, so it stays a loss of its own
            clear = [
                i
                for i in range(1, len(truth_rows) - 1)
                if at(truth_rows[i - 1]) > win[1] or at(truth_rows[i + 1]) < win[0]
            ]
            assert clear, "the second symbol trades outside the disconnect"
            drop = {clear[len(clear) // 2]}
        lost[code] = [truth_rows[i] for i in sorted(drop)]
        rows += _live_rows(code, truth_rows, drop, at)
    live = pa.Table.from_pylist(rows, schema=TICK_SCHEMA)
    root = lake.data_dir()
    live_path = ticks_path(root, lo.replace(minute=0, second=0, microsecond=0))
    lake.write_table_atomic(live_path, live)
    before_bytes = live_path.read_bytes()
    # the unified tape of the second symbol (its trades on both venues), one trade skipped: a hole of its own,
    # restored from the unified conclusions (market UN) into the unified tape's restored dataset
    un_rows = _truth_ticks(small_sim, codes[1], lo, hi, venue="UN")
    # clear of the disconnect, like the KRX skip: a loss inside a connection-wide window is the window's, not its own
    clear = [i for i in range(1, len(un_rows) - 1) if at(un_rows[i - 1]) > win[1] or at(un_rows[i + 1]) < win[0]]
    assert clear, "the second symbol's unified trades fall outside the disconnect too"
    skip = clear[len(clear) // 2]
    un_lost = un_rows[skip]
    un_live = _live_rows(codes[1], un_rows, {skip}, at)
    un_path = venue_ticks_path(root, lo.replace(minute=0, second=0, microsecond=0), "H0UNCNT0")
    lake.write_table_atomic(un_path, pa.Table.from_pylist(un_live, schema=TICK_SCHEMA))
    # the disconnect covering the first hole
    t0, t1 = win
    ev = EventLog(root)
    gid = ev.gap_open(scope="scalp", reason="ws_disconnect", severity="major", start=t0, session_id="s1")
    ev.gap_close(gid, scope="scalp", reason="ws_disconnect", severity="major", start=t0, end=t1, session_id="s1")

    kis = kis_for(small_sim, env, 3)
    from observer_assets.gaps import sensors
    from observer_assets.gaps.assets import gap_report
    from observer_resources.storage.layout import report_path

    def tb_report(inst) -> list[dict]:
        assert dg.materialize(
            [gap_report, universe.to_source_asset()], partition_key=day_key(lo.date()), instance=inst
        ).success
        return [
            r
            for r in pq.read_table(report_path(root, lo.date())).to_pylist()
            if r["kind"] in ("track_b_loss", "ws_disconnect")
        ]

    def venues(rows) -> dict[str, set]:
        return {v: {(r["kind"], r["status"]) for r in rows if r["venue"] == v} for v in ("KRX", "unified")}

    def tb_tick(inst, cursor=None):
        defs = dg.Definitions(
            assets=[tb.track_b_restored],
            jobs=[sensors.track_b_restore_job],
            sensors=[sensors.track_b_restore_sensor],
            resources={"kis": kis},
        )
        return sensors.track_b_restore_sensor.evaluate_tick(
            dg.build_sensor_context(instance_ref=inst.get_ref(), cursor=cursor, definitions=defs)
        )

    # KIS's own minute bars of both codes' tapes over the window, fetched as the minute_bars asset pages them: the
    # completeness proof's witness (the whole day's fetch through its schedule is tests/minute_bars/)
    from observer_assets.gaps.detect_proof import PROOF_SCHEMA
    from observer_assets.minute_bars.fetch import ENDPOINT_PAST, MINUTE_BARS_SCHEMA, Ask
    from observer_assets.minute_bars.work import fetch_ask
    from observer_resources.storage.layout import minute_bars_path, minute_bars_proof_path

    first, last = lo.replace(second=0, microsecond=0), hi.replace(second=0, microsecond=0)
    asks = [Ask(codes[0], "J", first, last, 1), Ask(codes[1], "J", first, last, 1), Ask(codes[1], "UN", first, last, 1)]

    async def witness() -> list[dict]:
        async with kis.rest_client() as client:
            return [r for a in asks for r in (await fetch_ask(client, a, lo.date(), ENDPOINT_PAST))[0]]

    lake.write_table_atomic(
        minute_bars_path(root, lo.date()), pa.Table.from_pylist(asyncio.run(witness()), schema=MINUTE_BARS_SCHEMA)
    )

    def minute(t: dict) -> datetime:
        return at(t).replace(second=0)

    lost_minutes = {(c, "KRX", minute(t)) for c, ts in lost.items() for t in ts} | {
        (codes[1], "unified", minute(un_lost))
    }

    def proof() -> dict[tuple, str]:
        table = pq.read_table(minute_bars_proof_path(root, lo.date())).cast(PROOF_SCHEMA)
        return {(r["code"], r["venue"], r["minute"].astimezone(KST)): r["status"] for r in table.to_pylist()}

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(lo.date())])
        # the gap report sees both losses, open and restorable (today); the sensor asks for today's restore
        before = tb_report(inst)
        # the proof: every minute of both tapes agrees with KIS's bars but the lost trades' minutes, which the
        # recorded gaps explain; nothing else differs
        judged = proof()
        assert lost_minutes <= set(judged)
        assert {k for k, v in judged.items() if v != "agree"} == lost_minutes
        assert {judged[k] for k in lost_minutes} == {"explained"}
        assert len({k[:2] for k in judged}) == 3 and len(judged) >= 3 * 3  # three or more whole minutes each
        assert {(r["kind"], r["status"], r["restorable"]) for r in before} == {
            ("ws_disconnect", "open", True),
            ("track_b_loss", "open", True),
        }
        assert venues(before)["unified"] == {("track_b_loss", "open")}
        t1 = tb_tick(inst)
        assert [r.partition_key for r in t1.run_requests] == [day_key(lo.date())]
        assert t1.run_requests[0].run_key.startswith(f"track_b_restore:{day_key(lo.date())}:")
        assert tb_tick(inst, t1.cursor).run_requests == []
        res = dg.materialize(
            [tb.track_b_restored],
            partition_key=day_key(lo.date()),
            instance=inst,
            resources={"kis": kis},
            tags=t1.run_requests[0].tags,
        )
        md = res.asset_materializations_for_node("track_b_restored")[0].metadata
        # the re-computed report shows both restored, with provenance; nothing left for the sensor
        after = tb_report(inst)
        assert {(r["kind"], r["status"], r["restored_from"]) for r in after} == {
            ("ws_disconnect", "restored", tb.ENDPOINT),
            ("track_b_loss", "restored", tb.ENDPOINT),
        }
        assert venues(after)["unified"] == {("track_b_loss", "restored")}
        assert tb_tick(inst, t1.cursor).run_requests == []
        # restored, the tapes equal KIS's bars in those minutes too
        judged = proof()
        assert {k for k, v in judged.items() if v != "agree"} == lost_minutes
        assert {judged[k] for k in lost_minutes} == {"restored"}
        assert not [
            r for r in pq.read_table(report_path(root, lo.date())).to_pylist() if r["kind"] == "track_b_unproven"
        ]
    assert (md["holes"].value, md["holes_restored"].value) == (3, 3)
    by_tape = md["by_tape"].value
    assert (by_tape["unified"]["holes_restored"], by_tape["unified"]["market"]) == (1, "UN")
    want_vol = sum(t["qty"] for ts in lost.values() for t in ts)
    assert by_tape["KRX"]["missing_volume"] == by_tape["KRX"]["restored_volume"] == want_vol
    (un_got,) = pq.read_table(tb.restored_path(root, lo.date(), "track_b_unified_restored")).to_pylist()
    assert (un_got["code"], un_got["acml_vol"], un_got["qty"], un_got["price"]) == (
        codes[1],
        un_lost["acml_vol"],
        un_lost["qty"],
        un_lost["price"],
    )
    got = pq.read_table(tb.restored_path(root, lo.date())).to_pylist()
    assert [
        (r["code"], r["acml_vol"], r["qty"], r["price"], r["exchange_ts"].strftime("%H%M%S")) for r in got
    ] == sorted((c, t["acml_vol"], t["qty"], t["price"], t["time"]) for c, ts in lost.items() for t in ts)
    assert {r["source"] for r in got} == {"restored"} and {r["restored_from"] for r in got} == {tb.ENDPOINT}
    assert {r["gap_id"] for r in got if r["code"] == codes[0]} == {gid}
    assert live_path.read_bytes() == before_bytes  # the live data is never rewritten


@pytest.mark.slow  # long: it runs beside the day in the life, where the slow stage has room, not in the parallel part
def test_codes_whose_losses_no_break_shows_are_restored_by_time(env, small_sim):
    """Three codes held through a drop, none of whose losses a cumulative-volume break shows: one registered at the
    drop's instant that printed meanwhile (its first tick after the reconnect has nothing before it: a leading
    hole), one registered likewise that printed nothing (looked at, and seen to have lost nothing), and one whose
    last tick came before the drop and that never ticked again (a trailing hole). The report counts all three as
    the disconnect's losses until the restore has fetched them by time; then exactly the lost trades are restored
    and the disconnect is restored. Against the exchange's truth."""
    from observer_assets.gaps.assets import gap_report
    from observer_assets.track_b import restore as tb
    from observer_assets.track_b.assets import hour_segments, journal_fingerprint
    from observer_assets.track_b.compaction import TICK_SCHEMA
    from observer_resources.events import EventLog
    from observer_resources.storage.layout import (
        edge_holes_path,
        manifest_path,
        report_path,
        segment_path,
        ticks_path,
    )

    now = datetime.fromisoformat(small_sim.admin("clock")["now"]).astimezone(KST)
    lo, hi = (now - timedelta(minutes=9)).replace(second=0, microsecond=0), now - timedelta(minutes=1)
    if lo.date() != now.date():
        pytest.skip("too close to midnight for live ticks of today")

    def at(t: dict) -> datetime:
        return datetime.combine(lo.date(), datetime.strptime(t["time"], "%H%M%S").time(), KST)

    listing = small_sim.admin("listings", params={"order": "activity", "limit": "130"})["listings"]
    busy = listing[0]["code"]
    rows = _truth_ticks(small_sim, busy, lo, hi)
    pool = [(x["code"], _truth_ticks(small_sim, x["code"], lo, hi)) for x in listing[1:4] + listing[110:122]]

    def split(q: list[dict], r0: datetime, g1: datetime) -> tuple[list, list, list]:
        return [t for t in q if at(t) < r0], [t for t in q if r0 <= at(t) < g1], [t for t in q if at(t) >= g1]

    # the drop: at a trade of the busy code (a new second), for 20 s in which it trades again; beside it a code
    # that trades before and after but not during, and one that trades before and during
    found = None
    for k in range(1, len(rows) - 1):
        r0 = at(rows[k])
        g1 = r0 + timedelta(seconds=20)
        if at(rows[k - 1]) >= r0 or r0 < lo + timedelta(minutes=2):
            continue
        _, lost, live = split(rows, r0, g1)
        quiet = next((c for c, q in pool if (x := split(q, r0, g1))[0] and not x[1] and x[2]), None)
        tail = next((c for c, q in pool if c != quiet and (x := split(q, r0, g1))[0] and x[1]), None)
        if len(lost) >= 2 and live and quiet and tail:
            found = (r0, g1, lost, live, quiet, tail)
            break
    if found is None:
        pytest.skip("no drop instant with a quiet and a trading code beside the busy one in this stretch of the sim")
    r0, g1, lost, live, quiet, tail = found
    q_before, _, q_live = split(dict(pool)[quiet], r0, g1)
    t_before, t_lost, _ = split(dict(pool)[tail], r0, g1)

    def tick(code: str, t: dict, first: bool) -> dict:
        ts = at(t)
        return {
            "code": code,
            "exchange_ts": ts,
            "receive_ts": ts,
            "price": t["price"],
            "qty": t["qty"],
            "acml_vol": t["acml_vol"],
            "quality_flag": "ok",
            "missing_volume": None if first else 0,  # a code's first tick of the day has nothing to break against
            "key_id": "key-test",
            "conn_id": "run1/2",
        }

    root = lake.data_dir()
    ticks = [
        tick(c, t, i == 0) for c, ts in ((busy, live), (quiet, q_live), (tail, t_before)) for i, t in enumerate(ts)
    ]
    for hour in {t["receive_ts"].replace(minute=0, second=0) for t in ticks}:  # as the compaction writes them
        part = [t for t in ticks if t["receive_ts"].replace(minute=0, second=0) == hour]
        lake.write_table_atomic(ticks_path(root, hour), pa.Table.from_pylist(part, schema=TICK_SCHEMA))
    ev = EventLog(root)
    window = {"start": lo.isoformat(), "end": (lo + timedelta(hours=1)).isoformat()}
    ev.emit("capture_started", at=lo, run_id="run1", keys=["key-test"], window=window, stop_at=window["end"])
    ev.emit("slot_change", at=lo, action="allocate", key="key-test", index=2, code=tail, trigger="manual")
    ev.emit("ws_registered", at=lo, key_id="key-test", code=tail, tr_id="H0STCNT0")
    for n, code in enumerate((busy, quiet)):  # both taken and acknowledged at the very instant the session drops
        ev.emit("slot_change", at=r0, action="allocate", key="key-test", index=n, code=code, trigger="manual")
        ev.emit("ws_registered", at=r0, key_id="key-test", code=code, tr_id="H0STCNT0")
    gid = ev.gap_open(scope="scalp", reason="ws_disconnect", severity="major", start=r0, session_id="s1")
    ev.gap_close(gid, scope="scalp", reason="ws_disconnect", severity="major", start=r0, end=g1, session_id="s1")
    for code in (busy, quiet, tail):  # registered again on the next session, the tail code let go at once
        ev.emit("ws_registered", at=g1, key_id="key-test", code=code, tr_id="H0STCNT0")
    ev.emit("slot_change", at=g1 + timedelta(seconds=1), action="release", key="key-test", index=2, code=tail)
    kis = kis_for(small_sim, env, 3)

    def disconnect(inst) -> dict:
        assert dg.materialize(
            [gap_report, universe.to_source_asset()], partition_key=day_key(lo.date()), instance=inst
        ).success
        (row,) = [r for r in pq.read_table(report_path(root, lo.date())).to_pylist() if r["kind"] == "ws_disconnect"]
        return row

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(lo.date())])
        before = disconnect(inst)
        losses = json.loads(before["evidence"])["losses"]
        # all three may have lost trades: nothing shows either way until the restore has looked
        assert before["status"] == "open" and before["data_lost"]
        assert {c: (v["edge"], v["restored"]) for c, v in losses.items()} == {
            busy: ("leading", False),
            quiet: ("leading", False),
            tail: ("trailing", False),
        }

        def restore() -> dict:
            res = dg.materialize(
                [tb.track_b_restored], partition_key=day_key(lo.date()), instance=inst, resources={"kis": kis}
            )
            return res.asset_materializations_for_node("track_b_restored")[0].metadata

        # the capture journaled the hours and the compaction has not run yet (no state file): the live ticks it
        # has still to write would look lost, so every edge hole waits and nothing is fetched
        hours = sorted({lo.replace(minute=0), now.replace(minute=0, second=0, microsecond=0)})
        for h in hours:
            segment = segment_path(lake.local_dir(), "key-test", h.date(), h.hour)
            segment.parent.mkdir(parents=True, exist_ok=True)
            segment.touch()
        md = restore()
        assert (md["edge_holes"].value, md["edge_holes_waiting"].value, md["restored_rows"].value) == (0, 3, 0)
        assert not tb.restored_path(root, lo.date()).exists() and disconnect(inst)["status"] == "open"
        for h in hours:  # compacted: the ticks file (empty when nothing traded) and the manifest naming the journal
            if not ticks_path(root, h).exists():
                lake.write_table_atomic(ticks_path(root, h), TICK_SCHEMA.empty_table())
            fp = journal_fingerprint(hour_segments(lake.local_dir(), h))
            lake.write_json_atomic(manifest_path(root, h), {"journal_fingerprint": fp})
        md = restore()
        after = disconnect(inst)
    got = pq.read_table(tb.restored_path(root, lo.date())).to_pylist()
    # exactly the trades printed from the registration to the first live tick, and after the last live tick until
    # the registration on the next session: no earlier, no later one
    assert sorted((r["code"], r["acml_vol"], r["qty"], r["exchange_ts"].strftime("%H%M%S")) for r in got) == sorted(
        [(busy, t["acml_vol"], t["qty"], t["time"]) for t in lost]
        + [(tail, t["acml_vol"], t["qty"], t["time"]) for t in t_lost]
    )
    assert tb.read_edges(edge_holes_path(root, lo.date())) == {
        ("leading", busy, live[0]["acml_vol"] - live[0]["qty"]): lost[0]["acml_vol"] - lost[0]["qty"],
        # the quiet code: looked at, and its floor is its first tick's own start: nothing was lost
        ("leading", quiet, q_live[0]["acml_vol"] - q_live[0]["qty"]): q_before[-1]["acml_vol"],
        ("trailing", tail, t_before[-1]["acml_vol"]): t_lost[-1]["acml_vol"],
    }
    assert (md["edge_holes"].value, md["edge_holes_waiting"].value, md["holes_restored"].value) == (3, 0, 3)
    assert after["status"] == "restored" and after["restored_from"] == tb.ENDPOINT
    losses = json.loads(after["evidence"])["losses"]
    assert set(losses) == {busy, tail}  # the quiet code lost nothing, so it is no loss
    want = {busy: lost, tail: t_lost}
    assert {c: (v["missing_volume"], v["missing_trades"]) for c, v in losses.items()} == {
        c: (sum(t["qty"] for t in ts), len(ts)) for c, ts in want.items()
    }
    assert after["missing_volume"] == sum(t["qty"] for ts in want.values() for t in ts)
