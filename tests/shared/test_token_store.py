"""SqliteTokenStore: private files, per-key records, and a lock that excludes other processes and threads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from observer_resources.shared.token_store import SqliteTokenStore, TokenRecord

from . import token_store_contract as contract
from .token_store_contract import NOW, record

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "made" / "by-store" / "tokens.sqlite"
    store = SqliteTokenStore(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    with store.lock("key-a", 1) as lock:
        lock.put(record("secret-token-value"))
        # while a transaction is open SQLite keeps its WAL side files: they must be private too
        sides = [Path(str(path) + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in sides)
        assert [mode(p) for p in sides] == [0o600, 0o600]
    assert mode(path) == 0o600


def test_existing_wider_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite"
    path.touch()
    os.chmod(path, 0o644)
    before = mode(tmp_path)
    SqliteTokenStore(path)
    assert mode(path) == 0o600
    assert mode(tmp_path) == before  # a directory the store did not create keeps its mode


def test_records_roundtrip_per_key_and_kind(tmp_path: Path) -> None:
    contract.records_roundtrip_per_key_and_kind(SqliteTokenStore(tmp_path / "t.sqlite"))


def test_record_repr_hides_value_and_rejects_naive_times() -> None:
    assert "top-secret" not in repr(record("top-secret"))
    with pytest.raises(ValueError):
        TokenRecord("access", "x", datetime(2026, 1, 1), NOW)
    with pytest.raises(ValueError):
        TokenRecord("refresh", "x", NOW, NOW)  # type: ignore[arg-type]


def test_lock_excludes_threads_and_hides_uncommitted_writes(tmp_path: Path) -> None:
    # one SQLite write lock for the whole file: not per key
    contract.lock_excludes_threads_and_hides_uncommitted_writes(SqliteTokenStore(tmp_path / "t.sqlite"), per_key=False)


HOLDER = """
import sys
from datetime import datetime, timedelta, timezone
from observer_resources.shared.token_store import SqliteTokenStore, TokenRecord
kst = timezone(timedelta(hours=9))
now = datetime.now(kst)
store = SqliteTokenStore(sys.argv[1])
lock = store.lock("key-x", 5)
lock.put(TokenRecord("access", "from-child", now + timedelta(hours=24), now))
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


def start_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_excludes_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    store = SqliteTokenStore(path)
    proc = start_holder(path)
    try:
        contract.holder_process_excludes_until_it_commits(store, proc)
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    store = SqliteTokenStore(path)
    proc = start_holder(path)
    assert store.try_lock("key-x") is None
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    with store.lock("key-x", 5) as lock:
        assert time.monotonic() - t0 < 2
        assert lock.get("access") is None  # the dead holder's write was never committed
