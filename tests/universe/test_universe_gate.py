"""The universe gate end to end: the local exchange over loopback, a real Dagster instance, real files.

A universe its count check refuses is never published where readers look, Track A refuses to run on that day naming
the reason, the refused table is kept as evidence the backup carries, and the operator's override publishes it.
"""

import json
from datetime import datetime

import dagster as dg
import pyarrow.parquet as pq

from local_exchange.accounts import demo_credentials
from observer_assets.backup import daysets
from observer_assets.orchestration.partitions import calendar, day_key, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.universe.assets import universe
from observer_resources.calendar import KST
from observer_resources.resources import KisResource
from observer_resources.storage import lake
from observer_resources.storage.layout import rejected_path, rejection_path, slot_dir, universe_path

CHECK = dg.AssetCheckKey(dg.AssetKey("universe"), "universe_count")
SMALL = {"min_master_codes": 100, "nxt_status": False}  # NXT status: tests/universe/test_universe_nxt.py
LIVE = {"track_a_snapshot": {"config": {"live_window_min": 1440}}}


ENV = {"OBSERVER_UNIVERSE_MIN_COUNT": "100000"}  # far above the exchange's 600 listings


def failure_text(res: dg.ExecuteInProcessResult) -> str:
    out = []
    for e in res.all_events:
        if e.is_step_failure:
            data = e.event_specific_data
            if data.user_failure_data is not None:
                out.append(data.user_failure_data.description or "")
            if data.error is not None:
                out.append(data.error.message)
    return "\n".join(out)


def events_of(root, event_type: str) -> list[dict]:
    out = []
    for f in sorted((root / "system" / "events").glob("*.jsonl")):
        out += [r for r in map(json.loads, f.read_text(encoding="utf-8").splitlines()) if r["event_type"] == event_type]
    return out


def test_a_rejected_universe_is_never_read_and_the_override_publishes_it(env, sim):
    key, secret = demo_credentials(71)
    kis = KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(env / "state")
    )
    today = datetime.now(KST).date()
    slot = calendar().slot_at(datetime.now(KST))
    root = lake.data_dir()
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])

        # 1. the check fails before publishing: the run fails, nothing at universe_path, the table set aside
        res = dg.materialize(
            [universe],
            partition_key=day_key(today),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": SMALL}}},
            raise_on_error=False,
        )
        assert not res.success
        (ev,) = res.get_asset_check_evaluations()
        count = ev.metadata["count"].value
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR and ev.partition == day_key(today)
        assert 0 < count < 100000 and ev.metadata["minimum"].value == 100000
        assert f"count {count} < minimum 100000" in ev.description
        assert "rejected by its check" in failure_text(res) and "accept_anyway" in failure_text(res)
        assert not res.asset_materializations_for_node("universe")
        assert not universe_path(root, today).exists()
        assert not list(root.glob("universe/**/*.parquet"))  # no reader, glob or Hive scan can see it
        refused = pq.read_table(rejected_path(root, today))
        assert refused.num_rows == count
        assert json.loads(rejection_path(root, today).read_text())["problems"] == [f"count {count} < minimum 100000"]
        (hist,) = inst.event_log_storage.get_asset_check_execution_history(CHECK, limit=5)
        assert hist.status.value == "FAILED" and hist.partition == day_key(today)
        (rej,) = events_of(root, "universe_build_failed")
        assert rej["rejected"] is True and rej["count"] == count
        # the backup carries the refused universe as evidence (files belong to a day by their date= part)
        rels = {f.rel for f in daysets.scan(root)}
        assert f"universe_rejected/date={today}/universe.parquet" in rels

        # 2. Track A for a slot of that day fails, naming the rejected universe, and asks the exchange nothing
        before = sim.admin("stats")["requests_total"]
        res = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=slot_key(slot),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": LIVE},
            raise_on_error=False,
        )
        assert not res.success
        text = failure_text(res)
        assert f"the universe of {today} was rejected by its check (count {count} < minimum 100000)" in text
        assert str(rejected_path(root, today)) in text
        assert sim.admin("stats")["requests_total"] == before
        assert not (slot_dir(root, slot) / "snapshot.parquet").exists()

        # 3. the operator's override publishes it: WARN result, recorded in the metadata and as an event
        res = dg.materialize(
            [universe],
            partition_key=day_key(today),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {**SMALL, "accept_anyway": True}}}},
        )
        assert res.success
        md = res.asset_materializations_for_node("universe")[0].metadata
        assert md["accepted_anyway"].value is True and md["source"].value == "rebuilt from kept inputs"
        (ev,) = res.get_asset_check_evaluations()
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN and ev.partition == day_key(today)
        assert ev.description.startswith("accepted anyway by the operator")
        assert pq.read_table(universe_path(root, today)).equals(refused)
        (acc,) = events_of(root, "universe_accepted_anyway")
        assert acc["day"] == day_key(today) and acc["count"] == count
        res = dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=slot_key(slot),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": LIVE},
        )
        assert res.asset_materializations_for_node("track_a_snapshot")[0].metadata["rows"].value == count


def test_a_universe_within_bounds_is_published_with_a_passing_result(env, sim, monkeypatch):
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "100")
    key, secret = demo_credentials(72)
    kis = KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(env / "state")
    )
    today = datetime.now(KST).date()
    root = lake.data_dir()
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(today)])
        res = dg.materialize(
            [universe],
            partition_key=day_key(today),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": SMALL}}},
        )
        (ev,) = res.get_asset_check_evaluations()
        assert ev.passed and ev.partition == day_key(today) and ev.metadata["accepted_anyway"].value is False
        assert universe_path(root, today).exists() and not rejected_path(root, today).exists()
