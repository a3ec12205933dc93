"""The PostgreSQL token store and rate-limit bucket (docs/deploy.md) against a real server (tests/pgserver.py), each
test in its own database: the URL never shown, the lock exclusive across threads and processes, not_before
shared, records round-trip, dropped connections survived, no token in any log, the GCRA semantics of the
SQLite store, selection by OBSERVER_STATE_DB_URL, and the acceptance test — processes with separate
DAGSTER_HOMEs and state directories sharing only PostgreSQL: one token issuance, at most 20 requests in any
second at the exchange, zero EGW00201."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support import warm_quote

from observer_resources.calendar import KST
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import TokenIssueTooSoonError
from observer_resources.shared.pg import PgDatabase, StateDbUrlError, parse_url, redact_url
from observer_resources.shared.rate_limit import (
    RateLimiterError,
    SharedRateLimiter,
    SqlitePermitStore,
)
from observer_resources.shared.rate_limit_pg import PostgresPermitStore
from observer_resources.shared.stores import STATE_DB_URL_ENV, open_permit_store, open_token_store
from observer_resources.shared.token_store import (
    SqliteTokenStore,
    TokenRecord,
    TokenStoreError,
)
from observer_resources.shared.token_store_pg import PostgresTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

from . import budget_contract
from . import token_store_contract as contract
from .budget_contract import max_in_window
from .token_store_contract import NOW, record

REPO = Path(__file__).resolve().parents[2]
FAST = timedelta(seconds=0.2)


@pytest.fixture
def db(postgres) -> tuple[str, str]:
    """A fresh database for this test: (url, name)."""
    name = f"obs_{uuid.uuid4().hex[:12]}"
    return postgres.create_database(name), name


def kill_connections(postgres, dbname: str) -> int:
    """Terminate every session on ``dbname``, as a server restart or a network cut would."""
    out = postgres.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{dbname}'")
    return int(out)


def child(script: str, url: str) -> subprocess.Popen[str]:
    """A Python process given the URL on stdin (never argv: `ps` shows argv to everyone)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(url + "\n")
    proc.stdin.flush()
    return proc


# --- the URL --------------------------------------------------------------------------------------------


def test_url_is_parsed_and_never_shown_with_its_password() -> None:
    u = parse_url("postgresql://obs%40er:p%40ss%3Aw0rd@db.example:6543/state?sslmode=require")
    assert (u.user, u.password, u.host, u.port, u.dbname) == ("obs@er", "p@ss:w0rd", "db.example", 6543, "state")
    assert u.connect_kwargs()["sslmode"] == "require"
    assert "w0rd" not in repr(u) and "w0rd" not in u.redacted()
    assert u.redacted() == "postgresql://obs%40er:***@db.example:6543/state?sslmode=require"
    assert parse_url("postgres://u@h/d").port == 5432
    assert parse_url("postgresql://u:pw@h/d?password=other").password == "pw"
    assert "sekret" not in parse_url("postgresql://u@h/d?password=sekret").redacted()
    for bad in (
        "",
        "mysql://u:sekret@h/d",
        "postgresql://u:sekret@/d",
        "postgresql://u:sekret@h/",
        "postgresql://u:sekret@h:notaport/d",
        "u:sekret@h/d",
    ):
        with pytest.raises(StateDbUrlError) as err:
            parse_url(bad)
        assert "sekret" not in str(err.value)
        assert "sekret" not in redact_url(bad)


def test_connection_errors_name_the_url_redacted(postgres) -> None:
    closed_port = "postgresql://observer:sekret-pw@127.0.0.1:1/observer"
    for build, error in ((PostgresTokenStore, TokenStoreError), (PostgresPermitStore, RateLimiterError)):
        with pytest.raises(error) as err:
            build(closed_port)
        assert "sekret-pw" not in str(err.value) and "observer:***@127.0.0.1:1" in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained driver error
    store = PostgresTokenStore(postgres.url)
    assert postgres.password not in repr(store) and "***" in repr(store)
    assert postgres.password not in repr(PostgresPermitStore(postgres.url))


# --- records and the lock -------------------------------------------------------------------------------


def test_records_roundtrip_per_key_and_kind(db) -> None:
    url, _ = db
    # another store object is another process's view: only the database is shared
    contract.records_roundtrip_per_key_and_kind(PostgresTokenStore(url), PostgresTokenStore(url))
    tables = PgDatabase(url).connect().cursor()
    tables.execute("SELECT count(*) FROM observer_token WHERE key_id = 'key-a'")
    assert tables.fetchone()[0] == 2  # one access, one approval


def test_lock_excludes_threads_and_hides_uncommitted_writes(db) -> None:
    url, _ = db
    contract.lock_excludes_threads_and_hides_uncommitted_writes(PostgresTokenStore(url), per_key=True)


HOLDER = """
import sys
from datetime import datetime, timedelta, timezone
from observer_resources.shared.token_store import TokenRecord
from observer_resources.shared.token_store_pg import PostgresTokenStore
kst = timezone(timedelta(hours=9))
now = datetime.now(kst)
store = PostgresTokenStore(sys.stdin.readline().strip())
lock = store.lock("key-x", 5)
lock.put(TokenRecord("access", "from-child", now + timedelta(hours=24), now))
lock.set_not_before(now + timedelta(seconds=60))
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


def start_holder(url: str) -> subprocess.Popen[str]:
    proc = child(HOLDER, url)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_excludes_other_processes_and_shares_not_before(db) -> None:
    url, _ = db
    store = PostgresTokenStore(url)
    proc = start_holder(url)
    try:
        contract.holder_process_excludes_until_it_commits(store, proc)
        with store.lock("key-x", 1) as lock:
            nb = lock.not_before()
            assert nb is not None and timedelta(seconds=50) < nb - datetime.now(KST) <= timedelta(seconds=60)
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_released_and_its_writes_dropped(db) -> None:
    url, _ = db
    store = PostgresTokenStore(url)
    proc = start_holder(url)
    assert store.try_lock("key-x") is None
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    with store.lock("key-x", 5) as lock:
        assert time.monotonic() - t0 < 2  # the server saw the socket close and ended the transaction
        assert lock.get("access") is None  # the dead holder's write was never committed
        assert lock.not_before() is None


def test_a_frozen_holder_is_cut_off_after_the_hold_limit(db) -> None:
    url, _ = db
    frozen = PostgresTokenStore(url, hold_limit_s=0.3)
    lock = frozen.lock("key-f", 1)
    lock.put(record("never-stored"))
    other = PostgresTokenStore(url)
    t0 = time.monotonic()
    with other.lock("key-f", 5):
        assert 0.2 < time.monotonic() - t0 < 3
    with pytest.raises(TokenStoreError, match="not stored") as err:
        lock.release()  # the holder learns its write was lost: nothing fails silently
    assert "never-stored" not in str(err.value)
    assert other.get("key-f", "access") is None


def test_dropped_connections_are_reopened(postgres, db) -> None:
    url, name = db
    store = PostgresTokenStore(url)
    permits = PostgresPermitStore(url)
    store.put("key-a", record("A1"))
    permits.reserve("key-a", 0.05, 1, 600)
    with store.lock("key-a", 1):
        pass  # leaves an idle lock connection to be killed too
    assert kill_connections(postgres, name) >= 3
    assert store.get("key-a", "access").value == "A1"  # reconnected, retried once
    slot, now = permits.reserve("key-a", 0.05, 1, 600)
    assert permits.reconnects == 1 and slot >= now
    with store.lock("key-a", 1) as lock:
        assert lock.get("access").value == "A1"
    # a lock whose connection dies while held: the write under it is reported lost, not silently dropped
    lock = store.lock("key-a", 1)
    lock.put(record("A2"))
    kill_connections(postgres, name)
    with pytest.raises(TokenStoreError):
        lock.release()
    assert store.get("key-a", "access").value == "A1"


# --- with the exchange ----------------------------------------------------------------------------------


def config(sim, creds: tuple[str, str]) -> KisConfig:
    return KisConfig(creds[0], creds[1], "real", sim.rest_url, sim.ws_url)


def test_not_before_learned_by_one_process_binds_another(sim, make_creds, db) -> None:
    """KIS refuses an issuance (EGW00133); a provider on another store object — another process, maybe on
    another host — waits out the shared backoff instead of asking KIS again."""
    url, _ = db
    creds = make_creds(721)
    sim.admin("faults", json={"kind": "token_refuse", "n": 1, "appkey": creds[0]})
    wait = timedelta(seconds=1.0)
    first = SharedTokenProvider(config(sim, creds), PostgresTokenStore(url), too_soon_wait=wait, max_issue_attempts=1)
    with pytest.raises(TokenIssueTooSoonError):
        asyncio.run(first.access_token())
    second = SharedTokenProvider(config(sim, creds), PostgresTokenStore(url), too_soon_wait=wait)
    t0 = time.monotonic()
    token = asyncio.run(second.access_token())
    assert time.monotonic() - t0 >= 0.8
    assert second.counters.too_soon == 0 and second.counters.waits == 1 and second.counters.issued == 1
    third = SharedTokenProvider(config(sim, creds), PostgresTokenStore(url), too_soon_wait=wait)
    assert asyncio.run(third.access_token()) == token and third.counters.issued == 0  # read, not issued
    st = sim.admin("stats")["by_appkey"][creds[0]]
    assert st["token_refused_total"] == 1 and st["tokens_issued_total"] == 1


def test_a_token_never_appears_in_logs_reprs_or_errors(
    sim, make_creds, postgres, db, caplog: pytest.LogCaptureFixture
) -> None:
    url, name = db
    key, secret = creds = make_creds(722)
    store = PostgresTokenStore(url)
    provider = SharedTokenProvider(config(sim, creds), store, too_soon_wait=FAST)
    with caplog.at_level(logging.DEBUG):
        token = asyncio.run(provider.access_token())
        kill_connections(postgres, name)  # the reconnect path logs too
        approval = asyncio.run(provider.approval_key())
        assert asyncio.run(provider.access_token()) == token
    server_log = (postgres.datadir.parent / "log").read_text(errors="replace")
    # A write the database refuses: our error must not quote the row, as PostgreSQL's DETAIL does. (The
    # server's own log does record a failing statement with its values: see token_store_pg's docstring.)
    bad = TokenRecord("access", token, NOW, NOW)
    object.__setattr__(bad, "kind", "refresh")
    with pytest.raises(TokenStoreError) as err:
        store.put(provider.key_id, bad)
    assert "check constraint" in str(err.value)
    assert any("reconnecting" in r.getMessage() for r in caplog.records)
    assert provider.key_id in caplog.text
    shown = caplog.text + str(err.value) + repr(provider) + repr(store) + repr(store.get(provider.key_id, "access"))
    for s in (key, secret, token, approval, postgres.password):
        assert s not in shown
        assert not any(s[i : i + 12] in shown for i in range(0, len(s) - 11, 6) if len(set(s[i : i + 12])) > 2)
    for s in (key, secret, token, approval):
        assert s not in server_log
    assert store.get(provider.key_id, "access").value == token  # the database holds it (that is its job)


# --- the rate-limit state -------------------------------------------------------------------------------


def test_clustered_hand_outs_are_held_to_the_window_cap(db) -> None:
    url, _ = db
    store = PostgresPermitStore(url)
    first = None
    for _ in range(11):
        wait, at = store.admit("key-a", 11, 1.05)
        first = first or at
        assert wait == 0.0
    wait, at = store.admit("key-a", 11, 1.05)
    assert abs((at + wait) - (first + 1.05)) < 1e-6  # the 12th goes when the 1st leaves the window
    assert store.admit("key-b", 11, 1.05)[0] == 0.0  # per key
    conn = PgDatabase(url).connect()
    with conn.cursor() as cur:
        cur.execute("SELECT key_id, cardinality(handouts) FROM observer_rate_limit ORDER BY key_id")
        assert cur.fetchall() == [("key-a", 11), ("key-b", 1)]  # one row per key, one window of hand-outs


def test_the_schedule_clock_is_read_after_the_row_lock(db) -> None:
    """A caller that waited for another's transaction measures from when it got the row, never before:
    otherwise hand-outs made meanwhile would look "from the future" and escape the window check."""
    url, _ = db
    store = PostgresPermitStore(url)
    store.reserve("key-a", 0.05, 1, 600)
    conn = PgDatabase(url).connect()
    cur = conn.cursor()
    cur.execute("BEGIN; SELECT 1 FROM observer_rate_limit WHERE key_id = 'key-a' FOR UPDATE")
    got: dict[str, tuple[float, float]] = {}
    t = threading.Thread(target=lambda: got.setdefault("r", store.reserve("key-a", 0.05, 1, 600)))
    t.start()
    time.sleep(0.4)
    cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    released = cur.fetchone()[0]
    cur.execute("COMMIT")
    t.join(5)
    assert got["r"][1] >= released


def test_pacing_in_one_process_matches_the_sqlite_store(db) -> None:
    url, _ = db
    lim = SharedRateLimiter("key-a", 18, store=PostgresPermitStore(url))
    t0 = time.monotonic()
    waits = [lim.acquire_sync() for _ in range(19)]
    elapsed = time.monotonic() - t0
    assert 18 / 18 - 0.02 <= elapsed < 1.3
    assert waits[0] < 0.05 and lim.counters.permits == 19 and lim.counters.waits == 18
    assert SharedRateLimiter("key-b", 18, store=PostgresPermitStore(url)).acquire_sync() < 0.05


ACQUIRER = """
import json, sys, time
from observer_resources.shared.rate_limit import SharedRateLimiter
from observer_resources.shared.rate_limit_pg import PostgresPermitStore
url = sys.stdin.readline().strip()
rate, n = float(sys.argv[1]), int(sys.argv[2])
lim = SharedRateLimiter("key-mp", rate, store=PostgresPermitStore(url))
print("ready", flush=True)
sys.stdin.readline()
out = []
for _ in range(n):
    lim.acquire_sync()
    out.append(time.time())
print(json.dumps({"granted": out, "max_wait": lim.counters.max_wait_seconds}), flush=True)
"""


def test_processes_share_one_budget_fairly(db) -> None:
    url, _ = db
    rate, n, procs = 20.0, 12, 4
    children = []
    for _ in range(procs):
        proc = subprocess.Popen(
            [sys.executable, "-c", ACQUIRER, str(rate), str(n)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(url + "\n")
        proc.stdin.flush()
        children.append(proc)
    budget_contract.assert_fair_share(children, rate, n)


# --- selection by environment ---------------------------------------------------------------------------


def test_state_db_url_selects_postgres_and_its_absence_sqlite(
    db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = db
    tokens, permits = open_token_store(tmp_path / "a", {}), open_permit_store(tmp_path / "a", {})
    assert isinstance(tokens, SqliteTokenStore) and isinstance(permits, SqlitePermitStore)
    assert (tmp_path / "a" / "tokens.sqlite").exists() and (tmp_path / "a" / "ratelimit.sqlite").exists()
    env = {STATE_DB_URL_ENV: f"  {url} "}
    assert isinstance(open_token_store(tmp_path / "b", env), PostgresTokenStore)
    assert isinstance(open_permit_store(tmp_path / "b", env), PostgresPermitStore)
    assert not (tmp_path / "b").exists()
    assert isinstance(open_token_store(tmp_path / "c", {STATE_DB_URL_ENV: " "}), SqliteTokenStore)  # blank = unset
    with pytest.raises(TokenStoreError, match="postgresql://"):
        open_token_store(tmp_path / "d", {STATE_DB_URL_ENV: "sqlite:///x.db"})

    from observer_resources.resources import KisResource

    monkeypatch.setenv(STATE_DB_URL_ENV, url)
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "obs"))
    kis = KisResource(app_key="PS" + "q" * 34, app_secret="z" * 180)
    assert isinstance(kis.token_provider().store, PostgresTokenStore)
    assert isinstance(kis.rate_limiter().store, PostgresPermitStore)
    assert not list((tmp_path / "obs").rglob("*.sqlite"))
    assert url.split("@")[0].split(":")[-1] not in repr(kis.rate_limiter())  # the password


# --- acceptance: separate DAGSTER_HOMEs, one PostgreSQL -------------------------------------------------

STEP = r"""
import asyncio, json, os, sys, time
from pathlib import Path
import dagster as dg
from observer_resources.resources import KisResource, kis_resource_from_env

home = Path(os.environ["DAGSTER_HOME"])
n, code = int(os.environ["PGT_N"]), os.environ["PGT_CODE"]
out = {}

@dg.asset
def quotes(kis: KisResource) -> dg.MaterializeResult:
    async def go():
        async with kis.rest_client() as client:
            out["started"] = time.time()
            out["done"] = []
            for _ in range(n):
                await client.inquire_price(code)
                out["done"].append(time.time())
            out["rest"] = client.stats.as_dict()
    asyncio.run(go())
    out["finished"] = time.time()
    out["tokens"] = kis.token_provider().counters.as_dict()
    out["limiter"] = kis.rate_limiter().counters.as_dict()
    out["stores"] = [type(kis.token_provider().store).__name__, type(kis.rate_limiter().store).__name__]
    return dg.MaterializeResult(metadata={"requests": n})

instance = dg.DagsterInstance.get()  # this process's own DAGSTER_HOME
kis = kis_resource_from_env()
print("ready", flush=True)
sys.stdin.readline()
result = dg.materialize([quotes], resources={"kis": kis}, instance=instance)
out["success"] = result.success
out["instance_dir"] = instance.root_directory
(home / "result.json").write_text(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_processes_with_separate_dagster_homes_share_one_token_and_one_budget(
    sim_factory, make_creds, db, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """The shared state's promise: N processes, each with its own DAGSTER_HOME and state directory (no SQLite
    file shared), all on one app key through one PostgreSQL, firing at once. ~35 s."""
    url, _ = db
    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "600")
    key, secret = make_creds(731)
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    warm_quote(sim, code)
    procs, n, rate = 5, 60, 18.0
    children, homes = [], []
    for i in range(procs):
        home = tmp_path / f"host{i}" / "dagster_home"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "OBSERVER_", "KIS_"))}
        env.update(
            {
                "DAGSTER_HOME": str(home),
                "OBSERVER_DATA_DIR": str(tmp_path / f"host{i}" / "data"),
                STATE_DB_URL_ENV: url,
                "KIS_APP_KEY": key,
                "KIS_APP_SECRET": secret,
                "KIS_REST_URL": sim.rest_url,
                "KIS_WS_URL": sim.ws_url,
                "PGT_N": str(n),
                "PGT_CODE": code,
            }
        )
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", STEP],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        homes.append(home)
    try:
        for c in children:
            assert c.stdout is not None
            line = c.stdout.readline().strip()
            assert line == "ready", (line, c.stderr.read() if c.stderr else "")
        for c in children:  # all at once
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        for c in children:
            _, err = c.communicate(timeout=150)
            assert c.returncode == 0, err[-4000:]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    results = [json.loads((h / "result.json").read_text()) for h in homes]

    st = sim.admin("stats")["by_appkey"][key]
    done = [t for r in results for t in r["done"]]
    elapsed = max(r["finished"] for r in results) - min(r["started"] for r in results)
    numbers = {
        "processes": procs,
        "requests": st["requests_total"],
        "tokens_issued": st["tokens_issued_total"],
        "egw00201": st["rate_limited_total"],
        "elapsed_s": round(elapsed, 2),
        "throughput_per_s": round(procs * n / elapsed, 2),
        "max_responses_in_1s": max_in_window(done),
        "max_wait_s": max(r["limiter"]["max_wait_seconds"] for r in results),
        "issued_by_process": [r["tokens"]["issued"] for r in results],
    }
    record_property("pg_shared_numbers", json.dumps(numbers))
    print("\nPostgreSQL-shared state,", json.dumps(numbers))

    assert all(r["success"] for r in results)
    assert len({r["instance_dir"] for r in results}) == procs  # separate Dagster instances
    assert all(r["stores"] == ["PostgresTokenStore", "PostgresPermitStore"] for r in results)
    for i in range(procs):  # nothing shared on disk: no SQLite token or rate-limit file anywhere
        assert not list((tmp_path / f"host{i}").rglob("tokens.sqlite*"))
        assert not list((tmp_path / f"host{i}").rglob("ratelimit.sqlite*"))
    # one token issuance in total at the exchange; every other process read it from PostgreSQL
    assert st["tokens_issued_total"] == 1 and st["token_refused_total"] == 0
    assert sorted(r["tokens"]["issued"] for r in results) == [0] * (procs - 1) + [1]
    # the exchange answers EGW00201 to any request beyond 20 in a sliding second of its own clock (refusals
    # do not count toward the window): zero EGW00201 with every request answered means its records never held
    # more than 20 in any second
    assert st["rate_limited_total"] == 0 and st["requests_total"] == procs * n
    assert all(r["rest"]["retries"] == {} for r in results)
    # one budget, not one per process (five private budgets would run at 90/s and draw EGW00201)
    assert numbers["throughput_per_s"] <= rate * 1.05
    assert numbers["throughput_per_s"] >= 0.85 * rate
