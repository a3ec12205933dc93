"""Shared fixtures: the local exchange in a subprocess, and demo credentials.

* ``sim`` — one exchange per test module: real mode, ``--clock open`` (trades around the clock, so
  tests never wait for a session), seed 7, 600 listings for a fast start.
* ``sim_factory`` — start exchanges with any CLI arguments; all are stopped after the test.
* ``make_creds(i)`` — (app key, app secret) of KIS's shape, distinct per ``i``. On a shared
  ``sim`` give each test its own ``i`` (or use the ``creds`` fixture): KIS allows one token
  issuance a minute per key, and the sim enforces that.
* ``env`` — the one Observer environment of a test: a lake and a backup destination under ``tmp_path``, the open
  calendar, no alert destination, the default Track B window. A module adjusts it with ``ENV = {...}``, a test with
  ``@pytest.mark.env(NAME="value")``; ``None`` removes a variable.
* ``webhook`` — a real HTTP server on loopback set as the alert webhook; the list of JSON bodies it received.
* ``small_sim`` — one exchange per module with 300 listings (seed 5), for tests that build a trimmed universe.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


@pytest.fixture(scope="module")
def small_sim() -> Iterator[SimProcess]:
    proc = run_sim_process("--mode", "real", "--clock", "open", "--seed", "5", "--listings", "300")
    try:
        yield proc
    finally:
        proc.stop()


#: The KRX-only day, the default before the two-venue day, for every test in this process unless it says otherwise:
#: most tests exercise one rule on KRX's short day, and the two-venue day has tests of its own (a marker, or a
#: deployment whose environment leaves every setting at its default, as the day in the life and `make run` do).
KRX_ONLY_DAY = {
    "OBSERVER_TRACK_A_WINDOW": "session",
    "OBSERVER_TRACK_B_WINDOW": "09:30-15:00",
    "OBSERVER_TRACK_B_FEEDS": "trades:KRX",
}
for _name, _value in KRX_ONLY_DAY.items():
    os.environ.setdefault(_name, _value)

#: a test's environment unless its module (``ENV``) or a marker (``@pytest.mark.env``) says otherwise
BASE_ENV: dict[str, str | None] = {
    "OBSERVER_CALENDAR": "open",
    "OBSERVER_ALERT_WEBHOOK": None,
    "OBSERVER_ALERT_TELEGRAM_CHAT_ID": None,
    **KRX_ONLY_DAY,
}
_ALERT_VARS = ("OBSERVER_ALERT_WEBHOOK", "OBSERVER_ALERT_TELEGRAM_CHAT_ID")


@pytest.fixture
def env(tmp_path, monkeypatch, request):
    values: dict[str, str | None] = {
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "OBSERVER_BACKUP_URL": str(tmp_path / "backups"),
        **BASE_ENV,
    }
    values.update(getattr(request.module, "ENV", {}))
    for marker in reversed(list(request.node.iter_markers("env"))):  # the closest marker wins
        values.update(marker.kwargs)
    for name, value in values.items():
        if name in _ALERT_VARS and "webhook" in request.fixturenames:
            continue  # the webhook fixture owns these
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return tmp_path


class Hook(list):
    """The JSON bodies a webhook received, in order; ``url`` is where it listens."""

    url: str = ""


@pytest.fixture
def webhook(monkeypatch) -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            hook.append(json.loads(self.rfile.read(n) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *a):  # noqa: ANN002
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    hook.url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OBSERVER_ALERT_WEBHOOK", hook.url)
    monkeypatch.delenv("OBSERVER_ALERT_TELEGRAM_CHAT_ID", raising=False)
    try:
        yield hook
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


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


#: The end-to-end tests that take longest, run first: with xdist handing tests out one at a time (the Makefile's slow
#: stage), the longest must start at once on a worker of its own or the stage lasts as long as it plus what ran before.
LONGEST_FIRST = ("tests/e2e/test_day_in_the_life.py",)


#: pytest-xdist's first batch hands each of n workers two tests, items i and i + n, whatever ``--maxschedchunk``
#: says: the longest test's worker runs item n after it. A test of a few milliseconds goes there, so nothing waits
#: behind the longest one.
BESIDE_THE_LONGEST = "tests/track_a/test_two_venue_day.py::test_the_window_is_a_validated_setting"


@pytest.hookimpl(trylast=True)  # after -m has deselected: the positions are those xdist hands out
def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ANN001, ARG001
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable: the rest keep their order
    workers = config.getoption("numprocesses", default=None) if config.pluginmanager.hasplugin("xdist") else None
    short = next((i for i, item in enumerate(items) if item.nodeid == BESIDE_THE_LONGEST), None)
    if isinstance(workers, int) and workers > 1 and short is not None and items[0].nodeid.startswith(LONGEST_FIRST):
        if len(items) > workers:
            items.insert(workers, items.pop(short))


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
            write(
                "run `make deps` (as root or with passwordless sudo; else it prints the install command), then "
                "`make test` again",
                bold=True,
            )
    if other:
        terminalreporter.write_sep("-", "skipped for other reasons")
        for line in sorted(other):
            write(f"  {line}")
