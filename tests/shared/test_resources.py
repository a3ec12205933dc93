"""KisResource in real Dagster runs against the local exchange: a quote comes back, every step
process shares one token, and neither key, secret nor token reaches Dagster's storage or UI data."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from observer_resources.kis import protocol as p
from observer_resources.kis.config import DEMO_APP_KEY, DEMO_APP_SECRET, LOCAL_REST_URL
from observer_resources.kis.errors import KisConfigError
from observer_resources.resources import KisResource, kis_resource_from_env
from observer_resources.shared.token_store import SqliteTokenStore

from . import dagster_defs


@pytest.fixture
def kis_env(sim, make_creds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A deployment's environment: secrets in env vars, data under tmp_path."""

    def setup(i: int) -> tuple[str, str]:
        key, secret = make_creds(i)
        monkeypatch.setenv("KIS_APP_KEY", key)
        monkeypatch.setenv("KIS_APP_SECRET", secret)
        monkeypatch.setenv("KIS_REST_URL", sim.rest_url)
        monkeypatch.setenv("KIS_WS_URL", sim.ws_url)
        monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
        code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
        monkeypatch.setenv("OBSERVER_TEST_CODE", code)
        return key, secret

    return setup


def fragments(secret: str, size: int = 16) -> list[str]:
    """Pieces of a secret to look for, so a partial leak (a prefix, a truncated log line) is caught too."""
    pieces = [secret[i : i + size] for i in range(0, len(secret) - size + 1, size // 2)] + [secret[-size:]]
    return [piece for piece in pieces if len(set(piece)) > 2]  # skip runs like '0000…' in demo keys


def everything_dagster_kept(instance: dg.DagsterInstance, run_id: str, defs: dg.Definitions, root: Path) -> bytes:
    """Run config, job and plan snapshots, event log, the UI's repository snapshot, and every file
    the instance wrote (run/event databases, compute logs, outputs)."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    parts = [
        serialize_value(run.run_config) if run.run_config else "",
        serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)),
        serialize_value(instance.all_logs(run_id)),
        serialize_value(RepositorySnap.from_def(defs.get_repository_def())),
    ]
    blob = "\n".join(parts).encode()
    for f in root.rglob("*"):
        if f.is_file():
            blob += f.read_bytes()
    return blob


def test_materialize_gets_a_quote_and_keeps_no_secret(kis_env, sim, tmp_path: Path) -> None:
    key, secret = kis_env(401)
    kis = kis_resource_from_env()
    assert isinstance(kis.app_key, dg.EnvVar) and isinstance(kis.app_secret, dg.EnvVar)

    @dg.asset
    def quote(context, kis: KisResource) -> dg.MaterializeResult:  # noqa: ANN001 - Dagster inspects it
        async def go() -> int:
            async with kis.rest_client() as client:
                return (await client.inquire_price(os.environ["OBSERVER_TEST_CODE"])).price

        price = asyncio.run(go())
        context.log.info(f"quote {price} through {kis!r} / {kis}")
        return dg.MaterializeResult(metadata={"price": price, "key_id": kis.kis_config().key_id})

    defs = dg.Definitions(assets=[quote], resources={"kis": kis})
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        result = dg.materialize([quote], resources={"kis": kis}, instance=instance)
        assert result.success
        mat = result.asset_materializations_for_node("quote")[0]
        assert mat.metadata["price"].value > 0
        kept = everything_dagster_kept(instance, result.run_id, defs, dagster_home)

    state = tmp_path / "data" / "state"
    store = SqliteTokenStore(state / "tokens.sqlite")
    token = store.get(mat.metadata["key_id"].value, "access").value
    assert b"KIS_APP_KEY" in kept  # the UI shows which variable holds the key ...
    for s in (key, secret, token):
        for piece in fragments(s):
            assert piece.encode() not in kept  # ... never its value, the secret or the token, not even in part
    assert stat.S_IMODE(os.stat(state / "tokens.sqlite").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state / "ratelimit.sqlite").st_mode) == 0o600
    st = sim.admin("stats")["by_appkey"][key]
    assert st["tokens_issued_total"] == 1 and st["requests_total"] == 1


@pytest.mark.timeout(180)
def test_step_processes_share_one_token(kis_env, sim, tmp_path: Path) -> None:
    key, _ = kis_env(402)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        # loaded by file path in each step process (the tests directory is not an installed package)
        job = ReconstructableJob.for_file(dagster_defs.__file__, "quotes_job")
        result = dg.execute_job(job, instance=instance)
        assert result.success
        pids = {e.pid for e in result.all_events if e.is_step_start}
        prices = [
            m.metadata["price"].value
            for m in (e.event_specific_data.materialization for e in result.all_events if e.is_step_materialization)
        ]
    assert len(pids) == 3  # three step processes, each with its own KisResource instance
    assert len(prices) == 3 and all(price > 0 for price in prices)
    st = sim.admin("stats")["by_appkey"][key]
    assert st["tokens_issued_total"] == 1 and st["token_refused_total"] == 0
    assert st["requests_total"] == 3 and st["rate_limited_total"] == 0


def test_from_env_without_a_key_targets_the_local_exchange() -> None:
    kis = kis_resource_from_env({})
    assert (kis.app_key, kis.app_secret, kis.env) == (DEMO_APP_KEY, DEMO_APP_SECRET, "real")
    assert kis.rest_url == LOCAL_REST_URL and kis.kis_config().local
    assert kis.effective_rate_per_s() == 18.0
    paper = kis_resource_from_env({"KIS_ENV": "paper", "KIS_REST_URL": "http://127.0.0.1:1"})
    assert paper.effective_rate_per_s() == 1.8 and paper.rest_url == "http://127.0.0.1:1"
    with pytest.raises(KisConfigError):
        kis_resource_from_env({"KIS_APP_KEY": "x" * 36})
    with pytest.raises(KisConfigError):
        kis_resource_from_env({"KIS_ENV": "live"})


def test_from_env_with_a_key_uses_env_vars_and_the_real_host() -> None:
    kis = kis_resource_from_env({"KIS_APP_KEY": "k" * 36, "KIS_APP_SECRET": "s" * 180})
    assert isinstance(kis.app_key, dg.EnvVar) and kis.app_key.env_var_name == "KIS_APP_KEY"
    assert isinstance(kis.app_secret, dg.EnvVar) and kis.app_secret.env_var_name == "KIS_APP_SECRET"
    assert kis.rest_url == p.REAL_REST_URL and kis.ws_url == p.REAL_WS_URL
    paper = kis_resource_from_env({"KIS_APP_KEY": "k" * 36, "KIS_APP_SECRET": "s" * 180, "KIS_ENV": "paper"})
    assert paper.rest_url == p.PAPER_REST_URL and paper.ws_url == p.PAPER_WS_URL


def test_resource_repr_and_handles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, secret = "PS" + "q" * 34, "z" * 180
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "obs"))
    kis = KisResource(app_key=key, app_secret=secret, rate_per_s=5.0)
    for shown in (repr(kis), str(kis), f"{kis}"):
        assert key not in shown and secret not in shown and "app_key=***" in shown
    assert kis.resolved_state_dir() == tmp_path / "obs" / "state"
    assert kis.token_provider() is kis.token_provider()  # one per resource instance (= per process)
    limiter = kis.rate_limiter()
    assert limiter is kis.rate_limiter() and limiter.rate_per_s == 5.0 and limiter.key_id == kis.kis_config().key_id
    assert stat.S_IMODE(os.stat(tmp_path / "obs" / "state").st_mode) == 0o700
    kis.teardown_after_execution(dg.build_init_resource_context())
    with pytest.raises(KisConfigError):
        KisResource(app_key="short", app_secret=secret).kis_config()
