"""The Docker deployment, built and run for real: the images, then the compose stack driven by its own schedules and
sensors, each run in a container of its own (DockerRunLauncher), everything Dagster keeps in PostgreSQL.

Needs a Docker engine and a base image without Docker Hub (`make deploy-test` brings both: .ci/docker, then
deploy/docker/base-image.sh). Marked ``deploy``: not part of `make test`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "deploy" / "docker"
BASE = os.environ.get("OBSERVER_BASE_IMAGE", "observer-base:bookworm")
IMAGE = "observer:ci"
PG_IMAGE = "observer-postgres:ci"
PROJECT = "observer-ci"
CA = Path("/etc/ssl/certs/ca-certificates.crt")  # lent to pip in the build (a secret mount), never copied
RUN_LABEL = "dagster/run_id"  # DockerRunLauncher labels every run container with its run

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker (make deploy-test installs it)"),
]


def compose_env() -> dict[str, str]:
    """What Compose sees besides the env file: only what finds the engine and the CLI plugins. Compose takes a
    variable from its own environment before the env file, and this process's is the test suite's (tests/conftest.py
    sets OBSERVER_DATA_DIR to a temp dir, a shell may hold KIS keys): inherited, it would configure the stack."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("DOCKER_")}


def sh(*args: str, env: dict[str, str] | None = None, timeout: float = 900, check: bool = True) -> str:
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def compose_cmd() -> list[str]:
    """The Compose v2 plugin when present, else Debian's docker-compose (v1): the file works with both."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("needs docker compose or docker-compose (make deploy-test installs Debian's docker-compose)")
    return [exe]


def buildkit_cli() -> str:
    """A docker CLI that builds with BuildKit (the secret mount needs it): one with the buildx plugin, or one from
    before 23.0, whose `build` uses the engine's own BuildKit when DOCKER_BUILDKIT=1 (Debian's docker.io)."""
    for cli in dict.fromkeys(filter(None, (shutil.which("docker"), "/usr/bin/docker"))):
        if not Path(cli).is_file():
            continue
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return cli
        v = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        if v.stdout[:2].isdigit() and int(v.stdout.split(".")[0]) < 23:
            return cli
    pytest.fail("no docker CLI that builds with BuildKit: install the buildx plugin")


def build(dockerfile: str, tag: str) -> float:
    t0 = time.monotonic()
    args = [buildkit_cli(), "build", "--network", "host", "-f", dockerfile, "--build-arg", f"BASE_IMAGE={BASE}"]
    if CA.is_file():
        args += ["--secret", f"id=pip_ca,src={CA}"]
    sh(*args, "-t", tag, ".", env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=1800)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def images() -> dict[str, float]:
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
        pytest.fail(f"base image {BASE} missing: run deploy/docker/base-image.sh (make deploy-test does)")
    return {
        IMAGE: build("deploy/docker/Dockerfile", IMAGE),
        PG_IMAGE: build("deploy/docker/postgres.Dockerfile", PG_IMAGE),
    }


def layer_files(image: str) -> Iterator[tuple[str, str, bytes]]:
    """(layer, path, content) of every regular file of every layer of ``image``, from `docker save`."""
    raw = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=600).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for m in outer.getmembers():
            if not m.isfile():
                continue
            data = outer.extractfile(m).read()
            try:
                inner = tarfile.open(fileobj=io.BytesIO(data))
            except tarfile.TarError:
                continue  # the manifest and config JSON
            with inner:
                for f in inner.getmembers():
                    if f.isfile():
                        yield m.name, f.name, inner.extractfile(f).read()


def test_the_images_build_run_unprivileged_and_carry_no_secret(images):
    user = json.loads(sh("docker", "image", "inspect", IMAGE))[0]["Config"]["User"]
    assert user == "observer"
    assert sh("docker", "run", "--rm", "--entrypoint", "id", IMAGE, "-u").strip() == "10001"
    assert sh("docker", "run", "--rm", IMAGE, "dagster", "--version").startswith("dagster, version 1.13")
    history = sh("docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE)
    assert "pip_ca" in history and "PIP_CERT=/run/secrets" in history  # the CA was lent, as a mount
    # No secret in any layer: no .env, no token cache, no key material, not even the lent CA bundle. A file with a
    # key's name or a private key in it passes only when a package shipped it exactly (its digest in a wheel's RECORD
    # or a Debian package's md5sums): the CA bundles of certifi, botocore and grpc, GnuTLS's self-test keys.
    ca = CA.read_bytes()[-2000:] if CA.is_file() else None
    shipped: dict[str, str] = {}  # path -> digest, as the package manifests in the image give them
    suspects: list[tuple[str, str, str, set[str]]] = []  # (layer, path, why, the file's digests)
    for layer, raw_path, data in layer_files(IMAGE):
        path = posixpath.normpath(raw_path.removeprefix("./"))
        name = path.rsplit("/", 1)[-1]
        shipped.update(package_manifest(path, data))
        assert not path.startswith(("run/secrets", "opt/dagster/home/.env")), (layer, path)
        if ca is not None and not path.startswith(("etc/ssl/", "usr/share/ca-certificates/", "opt/venv/")):
            assert ca not in data, f"the host's CA bundle was copied into {path} ({layer})"
        for needle in (b"KIS_APP_SECRET=", b"DAGSTER_PG_PASSWORD=", b"AWS_SECRET_ACCESS_KEY="):
            if needle in data and path.startswith("opt/dagster/"):
                raise AssertionError(f"{needle!r} set in {path} ({layer})")
        why = "a secret's name" if name == ".env" or name.endswith((".token", ".pem", ".key")) else None
        why = why or ("a private key" if PRIVATE_KEY.search(data) else None)
        if why:
            digests = {
                base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
            }
            suspects.append((layer, path, why, digests))
    assert shipped, "no package manifest (RECORD, md5sums) found in the image"
    unshipped = [(layer, path, why) for layer, path, why, digests in suspects if shipped.get(path) not in digests]
    assert not unshipped, unshipped


#: a PEM private key with a body (a library that merely names the marker holds no key)
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{40,}")
#: the project's own wheel: its files are checked like every other file of ours, never vouched for by its RECORD
OWN_DIST = re.compile(r"observer-[^/]*\.dist-info")


def package_manifest(path: str, data: bytes) -> dict[str, str]:
    """{file path in the image: digest} from a package manifest (else empty): a wheel's ``.dist-info/RECORD``
    (sha256, urlsafe base64) or a Debian package's ``/var/lib/dpkg/info/*.md5sums`` (md5, hex)."""
    if path.endswith(".dist-info/RECORD") and not OWN_DIST.fullmatch(path.split("/")[-2]):
        site = path.rsplit("/", 2)[0]
        rows = csv.reader(io.StringIO(data.decode()))
        return {
            posixpath.normpath(f"{site}/{row[0]}"): row[1].removeprefix("sha256=")
            for row in rows
            if len(row) == 3 and row[1].startswith("sha256=")
        }
    if path.startswith("var/lib/dpkg/info/") and path.endswith(".md5sums"):
        pairs = (line.split(maxsplit=1) for line in data.decode(errors="replace").splitlines())
        return {p.strip(): md5 for md5, p in (x for x in pairs if len(x) == 2)}
    return {}


def run_containers() -> list[str]:
    """The run containers of this test's image (not those of another deployment on the host)."""
    args = ("--filter", f"label={RUN_LABEL}", "--filter", f"ancestor={IMAGE}")
    return sh("docker", "ps", "-aq", *args, check=False).split()


VOLUMES = ("observer-postgres", "observer-lake", "observer-compute-logs")  # the compose file's fixed names


def refuse_beside_a_real_deployment() -> None:
    """The compose file names its volumes and network (so a user's data outlives a project rename): on a host that
    runs Observer's stack, this test's teardown would remove that deployment's volumes. It stops first instead."""
    for name in VOLUMES:
        got = subprocess.run(["docker", "volume", "inspect", name], capture_output=True, text=True)
        if got.returncode != 0:
            continue
        project = (json.loads(got.stdout)[0].get("Labels") or {}).get("com.docker.compose.project")
        if project != PROJECT:
            pytest.fail(
                f"volume {name} belongs to another deployment (compose project {project!r}): this test removes its "
                "volumes on teardown; run it on a host without Observer's stack"
            )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The compose project, with its own env file, brought up and torn down by the test."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.env_file = tmp / "stack.env"
        gid = os.stat("/var/run/docker.sock").st_gid
        self.env_file.write_text(
            "\n".join(
                [
                    f"DAGSTER_PG_PASSWORD={self.password}",
                    f"DOCKER_GID={gid}",
                    "OBSERVER_CALENDAR=open",
                    f"OBSERVER_IMAGE={IMAGE}",
                    f"OBSERVER_POSTGRES_IMAGE={PG_IMAGE}",
                    f"DAGSTER_PORT={self.port}",
                ]
            )
            + "\n"
        )
        self.env_file.chmod(0o600)
        self.base = [
            *compose_cmd(),
            "-p",
            PROJECT,
            "-f",
            str(DOCKER_DIR / "docker-compose.yml"),
            "--env-file",
            str(self.env_file),
            "--profile",
            "demo",
        ]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.env = compose_env()

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        return sh(*self.base, *args, env=self.env, timeout=timeout, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip().splitlines()[0]

    def gql(self, query: str, variables: dict | None = None) -> dict:
        r = httpx.post(self.url, json={"query": query, "variables": variables or {}}, timeout=20)
        r.raise_for_status()
        return r.json()["data"]

    def psql(self, sql: str) -> str:
        return sh("docker", "exec", self.container("postgres"), "psql", "-U", "observer", "-d", "observer", "-tAc", sql)

    def sim(self, path: str) -> dict:
        code = f"import httpx,json;print(json.dumps(httpx.get('http://127.0.0.1:18700/__sim__{path}').json()))"
        return json.loads(sh("docker", "exec", self.container("sim"), "python", "-c", code))

    def down(self) -> None:
        """Run containers first (they hold the network), then the services, the network and the volumes."""
        runs = run_containers()
        if runs:
            sh("docker", "rm", "-f", *runs, check=False)
        self.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


RUNS = """
query ($limit: Int!) {
  runsOrError(limit: $limit) { ... on Runs { results { runId jobName status tags { key value } } } }
}
"""
MATERIALIZED = """
query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) { ... on Asset { assetMaterializations(limit: 5) { partition runId } } }
}
"""


def wait_for(what: str, fn, timeout: float, every: float = 3.0):  # noqa: ANN001, ANN201
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            got = fn()
        except (httpx.HTTPError, AssertionError, KeyError, IndexError, ValueError) as e:
            got, last = None, e
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last})")


def test_the_stack_runs_a_trading_slot_end_to_end(images, tmp_path, capsys):
    stack = Stack(tmp_path)
    refuse_beside_a_real_deployment()
    stack.down()  # what a run killed before its teardown left (its volumes hold another password)
    t0 = time.monotonic()
    try:
        stack.compose("up", "-d", timeout=900)
        # the UI on the host's loopback only
        web = json.loads(sh("docker", "inspect", stack.container("webserver")))[0]
        bindings = web["NetworkSettings"]["Ports"]["3000/tcp"]
        assert bindings and {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings
        wait_for("the UI", lambda: stack.gql("{ version }")["version"], 300)
        up_s = time.monotonic() - t0

        # the universe and a Track A slot, materialized by the deployment's own schedules and sensors
        def materialized(asset: str) -> list[dict]:
            node = stack.gql(MATERIALIZED, {"path": [asset]})["assetOrError"]
            return node["assetMaterializations"]

        uni = wait_for("a universe", lambda: materialized("universe"), 600)
        slot = wait_for("a Track A slot", lambda: materialized("track_a_snapshot"), 900)
        ready_s = time.monotonic() - t0
        runs = {r["runId"]: r for r in stack.gql(RUNS, {"limit": 200})["runsOrError"]["results"]}
        for m in (uni[0], slot[0]):  # each in its own container, started by DockerRunLauncher from the image
            tags = {t["key"]: t["value"] for t in runs[m["runId"]]["tags"]}
            cid = tags["docker/container_id"]
            info = json.loads(sh("docker", "inspect", cid))[0]
            assert info["Config"]["Image"] == IMAGE and info["Config"]["Labels"].get(RUN_LABEL) == m["runId"]
            assert cid not in {stack.container(s) for s in ("code", "daemon", "webserver")}
        # runs, event logs and schedules in PostgreSQL
        in_pg = set(stack.psql("select run_id from runs").split())
        assert {uni[0]["runId"], slot[0]["runId"]} <= in_pg
        assert int(stack.psql(f"select count(*) from event_logs where run_id = '{slot[0]['runId']}'")) > 0
        assert int(stack.psql("select count(*) from job_ticks")) > 0  # schedule and sensor ticks
        # one token for the whole deployment, shared through PostgreSQL by every container that asked
        stats = stack.sim("/stats")
        assert stats["tokens_new_total"] == 1, stats
        # and what they share it through: the token's row and the request schedule live in PostgreSQL
        assert stack.psql("select count(*) from observer_token where kind = 'access'").strip() == "1"
        assert int(stack.psql("select count(*) from observer_rate_limit where tat is not null")) >= 1

        # the Track B capture in its own container, replaced when killed
        def capture_runs() -> list[dict]:
            got = stack.gql(RUNS, {"limit": 200})["runsOrError"]["results"]
            return [r for r in got if r["jobName"] == "track_b_capture_job"]

        first = wait_for("the Track B capture", lambda: [r for r in capture_runs() if r["status"] == "STARTED"], 600)
        tags = {t["key"]: t["value"] for t in first[0]["tags"]}
        sh("docker", "kill", tags["docker/container_id"])
        killed = time.monotonic()
        wait_for(
            "a new capture after the kill",
            lambda: [r for r in capture_runs() if r["status"] == "STARTED" and r["runId"] != first[0]["runId"]],
            240,
        )
        replaced_s = time.monotonic() - killed
        assert stack.sim("/stats")["tokens_new_total"] == 1
    finally:
        logs = stack.compose("logs", "--tail", "60", timeout=120, check=False)
        stack.down()
    left = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}", check=False).split()
    left += run_containers()
    assert not left, (left, logs[-3000:])
    volumes = set(sh("docker", "volume", "ls", "-q", check=False).split())
    assert not volumes & set(VOLUMES), volumes
    with capsys.disabled():  # the stage's figures, in CI's log whatever pytest captures
        print(
            f"deploy: images built in {images[IMAGE]:.0f} s and {images[PG_IMAGE]:.0f} s; stack up {up_s:.0f} s; universe "
            f"and slot by {ready_s:.0f} s; capture replaced {replaced_s:.0f} s after the kill"
        )
