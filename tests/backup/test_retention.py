"""Retention over simulated weeks of real KRX trading days, on real files with real backups.

The rules (docs/collector-rules.md §11): a day is kept 3 trading days, an anomaly day 7, a day without a verified backup
is never deleted, and at the 10-day cap such a day raises a critical alert every run instead; universe files
follow 14 days. The pure rules are checked without files; the fortnight runs the real writers, `backup.run` and
`retention.apply` day after day, with one backup that fails for real (an fsspec destination that corrupts the
Parquet bytes it is given, as a failing disk or bucket would; the package's own verification catches it), the
alert posted to a real HTTP server, and every deleted day restored byte for byte from its package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from datetime import date, datetime, time
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem
from upath import UPath

from observer_assets.backup import backup, package, retention
from observer_assets.backup import restore as restoring
from observer_assets.backup.retention import DayState, Decision
from observer_assets.backup.settings import _RETENTION_ENV, RetentionPolicy, SettingsError
from observer_assets.track_b.capture import write_anomaly
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import EventLog, events_path, read_events
from observer_resources.storage import lake
from observer_resources.storage.layout import anomaly_path

KRX = MarketCalendar("krx")
START = date(2026, 5, 18)  # a Monday; the following weeks hold two KRX holidays (2026-05-25, 2026-06-03)
DAYS = KRX.trading_days(START, date(2026, 6, 30))[:15]
POLICY = RetentionPolicy()
RETENTION_ENVS = tuple(_RETENTION_ENV.values())


def test_the_simulated_weeks_are_real_krx_trading_days():
    assert START.weekday() == 0
    assert DAYS[0] == START and DAYS[-1] == date(2026, 6, 9)
    assert date(2026, 5, 25) not in DAYS and date(2026, 6, 3) not in DAYS  # Buddha's birthday (sub.), election
    assert [retention.age(KRX, d, DAYS[-1]) for d in DAYS] == list(range(14, -1, -1))


# --- 1. the pure rules ------------------------------------------------------------------------------------


def _one(state: DayState, policy: RetentionPolicy = POLICY) -> Decision:
    out = retention.plan([state], policy)
    assert len(out) == 1 and out[0].day == state.day and out[0].universe == state.universe
    return out[0]


D0 = DAYS[0]


@pytest.mark.parametrize(
    ("age", "backed_up", "anomaly", "universe", "action", "why"),
    [
        (0, False, False, False, "keep", "age 0 < 3"),
        (2, True, False, False, "keep", "age 2 < 3"),
        (3, True, False, False, "delete", "backup verified"),
        (3, False, False, False, "keep", "no verified backup"),
        (2, True, True, False, "keep", "anomaly day age 2 < 7"),
        (6, True, True, False, "keep", "anomaly day age 6 < 7"),
        (7, True, True, False, "delete", "backup verified"),
        (7, False, True, False, "keep", "no verified backup"),
        (9, False, False, False, "keep", "no verified backup"),
        (9, False, True, False, "keep", "no verified backup"),
        (10, False, False, False, "blocked", "cap 10"),
        (10, False, True, False, "blocked", "cap 10"),
        (30, False, False, False, "blocked", "cap 10"),
        (10, True, False, False, "delete", "backup verified"),
        (13, True, False, True, "keep", "universe age 13 < 14"),
        (14, True, False, True, "delete", "backup verified"),
        (14, True, True, True, "delete", "backup verified"),  # universe follows its own rule on anomaly days too
        (13, False, False, True, "keep", "universe age 13 < 14"),
        (14, False, False, True, "blocked", "cap 14"),  # unbacked universe files alert too, at their own age
    ],
)
def test_plan_each_rule_and_boundary(age, backed_up, anomaly, universe, action, why):
    d = _one(DayState(D0, age, backed_up, anomaly, universe))
    assert d.action == action, d
    assert why in d.reason, d


def test_plan_over_a_fortnight_matches_the_rules_day_by_day():
    """Days 0..14 observed on each of the 15 days in turn: 3 anomaly days, 2 never backed up (one of them an
    anomaly day too); each day's decision must follow from its age alone."""
    anomaly = {DAYS[2], DAYS[5], DAYS[6]}
    unbacked = {DAYS[1], DAYS[6]}
    for t, today in enumerate(DAYS):
        states = []
        for i, d in enumerate(DAYS[: t + 1]):
            states += [
                DayState(d, t - i, d not in unbacked, d in anomaly),
                DayState(d, t - i, d not in unbacked, d in anomaly, universe=True),
            ]
        got = {(x.day, x.universe): x.action for x in retention.plan(reversed(states), POLICY)}
        assert len(got) == len(states)
        for i, d in enumerate(DAYS[: t + 1]):
            a = t - i
            keep = 7 if d in anomaly else 3
            if d in unbacked:
                want = "blocked" if a >= 10 else "keep"
                want_u = "keep"
            else:
                want = "delete" if a >= keep else "keep"
                want_u = "delete" if a >= 14 else "keep"
            assert got[(d, False)] == want, (today, d, a)
            assert got[(d, True)] == want_u, (today, d, a)
    # the decisions come out in day order whatever order the states came in
    out = retention.plan(reversed(states), POLICY)
    assert [(x.day, x.universe) for x in out] == sorted((x.day, x.universe) for x in out)


def test_plan_honours_a_configured_policy():
    p = RetentionPolicy(keep_days=1, anomaly_days=2, max_days=4, universe_days=5)
    assert _one(DayState(D0, 0, True, False), p).action == "keep"
    assert _one(DayState(D0, 1, True, False), p).action == "delete"
    assert _one(DayState(D0, 1, True, True), p).action == "keep"
    assert _one(DayState(D0, 2, True, True), p).action == "delete"
    assert _one(DayState(D0, 3, False, False), p).action == "keep"
    assert _one(DayState(D0, 4, False, False), p).action == "blocked"
    assert _one(DayState(D0, 4, True, False, universe=True), p).action == "keep"
    assert _one(DayState(D0, 5, True, False, universe=True), p).action == "delete"


@pytest.mark.parametrize(
    "kw",
    [
        dict(keep_days=0),
        dict(keep_days=-1),
        dict(universe_days=0),
        dict(keep_days=2.5),
        dict(max_days="10"),
        dict(keep_days=4, anomaly_days=3),
        dict(anomaly_days=11),
        dict(max_days=6),
    ],
)
def test_policy_rejects_impossible_values(kw):
    with pytest.raises(SettingsError, match="retention"):
        RetentionPolicy(**kw)


def test_policy_from_env_reads_every_variable_and_defaults():
    assert RetentionPolicy.from_env({}) == RetentionPolicy(3, 7, 10, 14)
    assert RetentionPolicy.from_env({v: "" for v in RETENTION_ENVS}) == RetentionPolicy(3, 7, 10, 14)
    env = {
        "OBSERVER_RETENTION_DAYS": " 2 ",
        "OBSERVER_RETENTION_ANOMALY_DAYS": "5",
        "OBSERVER_RETENTION_MAX_DAYS": "9",
        "OBSERVER_RETENTION_UNIVERSE_DAYS": "20",
    }
    assert RetentionPolicy.from_env(env) == RetentionPolicy(2, 5, 9, 20)


@pytest.mark.parametrize("var", RETENTION_ENVS)
@pytest.mark.parametrize("raw", ["abc", "2.5", "3 days", "0x3"])
def test_policy_from_env_names_the_variable_of_a_non_number(var, raw):
    with pytest.raises(SettingsError) as e:
        RetentionPolicy.from_env({var: raw})
    assert var in str(e.value) and repr(raw) in str(e.value)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("OBSERVER_RETENTION_DAYS", "0"),
        ("OBSERVER_RETENTION_MAX_DAYS", "-1"),
        ("OBSERVER_RETENTION_ANOMALY_DAYS", "2"),
        ("OBSERVER_RETENTION_MAX_DAYS", "5"),
    ],
)
def test_policy_from_env_names_the_variable_of_an_out_of_range_value(var, raw):
    with pytest.raises(SettingsError) as e:
        RetentionPolicy.from_env({var: raw})
    assert var in str(e.value)


# --- the lake of one simulated day -------------------------------------------------------------------------


def _at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), KST)


def write_day(root: Path, d: date, n: int) -> list[str]:
    """A small but complete day: Track A slots, raw and compacted Track B, the universe and the day's events."""
    rels = []
    for slot, k in (("0900", 0), ("0910", 1)):
        rel = f"track_a/date={d.isoformat()}/slot={slot}/snapshot.parquet"
        lake.write_table_atomic(
            root / rel, pa.table({"code": ["005930", "000660"], "price": [70000 + n * 100 + k, 180000 - n * 10 - k]})
        )
        rels.append(rel)
    for key in ("k1", "k2"):
        rel = f"raw/track_b/date={d.isoformat()}/key={key}/09.jsonl"
        lines = [
            json.dumps({"code": "005930", "seq": j, "price": 70000 + j, "day": d.isoformat(), "key": key})
            for j in range(5 + n)
        ]
        lake.write_bytes_atomic(root / rel, ("\n".join(lines) + "\n").encode())
        rels.append(rel)
    for hour in ("09", "10"):
        rel = f"track_b/date={d.isoformat()}/hour={hour}/ticks.parquet"
        lake.write_table_atomic(
            root / rel,
            pa.table({"code": ["005930"] * 3, "seq": [1, 2, 3 + n], "ts": [_at(d, int(hour), m) for m in (0, 1, 2)]}),
        )
        rels.append(rel)
    rel = f"universe/date={d.isoformat()}/universe.parquet"
    lake.write_table_atomic(root / rel, pa.table({"code": ["005930", "000660", f"{n:06d}"]}))
    rels.append(rel)
    ev = EventLog(root, source="test")
    ev.emit("ws_connected", at=_at(d, 8, 55), session_id=f"s{n}")
    ev.emit("ws_disconnect", at=_at(d, 15, 35), session_id=f"s{n}", reason="session closed")
    rels.append(events_path(root, d).relative_to(root).as_posix())
    return rels


class _FlipOpener(LocalFileOpener):
    """Writes the bytes given, except one bit of the first chunk: what a failing disk or bucket does."""

    _flipped = False

    def write(self, data):  # noqa: ANN001, ANN201
        if not self._flipped and len(data):
            b = bytearray(data)
            b[len(b) // 2] ^= 0x01
            data, self._flipped = bytes(b), True
        return self.f.write(data)


class CorruptingFS(LocalFileSystem):
    """A local destination that corrupts every Parquet file written to it (JSON and manifests pass intact)."""

    protocol = ("retentionflip",)

    def _open(self, path, mode="rb", block_size=None, **kw):  # noqa: ANN001, ANN202
        path = self._strip_protocol(path)
        if "w" in mode and path.endswith(".parquet"):
            self.makedirs(self._parent(path), exist_ok=True)
            return _FlipOpener(path, mode, fs=self, **kw)
        return super()._open(path, mode, block_size, **kw)


fsspec.register_implementation("retentionflip", CorruptingFS, clobber=True)


def corrupting_dest(dest_dir: Path) -> UPath:
    with warnings.catch_warnings():  # upath: "filesystem not explicitly implemented" (it is the local one)
        warnings.simplefilter("ignore", UserWarning)
        return UPath(f"retentionflip://{dest_dir}")


@pytest.fixture
def no_webhook(monkeypatch) -> None:
    monkeypatch.delenv("OBSERVER_ALERT_WEBHOOK", raising=False)
    for v in RETENTION_ENVS:
        monkeypatch.delenv(v, raising=False)


def is_ops_events(rel: str) -> bool:
    """The wall-clock day's event file (backup/retention events), long after the simulated weeks."""
    return rel.startswith("system/events/") and rel[14:22] > DAYS[-1].strftime("%Y%m%d")


def snapshot(root: Path, *, ops: bool = False) -> dict[str, bytes]:
    """Every file of the simulated lake (and, with `ops`, the wall-clock events too), by relative path."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if ops or not is_ops_events(rel):
                out[rel] = p.read_bytes()
    return out


def ops_events(root: Path, kinds: tuple[str, ...]) -> list[dict]:
    """Events the backup and retention code recorded (dated by the wall clock, not by the simulated day)."""
    today = datetime.now(KST).date()
    return [e for e in read_events(root, today) if e.get("event_type") in kinds]


def assert_restorable(dest: UPath, d: date, into: Path, expected: dict[str, bytes]) -> None:
    """The day's package restores into an empty directory, and every file in `expected` comes back byte for byte."""
    out = restoring.restore(dest, d, into)
    assert out["already_present"] == 0
    assert set(expected) <= set(out["files"])
    for rel, raw in expected.items():
        assert (into / rel).read_bytes() == raw, rel


# --- 2. a fortnight on real files --------------------------------------------------------------------------


FAIL = 1  # this day's backup fails: it becomes an anomaly day, is never deleted unbacked, blocks at age 10
ANOMALY = {3, 6}  # days with an anomaly marker from the capture


def test_fortnight_on_real_files_with_backups_an_anomaly_and_a_failed_backup(tmp_path, webhook, monkeypatch):
    for v in RETENTION_ENVS:
        monkeypatch.delenv(v, raising=False)
    root, dest_dir = tmp_path / "lake", tmp_path / "backups"
    dest = UPath(str(dest_dir))
    ev = EventLog(root)
    owned: dict[str, tuple[int, bool]] = {}  # lake path -> (sim day index, is universe)
    seen_deleted = seen_blocked = 0
    blocked_runs = []

    for t, today in enumerate(DAYS):
        # -- the day's data
        for rel in write_day(root, today, t):
            owned[rel] = (t, rel.startswith("universe/"))
        if t == 5:  # an event on the holiday before (a restart on 2026-05-25) travels with this day's package
            EventLog(root, source="test").emit("process_started", at=_at(date(2026, 5, 25), 10))
            owned[events_path(root, date(2026, 5, 25)).relative_to(root).as_posix()] = (t, False)
        if t in ANOMALY:
            p = write_anomaly(root, today, "ws_reconnects", {"reconnects": 23}, _at(today, 15, 31))
            owned[p.relative_to(root).as_posix()] = (t, False)

        # -- the evening backup
        if t == FAIL:
            with pytest.raises(package.BackupError) as e, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                backup.run(root, corrupting_dest(dest_dir), KRX, today, events=ev)
            bad = {p for p, _ in e.value.problems}
            assert f"track_a/date={today}/slot=0900/snapshot.parquet" in bad
            assert all(p.endswith(".parquet") for p in bad)
            failed = ops_events(root, ("backup_failed",))
            assert failed and failed[-1]["day"] == today.isoformat() and failed[-1]["severity"] == "critical"
            marker = json.loads(anomaly_path(root, today).read_text())
            assert "backup_failure" in {r["rule"] for r in marker["rules"]}
            owned[anomaly_path(root, today).relative_to(root).as_posix()] = (t, False)
            st = package.read_state(dest, today)
            assert st.manifest is not None and not st.committed  # the bytes went out; nothing was committed
            assert not package.verify(dest, today).ok
        else:
            res = backup.run(root, dest, KRX, today, events=ev)
            assert res.action == "written" and res.files == sum(1 for i, _ in owned.values() if i == t)
            assert package.verify(dest, today).ok

        # -- retention after the backup window
        before = snapshot(root)
        webhook.clear()
        out = retention.apply(root, dest, KRX, today, POLICY, events=ev)

        expected_present = set()
        for rel, (i, uni) in owned.items():
            a = t - i
            if uni:
                keep = a < 14
            elif i == FAIL:
                keep = True  # unbacked: never deleted
            else:
                keep = a < (7 if i in ANOMALY else 3)
            if keep:
                expected_present.add(rel)
        after = snapshot(root)
        present = {rel for rel in after if rel in owned}
        assert present == expected_present, (today, sorted(present ^ expected_present))
        assert set(after) == present  # nothing else in the lake but the wall-clock day's ops events

        removed = {rel for rel in before if rel in owned and rel not in after}
        want_labels = {f"{DAYS[owned[r][0]]}{' universe' if owned[r][1] else ''}" for r in removed}
        assert set(out.deleted) == want_labels, today
        assert out.kept == {}

        # every deletion is an event with its files and bytes, and the day is still in its backup
        deleted_events = ops_events(root, ("retention_deleted",))[seen_deleted:]
        seen_deleted += len(deleted_events)
        assert len(deleted_events) == len(want_labels)
        for evt in deleted_events:
            d, uni = date.fromisoformat(evt["day"]), bool(evt["universe"])
            gone = {r for r in removed if DAYS[owned[r][0]] == d and owned[r][1] == uni}
            assert sorted(evt["paths"]) == sorted(gone)
            assert evt["files"] == len(gone) and evt["bytes"] == sum(len(before[r]) for r in gone) > 0
            assert_restorable(dest, d, tmp_path / "restored" / f"{t}-{evt['day']}-{uni}", {r: before[r] for r in gone})

        # the failed day: an anomaly day, kept while unbacked, and past the cap blocked with an alert every run
        if t >= FAIL:
            fd = next(x for x in out.decisions if x.day == DAYS[FAIL] and not x.universe)
            fs = next(s for s in retention.states(root, dest, KRX, today)[0] if s.day == DAYS[FAIL] and not s.universe)
            assert fs.anomaly and not fs.backed_up and fs.age == t - FAIL
            age = t - FAIL
            blocked_events = ops_events(root, ("retention_blocked",))[seen_blocked:]
            seen_blocked += len(blocked_events)
            if age >= 10:
                blocked_runs.append(t)
                assert fd.action == "blocked" and out.blocked == [DAYS[FAIL].isoformat()]
                assert [(b["day"], b["severity"]) for b in blocked_events] == [(DAYS[FAIL].isoformat(), "critical")]
                assert blocked_events[0]["files"] == sum(1 for i, u in owned.values() if i == FAIL and not u)
                assert len(webhook) == 1 and DAYS[FAIL].isoformat() in webhook[0]["text"], webhook
            else:
                assert fd.action == "keep" and out.blocked == [] and blocked_events == [] and webhook == []
                assert f"anomaly day age {age}" in fd.reason
                if age >= 7:
                    assert "no verified backup" in fd.reason

    assert blocked_runs == [11, 12, 13, 14]
    # what is left after three weeks: the last three days, the unbacked day, and the universe of days 1..14
    final = snapshot(root)
    assert {DAYS[owned[r][0]] for r in final if r in owned and not owned[r][1]} == {DAYS[FAIL], *DAYS[12:]}
    assert {DAYS[owned[r][0]] for r in final if r in owned and owned[r][1]} == set(DAYS[1:])

    # the operator repairs the destination: the day's backup now succeeds and the next run deletes it, no alert
    res = backup.run(root, dest, KRX, DAYS[FAIL], events=ev)
    assert res.action == "written" and package.verify(dest, DAYS[FAIL]).ok
    assert package.read_state(dest, DAYS[FAIL]).manifest.anomaly_rules == ["backup_failure"]
    before = snapshot(root)
    webhook.clear()
    out = retention.apply(root, dest, KRX, DAYS[-1], POLICY, events=ev)
    assert set(out.deleted) == {DAYS[FAIL].isoformat()} and out.blocked == [] and webhook == []
    gone = {r for r, (i, u) in owned.items() if i == FAIL and not u}
    assert not any((root / r).exists() for r in gone)
    evt = ops_events(root, ("retention_deleted",))[-1]
    assert evt["day"] == DAYS[FAIL].isoformat() and evt["files"] == len(gone)
    assert evt["bytes"] == sum(len(before[r]) for r in gone)
    assert_restorable(dest, DAYS[FAIL], tmp_path / "restored" / "repaired", {r: before[r] for r in gone})


# --- 3. dry run ----------------------------------------------------------------------------------------------


def _build(root: Path, dest: UPath, n: int, *, anomaly=(), unbacked=(), start: int = 0) -> None:  # noqa: ANN001
    ev = EventLog(root)
    for t, d in enumerate(DAYS[start:n], start=start):
        write_day(root, d, t)
        if t in anomaly:
            write_anomaly(root, d, "manual", {"reason": "operator flag"}, _at(d, 16))
        if t not in unbacked:
            assert backup.run(root, dest, KRX, d, events=ev).action == "written"


def test_dry_run_deletes_nothing_and_reports_what_a_real_run_deletes(tmp_path, no_webhook):
    root, dest = tmp_path / "lake", UPath(str(tmp_path / "backups"))
    _build(root, dest, 7, anomaly={1}, unbacked={0})
    today = DAYS[6]
    want = {DAYS[2].isoformat(), DAYS[3].isoformat()}  # day 0 unbacked, day 1 an anomaly day at age 5
    ev = EventLog(root)
    start = snapshot(root)
    n_deleted = len(ops_events(root, ("retention_deleted",)))

    dry = retention.apply(root, dest, KRX, today, POLICY, events=ev, dry_run=True)
    assert dry.dry_run and set(dry.deleted) == want
    assert snapshot(root) == start  # nothing deleted, changed or added
    assert len(ops_events(root, ("retention_deleted",))) == n_deleted

    # the CLI, as an operator runs it
    env = {k: v for k, v in os.environ.items() if k not in RETENTION_ENVS and k != "OBSERVER_ALERT_WEBHOOK"}
    env.update(OBSERVER_DATA_DIR=str(root), OBSERVER_BACKUP_URL=str(tmp_path / "backups"), OBSERVER_CALENDAR="krx")
    cli = subprocess.run(
        [sys.executable, "-m", "observer_assets.cli", "retention", "--dry-run", "--today", today.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["dry_run"] is True and set(summary["deleted_days"]) == want
    plan = dict(tuple(ln.split("\t")[:2]) for ln in lines[:-1])
    assert {d for d, a in plan.items() if a == "delete"} == want
    assert plan[DAYS[0].isoformat()] == "keep" and plan[DAYS[1].isoformat()] == "keep"
    assert snapshot(root) == start
    assert len(ops_events(root, ("retention_deleted",))) == n_deleted

    real = retention.apply(root, dest, KRX, today, POLICY, events=ev)
    assert not real.dry_run and set(real.deleted) == want and real.kept == {}
    for label, info in dry.deleted.items():
        assert real.deleted[label]["files"] == info["files"] and real.deleted[label]["bytes"] == info["bytes"]
        assert sorted(real.deleted[label]["paths"]) == sorted(info["paths"])
        assert not any((root / p).exists() for p in info["paths"])
    assert summary["deleted_files"] == real.summary()["deleted_files"]
    assert summary["deleted_bytes"] == real.summary()["deleted_bytes"]
    assert len(ops_events(root, ("retention_deleted",))) == n_deleted + len(want)


# --- 4. a file changed after its backup ----------------------------------------------------------------------


def test_a_day_changed_after_its_backup_is_kept_until_backed_up_again(tmp_path, no_webhook):
    root, dest = tmp_path / "lake", UPath(str(tmp_path / "backups"))
    _build(root, dest, 5)
    ev = EventLog(root)
    d0, d1, today = DAYS[0], DAYS[1], DAYS[4]  # ages 4 and 3: both due
    ev_rel = events_path(root, d0).relative_to(root).as_posix()
    EventLog(root, source="test").emit("late_note", at=_at(d0, 17), note="appended after the backup")
    late_rel = f"track_a/date={d1.isoformat()}/slot=1530/snapshot.parquet"
    lake.write_table_atomic(root / late_rel, pa.table({"code": ["005930"], "price": [71000]}))
    start = snapshot(root)

    out = retention.apply(root, dest, KRX, today, POLICY, events=ev)
    assert out.deleted == {}
    assert ev_rel in out.kept[d0.isoformat()] and "changed after" in out.kept[d0.isoformat()]
    assert late_rel in out.kept[d1.isoformat()] and "not in the backup" in out.kept[d1.isoformat()]
    assert snapshot(root) == start
    kept = ops_events(root, ("retention_kept",))
    assert sorted(k["day"] for k in kept) == [d0.isoformat(), d1.isoformat()]
    assert package.read_state(dest, d0).committed and package.read_state(dest, d1).committed  # packages are fine
    assert not ops_events(root, ("retention_deleted", "backup_verify_failed"))

    for d in (d0, d1):
        res = backup.run(root, dest, KRX, d, events=ev)
        assert res.action == "written"
    assert package.read_state(dest, d0).manifest.by_path()[ev_rel].size == len(start[ev_rel])
    assert late_rel in package.read_state(dest, d1).manifest.by_path()

    out = retention.apply(root, dest, KRX, today, POLICY, events=ev)
    assert set(out.deleted) == {d0.isoformat(), d1.isoformat()} and out.kept == {}
    assert not (root / ev_rel).exists() and not (root / late_rel).exists()
    assert_restorable(dest, d0, tmp_path / "r0", {ev_rel: start[ev_rel]})
    assert_restorable(dest, d1, tmp_path / "r1", {late_rel: start[late_rel]})


def test_dry_run_predicts_the_pre_deletion_checks(tmp_path, no_webhook):
    root, dest = tmp_path / "lake", UPath(str(tmp_path / "backups"))
    _build(root, dest, 4)
    EventLog(root, source="test").emit("late_note", at=_at(DAYS[0], 17), note="appended after the backup")
    dry = retention.apply(root, dest, KRX, DAYS[3], POLICY, events=EventLog(root), dry_run=True)
    real = retention.apply(root, dest, KRX, DAYS[3], POLICY, events=EventLog(root))
    assert real.deleted == {} and DAYS[0].isoformat() in real.kept
    assert set(dry.deleted) == set(real.deleted)


# --- 5. a package gone bad at the destination ------------------------------------------------------------------


def test_a_package_that_no_longer_verifies_is_caught_before_deletion(tmp_path, webhook, monkeypatch):
    for v in RETENTION_ENVS:
        monkeypatch.delenv(v, raising=False)
    root, dest = tmp_path / "lake", UPath(str(tmp_path / "backups"))
    _build(root, dest, 4)
    d0 = DAYS[0]
    ev = EventLog(root)
    stored = tmp_path / "backups" / d0.isoformat() / "files" / f"track_b/date={d0.isoformat()}/hour=09/ticks.parquet"
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # bit rot at the destination, after the package was committed
    stored.write_bytes(bytes(raw))
    start = snapshot(root)

    out = retention.apply(root, dest, KRX, DAYS[3], POLICY, events=ev)
    assert out.deleted == {} and "checksum mismatch" in out.kept[d0.isoformat()]
    assert snapshot(root).items() >= start.items()  # nothing deleted (an anomaly marker was added)
    st = package.read_state(dest, d0)
    assert not st.committed and list((tmp_path / "backups" / d0.isoformat()).glob("INVALID-*.json"))
    bad = ops_events(root, ("backup_verify_failed",))
    assert [b["day"] for b in bad] == [d0.isoformat()] and bad[0]["severity"] == "critical"
    assert f"track_b/date={d0.isoformat()}/hour=09/ticks.parquet" in {p["file"] for p in bad[0]["problems"]}
    assert "backup_failure" in {r["rule"] for r in json.loads(anomaly_path(root, d0).read_text())["rules"]}
    assert len(webhook) == 1 and d0.isoformat() in webhook[0]["text"]

    # now an unbacked anomaly day: kept without a fresh alert, repaired by the next backup, deleted at age 7
    webhook.clear()
    out = retention.apply(root, dest, KRX, DAYS[3], POLICY, events=ev)
    assert out.deleted == {} and out.kept == {} and webhook == []
    assert backup.run(root, dest, KRX, d0, events=ev).action == "written" and package.verify(dest, d0).ok
    _build(root, dest, 8, start=4)
    assert retention.apply(root, dest, KRX, DAYS[6], POLICY, events=ev).deleted.keys() == {
        DAYS[i].isoformat() for i in (1, 2, 3)
    }
    before = snapshot(root)
    out = retention.apply(root, dest, KRX, DAYS[7], POLICY, events=ev)
    assert set(out.deleted) == {d0.isoformat(), DAYS[4].isoformat()} and webhook == []
    gone = {r: b for r, b in before.items() if r not in snapshot(root)}
    d0_paths = set(out.deleted[d0.isoformat()]["paths"])
    assert {r for r in gone if d0.isoformat() in r or d0.strftime("%Y%m%d") in r} == d0_paths
    assert f"system/anomaly/{d0:%Y%m%d}.json" in d0_paths  # the marker the failed check wrote went with its day
    assert_restorable(dest, d0, tmp_path / "r0", {r: gone[r] for r in d0_paths})
