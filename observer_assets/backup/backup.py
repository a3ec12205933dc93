"""A day's backup end to end: find its files, re-verify or rewrite its package, record the outcome.

Shared by the Dagster asset, the CLI and the retention job, so every path records the same events:
``backup_succeeded`` / ``backup_verified`` (unchanged package re-read and matched) / ``backup_failed`` /
``backup_verify_failed`` (a committed package no longer matches: its marker is withdrawn) / ``backup_restored``.
A failure also makes the day an anomaly day (docs/collector-rules.md §9: a backup failure of any kind), which extends its
retention, and the caller raises so the run fails and the alert sensor speaks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from upath import UPath

from observer_assets.backup import package
from observer_assets.backup.daysets import LocalFile, Tree, by_package, covered_days, outside_calendar, scan
from observer_assets.backup.settings import config_snapshot, local_path, redact_url
from observer_assets.monitoring import alerts
from observer_assets.track_b.capture import write_anomaly
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.events import EventLog
from observer_resources.storage.layout import anomaly_path, verdict_path

_DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
BACKUP_AT = time(21, 0)  # docs/collector-rules.md §12: daily at 21:00 KST, after the session and the evening compaction


@dataclass
class Pending:
    day: date
    reason: str  # "no SUCCESS.marker" | "changed since backup: …" | "marker does not match manifest"
    fingerprint: str  # of the local files' names, sizes and mtimes: one request per distinct state


def local_files(root: Path | Tree, dest: UPath) -> list[LocalFile]:
    lp = local_path(dest)
    return scan(root, skip=[lp] if lp is not None else [])


def day_files(root: Path | Tree, dest: UPath, cal: MarketCalendar, day: date) -> list[LocalFile]:
    return by_package(cal, local_files(root, dest)).get(day, [])


def report_strays(
    root: Path | Tree, dest: UPath, cal: MarketCalendar, *, events: EventLog, log: Any = None
) -> dict[str, int]:
    """Days with local files the calendar cannot place (a stray ``date=2017-05-05`` directory, a day past the
    table): skipped by backup and retention, never deleted, and said once per run with an event and an alert."""
    stray = outside_calendar(cal, local_files(root, dest))
    if not stray:
        return {}
    out = {d.isoformat(): len(fs) for d, fs in sorted(stray.items())}
    for d, fs in sorted(stray.items()):
        events.emit(
            "day_outside_calendar",
            day=d.isoformat(),
            files=len(fs),
            bytes=sum(f.size for f in fs),
            example=fs[0].rel,
            severity="major",
            note="no trading day can carry these files: not backed up, not deleted",
        )
    alerts.send(
        f"[observer] {len(out)} day(s) of local files lie outside the calendar and are neither backed up "
        f"nor deleted: {', '.join(list(out)[:10])} (e.g. {stray[min(stray)][0].rel})",
        logger=log,
    )
    return out


def fingerprint(files: list[LocalFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        h.update(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def anomaly_rules(root: Path | Tree, days: list[date]) -> list[str]:
    """Rules that made any covered day an anomaly day: the marker file and the gap report's verdict.
    (The verdict's path comes from the storage layout, not gaps.assets, so the CLI does not load Dagster.)"""
    tree = Tree.of(root)
    rules: set[str] = set()
    for d in days:
        ap = anomaly_path(tree.local, d)
        if ap.exists():
            try:
                doc = json.loads(ap.read_text(encoding="utf-8"))
                rules |= {str(r.get("rule")) for r in doc.get("rules", []) if isinstance(r, dict)} or {"marker"}
            except (OSError, ValueError):
                rules.add("marker_unreadable")
        vp = verdict_path(tree.lake, d)
        if vp.exists():
            try:
                v = json.loads(vp.read_text(encoding="utf-8"))
                if v.get("anomaly_day"):
                    rules |= {str(r.get("rule")) for r in v.get("rules_fired", []) if isinstance(r, dict)}
            except (OSError, ValueError):
                rules.add("verdict_unreadable")
    return sorted(rules)


def pending(
    root: Path | Tree, dest: UPath, cal: MarketCalendar, now: datetime, *, today_if_changed: bool = True
) -> list[Pending]:
    """Days with local data whose package is missing, uncommitted or older than the local files, oldest first.
    Today counts only from 21:00 KST on: before that its data is still being collected. With
    `today_if_changed=False` (the catch-up sensor) today counts only while it has no committed package: today's event
    log keeps growing after the package (each backup and retention run writes its own event into it), and chasing
    it every 10 minutes would never settle; tomorrow's run packages today's final state."""
    now = now.astimezone(KST)
    out = []
    for day, files in sorted(by_package(cal, local_files(root, dest)).items()):
        if day > now.date() or (day == now.date() and now.time() < BACKUP_AT):
            continue
        st = package.read_state(dest, day)
        if st.manifest is None or st.marker is None:
            reason = "no SUCCESS.marker"
        elif not st.committed:
            reason = "SUCCESS.marker does not match manifest.json"
        else:
            diff = package.unchanged(st.manifest, files)
            if not diff or (day == now.date() and not today_if_changed):
                continue
            reason = f"changed since backup: {len(diff)} file(s), e.g. {diff[0]}"
        out.append(Pending(day, reason, fingerprint(files)))
    return out


def _problems(problems: list[tuple[str, str]], limit: int = 20) -> list[dict[str, str]]:
    return [{"file": p, "problem": w} for p, w in problems[:limit]]


def run(
    root: Path | Tree,
    dest: UPath,
    cal: MarketCalendar,
    day: date,
    *,
    events: EventLog,
    environ: Mapping[str, str] | None = None,
    on_written: Any = None,
) -> package.BackupResult:
    """Make `day`'s package current and verified. Raises BackupError (after recording it) when it cannot.

    A package that cannot be read, or whose manifest is unsound, is never reported as fine: it is
    ``backup_verify_failed`` (with an alert); when the day's files are still here it is set aside whole (evidence,
    nothing deleted) and a fresh package is written, otherwise the run fails."""
    where = redact_url(str(dest))
    files = day_files(root, dest, cal, day)
    st = package.read_state(dest, day)
    invalidated: list[tuple[str, str]] = []
    unsound = package.check_manifest(st.manifest) if st.manifest is not None else []
    lost_manifest = st.marker is not None and not st.manifest_exists
    if st.manifest_unreadable or unsound or lost_manifest:
        problems = unsound or [(package.MANIFEST, str(st.error) if st.error else "missing beside a SUCCESS.marker")]
        had_files = bool(files)
        mark_failed(
            root,
            dest,
            day,
            problems,
            events=events,
            what="backup_verify_failed",
            note="the package's manifest is missing, cannot be read or cannot be trusted",
        )
        invalidated = problems
        files = day_files(root, dest, cal, day)
        if not had_files:
            raise package.BackupError(
                f"backup {day}: the package at {where} has no readable, sound manifest and "
                "the day's files are no longer here to rebuild it; an operator must look at it",
                problems,
            )
        # its stored objects may be the only copy of something: the whole package moves aside, nothing is deleted
        aside = package.set_aside(dest, day, "; ".join(f"{p}: {w}" for p, w in problems[:5]))
        events.emit("backup_set_aside", day=day.isoformat(), moved_to=aside, destination=where, severity="critical")
        st = package.read_state(dest, day)
    elif st.committed and not package.unchanged(st.manifest, files):  # type: ignore[arg-type]
        v = package.verify(dest, day)
        if v.ok:
            m = st.manifest
            assert m is not None
            events.emit(
                "backup_verified",
                day=day.isoformat(),
                files=v.files,
                bytes=v.bytes,
                seconds=round(v.seconds, 3),
                destination=where,
            )
            return package.BackupResult(
                day,
                "unchanged",
                v.files,
                v.bytes,
                sum(e.stored_size for e in m.entries),
                v.seconds,
                m.carried_over,
                [],
                st.manifest_sha256,
            )
        invalidated = v.problems
        mark_failed(
            root,
            dest,
            day,
            v.problems,
            events=events,
            what="backup_verify_failed",
            note="a committed package no longer matches its manifest; its marker is withdrawn",
        )
        files = day_files(root, dest, cal, day)  # the anomaly marker just changed
    if not files and st.empty:
        events.emit("backup_succeeded", day=day.isoformat(), files=0, bytes=0, action="empty", destination=where)
        return package.BackupResult(day, "empty", 0, 0, 0, 0.0)
    covered = covered_days(cal, day)
    try:
        res = package.write(
            root,
            dest,
            day,
            files,
            covered=covered,
            anomaly_rules=anomaly_rules(root, covered),
            config=config_snapshot(environ),
            on_written=on_written,
        )
    except package.BackupError as e:
        mark_failed(root, dest, day, e.problems, events=events, what="backup_failed", note=str(e)[:500])
        raise
    except OSError as e:  # a full disk, a vanished mount, a refused upload: recorded, then the run fails
        mark_failed(
            root,
            dest,
            day,
            [("(destination)", f"{type(e).__name__}: {e}")],
            events=events,
            what="backup_failed",
            note=str(e)[:500],
        )
        raise package.BackupError(f"backup {day}: {type(e).__name__}: {e}", [("(destination)", str(e))]) from e
    res.invalidated = invalidated
    for v in res.versioned:  # the old bytes stay in the package; the change itself is worth a line in the story
        events.emit(
            "backup_file_versioned",
            day=day.isoformat(),
            destination=where,
            severity="minor" if v["kind"] == "appended" else "major",
            **v,
        )
    events.emit(
        "backup_succeeded",
        day=day.isoformat(),
        action=res.action,
        files=res.files,
        bytes=res.bytes,
        stored_bytes=res.stored_bytes,
        changed=len(res.changed),
        carried_over=res.carried_over,
        versioned=len(res.versioned),
        seconds=round(res.seconds, 3),
        manifest_sha256=res.manifest_sha256,
        destination=where,
        repaired=bool(invalidated or res.repaired),
    )
    return res


def verify_all(
    dest: UPath, root: Path | Tree, *, events: EventLog, days: list[date] | None = None, log: Any = None
) -> dict[str, Any]:
    """Re-read every committed package at the destination (the weekly sweep): a package that no longer matches
    loses its marker, is recorded as ``backup_verify_failed`` and alerted; the day then counts as unverified."""
    where = redact_url(str(dest))
    todo = committed_days(dest) if days is None else days
    ok: list[str] = []
    failed: dict[str, list[tuple[str, str]]] = {}
    read = 0
    for d in todo:
        v = package.verify(dest, d)
        read += v.bytes
        if v.ok:
            ok.append(d.isoformat())
            events.emit(
                "backup_verified",
                day=d.isoformat(),
                files=v.files,
                bytes=v.bytes,
                seconds=round(v.seconds, 3),
                destination=where,
                sweep=True,
            )
        else:
            failed[d.isoformat()] = v.problems
            mark_failed(
                root,
                dest,
                d,
                v.problems,
                events=events,
                what="backup_verify_failed",
                note="the weekly verification found the package changed; its marker is withdrawn",
                log=log,
            )
    events.emit(
        "backup_sweep_finished",
        days=len(todo),
        ok=len(ok),
        failed=sorted(failed),
        bytes=read,
        destination=where,
        severity="critical" if failed else "minor",
    )
    return {
        "days": len(todo),
        "ok": ok,
        "failed": {k: [f"{p}: {w}" for p, w in v[:20]] for k, v in failed.items()},
        "bytes": read,
    }


def package_days(dest: UPath) -> list[date]:
    """Every day directory at the destination (``YYYY-MM-DD``), oldest first; set-aside copies are not days."""
    if not dest.exists():
        return []
    out = []
    for p in dest.iterdir():
        if _DAY_DIR.match(p.name):
            try:
                out.append(date.fromisoformat(p.name))
            except ValueError:
                continue
    return sorted(out)


def committed_days(dest: UPath) -> list[date]:
    return [d for d in package_days(dest) if package.read_state(dest, d).committed]


def mark_failed(
    root: Path | Tree,
    dest: UPath,
    day: date,
    problems: list[tuple[str, str]],
    *,
    events: EventLog,
    what: str,
    note: str,
    log: Any = None,
) -> None:
    """Withdraw the marker, record the event, alert, and make the day an anomaly day (kept longer, never deleted)."""
    package.invalidate(dest, day, note)
    now = clock.now()
    events.emit(
        what,
        day=day.isoformat(),
        problems=_problems(problems),
        problem_count=len(problems),
        note=note,
        destination=redact_url(str(dest)),
        severity="critical",
    )
    write_anomaly(
        Tree.of(root).local, day, "backup_failure", {"event": what, "files": [p for p, _ in problems[:20]]}, now
    )
    named = "; ".join(f"{p}: {w}" for p, w in problems[:3])
    alerts.send(
        f"[observer] {what.replace('_', ' ')} for {day}: {note}. {len(problems)} problem(s): {named}", logger=log
    )
