"""Every deployment file we ship, loaded the way Dagster, Docker Compose or the Helm chart would load it.

* Instance files (dagster.yaml, deploy/dagster.postgres.yaml, deploy/docker/dagster.yaml): validated by Dagster's
  own instance schema (``dagster_instance_config``), then each configured class (storage, run launcher, run
  coordinator, compute logs) processes its own ``config_type`` with the environment set; the PostgreSQL ones are
  also opened as real instances against a private PostgreSQL and record a run there.
* docker-compose.yml: parsed; its wiring checked against the instance file (the names the run launcher forwards,
  network, volumes, workspace); ``docker compose config -q`` when the Compose plugin is installed.
* Helm values: the chart's JSON schema cannot be fetched offline, so the instance config the chart renders from
  these values is rebuilt here (the few template rules we use, see ``helm_instance_config``) and validated by
  Dagster and by K8sRunLauncher's own schema; the values' structure is pinned to the chart 1.13.27 field names.
* run_local's profile selection, through the real entry point.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config, get_tick_retention_settings
from dagster._core.instance.ref import InstanceRef
from dagster._core.workspace.config_schema import ensure_workspace_config
from dagster._serdes import ConfigurableClassData, class_from_code_pointer

from observer_assets import run_local

ROOT = Path(__file__).resolve().parent.parent
ROOT_YAML = ROOT / "dagster.yaml"
PG_YAML = ROOT / "deploy" / "dagster.postgres.yaml"
DOCKER_DIR = ROOT / "deploy" / "docker"
DOCKER_YAML = DOCKER_DIR / "dagster.yaml"
COMPOSE = DOCKER_DIR / "docker-compose.yml"
HELM_VALUES = ROOT / "deploy" / "helm" / "values.yaml"
PG_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "6543",
    "DAGSTER_PG_USER": "observer",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_PG_DB": "observer",
}
# Blocks a deployment profile may set differently from the embedded default; everything else must match it.
DEPLOY_ONLY = {"storage", "run_launcher", "compute_logs"}
SECRET_NAMES = ("KIS_APP_KEY", "KIS_APP_SECRET", "PASSWORD", "OBSERVER_STATE_DB_URL", "TOKEN")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def validated_instance(yaml_path: Path, home: Path) -> tuple[dict, InstanceRef]:
    """Dagster's instance-schema validation of ``yaml_path`` placed in a fresh DAGSTER_HOME, and its InstanceRef."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(yaml_path, home / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    return dict(config), InstanceRef.from_dir(str(home))


def class_config(data: ConfigurableClassData) -> tuple[type, dict]:
    """A configured class and its config as the class itself processes it (env vars resolved)."""
    klass = class_from_code_pointer(data.module_name, data.class_name)
    result = process_config(klass.config_type(), data.config_dict)
    assert result.success, f"{data.class_name}: {[e.message for e in result.errors]}"
    return klass, result.value


@pytest.fixture
def pg_env(monkeypatch):
    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    return PG_ENV


# --- instance files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ROOT_YAML, PG_YAML, DOCKER_YAML], ids=["embedded", "postgres", "docker"])
def test_instance_file_passes_dagsters_schema_and_its_classes_schemas(path, pg_env, tmp_path):
    config, ref = validated_instance(path, tmp_path / "home")
    assert config["run_monitoring"]["enabled"] is True
    for data in (ref.run_coordinator_data, ref.compute_logs_data, ref.scheduler_data, ref.run_launcher_data):
        if data is not None:
            class_config(data)
    klass, storage = class_config(ref.storage_data)
    if path == ROOT_YAML:
        assert klass.__name__ == "DagsterSqliteStorage"
        return
    from dagster_postgres import DagsterPostgresStorage

    assert klass is DagsterPostgresStorage
    db = storage["postgres_db"]
    assert (db["hostname"], db["port"], db["username"], db["password"], db["db_name"]) == (
        "db.internal",
        6543,
        "observer",
        "not-a-real-password",
        "observer",
    )
    # The file names variables; it never holds a value.
    assert "not-a-real-password" not in path.read_text()


def test_a_missing_connection_variable_is_named_in_the_error(pg_env, monkeypatch, tmp_path):
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    _, ref = validated_instance(PG_YAML, tmp_path / "home")
    klass = class_from_code_pointer(ref.storage_data.module_name, ref.storage_data.class_name)
    result = process_config(klass.config_type(), ref.storage_data.config_dict)
    assert not result.success
    assert any("DAGSTER_PG_PASSWORD" in e.message for e in result.errors)


@pytest.mark.parametrize("path", [PG_YAML, DOCKER_YAML], ids=["postgres", "docker"])
def test_deployment_profiles_keep_the_embedded_settings(path):
    base, profile = load_yaml(ROOT_YAML), load_yaml(path)
    assert {k: v for k, v in profile.items() if k not in DEPLOY_ONLY} == base
    assert "postgres" in profile["storage"]


def test_docker_run_launcher_forwards_names_never_values(pg_env, tmp_path):
    from dagster_docker import DockerRunLauncher

    _, ref = validated_instance(DOCKER_YAML, tmp_path / "home")
    klass, cfg = class_config(ref.run_launcher_data)
    assert klass is DockerRunLauncher
    assert cfg["env_vars"] and all("=" not in v for v in cfg["env_vars"])
    assert {"KIS_APP_KEY", "KIS_APP_SECRET", "DAGSTER_PG_PASSWORD", "OBSERVER_STATE_DB_URL"} <= set(cfg["env_vars"])
    launcher = ref.run_launcher_data.rehydrate(as_type=DockerRunLauncher)  # the object the daemon would build
    assert launcher.networks == ["observer"] and launcher.env_vars == cfg["env_vars"]


@pytest.mark.parametrize("path", [PG_YAML, DOCKER_YAML], ids=["postgres", "docker"])
def test_postgres_profile_opens_a_real_instance_and_records_runs_there(path, postgres, monkeypatch, tmp_path):
    db = f"deploy_{path.parent.name}_{os.getpid()}"
    postgres.create_database(db)
    for k, v in (postgres.env() | {"DAGSTER_PG_DB": db}).items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "home"
    _, ref = validated_instance(path, home)

    @dg.asset
    def deploy_probe() -> int:
        return 1

    with dg.DagsterInstance.from_ref(ref) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([deploy_probe], instance=instance)
        assert result.success
    assert postgres.psql(f"SELECT run_id FROM runs WHERE run_id = '{result.run_id}'", db=db) == result.run_id
    assert not (home / "history" / "runs.db").exists()  # nothing went to SQLite


# --- Docker -----------------------------------------------------------------------------------------------------


def test_compose_services_wiring_and_secrets():
    compose, instance = load_yaml(COMPOSE), load_yaml(DOCKER_YAML)
    services = compose["services"]
    assert {"postgres", "code", "webserver", "daemon", "sim"} <= set(services)
    assert services["sim"]["profiles"] == ["demo"]
    # The UI has no login: published on the host's loopback only.
    assert services["webserver"]["ports"] and all(p.startswith("127.0.0.1:") for p in services["webserver"]["ports"])
    assert not any(services[s].get("ports") for s in services if s != "webserver")
    for name, svc in services.items():  # secrets are interpolated from the environment, never written here
        for key, value in (svc.get("environment") or {}).items():
            if any(s in key for s in SECRET_NAMES):
                assert "${" in str(value), f"{name}.{key} holds a literal"
    # DockerRunLauncher reads every forwarded name from the daemon's environment: a missing one fails each launch.
    launcher = instance["run_launcher"]["config"]
    assert set(launcher["env_vars"]) <= set(services["daemon"]["environment"])
    assert launcher["network"] in {n.get("name") for n in compose["networks"].values()}
    volume_names = {v["name"] for v in compose["volumes"].values()}
    assert {v.split(":")[0] for v in launcher["container_kwargs"]["volumes"]} <= volume_names
    assert "/var/run/docker.sock:/var/run/docker.sock" in services["daemon"]["volumes"]
    assert services["code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == services["code"]["image"]
    # The workspace points at the code service's gRPC port.
    target = load_yaml(DOCKER_DIR / "workspace.yaml")["load_from"][0]["grpc_server"]
    cmd = services["code"]["command"]
    assert target["host"] == "code" and str(target["port"]) == cmd[cmd.index("-p") + 1]


def test_dockerfile_runs_unprivileged_and_keeps_secrets_out_of_layers():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # one build argument, the base image (a name, never a secret); keys and passwords arrive at run time only
    assert [ln for ln in lines if ln.startswith("ARG ")] == ["ARG BASE_IMAGE=python:3.11-slim-bookworm"]
    env_block = " ".join(ln for ln in lines if ln.startswith("ENV ") or ln.endswith("\\"))
    assert not any(s in env_block for s in SECRET_NAMES)
    assert "deploy/docker/dagster.yaml" in text and "deploy/docker/workspace.yaml" in text
    ignore = [
        ln.strip()
        for ln in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert ignore[0] == "*" and not any(".env" in x for x in ignore if x.startswith("!"))


def test_docker_compose_config_validates(tmp_path):
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    ):
        pytest.skip(
            "needs docker compose (Docker Engine's Compose plugin, which make deps does not install); the "
            "compose file is still parsed and cross-checked by test_compose_services_wiring_and_secrets"
        )
    env = dict(os.environ) | {"DAGSTER_PG_PASSWORD": "x", "DOCKER_GID": "999"}
    r = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--profile", "demo", "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_workspace_files_are_valid_and_name_our_definitions():
    root = ensure_workspace_config(load_yaml(ROOT / "workspace.yaml"), str(ROOT / "workspace.yaml"))
    docker = ensure_workspace_config(load_yaml(DOCKER_DIR / "workspace.yaml"), str(DOCKER_DIR / "workspace.yaml"))
    module = root["load_from"][0]["python_module"]
    import importlib

    assert isinstance(getattr(importlib.import_module(module["module_name"]), module["attribute"]), dg.Definitions)
    assert docker["load_from"][0]["grpc_server"]["location_name"] == module["location_name"]


@pytest.mark.slow
def test_docker_workspace_loads_from_a_real_code_server(tmp_path):
    """The webserver/daemon side of the compose file: the grpc_server workspace, served by the image's command."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    port = run_local_free_port()
    compose = load_yaml(COMPOSE)
    cmd = [a if a != "4000" else str(port) for a in compose["services"]["code"]["command"]]
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    proc = subprocess.Popen(
        [sys.executable, "-m", *cmd], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ws = load_yaml(DOCKER_DIR / "workspace.yaml")
        ws["load_from"][0]["grpc_server"] |= {"host": "127.0.0.1", "port": port}
        (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(ws))
        (tmp_path / "home").mkdir()
        import socket
        import time

        deadline = time.monotonic() + 120
        while True:  # the server listens once the definitions are loaded
            assert proc.poll() is None and time.monotonic() < deadline, "code server never served"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        with (
            dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance,
            WorkspaceProcessContext(instance, WorkspaceFileTarget([str(tmp_path / "workspace.yaml")])) as ctx,
        ):
            request = ctx.create_request_context()
            assert request.has_code_location("observer"), request.code_location_errors()
            repo = next(iter(request.get_code_location("observer").get_repositories().values()))
            assert repo.has_job("track_a_job")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_local_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Kubernetes (Helm) ------------------------------------------------------------------------------------------

# Field names of the dagster/dagster chart 1.13.27 values we use (read from the chart's schema models): a typo or
# a renamed field would be ignored silently by Helm, so the structure is pinned here.
CHART_TOP = {
    "global",
    "generatePostgresqlPasswordSecret",
    "telemetry",
    "dagsterWebserver",
    "dagster-user-deployments",
    "runLauncher",
    "postgresql",
    "dagsterDaemon",
    "retention",
    "additionalInstanceConfig",
}
K8S_LAUNCHER_FIELDS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
K8S_LAUNCHER_REQUIRED = {
    "imagePullPolicy",
    "loadInclusterConfig",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
}
RUN_K8S_CONFIG = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
USER_DEPLOYMENT_FIELDS = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "deploymentNamespace",
    "port",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}
QUEUED_FIELDS = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueUseThreads": "dequeue_use_threads",
    "dequeueNumWorkers": "dequeue_num_workers",
}
POSTGRESQL_FIELDS = {
    "image",
    "enabled",
    "postgresqlHost",
    "postgresqlUsername",
    "postgresqlPassword",
    "postgresqlDatabase",
    "postgresqlParams",
    "postgresqlScheme",
    "service",
}


def helm_instance_config(values: dict, release_namespace: str = "observer") -> dict:
    """The dagster.yaml the chart renders into its instance ConfigMap, for the blocks these values use.

    Mirrors the chart's instance templates: PostgreSQL storages with the password from DAGSTER_PG_PASSWORD (the
    chart injects it from global.postgresqlSecretName), the K8sRunLauncher block, the queued run coordinator,
    retention, telemetry, then additionalInstanceConfig appended at top level."""
    pg = values["postgresql"]
    pg_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
    }
    if pg.get("postgresqlScheme"):
        pg_db["scheme"] = pg["postgresqlScheme"]
    storage = lambda mod, cls: {"module": mod, "class": cls, "config": {"postgres_db": pg_db}}  # noqa: E731
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or release_namespace,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": "observer-dagster",
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": "observer-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    if k8s.get("envConfigMaps"):
        launcher["env_config_maps"] = [c["name"] for c in k8s["envConfigMaps"] if "name" in c]
    if k8s.get("envSecrets"):
        launcher["env_secrets"] = [s["name"] for s in k8s["envSecrets"] if "name" in s]
    for src, dst in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if k8s.get(src):
            launcher[dst] = k8s[src]
    if k8s.get("runK8sConfig"):
        launcher["run_k8s_config"] = {RUN_K8S_CONFIG[k]: v for k, v in k8s["runK8sConfig"].items() if v}
    out: dict = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": storage("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
        "run_storage": storage("dagster_postgres.run_storage", "PostgresRunStorage"),
        "event_log_storage": storage("dagster_postgres.event_log", "PostgresEventLogStorage"),
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    daemon = values["dagsterDaemon"]
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        q = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
        out["run_coordinator"] = {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {QUEUED_FIELDS[k]: v for k, v in q.items()},
        }
    if daemon["enabled"] and daemon.get("runMonitoring", {}).get("enabled"):
        raise AssertionError("the chart's runMonitoring would duplicate additionalInstanceConfig.run_monitoring")
    if values["retention"]["enabled"]:
        out["retention"] = {
            k: {"purge_after_days": values["retention"][k]["purgeAfterDays"]}
            for k in ("sensor", "schedule")
            if values["retention"].get(k)
        }
    extra = values.get("additionalInstanceConfig") or {}
    dup = set(extra) & set(out)
    assert not dup, f"additionalInstanceConfig repeats rendered keys {dup} (a duplicate YAML key)"
    return out | extra


def test_helm_values_structure_is_the_charts():
    values = load_yaml(HELM_VALUES)
    assert set(values) <= CHART_TOP
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(k8s) <= K8S_LAUNCHER_FIELDS and K8S_LAUNCHER_REQUIRED <= set(k8s)
    assert set(values["postgresql"]) <= POSTGRESQL_FIELDS
    # The run queue comes whole from additionalInstanceConfig: the chart's block renders the queue limits as
    # run-coordinator config, which Dagster refuses beside concurrency.pools.
    q = values["dagsterDaemon"]["runCoordinator"]
    assert q["enabled"] is False and set(q) <= {"enabled", "type", "config"}
    assert set(q.get("config", {}).get("queuedRunCoordinator", {})) <= set(QUEUED_FIELDS)
    assert set(values["retention"]["sensor"]["purgeAfterDays"]) == {"skipped", "success", "failure", "started"}
    users = values["dagster-user-deployments"]
    assert users["enabled"] and users["enableSubchart"]
    (dep,) = users["deployments"]
    assert set(dep) <= USER_DEPLOYMENT_FIELDS and {"name", "image", "port"} <= set(dep)
    # The code location is Observer's definitions, the same module and attribute as workspace.yaml.
    module = load_yaml(ROOT / "workspace.yaml")["load_from"][0]["python_module"]
    args = dep["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == module["module_name"] and args[args.index("-a") + 1] == module["attribute"]
    # Dagster's own images on the same release train as the Python packages.
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"]["tag"] == dg.__version__


def test_helm_values_hold_secret_names_never_values():
    values = load_yaml(HELM_VALUES)
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    dep = values["dagster-user-deployments"]["deployments"][0]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    for secrets in (dep["envSecrets"], k8s["envSecrets"]):
        assert secrets and all(set(s) == {"name"} for s in secrets)
    assert not any(s in k for k in dep.get("env", {}) for s in SECRET_NAMES)
    assert all("=" not in v for v in k8s["envVars"])


def test_helm_rendered_instance_config_is_valid_for_dagster_and_k8s_run_launcher(pg_env, tmp_path):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres.run_storage import PostgresRunStorage

    values = load_yaml(HELM_VALUES)
    rendered = helm_instance_config(values)
    (tmp_path / "chart").mkdir()
    chart_yaml = tmp_path / "chart" / "dagster.yaml"
    chart_yaml.write_text(yaml.safe_dump(rendered))
    config, ref = validated_instance(chart_yaml, tmp_path / "home")
    klass, launcher = class_config(ref.run_launcher_data)
    assert klass is K8sRunLauncher
    assert launcher["env_secrets"] == ["observer-kis", "observer-state"]
    assert launcher["postgres_password_secret"] == "observer-postgresql"
    assert class_config(ref.run_storage_data)[0] is PostgresRunStorage
    klass, _ = class_config(ref.run_coordinator_data)
    assert klass.__name__ == "QueuedRunCoordinator"
    # The same run queue, pools, monitoring and tick retention as the embedded default.
    base = load_yaml(ROOT_YAML)
    for block in ("run_coordinator", "concurrency", "run_monitoring"):
        assert config[block] == base[block], block
    from dagster._core.definitions.run_request import InstigatorType

    for kind, itype in (("sensor", InstigatorType.SENSOR), ("schedule", InstigatorType.SCHEDULE)):
        from dagster._core.instance.config import get_default_tick_retention_settings as defaults

        assert get_tick_retention_settings(config["retention"][kind], defaults(itype)) == get_tick_retention_settings(
            base["retention"][kind], defaults(itype)
        )


def test_helm_render_rejects_a_broken_run_launcher_block(pg_env, tmp_path):
    """The validation above has teeth: a misspelt launcher field is refused by K8sRunLauncher's own schema."""
    values = copy.deepcopy(load_yaml(HELM_VALUES))
    rendered = helm_instance_config(values)
    rendered["run_launcher"]["config"]["env_secret"] = ["observer-kis"]
    (tmp_path / "chart").mkdir()
    (tmp_path / "chart" / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    _, ref = validated_instance(tmp_path / "chart" / "dagster.yaml", tmp_path / "home")
    klass = class_from_code_pointer(ref.run_launcher_data.module_name, ref.run_launcher_data.class_name)
    assert not process_config(klass.config_type(), ref.run_launcher_data.config_dict).success


# --- run_local profile selection --------------------------------------------------------------------------------


def test_instance_profile_selection():
    assert run_local.instance_profile({}) == ROOT_YAML
    assert run_local.instance_profile({"OBSERVER_INSTANCE": "embedded"}) == ROOT_YAML
    env = dict(PG_ENV)
    del env["DAGSTER_PG_PORT"]
    assert run_local.instance_profile(env | {"OBSERVER_INSTANCE": "postgres"}) == PG_YAML
    with pytest.raises(run_local.ProfileError, match="OBSERVER_INSTANCE must be one of"):
        run_local.instance_profile({"OBSERVER_INSTANCE": "mysql"})


def test_run_local_refuses_an_incomplete_postgres_profile_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_", "DAGSTER_"))}
    env |= {
        "OBSERVER_INSTANCE": "postgres",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PASSWORD": "not-a-real-password",
    }
    r = subprocess.run(
        [sys.executable, "-m", "observer_assets.run_local"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "DAGSTER_PG_USER" in r.stderr and "DAGSTER_PG_DB" in r.stderr
    assert "not-a-real-password" not in r.stderr + r.stdout
    assert not (tmp_path / "home").exists()
