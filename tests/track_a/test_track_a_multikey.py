"""Track A with several app keys, against the local exchange over real HTTP: the universe sharded across the keys,
each key through its own token and budget (the exchange's per-key counters), and a key with a wrong secret failing
only its own shard — recorded per symbol with the key id, in the metadata, as a system event and in the gap report."""

import json
import math
import uuid
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from local_exchange.accounts import demo_credentials
from observer_assets.gaps.report import build_report
from observer_assets.orchestration.partitions import calendar, slot_key
from observer_assets.track_a.assets import track_a_snapshot
from observer_assets.track_a.fetch import shard_codes
from observer_assets.universe.assets import universe
from observer_assets.universe.rules import UNIVERSE_SCHEMA
from observer_resources.calendar import KST
from observer_resources.events import events_dir
from observer_resources.kis.config import KisConfig
from observer_resources.resources import KisKey, KisPool, KisResource, kis_members, kis_pool_from_env
from observer_resources.storage import lake
from observer_resources.storage.layout import TRACK_A_FAILURES as FAILURES
from observer_resources.storage.layout import TRACK_A_RAW as RAW
from observer_resources.storage.layout import slot_dir, universe_path

# Runs use live_window_min=1440: the slot stays "current" even if the test crosses a 10-minute boundary.
N_SYMBOLS = 600  # 20 multi-quote requests: 7 / 7 / 6 over three keys


def write_universe(sim, n: int) -> tuple[list[str], datetime]:
    """A universe of the exchange's first ``n`` listings for the current slot's day (as bench/track_a.py does)."""
    listings = sim.admin("listings", params={"limit": str(n)})["listings"][:n]
    slot = calendar().slot_at(datetime.now(KST))
    cols = {
        f.name: [
            (
                l["code"]
                if f.name == "code"
                else l["name"]
                if f.name == "name"
                else l["market"]
                if f.name == "market"
                else ""
                if f.type == pa.string()
                else False
                if f.type == pa.bool_()
                else 0
            )
            for l in listings
        ]
        for f in UNIVERSE_SCHEMA
    }
    table = pa.table(cols, schema=UNIVERSE_SCHEMA).sort_by("code")
    lake.write_table_atomic(universe_path(lake.data_dir(), slot.date()), table)
    return table["code"].to_pylist(), slot


def materialize(kis: KisResource, slot: datetime, refetch: bool = False) -> dg.ExecuteInProcessResult:
    key = slot_key(slot)
    config = {"ops": {"track_a_snapshot": {"config": {"live_window_min": 1440, "refetch": refetch}}}}
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("track_a_slot", [key])
        return dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=key,
            instance=inst,
            resources={"kis": kis},
            run_config=config,
        )


def quote_calls(stats: dict, app_key: str) -> int:
    return stats["by_appkey"].get(app_key, {}).get("requests_total", 0)


def all_events(data_dir) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(events_dir(data_dir).glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
    ]


# --- the assignment (pure) -------------------------------------------------------------------------------------


def test_shards_are_contiguous_whole_batches_of_the_sorted_universe():
    codes = [f"{i:06d}" for i in range(2500)]
    shards = shard_codes(list(reversed(codes)), 3, 30)
    assert [len(s) for s in shards] == [840, 840, 820]  # 28 requests each: ⌈84 / 3⌉
    assert [c for s in shards for c in s] == codes  # every symbol once, in order, in contiguous blocks
    assert shard_codes(codes, 3, 30) == shards  # stable: the same universe gives the same blocks
    assert [len(s) for s in shard_codes(codes[:100], 3, 30)] == [60, 30, 10]  # 4 batches: 2 / 1 / 1
    assert [len(s) for s in shard_codes(codes[:10], 3, 1)] == [4, 3, 3]  # paper keys: per symbol
    assert [len(s) for s in shard_codes(codes[:10], 1, 30)] == [10]
    assert shard_codes([], 2, 30) == [[], []]
    with pytest.raises(ValueError):
        shard_codes(codes, 0, 30)


# --- configuration ---------------------------------------------------------------------------------------------


def test_pool_from_env_keeps_names_not_secrets(monkeypatch):
    keys = {n: (f"{n}" * 36)[:36] for n in ("A", "B", "C")}
    secrets = {n: (n.lower() * 180) for n in keys}
    environ = {
        "KIS_APP_KEY": keys["A"],
        "KIS_APP_SECRET": secrets["A"],
        "KIS_APP_KEY_2": keys["B"],
        "KIS_APP_SECRET_2": secrets["B"],
        "KIS_APP_KEY_3": keys["C"],
        "KIS_APP_SECRET_3": secrets["C"],
    }
    pool = kis_pool_from_env(environ)
    assert isinstance(pool, KisPool) and len(pool.more_keys) == 2
    assert [(k.app_key.env_var_name, k.app_secret.env_var_name) for k in pool.more_keys] == [
        ("KIS_APP_KEY_2", "KIS_APP_SECRET_2"),
        ("KIS_APP_KEY_3", "KIS_APP_SECRET_3"),
    ]  # EnvVar names only
    text = repr(pool) + str(pool) + repr(pool.more_keys)
    assert not any(v in text for v in [*keys.values(), *secrets.values()])
    # one key: exactly the single-key resource; no key: OBSERVER_DEMO_KEYS demo accounts
    assert type(kis_pool_from_env({"KIS_APP_KEY": keys["A"], "KIS_APP_SECRET": secrets["A"]})) is KisResource
    demo = kis_pool_from_env({"OBSERVER_DEMO_KEYS": "3"})
    assert len({m.kis_config().key_id for m in kis_members(demo)}) == 3
    # resolved in the step's process: the members carry the values, the definitions only the names
    for n, v in environ.items():
        monkeypatch.setenv(n, v)

    @dg.asset
    def probe(kis: KisResource) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"ids": [m.kis_config().key_id for m in kis_members(kis)]})

    res = dg.materialize([probe], resources={"kis": pool})
    expected = [KisConfig(keys[n], secrets[n], rest_url=pool.rest_url).key_id for n in ("A", "B", "C")]
    assert res.asset_materializations_for_node("probe")[0].metadata["ids"].value == expected
    with pytest.raises(Exception, match="KIS_APP_SECRET_2"):
        kis_pool_from_env({**environ, "KIS_APP_SECRET_2": ""})


# --- against the local exchange ----------------------------------------------------------------------------------


def test_three_keys_share_the_universe(env, sim_factory, monkeypatch):
    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "5", "--listings", "600", "--speed", "0")
    codes, slot = write_universe(sim, N_SYMBOLS)
    # The deployment's own path: no key set, three demo accounts of the local exchange.
    monkeypatch.setenv("OBSERVER_DEMO_KEYS", "3")
    monkeypatch.setenv("KIS_REST_URL", sim.rest_url)
    monkeypatch.setenv("KIS_WS_URL", sim.ws_url)
    kis = kis_pool_from_env()
    members = kis_members(kis)
    assert len(members) == 3
    before = sim.admin("stats")
    res = materialize(kis, slot)
    assert res.success
    after = sim.admin("stats")
    md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata

    snap = pq.read_table(slot_dir(lake.data_dir(), slot) / "snapshot.parquet")
    assert sorted(snap["code"].to_pylist()) == codes  # every symbol present
    assert md["coverage_pct"].value == 100.0 and md["failures"].value == 0
    assert md["keys"].value == 3 and md["keys_degraded"].value == 0 and "degraded" not in md
    assert md["requests_used"].value == math.ceil(N_SYMBOLS / 30)
    # each key asked for its own contiguous third, through its own token and budget
    calls = [quote_calls(after, m.app_key) - quote_calls(before, m.app_key) for m in members]
    assert calls == [7, 7, 6]
    # and every row says which key fetched it: its shard's
    key_of = {c: m.kis_config().key_id for m, s in zip(members, shard_codes(codes, 3, 30), strict=True) for c in s}
    assert dict(zip(snap["code"].to_pylist(), snap["key_id"].to_pylist())) == key_of
    assert after["rate_limited_total"] == before["rate_limited_total"]  # no EGW00201
    assert after["tokens_issued_total"] - before["tokens_issued_total"] == 3  # one token per key
    table = md["per_key"].value
    for m, n in zip(members, calls, strict=True):
        assert f"| {m.kis_config().key_id} |" in table and f"| {n} | ok |" in table
    # the quotes are the exchange's (frozen clock: the same at any instant)
    now = sim.admin("clock")["now"]
    rows = snap.to_pandas().set_index("code")
    for code in (codes[0], codes[250], codes[-1]):  # one from each key's shard
        truth = sim.admin("truth/quote", params={"code": code, "at": now})
        assert (rows.loc[code, "price"], rows.loc[code, "volume"]) == (truth["price"], truth["acml_vol"])

    # fewer requests than keys (40 symbols: 30 + 10): the third key has nothing to do and holds nobody up
    small, _ = write_universe(sim, 40)
    before = sim.admin("stats")
    res = materialize(kis, slot, refetch=True)
    after = sim.admin("stats")
    md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
    assert res.success and md["rows"].value == 40 and md["failures"].value == 0 and md["keys_degraded"].value == 0
    assert [quote_calls(after, m.app_key) - quote_calls(before, m.app_key) for m in members] == [1, 1, 0]
    assert sorted(pq.read_table(slot_dir(lake.data_dir(), slot) / "snapshot.parquet")["code"].to_pylist()) == small


def test_a_key_with_a_wrong_secret_fails_only_its_shard(env, sim_factory, tmp_path):
    good = [demo_credentials(7100 + i) for i in range(3)]
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"appkey": k, "appsecret": s, "mode": "real"} for k, s in good]))
    sim = sim_factory(
        "--mode",
        "real",
        "--clock",
        "open",
        "--seed",
        "5",
        "--listings",
        "600",
        "--speed",
        "0",
        "--accounts",
        str(accounts),
    )
    codes, slot = write_universe(sim, N_SYMBOLS)
    wrong = demo_credentials(7199)[1]  # KIS's shape, not this key's secret
    kis = KisPool(
        app_key=good[0][0],
        app_secret=good[0][1],
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        state_dir=str(tmp_path / "state"),
        more_keys=[KisKey(app_key=good[1][0], app_secret=wrong), KisKey(app_key=good[2][0], app_secret=good[2][1])],
    )
    bad_id = kis_members(kis)[1].kis_config().key_id
    before = sim.admin("stats")
    res = materialize(kis, slot)
    assert res.success  # one key's failure is not the slot's failure
    after = sim.admin("stats")
    md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
    shards = shard_codes(codes, 3, 30)
    lost = set(shards[1])

    # the snapshot has every other shard, and only those
    snap = pq.read_table(slot_dir(lake.data_dir(), slot) / "snapshot.parquet")
    assert set(snap["code"].to_pylist()) == set(codes) - lost
    assert md["rows"].value == N_SYMBOLS - len(lost) and md["failures"].value == len(lost)
    assert md["keys"].value == 3 and md["keys_degraded"].value == 1
    assert md["degraded"].value.startswith(
        f"degraded: key {bad_id} (BadCredentialsError EGW00105): {len(lost)} of its {len(lost)} symbols"
    )
    assert (
        f"| {bad_id} |" in md["per_key"].value and "**degraded: BadCredentialsError EGW00105**" in md["per_key"].value
    )
    # the bad key sent no quote request (its token was refused); the others did their own shares
    calls = [quote_calls(after, k) - quote_calls(before, k) for k, _ in good]
    assert calls == [7, 0, 6]
    assert after["rate_limited_total"] == before["rate_limited_total"]

    # every lost symbol recorded, with the key and the error
    fails = pq.read_table(slot_dir(lake.data_dir(), slot, FAILURES) / "failures.parquet").to_pandas()
    assert set(fails["code"]) == lost
    assert (fails["key_id"] == bad_id).all()
    assert fails["error"].str.contains(f"key {bad_id} degraded: BadCredentialsError EGW00105").all()

    # a system event says which key, what happened and how much it cost
    events = all_events(lake.data_dir())
    degraded = [e for e in events if e["event_type"] == "track_a_key_degraded"]
    # the broken key was asked for a token once, not once per request: no retry storm
    assert [e["key_id"] for e in events if e["event_type"] == "token_issue_failed"] == [bad_id]
    assert len(degraded) == 1
    ev = degraded[0]
    assert (ev["key_id"], ev["error"], ev["symbols"], ev["not_collected"], ev["collected"]) == (
        bad_id,
        "BadCredentialsError EGW00105",
        len(lost),
        len(lost),
        0,
    )
    assert (ev["first_code"], ev["last_code"], ev["slot"]) == (min(lost), max(lost), slot_key(slot))

    # the gap report lists exactly those symbols as missing, with the key's error
    rep = build_report(lake.data_dir(), slot.date(), as_of=datetime.now(KST)).rows.to_pandas()
    mine = rep[(rep["kind"] == "track_a_missing_symbol") & (rep["slot_ts"] == slot)]
    assert set(mine["symbol"]) == lost
    assert (mine["error_code"] == "EGW00105").all() and (mine["status"] == "open").all()
    assert mine["evidence"].map(lambda e: bad_id in json.loads(e)["error"]).all()

    # no secret anywhere: metadata, failures, events, raw archive
    written = b"".join(p.read_bytes() for p in lake.data_dir().rglob("*") if p.is_file() and "state" not in p.parts)
    shown = repr({k: v.value for k, v in md.items()}).encode()
    for secret in [wrong, *(s for _, s in good), *(k for k, _ in good)]:
        assert secret.encode() not in written and secret.encode() not in shown
    assert (slot_dir(lake.data_dir(), slot, RAW) / "raw.jsonl").exists()


def test_three_keys_with_their_tokens_and_budgets_in_postgresql(env, sim_factory, postgres, monkeypatch):
    """The shared state in PostgreSQL (locked per key, so the keys take their tokens at once): the same result."""
    url = postgres.create_database(f"track_a_multikey_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("OBSERVER_STATE_DB_URL", url)
    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "5", "--listings", "600", "--speed", "0")
    codes, slot = write_universe(sim, N_SYMBOLS)
    creds = [demo_credentials(7200 + i) for i in range(3)]
    kis = KisPool(
        app_key=creds[0][0],
        app_secret=creds[0][1],
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        state_dir=str(env / "state"),
        more_keys=[KisKey(app_key=k, app_secret=s) for k, s in creds[1:]],
    )
    assert type(kis_members(kis)[1].token_provider().store).__name__ == "PostgresTokenStore"
    before = sim.admin("stats")
    res = materialize(kis, slot)
    after = sim.admin("stats")
    md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
    assert res.success and md["failures"].value == 0 and md["keys_degraded"].value == 0
    assert sorted(pq.read_table(slot_dir(lake.data_dir(), slot) / "snapshot.parquet")["code"].to_pylist()) == codes
    assert [quote_calls(after, k) - quote_calls(before, k) for k, _ in creds] == [7, 7, 6]
    assert after["tokens_issued_total"] - before["tokens_issued_total"] == 3
    assert after["rate_limited_total"] == before["rate_limited_total"]
    assert not (env / "state").exists()  # nothing of the shared state went to local files
