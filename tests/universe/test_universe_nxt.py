"""Each member's NXT status in the universe, against the local exchange over loopback and a real Dagster instance:
the flags equal the exchange's ground truth (`/__sim__/truth/nxt`), the answers are kept so a re-run asks nothing
and rebuilds the same bytes, and where Observer does not know the flags are null, never false."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from support import kis_for

from observer_assets.orchestration.partitions import day_key
from observer_assets.universe import rules
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import nxt_status_path, universe_path

ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "50"}


def materialize(inst, kis, day, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [universe],
        partition_key=day_key(day),
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"universe": {"config": {"min_master_codes": 100, **config}}}},
    )


def test_members_carry_the_exchanges_nxt_flags_kept_for_the_day(env, small_sim):
    kis = kis_for(small_sim, env, 81)
    day = datetime.now(KST).date()
    truth = small_sim.admin("truth/nxt")
    root = lake.data_dir()
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        res = materialize(inst, kis, day, nxt_status=True)
        assert res.success
        table = pq.read_table(universe_path(root, day))
        codes = table["code"].to_pylist()
        flags = dict(zip(codes, zip(table["nxt_tradable"].to_pylist(), table["nxt_halted"].to_pylist())))
        members, halted = set(truth["members"]), set(truth["halted"])
        assert flags == {c: (c in members, c in halted) for c in codes}
        assert any(t for t, _ in flags.values()) and not all(t for t, _ in flags.values())

        md = res.asset_materializations_for_node("universe")[0].metadata
        assert md["nxt_status"].value == "asked"
        assert md["nxt_tradable"].value == sum(c in members for c in codes)
        assert md["nxt_halted"].value == sum(c in halted for c in codes) and md["nxt_status_failures"].value == 0
        assert md["requests_used"].value >= len(codes)  # one search-stock-info per member, besides the closes

        kept = pq.read_table(nxt_status_path(root, day))
        assert kept.schema == rules.NXT_STATUS_SCHEMA and kept["code"].to_pylist() == codes
        assert kept["error"].null_count == kept.num_rows

        # a re-run rebuilds from what was kept: no request at all, the same table byte for byte
        before = universe_path(root, day).read_bytes()
        again = materialize(inst, kis, day, nxt_status=True)
        md2 = again.asset_materializations_for_node("universe")[0].metadata
        assert md2["nxt_status"].value == "kept" and md2["requests_used"].value == 0
        assert universe_path(root, day).read_bytes() == before


def test_the_members_are_published_before_their_nxt_status_is_asked(env, small_sim):
    """The lookup (one call per member) is off Track A's critical path: a slot waiting for the day's universe file
    finds the members while their flags are still being asked, then the same members with the flags."""
    kis = kis_for(small_sim, env, 83)
    day = datetime.now(KST).date()
    path, kept = universe_path(lake.data_dir(), day), nxt_status_path(lake.data_dir(), day)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        result: list[dg.ExecuteInProcessResult] = []
        run = threading.Thread(target=lambda: result.append(materialize(inst, kis, day, nxt_status=True)))
        run.start()
        first = None
        while run.is_alive() and first is None:
            if path.exists():
                first = (pq.read_table(path), kept.exists())
            time.sleep(0.02)
        run.join()
        assert result and result[0].success and first is not None
        early, asked_yet = first
        assert not asked_yet and early["nxt_tradable"].null_count == early.num_rows  # published, flags pending
        final = pq.read_table(path)
        assert final["code"].to_pylist() == early["code"].to_pylist()  # the same members, now with their flags
        assert final["nxt_tradable"].null_count == 0 and kept.exists()
        md = result[0].asset_materializations_for_node("universe")[0].metadata
        assert md["nxt_status"].value == "asked"


def test_not_asked_is_null_not_false(env, small_sim):
    kis = kis_for(small_sim, env, 82)
    day = datetime.now(KST).date()
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        res = materialize(inst, kis, day)  # the KRX-only day (the default window): nothing reads the flags
        md = res.asset_materializations_for_node("universe")[0].metadata
        assert md["nxt_status"].value == "unknown: not asked: the KRX-only day (OBSERVER_TRACK_A_WINDOW=session)"
        assert "nxt_tradable" not in md
        table = pq.read_table(universe_path(lake.data_dir(), day))
        assert table.num_rows > 50
        assert table["nxt_tradable"].null_count == table["nxt_halted"].null_count == table.num_rows
        assert not nxt_status_path(lake.data_dir(), day).exists()


def test_a_failed_answer_leaves_that_member_unknown_and_says_why():
    universe_t = pa.table(
        {name: pa.nulls(3, rules.UNIVERSE_SCHEMA.field(name).type) for name in rules.UNIVERSE_SCHEMA.names},
        schema=rules.UNIVERSE_SCHEMA,
    ).set_column(0, "code", pa.array(["000660", "005930", "123450"]))
    status = rules.nxt_status_table({"005930": (True, False), "000660": (True, True), "123450": "KisServerError: 500"})
    assert status["code"].to_pylist() == ["000660", "005930", "123450"]
    assert status["error"].to_pylist() == [None, None, "KisServerError: 500"]
    got = rules.with_nxt_status(universe_t, status)
    assert got.schema == rules.UNIVERSE_SCHEMA
    assert got["nxt_tradable"].to_pylist() == [True, True, None]
    assert got["nxt_halted"].to_pylist() == [True, False, None]
    assert rules.with_nxt_status(universe_t, None)["nxt_tradable"].null_count == 3
