"""`make run`'s promise, checked the way a newcomer's browser sees it: through Dagster's GraphQL API.

Starts the embedded pipeline (local exchange + `dagster dev`) on free ports with a fresh instance and lake, and
waits until the UI reports a materialized universe partition and a materialized Track A partition — within the
3 minutes the README promises — then stops it and checks that nothing is left running. The same test runs on the
PostgreSQL instance profile (`OBSERVER_INSTANCE=postgres`, a fresh database on the private server of the
`postgres` fixture) and then checks that the runs it saw were recorded in PostgreSQL, not in SQLite.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
query ($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 5) { partition runId } }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def materialized(url: str, asset: str, run_ids: set[str] | None = None) -> list[str]:
    r = httpx.post(url, json={"query": QUERY, "variables": {"path": [asset]}}, timeout=10)
    node = r.json()["data"]["assetOrError"]
    events = node.get("assetMaterializations", []) if node else []
    if run_ids is not None:
        run_ids.update(m["runId"] for m in events)
    return [m["partition"] for m in events]


@pytest.mark.slow
@pytest.mark.parametrize("instance", ["embedded", "postgres"])
def test_make_run_materializes_universe_and_track_a_within_3_minutes(tmp_path, request, instance):
    port, rest, ws = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_PORT": str(port),
        "KIS_REST_URL": f"http://127.0.0.1:{rest}",
        "KIS_WS_URL": f"ws://127.0.0.1:{ws}",
    }
    pg = None
    if instance == "postgres":
        pg = request.getfixturevalue("postgres")
        db = f"make_run_{os.getpid()}"
        pg.create_database(db)
        env |= pg.env() | {"DAGSTER_PG_DB": db, "OBSERVER_INSTANCE": "postgres"}
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer_assets.run_local"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    start = time.monotonic()
    found: dict[str, list[str]] = {}
    run_ids: set[str] = set()
    try:
        while time.monotonic() - start < 180:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            try:
                found = {a: materialized(url, a, run_ids) for a in ("universe", "track_a_snapshot")}
            except (httpx.HTTPError, KeyError, ValueError):
                found = {}
            if found and all(found.values()):
                break
            time.sleep(3)
        elapsed = time.monotonic() - start
        assert found and all(found.values()), (
            f"after {elapsed:.0f}s: {found}\n" + (tmp_path / "run.log").read_text()[-3000:]
        )
        assert found["track_a_snapshot"][0].startswith(found["universe"][0])  # today's slot of today's universe
        print(f"make run ({instance}): both materialized after {elapsed:.0f} s")
        if pg is not None:  # the runs the UI reported live in PostgreSQL; SQLite was never used
            ids = ",".join(f"'{r}'" for r in run_ids)
            stored = pg.psql(f"SELECT count(*) FROM runs WHERE run_id IN ({ids})", db=env["DAGSTER_PG_DB"])
            assert int(stored) == len(run_ids) > 0, (stored, run_ids)
            assert not (tmp_path / "home" / "history" / "runs.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True).stdout.split()
    assert not leftovers, "processes left running after stop"
