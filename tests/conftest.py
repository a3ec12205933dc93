"""Shared fixtures: the local exchange in a subprocess, and demo credentials.

* ``sim`` — one exchange per test module: real mode, ``--clock open`` (trades around the clock, so
  tests never wait for a session), seed 7, 600 listings for a fast start.
* ``sim_factory`` — start exchanges with any CLI arguments; all are stopped after the test.
* ``make_creds(i)`` — (app key, app secret) of KIS's shape, distinct per ``i``. On a shared
  ``sim`` give each test its own ``i`` (or use the ``creds`` fixture): KIS allows one token
  issuance a minute per key, and the sim enforces that.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from local_exchange.accounts import demo_credentials
from local_exchange.server import SimProcess, run_sim_process

SIM_DEFAULT_ARGS = ("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "600")

make_creds = demo_credentials

# Indices handed out by the ``creds`` fixture start high so they never clash with explicit make_creds(i).
_creds_counter = itertools.count(100_000)


@pytest.fixture(scope="session", autouse=True)
def _metrics_dir(tmp_path_factory) -> None:
    """Step processes record Prometheus metrics in a multiprocess directory; the tests' go to a temp one, never to
    ./data/metrics (subprocesses inherit the variable). Tests that need their own data dir set it themselves."""
    import os

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(tmp_path_factory.mktemp("prometheus-multiproc")))
    # and a test that builds a KisResource without choosing a data dir writes its events to a temp one, not ./data
    os.environ.setdefault("OBSERVER_DATA_DIR", str(tmp_path_factory.mktemp("observer-data")))


def _live_defs_state_storage() -> None:
    """Dagster publishes an entered instance's state storage in a context variable; a sensor context built from an
    instance ref (and other harness paths) enters an instance it never exits, so the variable can outlive that
    instance, and a later `Definitions` load in the same worker dereferences a dead weakref ("Attempted to resolve
    undefined DagsterInstance weakref") — failing whichever test an xdist worker happens to run next. In the tests
    only, a storage whose instance is gone reads as no storage, which is what a fresh process sees."""
    from dagster._core.storage.defs_state import base

    original = base.DefsStateStorage.get.__func__

    def get(cls):  # noqa: ANN001, ANN202
        storage = original(cls)
        ref = getattr(storage, "_instance_weakref", None)
        if storage is not None and (ref is None or ref() is None):
            return None
        return storage

    base.DefsStateStorage.get = classmethod(get)


_live_defs_state_storage()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    proc = run_sim_process(*SIM_DEFAULT_ARGS)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(*args: str, timeout: float = 60.0) -> SimProcess:
        proc = run_sim_process(*args, timeout=timeout)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def creds() -> tuple[str, str]:
    """Fresh demo credentials, unique within the test session."""
    return make_creds(next(_creds_counter))


@pytest.fixture(name="make_creds")
def make_creds_fixture() -> Callable[[int], tuple[str, str]]:
    return demo_credentials


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server (tests/pgserver.py). Skipped without the binaries, except under CI."""
    import os

    import pgserver

    if pgserver.pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing in CI: .ci/run must apt-get install postgresql")
        pytest.skip("needs PostgreSQL (server binaries: make deps installs the Debian package postgresql)")
    srv = pgserver.start()
    try:
        yield srv
    finally:
        srv.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001, ARG001
    """Name the tests skipped because a server or tool is missing (their skip reason starts with "needs <tool> (")
    and the command that brings it in; list the other skips (time of day, ...) after them, with their reasons."""
    import re

    missing: dict[tuple[str, str], list[str]] = {}
    other: list[str] = []
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = rep.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        m = re.match(r"needs (.+?) \((.*?)\)", reason)
        if m is None:
            other.append(f"{rep.nodeid}: {reason}")
            continue
        how = "make deps" if "make deps installs" in m.group(2) else m.group(2)
        missing.setdefault((m.group(1), how), []).append(rep.nodeid)
    write = terminalreporter.write_line
    if missing:
        terminalreporter.write_sep("-", "skipped: a server or tool is missing", yellow=True, bold=True)
        for (tool, how), ids in sorted(missing.items(), key=lambda kv: kv[0][0].lower()):
            write(f"needs {tool}, {len(ids)} test{'s' if len(ids) > 1 else ''} (bring it in: {how})", yellow=True)
            for nodeid in sorted(ids):
                write(f"  {nodeid}")
        if any(how == "make deps" for _, how in missing):
            write("run `make deps` (as root or with passwordless sudo; else it prints the install command), then "
                  "`make test` again", bold=True)
    if other:
        terminalreporter.write_sep("-", "skipped for other reasons")
        for line in sorted(other):
            write(f"  {line}")
