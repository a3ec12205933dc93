"""Backups under attack and bad luck, on real files, real processes and a real Dagster instance.

Each test proves a class, not an example: a restore fuzzer over generated hostile manifests; a committed day whose
file is replaced after retention (the old bytes stay, as a version); kill -9 at every step of a backup, first write
and rewrite; an unreadable package is never "fine"; the weekly sweep through its schedule; stray days outside the
calendar; a `today` from the future.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from upath import UPath

from observer_assets.backup import backup, package, retention
from observer_assets.backup import restore as restoring
from observer_assets.backup.settings import RetentionPolicy
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import EventLog, read_events
from observer_resources.storage import lake

from .test_backup import day_hashes, small_day

OPEN = MarketCalendar("open")
KRX = MarketCalendar("krx")


def tree(d: Path) -> dict[str, str]:
    """Every file and symlink under `d` with its bytes' hash (or link target): what 'nothing written' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):  # never follows a symlink
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(d).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _commit(pkg: Path, doc: dict) -> None:
    """Write a manifest and a marker naming it, as anyone with write access to the bucket could."""
    raw = (json.dumps(doc, indent=1) + "\n").encode()
    (pkg / "manifest.json").write_bytes(raw)
    (pkg / "SUCCESS.marker").write_text(json.dumps({"manifest_sha256": hashlib.sha256(raw).hexdigest()}))


# --- 1. a restore never writes outside its target, and is all or nothing --------------------------------------

HOSTILE_PATHS = [
    "../outside/evil.txt",
    "../../evil.txt",
    "/tmp/evil-abs.txt",
    "/etc/cron.d/evil",
    "state/tokens.sqlite",
    "state/evil.json",
    "system/capture/status.json",
    "track_a/../../outside/x",
    "./track_a/x",
    "track_a//x",
    "track_a/./x",
    "",
    "track_a/x\x00.parquet",
    "..",
    ".",
    "C:/evil",
    "track_a\\..\\..\\evil",
    "link/evil.txt",
    "loop/evil.txt",
    "inside_state/tokens.sqlite",
]


def _mutations(entry: dict, rnd: random.Random) -> list[tuple[str, dict]]:
    e = entry
    out = [(f"path={p!r}", {**e, "path": p}) for p in HOSTILE_PATHS]
    out += [
        (f"stored={s!r}", {**e, "stored": s})
        for s in (
            "../../../outside/evil",
            "/etc/passwd",
            "files/../../../x",
            "files/" + e["path"] + "/../../x",
            "versions/7/" + e["path"],
            "versions/x/" + e["path"],
            "files/other.parquet",
        )
    ]
    for k in ("path", "size", "sha256", "codec", "stored", "mtime_ns", "day"):
        d = dict(e)
        d.pop(k)
        out.append((f"missing {k}", d))
    out += [
        (f"{k}={v!r}", {**e, k: v})
        for k, v in (
            ("size", "12"),
            ("size", -1),
            ("size", True),
            ("size", 1.5),
            ("mtime_ns", None),
            ("mtime_ns", "x"),
            ("sha256", "0" * 63),
            ("sha256", 42),
            ("sha256", "Z" * 64),
            ("codec", "gzip"),
            ("codec", None),
            ("version", 0),
            ("version", "2"),
            ("version", -3),
            ("rows", "many"),
            ("day", 20260303),
            ("day", "2026W011"),
            ("path", 7),
            ("path", ["a"]),
            ("path", None),
        )
    ]
    out.append(("sha256 of other bytes", {**e, "sha256": hashlib.sha256(rnd.randbytes(8)).hexdigest()}))
    out.append(("size off by one", {**e, "size": e["size"] + 1}))
    return out


def test_restore_fuzzer_nothing_outside_the_target_and_nothing_unless_everything_verifies(tmp_path):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 3)
    small_day(root, day)
    assert backup.run(root, UPath(dest), OPEN, day, events=EventLog(root)).action == "written"
    good = json.loads((dest / day.isoformat() / "manifest.json").read_text())
    # control: the untouched package restores, so a refusal below is the mutation's doing
    assert restoring.restore(UPath(dest), day, tmp_path / "control")["restored"] == len(good["files"])

    sandbox = tmp_path / "sandbox"
    outside = sandbox / "outside"
    rnd = random.Random(20261203)
    cases = []
    for i, e in enumerate(good["files"]):
        cases += [(i, name, m) for name, m in _mutations(e, rnd)]
    cases += [
        (-1, "whole files list not a list", None),
        (-2, "an entry that is not an object", None),
        (-3, "the same version twice", None),
    ]
    rnd.shuffle(cases)
    refused = 0
    for n, (i, name, mutated) in enumerate(cases):
        doc = copy.deepcopy(good)
        if i >= 0:
            doc["files"][i] = mutated
        elif i == -1:
            doc["files"] = {"a": 1}
        elif i == -2:
            doc["files"].append("track_a/x")
        else:
            doc["files"].append(dict(doc["files"][0]))
        if rnd.random() < 0.5:  # a second hostile entry elsewhere in the list, so the bad one is not always first
            j = rnd.randrange(len(good["files"]))
            if j != i and isinstance(doc["files"], list):
                doc["files"][j] = {**good["files"][j], "path": rnd.choice(HOSTILE_PATHS[:8])}
        case_dest = tmp_path / "cases" / str(n)
        pkg = case_dest / day.isoformat()
        pkg.parent.mkdir(parents=True)
        os.symlink(dest / day.isoformat(), pkg)  # the real stored files; only the control files differ below
        pkg = pkg.resolve()
        target = sandbox / "target"
        target.mkdir(parents=True, exist_ok=True)
        (target / "state").mkdir(exist_ok=True)
        (target / "state" / "tokens.sqlite").write_bytes(b"LIVE TOKENS")
        outside.mkdir(exist_ok=True)
        if not (target / "link").exists():
            os.symlink(outside, target / "link")  # symlink-through: target/link/evil.txt is outside/evil.txt
            os.symlink(target / "state", target / "inside_state")
            os.symlink("loop", target / "loop")
        saved = {k: (pkg / k).read_bytes() for k in ("manifest.json", "SUCCESS.marker")}
        try:
            _commit(pkg, doc)
            before = tree(sandbox)
            with pytest.raises(restoring.RestoreError):
                restoring.restore(UPath(case_dest), day, target)
            refused += 1
            assert tree(sandbox) == before, f"case {name!r}: the restore changed files"
            assert not Path("/tmp/evil-abs.txt").exists()
        finally:
            for k, v in saved.items():
                (pkg / k).write_bytes(v)
    assert refused == len(cases) and refused > 250
    assert package.verify(UPath(dest), day).ok  # the real package was never harmed by the cases


def test_verify_never_reads_a_path_the_manifest_should_not_hold(tmp_path):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 3)
    small_day(root, day)
    backup.run(root, UPath(dest), OPEN, day, events=EventLog(root))
    pkg = dest / day.isoformat()
    doc = json.loads((pkg / "manifest.json").read_text())
    doc["files"][0]["stored"] = "../../../../../../etc/hostname"
    _commit(pkg, doc)
    v = package.verify(UPath(dest), day)
    assert not v.ok and v.bytes == 0 and any("stored" in w for _, w in v.problems)


# --- 3. the only copy of a day is never silently replaced -----------------------------------------------------


def test_a_file_changed_after_retention_becomes_a_new_version_and_the_original_stays(tmp_path, webhook):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 3)
    before = small_day(root, day)
    ev = EventLog(root)
    assert backup.run(root, dest, OPEN, day, events=ev).action == "written"
    # retention deletes the day locally (backed up, old enough)
    out = retention.apply(root, dest, OPEN, day + timedelta(days=5), RetentionPolicy(), events=ev)
    assert str(day) in out.deleted and not day_hashes(root, day)
    # an old slot is re-run (from the UI): a new, smaller file at the same path
    rel = f"track_a/date={day}/slot=0910/snapshot.parquet"
    lake.write_table_atomic(root / rel, pa.table({"code": ["000001"], "price": [1]}))
    assert (root / rel).stat().st_size < 10_000
    r = backup.run(root, dest, OPEN, day, events=ev)
    assert r.action == "written" and [v["path"] for v in r.versioned] == [rel]
    assert r.versioned[0]["kind"] == "replaced" and r.versioned[0]["version"] == 2
    st = package.read_state(dest, day)
    assert st.committed and [e.version for e in st.manifest.entries if e.path == rel] == [1, 2]
    assert st.manifest.by_path()[rel].sha256 != before[rel]
    # the original bytes are in the package, byte for byte, and verified
    assert package.verify(dest, day).ok
    assert (tmp_path / "backups" / str(day) / "files" / rel).exists()
    assert (tmp_path / "backups" / str(day) / "versions" / "2" / rel).exists()
    # the change is a system event
    versioned = [e for e in read_events(root, datetime.now(KST).date()) if e["event_type"] == "backup_file_versioned"]
    assert versioned and versioned[-1]["path"] == rel and versioned[-1]["previous_sha256"] == before[rel]
    # a restore places the newest; --version 1 gives the day as first packaged
    (root / rel).unlink()
    newest = restoring.restore(dest, day, tmp_path / "newest")
    assert newest["version"] == 2
    assert hashlib.sha256((tmp_path / "newest" / rel).read_bytes()).hexdigest() != before[rel]
    restoring.restore(dest, day, tmp_path / "v1", version=1)
    assert day_hashes(tmp_path / "v1", day) == before
    with pytest.raises(restoring.RestoreError, match="version must be 1..2"):
        restoring.restore(dest, day, tmp_path / "v9", version=9)
    # and through the CLI
    env = {
        **os.environ,
        "OBSERVER_DATA_DIR": str(root),
        "OBSERVER_BACKUP_URL": str(tmp_path / "backups"),
        "OBSERVER_CALENDAR": "open",
    }
    env.pop("OBSERVER_ALERT_WEBHOOK", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "observer_assets.cli",
            "restore",
            day.isoformat(),
            "--version",
            "1",
            "--to",
            str(tmp_path / "cli"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert day_hashes(tmp_path / "cli", day) == before


def test_an_append_only_file_that_grew_is_kept_in_both_states(tmp_path):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 4)
    before = small_day(root, day)
    ev = EventLog(root)
    backup.run(root, dest, OPEN, day, events=ev)
    rel = f"raw/track_b/date={day}/key=k1/09.jsonl"
    with open(root / rel, "a") as f:
        f.write('{"i": "late"}\n')
    r = backup.run(root, dest, OPEN, day, events=ev)
    assert [(v["path"], v["kind"]) for v in r.versioned] == [(rel, "appended")]
    # unchanged files were not copied again: only the grown file's new version was written
    assert r.changed == [rel]
    restoring.restore(dest, day, tmp_path / "v1", version=1)
    assert day_hashes(tmp_path / "v1", day) == before


def test_a_damaged_stored_file_is_repaired_from_identical_local_bytes_in_place(tmp_path):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 5)
    small_day(root, day)
    ev = EventLog(root)
    backup.run(root, dest, OPEN, day, events=ev)
    stored = tmp_path / "backups" / str(day) / "files" / "track_a" / f"date={day}" / "slot=0900" / "snapshot.parquet"
    stored.write_bytes(stored.read_bytes()[:100])
    r = backup.run(root, dest, OPEN, day, events=ev)
    assert r.invalidated and not r.versioned  # same bytes locally: the same version, rewritten
    assert package.verify(dest, day).ok
    rel = f"track_a/date={day}/slot=0900/snapshot.parquet"
    assert [e.version for e in package.read_state(dest, day).manifest.entries if e.path == rel] == [1]


# --- 4. an unreadable or damaged package is never "fine" ------------------------------------------------------


@pytest.mark.parametrize("damage", ["manifest garbage", "manifest deleted", "marker garbage", "manifest hostile"])
def test_a_damaged_package_whose_local_files_are_gone_fails_loudly(tmp_path, webhook, damage):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 6)
    small_day(root, day)
    ev = EventLog(root)
    backup.run(root, dest, OPEN, day, events=ev)
    retention.apply(root, dest, OPEN, day + timedelta(days=5), RetentionPolicy(), events=ev)
    assert not day_hashes(root, day)
    pkg = tmp_path / "backups" / str(day)
    if damage == "manifest garbage":
        (pkg / "manifest.json").write_bytes(b"\x00garbage{")
    elif damage == "manifest deleted":
        (pkg / "manifest.json").unlink()
    elif damage == "marker garbage":
        (pkg / "SUCCESS.marker").write_bytes(b"not json")
    else:
        doc = json.loads((pkg / "manifest.json").read_text())
        doc["files"][0]["path"] = "../../evil"
        _commit(pkg, doc)
    hits_before = len(webhook)
    if damage == "marker garbage":  # the manifest is intact: the package is rebuilt from it and re-verified
        r = backup.run(root, dest, OPEN, day, events=ev)
        assert r.action == "written" and package.verify(dest, day).ok
        return
    with pytest.raises(package.BackupError):
        backup.run(root, dest, OPEN, day, events=ev)
    kinds = [e["event_type"] for e in read_events(root, datetime.now(KST).date()) if e.get("day") == str(day)]
    assert "backup_verify_failed" in kinds and "backup_succeeded" not in kinds[kinds.index("backup_verify_failed") :]
    assert len(webhook) > hits_before and str(day) in webhook[-1]["text"]
    assert pkg.exists()  # evidence kept, never deleted


def test_a_damaged_manifest_with_local_files_is_set_aside_and_rebuilt(tmp_path, webhook):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 9)
    before = small_day(root, day)
    ev = EventLog(root)
    backup.run(root, dest, OPEN, day, events=ev)
    (tmp_path / "backups" / str(day) / "manifest.json").write_bytes(b"{")
    r = backup.run(root, dest, OPEN, day, events=ev)
    assert r.action == "written" and r.invalidated
    aside = [p.name for p in (tmp_path / "backups").iterdir() if p.name.startswith(f"{day}.damaged-")]
    assert len(aside) == 1 and (tmp_path / "backups" / aside[0] / "files").exists()
    assert backup.package_days(dest) == [day]  # the set-aside copy is not a day
    restoring.restore(dest, day, tmp_path / "copy")
    assert before.items() <= day_hashes(tmp_path / "copy", day).items()


def test_the_weekly_sweep_through_its_schedule_withdraws_a_rotten_package_and_the_metric_counts_it(
    tmp_path, monkeypatch, webhook
):
    from observer_assets.backup.schedules import verify_backups_weekly
    from observer_assets.definitions import defs
    from observer_assets.monitoring.metrics import collect_text

    root, dest_dir = tmp_path / "data", tmp_path / "backups"
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(root))
    monkeypatch.setenv("OBSERVER_BACKUP_URL", str(dest_dir))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    dest = UPath(dest_dir)
    days = [date(2026, 3, 10), date(2026, 3, 11)]
    ev = EventLog(root)
    for d in days:
        small_day(root, d)
        backup.run(root, dest, OPEN, d, events=ev)
    retention.apply(root, dest, OPEN, date(2026, 3, 20), RetentionPolicy(), events=ev)
    assert not day_hashes(root, days[0]) and not day_hashes(root, days[1])
    stored = dest_dir / str(days[0]) / "files" / "track_a" / f"date={days[0]}" / "slot=0910" / "snapshot.parquet"
    b = bytearray(stored.read_bytes())
    b[len(b) // 2] ^= 0xFF
    stored.write_bytes(bytes(b))
    now = datetime(2026, 12, 6, 4, 0, tzinfo=KST)  # a Sunday
    with dg.instance_for_test() as inst:
        ctx = dg.build_schedule_context(
            instance=inst, scheduled_execution_time=now, repository_def=defs.get_repository_def()
        )
        reqs = verify_backups_weekly.evaluate_tick(ctx).run_requests
        assert len(reqs) == 1
        job = defs.resolve_job_def(verify_backups_weekly.job_name)
        res = job.execute_in_process(instance=inst, tags=reqs[0].tags, raise_on_error=False)
        assert not res.success
        failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
        assert str(days[0]) in failure.step_failure_data.error.message
    assert not package.read_state(dest, days[0]).committed and package.read_state(dest, days[1]).committed
    assert any(str(days[0]) in h["text"] for h in webhook)
    text = collect_text(dict(os.environ))
    assert "observer_backup_unverified_days 1.0" in text.splitlines(), [
        line for line in text.splitlines() if "unverified" in line
    ]


# --- 5. kill -9 at every step of a backup ----------------------------------------------------------------------


def _run_killed_at(root: Path, dest: Path, day: date, step: int) -> int:
    """Fork a child that runs one backup and SIGKILLs itself just before its `step`-th durable operation (a stored
    object's copy, an fsync, a rename). Returns the number of steps the child reached (step, or fewer if it ended)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the real backup, with a tripwire on the operations whose order matters
        os.close(r)
        count = [0]

        def trip(fn):
            def wrapped(*a, **k):
                count[0] += 1
                os.write(w, b".")
                if count[0] == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fn(*a, **k)

            return wrapped

        package._copy_out = trip(package._copy_out)
        package._sync_file = trip(package._sync_file)
        package.lake.fsync_dir = trip(package.lake.fsync_dir)
        os.replace = trip(os.replace)
        try:
            backup.run(root, UPath(dest), OPEN, day, events=EventLog(root))
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    os.close(w)
    reached = 0
    while chunk := os.read(r, 4096):
        reached += len(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, f"step {step}: the backup failed on its own"
    return reached


def _stored_ok(dest: Path, day: date, m: dict) -> bool:
    """Every object an earlier committed manifest names still holds its bytes."""
    st = package.Manifest.from_bytes(json.dumps(m).encode())
    bad, _ = package._verify_entries(UPath(dest) / day.isoformat(), st.entries)
    return not bad


@pytest.mark.parametrize("scenario", ["first write", "rewrite"])
def test_kill_9_at_every_step_never_commits_unverified_bytes_nor_loses_a_committed_version(tmp_path, scenario):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 12)
    small_day(root, day)
    first = day_hashes(root, day)
    committed_before = None
    if scenario == "rewrite":
        backup.run(root, UPath(dest), OPEN, day, events=EventLog(root))
        committed_before = json.loads((dest / str(day) / "manifest.json").read_text())
        lake.write_table_atomic(
            root / f"track_a/date={day}/slot=0900/snapshot.parquet", pa.table({"code": ["1"], "price": [1]})
        )
        lake.write_table_atomic(
            root / f"track_a/date={day}/slot=0930/snapshot.parquet", pa.table({"code": ["2"], "price": [2]})
        )
    final = day_hashes(root, day)
    step, outcomes = 1, set()
    while True:
        reached = _run_killed_at(root, dest, day, step)
        st = package.read_state(UPath(dest), day)
        if st.committed:  # a marker over this manifest: every byte it names verifies
            assert package.verify(UPath(dest), day).ok, f"step {step}: committed but not verified"
            outcomes.add("committed")
        else:
            outcomes.add("uncommitted")
            with pytest.raises(restoring.RestoreError):
                restoring.restore(UPath(dest), day, tmp_path / f"refused{step}")
        if committed_before is not None:
            assert _stored_ok(dest, day, committed_before), f"step {step}: a committed version was harmed"
        if reached < step:  # the run ended before the tripwire: every step was tried
            break
        step += 1
    assert step > 10 and outcomes == {"committed", "uncommitted"}
    # the next run completes whatever a kill left; the newest bytes restore, and (rewrite) the first as version 1
    backup.run(root, UPath(dest), OPEN, day, events=EventLog(root))
    assert package.verify(UPath(dest), day).ok
    restoring.restore(UPath(dest), day, tmp_path / "newest")
    assert day_hashes(tmp_path / "newest", day) == final
    if scenario == "rewrite":
        restoring.restore(UPath(dest), day, tmp_path / "v1", version=1)
        assert day_hashes(tmp_path / "v1", day) == first


def test_every_stored_file_the_manifest_and_the_marker_are_fsynced_before_the_marker(tmp_path, monkeypatch):
    """The order, observed on the real run: no marker rename before each stored object and the manifest were
    fsynced (and their directories)."""
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 13)
    small_day(root, day)
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        log.append(("replace", str(b)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    backup.run(root, UPath(dest), OPEN, day, events=EventLog(root))
    pkg = str(dest / str(day))
    marker_at = next(i for i, (k, p) in enumerate(log) if k == "replace" and p.endswith("SUCCESS.marker"))
    synced = {p for k, p in log[:marker_at] if k == "fsync"}
    stored = {str(p) for p in Path(pkg).rglob("*") if p.is_file() and p.name not in ("SUCCESS.marker", "manifest.json")}
    assert stored <= synced, stored - synced
    assert any(".manifest.json." in p for p in synced)  # the manifest's temp file, before its rename
    assert pkg in synced and str(Path(pkg) / "files") in synced
    manifest_at = next(i for i, (k, p) in enumerate(log) if k == "replace" and p.endswith("manifest.json"))
    assert manifest_at < marker_at
    assert any(k == "fsync" and ".SUCCESS.marker." in p for k, p in log[manifest_at:marker_at])  # its temp file
    assert ("fsync", pkg) in log[marker_at:]  # and the directory entry of the rename


# --- 6. a stray day outside the calendar stops nothing ---------------------------------------------------------


def test_a_stray_directory_outside_the_calendar_is_skipped_said_and_never_deleted(tmp_path, webhook):
    root, dest = tmp_path / "data", UPath(tmp_path / "backups")
    day = date(2026, 3, 3)
    before = small_day(root, day)
    stray = root / "track_a" / "date=2017-05-05" / "slot=0900" / "snapshot.parquet"
    lake.write_table_atomic(stray, pa.table({"code": ["1"]}))
    ev = EventLog(root)
    now = datetime(2026, 3, 3, 22, 0, tzinfo=KST)
    assert [p.day for p in backup.pending(root, dest, KRX, now)] == [day]
    assert backup.run(root, dest, KRX, day, events=ev).files == len(before)
    out = retention.apply(root, dest, KRX, date(2026, 3, 12), RetentionPolicy(), events=ev)
    assert str(day) in out.deleted and out.strays == {"2017-05-05": 1}
    assert stray.exists()
    said = [e for e in read_events(root, datetime.now(KST).date()) if e["event_type"] == "day_outside_calendar"]
    assert said and said[-1]["day"] == "2017-05-05"
    assert any("2017-05-05" in h["text"] for h in webhook)


# --- 13. retention never runs ahead of the clock ----------------------------------------------------------------


@pytest.mark.parametrize(
    "today,why", [("2099-01-01", "later than tomorrow"), ("2026W011", "date"), (None, "later than tomorrow")]
)
def test_retention_job_refuses_a_today_from_the_future(tmp_path, monkeypatch, today, why):
    from observer_assets.backup.assets import retention_job

    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OBSERVER_BACKUP_URL", str(tmp_path / "backups"))
    (tmp_path / "data").mkdir()
    if today is None:
        today = (datetime.now(KST).date() + timedelta(days=2)).isoformat()
    with dg.instance_for_test() as inst:
        res = retention_job.execute_in_process(
            instance=inst, raise_on_error=False, run_config={"ops": {"apply_retention": {"config": {"today": today}}}}
        )
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert why in failure.step_failure_data.error.message
    with pytest.raises(retention.RetentionDayError, match="outside the calendar"):
        retention.check_today(KRX, date(2015, 1, 2), now=datetime(2015, 1, 2, tzinfo=KST))


def test_the_cli_carries_on_past_a_stray_day_and_refuses_a_today_beyond_the_clock(tmp_path):
    root, dest = tmp_path / "data", tmp_path / "backups"
    day = date(2026, 3, 3)
    small_day(root, day)
    lake.write_table_atomic(
        root / "track_a" / "date=2017-05-05" / "slot=0900" / "snapshot.parquet", pa.table({"c": [1]})
    )
    env = {**os.environ, "OBSERVER_DATA_DIR": str(root), "OBSERVER_BACKUP_URL": str(dest), "OBSERVER_CALENDAR": "krx"}
    env.pop("OBSERVER_ALERT_WEBHOOK", None)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "observer_assets.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    r = cli("backup")  # every pending day; the stray one is said, not fatal
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "2017-05-05" in r.stderr  # the alert's log line names it
    assert package.read_state(UPath(dest), day).committed
    for bad in ("2099-01-01", "2015-01-02"):
        r = cli("retention", "--today", bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert (root / "track_a" / "date=2017-05-05").exists()
