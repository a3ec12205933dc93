"""What every TokenStore must do, whatever holds it (SQLite file, PostgreSQL): one set of checks, run by
test_token_store.py and test_pg_stores.py against their own store."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import datetime, timedelta

import pytest

from observer_resources.calendar import KST
from observer_resources.shared.token_store import TokenLockTimeout, TokenRecord, TokenStore

NOW = datetime(2026, 3, 3, 8, 30, tzinfo=KST)


def record(value: str, kind: str = "access") -> TokenRecord:
    return TokenRecord(kind, value, NOW + timedelta(hours=24), NOW)  # type: ignore[arg-type]


def records_roundtrip_per_key_and_kind(store: TokenStore, reader: TokenStore | None = None) -> None:
    """Records and not_before written through one store object read back (in KST) through `reader` — another
    process's view — per key and kind; a second write replaces, never duplicates."""
    reader = reader or store
    assert store.get("key-a", "access") is None
    with store.lock("key-a", 1) as lock:
        assert lock.not_before() is None
        lock.put(record("A1"))
        assert lock.get("access") == record("A1")
        lock.set_not_before(NOW + timedelta(seconds=60))
    store.put("key-a", record("AP1", "approval"))
    store.put("key-b", record("B1"))
    got = reader.get("key-a", "access")
    assert got == record("A1") and got.expires_at.utcoffset() == timedelta(hours=9)
    assert reader.get("key-a", "approval") == record("AP1", "approval")
    assert reader.get("key-b", "access") == record("B1")
    with reader.lock("key-a", 1) as lock:
        assert lock.not_before() == NOW + timedelta(seconds=60)
        lock.put(record("A2"))
    assert store.get("key-a", "access").value == "A2"
    assert store.get("key-b", "access").value == "B1"


def lock_excludes_threads_and_hides_uncommitted_writes(store: TokenStore, *, per_key: bool) -> None:
    """While one holder has the key's lock: try_lock gives None, lock() times out on time, readers see the old
    record without waiting; after release (idempotent) the new record shows and the lock is free again. With
    `per_key`, another key's lock stays free meanwhile."""
    store.put("key-a", record("old"))
    seen: dict[str, object] = {}
    lock = store.lock("key-a", 1)
    lock.put(record("new"))

    def other() -> None:
        seen["try"] = store.try_lock("key-a")
        t0 = time.monotonic()
        try:
            store.lock("key-a", 0.3)
        except TokenLockTimeout:
            seen["timeout_after"] = time.monotonic() - t0
        seen["read"] = store.get("key-a", "access").value  # readers never wait for the holder
        if per_key:
            seen["other_key"] = store.try_lock("key-b")

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert seen["try"] is None
    assert 0.25 <= seen["timeout_after"] < 2.0
    assert seen["read"] == "old"
    if per_key:
        assert seen["other_key"] is not None
        seen["other_key"].release()  # type: ignore[attr-defined]
    lock.release()
    lock.release()  # idempotent
    assert store.get("key-a", "access").value == "new"
    again = store.try_lock("key-a")
    assert again is not None
    again.release()


def holder_process_excludes_until_it_commits(store: TokenStore, holder: subprocess.Popen[str]) -> None:
    """`holder` (another process, already holding key-x's lock with an uncommitted "from-child" record) excludes
    this one and hides its write until told to release (a line on stdin; it answers "released")."""
    assert store.try_lock("key-x") is None
    with pytest.raises(TokenLockTimeout):
        store.lock("key-x", 0.2)
    assert store.get("key-x", "access") is None  # not committed yet
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released"
    assert store.get("key-x", "access").value == "from-child"
    with store.lock("key-x", 1) as lock:
        assert lock.get("access").value == "from-child"
