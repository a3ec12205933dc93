"""Retention: local days go only after their backup is proven, and never before their time.

Rules (docs/collector-rules.md §11), ages in trading days after the day (0 = today):
- a day is kept ``keep_days`` (3), an anomaly day ``anomaly_days`` (7);
- a day without a committed backup is never deleted; at ``max_days`` (10) it raises a critical alert every run
  instead (deleting unbacked data is irreversible; the operator decides);
- universe files follow ``universe_days`` (14), under the same backup rule;
- before anything is deleted the package is re-read and every local file is hashed and found in the manifest
  with the same bytes; a mismatch withdraws the marker (backup_verify_failed) and keeps the day.

``plan`` is a pure function of the day states, so the rules are tested over simulated fortnights without files;
``apply`` carries a plan out and records every deletion as a ``retention_deleted`` event (day, files, bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from upath import UPath

from observer_assets.backup import backup, package
from observer_assets.backup.daysets import LocalFile, Tree, by_package, outside_calendar
from observer_assets.backup.settings import RetentionPolicy, redact_url
from observer_assets.monitoring import alerts
from observer_resources import clock
from observer_resources.calendar import KST, CalendarRangeError
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import EventLog

Action = Literal["keep", "delete", "blocked"]


@dataclass(frozen=True)
class DayState:
    day: date  # the trading day (package day)
    age: int  # trading days after it, up to today
    backed_up: bool  # a committed package exists
    anomaly: bool
    universe: bool = False  # this state is the day's universe files (their own, longer rule)


@dataclass(frozen=True)
class Decision:
    day: date
    action: Action
    reason: str
    universe: bool = False


def age(cal: MarketCalendar, day: date, today: date) -> int:
    """Sessions after `day` up to and including today (today 0); non-trading `today` counts as the next session's eve."""
    if day >= today:
        return 0
    return len(cal.trading_days(day, today)) - (1 if cal.is_trading_day(day) else 0)


def plan(states: Iterable[DayState], policy: RetentionPolicy) -> list[Decision]:
    out = []
    for s in sorted(states, key=lambda s: (s.day, s.universe)):
        if s.universe:
            keep = policy.universe_days
        else:
            keep = policy.anomaly_days if s.anomaly else policy.keep_days
        what = "anomaly day" if s.anomaly and not s.universe else ("universe" if s.universe else "day")
        if s.age < keep:
            out.append(Decision(s.day, "keep", f"{what} age {s.age} < {keep}", s.universe))
        elif not s.backed_up:
            cap = max(keep, policy.max_days)
            if s.age >= cap:
                out.append(
                    Decision(
                        s.day,
                        "blocked",
                        f"{what} age {s.age} >= cap {cap} and no verified backup: "
                        "kept; deleting unbacked data needs an operator",
                        s.universe,
                    )
                )
            else:
                out.append(Decision(s.day, "keep", f"{what} age {s.age} >= {keep} but no verified backup", s.universe))
        else:
            out.append(Decision(s.day, "delete", f"{what} age {s.age} >= {keep}, backup verified", s.universe))
    return out


@dataclass
class Outcome:
    decisions: list[Decision]
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)  # day -> {files, bytes}
    kept: dict[str, str] = field(default_factory=dict)  # day -> why (including failed checks before deletion)
    blocked: list[str] = field(default_factory=list)
    dry_run: bool = False
    strays: dict[str, int] = field(default_factory=dict)  # days outside the calendar: skipped, never deleted

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted_days": sorted(self.deleted),
            "deleted_files": sum(v["files"] for v in self.deleted.values()),
            "deleted_bytes": sum(v["bytes"] for v in self.deleted.values()),
            "kept": self.kept,
            "blocked": self.blocked,
            "outside_calendar": self.strays,
        }


def states(
    root: Path | Tree, dest: UPath, cal: MarketCalendar, today: date, files: Sequence[LocalFile] | None = None
) -> tuple[list[DayState], dict[tuple[date, bool], list[LocalFile]]]:
    """Day states from the local lake and the destination's markers (no file is read but manifests/markers)."""
    files = backup.local_files(root, dest) if files is None else files
    groups: dict[tuple[date, bool], list[LocalFile]] = {}
    for day, fs in by_package(cal, files).items():
        for f in fs:
            groups.setdefault((day, f.is_universe), []).append(f)
    out = []
    for (day, uni), _fs in sorted(groups.items()):
        st = package.read_state(dest, day)
        rules = backup.anomaly_rules(root, [d for d in {f.day for f in _fs} | {day}])
        out.append(DayState(day, age(cal, day, today), st.committed, bool(rules), uni))
    return out, groups


def _check(root: Path | Tree, dest: UPath, day: date, files: Sequence[LocalFile]) -> tuple[bool, list[tuple[str, str]]]:
    """(package verified, problems that forbid deleting `files`): the package must verify and hold every one of
    them, byte for byte."""
    v = package.verify(dest, day)
    if not v.ok:
        return False, v.problems
    st = package.read_state(dest, day)
    known = st.manifest.by_path() if st.manifest else {}
    problems = []
    tree = Tree.of(root)
    for f in files:
        e = known.get(f.rel)
        if e is None:
            problems.append((f.rel, "not in the backup (written after it)"))
            continue
        n, sha = package.hash_file(tree / f.rel)
        if n != e.size or sha != e.sha256:
            problems.append((f.rel, "local bytes differ from the backup (changed after it)"))
    return True, problems


def _remove(root: Path | Tree, files: Sequence[LocalFile]) -> int:
    tree = Tree.of(root)
    freed = 0
    dirs = set()
    for f in files:
        p = tree / f.rel
        try:
            p.unlink()  # an object store has no folders to tidy: a prefix goes with its last object
        except FileNotFoundError:
            continue
        freed += f.size
        if isinstance(p, Path):
            dirs.add(p.parent)
    root = tree.local
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):  # empty partition folders go too
        while d != root and d.is_relative_to(root):
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
    return freed


def apply(
    root: Path | Tree,
    dest: UPath,
    cal: MarketCalendar,
    today: date,
    policy: RetentionPolicy,
    *,
    events: EventLog,
    dry_run: bool = False,
    log: Any = None,
) -> Outcome:
    check_today(cal, today)
    sts, groups = states(root, dest, cal, today)
    decisions = plan(sts, policy)
    out = Outcome(decisions, dry_run=dry_run)
    where = redact_url(str(dest))
    for d in decisions:
        label = f"{d.day.isoformat()}{' universe' if d.universe else ''}"
        fs = groups[(d.day, d.universe)]
        if d.action == "keep":
            continue
        if d.action == "blocked":
            out.blocked.append(label)
            if dry_run:
                continue
            events.emit(
                "retention_blocked",
                day=d.day.isoformat(),
                reason=d.reason,
                files=len(fs),
                bytes=sum(f.size for f in fs),
                severity="critical",
            )
            alerts.send(
                f"[observer] retention: {label} is past the {policy.max_days}-day cap with no verified "
                f"backup ({len(fs)} files kept). {d.reason}",
                logger=log,
            )
            continue
        pkg_ok, problems = _check(root, dest, d.day, fs)  # read-only: a dry run predicts what a real run does
        if problems:
            why = "; ".join(f"{p}: {w}" for p, w in problems[:5])
            out.kept[label] = why
            if dry_run:
                continue
            if not pkg_ok:
                backup.mark_failed(
                    root,
                    dest,
                    d.day,
                    problems,
                    events=events,
                    what="backup_verify_failed",
                    note=f"retention found the package of {d.day} bad; the day is kept",
                    log=log,
                )
            else:
                events.emit("retention_kept", day=d.day.isoformat(), reason=why, files=len(problems))
            continue
        if dry_run:
            out.deleted[label] = {"files": len(fs), "bytes": sum(f.size for f in fs), "paths": [f.rel for f in fs]}
            continue
        freed = _remove(root, fs)
        out.deleted[label] = {"files": len(fs), "bytes": freed, "paths": [f.rel for f in fs]}
        events.emit(
            "retention_deleted",
            day=d.day.isoformat(),
            universe=d.universe,
            files=len(fs),
            bytes=freed,
            paths=[f.rel for f in fs],
            reason=d.reason,
            backup=where,
        )
    if not dry_run:
        out.strays = backup.report_strays(root, dest, cal, events=events, log=log)
    else:
        out.strays = {d.isoformat(): len(fs) for d, fs in outside_calendar(cal, backup.local_files(root, dest)).items()}
    return out


class RetentionDayError(ValueError):
    """A `today` retention must not act on (the UI has no login: a far-future day would delete everything)."""


def check_today(cal: MarketCalendar, today: date, now: datetime | None = None) -> None:
    """Refuse a `today` later than tomorrow (KST) or outside the calendar's table, with a one-line reason."""
    now = (now or clock.now()).astimezone(KST)
    if today > now.date() + timedelta(days=1):
        raise RetentionDayError(
            f"today={today} is later than tomorrow ({now.date() + timedelta(days=1)}): retention "
            "never runs ahead of the clock"
        )
    try:
        cal.is_trading_day(today)
    except CalendarRangeError as e:
        raise RetentionDayError(
            f"today={today} is outside the calendar ({e}); run `make calendar` to extend it"
        ) from None
