"""The `observer` command: operator utilities that need no Dagster instance.

Exit codes: 0 done, 1 refused or failed (a checksum mismatch, a failed backup: the message names the file),
2 bad input (a malformed date, bad configuration): one line on stderr naming the argument or variable and what is
wrong with it, never a traceback. Commands that read the lake refuse an ``OBSERVER_DATA_DIR`` that does not exist or
is not a directory rather than report an empty lake; only ``make run`` creates it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime

from observer_resources import clock
from observer_resources.calendar import CalendarDataError, CalendarRangeError, PhaseDataError
from observer_resources.calendar.market import CalendarConfigError, MarketCalendar, calendar_from_env
from observer_resources.dates import DateFormatError, parse_iso_date
from observer_resources.kis.errors import KisConfigError


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (and exit 2) like every other bad input here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _calendar(args: argparse.Namespace) -> int:
    d = _day(args.day, "calendar")
    if d is None:
        return 2
    cal = MarketCalendar(args.calendar) if args.calendar else calendar_from_env()
    try:
        s = cal.session(d)
        slots = cal.track_a_slots(d)
        venues = cal.venues(d)
        breaks = cal.breaks(d)
    except CalendarRangeError as e:
        print(f"observer calendar: {e}", file=sys.stderr)
        return 2
    except PhaseDataError as e:  # every problem of the phases file, one line each
        for p in e.problems:
            print(f"observer calendar: {e.path}: {p}", file=sys.stderr)
        return 2
    out = {
        "date": d.isoformat(),
        "calendar": cal.mode,
        "trading_day": s is not None,
        "open": s.open.isoformat() if s else None,
        "close": s.close.isoformat() if s else None,
        "note": s.note if s else None,
        "track_a_slots": [t.strftime("%H:%M") for t in slots],
        "venues": {
            name: {
                "schedule": v.effective.isoformat(),
                "confirmed": v.confirmed,
                "special_day": v.special,
                "window": {"start": _hms(v.window[0]), "end": _hms(v.window[1])},
                "phases": [
                    {"name": p.name, "kind": p.kind, "start": _hms(p.start), "end": _hms(p.end)} for p in v.phases
                ],
                "sources": list(v.sources),
            }
            for name, v in venues.items()
        },
        "breaks": [
            {"venue": b.venue, "after": b.after, "before": b.before, "start": _hms(b.start), "end": _hms(b.end)}
            for b in breaks
        ],
    }
    print(json.dumps(out, ensure_ascii=False))
    return 0


def _hms(t: datetime) -> str:
    """HH:MM, with :SS only when the seconds matter (NXT's main market opens at 09:00:30)."""
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def _day(s: str, prog: str) -> date | None:
    try:
        return parse_iso_date(s)
    except DateFormatError as e:
        print(f"observer {prog}: {e}", file=sys.stderr)
        return None


def _ops_context(prog: str):  # noqa: ANN202 - (lake tree, dest, calendar, events) or None
    from observer_assets.backup.daysets import Tree
    from observer_assets.backup.settings import SettingsError, backup_dest
    from observer_resources.events import EventLog
    from observer_resources.storage import lake

    try:
        tree = Tree.from_env(lake.existing_local_dir())  # first: the backup destination's default is beside it
        dest, cal = backup_dest(), calendar_from_env()
    except (SettingsError, ValueError) as e:
        print(f"observer {prog}: {e}", file=sys.stderr)
        return None
    return tree, dest, cal, EventLog(tree.local)


def _backup(args: argparse.Namespace) -> int:

    from observer_assets.backup import backup, package

    ctx = _ops_context("backup")
    if ctx is None:
        return 2
    root, dest, cal, ev = ctx
    if args.day:
        d = _day(args.day, "backup")
        if d is None:
            return 2
        days = [d]
    else:
        days = [p.day for p in backup.pending(root, dest, cal, clock.now())]
        backup.report_strays(root, dest, cal, events=ev)
    rc = 0
    for d in days:
        try:
            r = backup.run(root, dest, cal, d, events=ev)
            print(
                json.dumps(
                    {
                        "day": d.isoformat(),
                        "action": r.action,
                        "files": r.files,
                        "bytes": r.bytes,
                        "stored_bytes": r.stored_bytes,
                        "seconds": round(r.seconds, 3),
                        "repaired": [p for p, _ in r.invalidated],
                    }
                )
            )
        except package.BackupError as e:
            print(f"observer backup: {e}", file=sys.stderr)
            rc = 1
    return rc


def _verify(args: argparse.Namespace) -> int:
    from observer_assets.backup import package

    ctx = _ops_context("verify")
    if ctx is None:
        return 2
    if args.all == bool(args.day):
        print("observer verify: give a day (YYYY-MM-DD) or --all", file=sys.stderr)
        return 2
    if args.all:
        from observer_assets.backup import backup

        root, dest, _, ev = ctx
        out = backup.verify_all(dest, root, events=ev)
        print(json.dumps(out, ensure_ascii=False))
        return 1 if out["failed"] else 0
    d = _day(args.day, "verify")
    if d is None:
        return 2
    v = package.verify(ctx[1], d)
    print(
        json.dumps(
            {
                "day": d.isoformat(),
                "ok": v.ok,
                "files": v.files,
                "versions": v.versions,
                "bytes": v.bytes,
                "problems": [{"file": p, "problem": w} for p, w in v.problems],
            },
            ensure_ascii=False,
        )
    )
    return 0 if v.ok else 1


def _restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from observer_assets.backup import restore as restoring
    from observer_assets.backup.daysets import Tree
    from observer_assets.backup.settings import redact_url

    ctx = _ops_context("restore")
    d = _day(args.day, "restore")
    if ctx is None or d is None:
        return 2
    root, dest, _, ev = ctx
    target = Path(args.to).resolve() if args.to else root
    where = target.lake if isinstance(target, Tree) else target
    try:
        out = restoring.restore(dest, d, target, overwrite=args.overwrite, version=args.version)
    except restoring.RestoreError as e:
        print(f"observer restore: {e}", file=sys.stderr)
        for p, w in e.problems:
            print(f"  {p}: {w}", file=sys.stderr)
        return 1
    if target == root:
        ev.emit(
            "backup_restored",
            day=d.isoformat(),
            files=out["restored"],
            already_present=out["already_present"],
            bytes=out["bytes"],
            version=out["version"],
            destination=redact_url(str(dest)),
        )
    print(json.dumps({k: v for k, v in out.items() if k != "files"}))
    from observer_assets.lake_migration import needs_migration

    if needs_migration(where):  # restored byte for byte; bringing it to the current layout is a separate step
        print(
            f"observer restore: {where} holds the earlier lake layout: "
            f"run `OBSERVER_DATA_DIR={where} observer lake migrate`",
            file=sys.stderr,
        )
    return 0


def _retention(args: argparse.Namespace) -> int:

    from observer_assets.backup import retention
    from observer_assets.backup.settings import RetentionPolicy, SettingsError

    ctx = _ops_context("retention")
    if ctx is None:
        return 2
    today = _day(args.today, "retention") if args.today else clock.now().date()
    if today is None:
        return 2
    try:
        policy = RetentionPolicy.from_env()
    except SettingsError as e:
        print(f"observer retention: {e}", file=sys.stderr)
        return 2
    root, dest, cal, ev = ctx
    try:
        retention.check_today(cal, today)
    except retention.RetentionDayError as e:
        print(f"observer retention: {e}", file=sys.stderr)
        return 2
    out = retention.apply(root, dest, cal, today, policy, events=ev, dry_run=args.dry_run)
    for dcn in out.decisions:
        print(f"{dcn.day}{' universe' if dcn.universe else ''}\t{dcn.action}\t{dcn.reason}")
    print(json.dumps(out.summary(), ensure_ascii=False))
    return 1 if out.blocked else 0


def _metrics(args: argparse.Namespace) -> int:
    import logging

    from observer_assets.monitoring.metrics import serve
    from observer_resources.kis.config import configs_from_env
    from observer_resources.storage import lake

    if not 0 <= args.port <= 65535:
        print(f"observer metrics: --port must be 0..65535, got {args.port}", file=sys.stderr)
        return 2
    # what the exporter reads, checked before it serves: a bad setting would only show as a scrape error later
    lake.existing_local_dir()
    calendar_from_env()
    configs_from_env()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(args.host, args.port, ready=lambda url: print(f"observer metrics on {url}", flush=True))
    except OSError as e:  # the port is taken, the address is not ours
        print(f"observer metrics: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1


def _lake_migrate(args: argparse.Namespace) -> int:
    from observer_assets.lake_migration import MigrationError, migrate
    from observer_resources.storage import lake

    root = lake.data_dir()
    try:
        rep = migrate(root, dry_run=args.dry_run)
    except MigrationError as e:
        print(f"observer lake migrate: {e}", file=sys.stderr)
        return 2
    for old, new in rep.moved:
        print(f"{'would move' if args.dry_run else 'moved'}\t{old}\t{new}")
    for rel in rep.rewritten:
        print(f"rewrote\t{rel}")
    for rel in rep.removed:
        print(f"removed empty\t{rel}")
    for old, new in rep.conflicts:
        print(f"conflict\t{old}\t{new} exists: left both in place", file=sys.stderr)
    print(json.dumps(rep.summary(), ensure_ascii=False))
    return 1 if rep.conflicts else 0


def _sql(args: argparse.Namespace) -> int:
    from observer_assets import lake_sql

    if args.init and args.sql is not None:
        print("observer sql: --init prints the views' script; give it no SQL", file=sys.stderr)
        return 2
    if args.max_rows < 1:
        print(f"observer sql: --max-rows must be at least 1, got {args.max_rows}", file=sys.stderr)
        return 2
    return lake_sql.main(args.sql, fmt=args.format, init=args.init, max_rows=args.max_rows)


def _replay(args: argparse.Namespace) -> int:
    from observer_assets.replay.server import replay_main

    d = _day(args.day, "replay")
    return 2 if d is None else replay_main(args, d)


def _relay(args: argparse.Namespace) -> int:
    from observer_assets.replay.relay import relay_main

    return relay_main(args)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="observer", description="Observer operator commands")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser(
        "calendar", help="a day's KRX session, Track A slots and each venue's (KRX, NXT) phases and breaks, as JSON"
    )
    c.add_argument("day", help="YYYY-MM-DD")
    c.add_argument("--calendar", choices=("krx", "open"), help="default: $OBSERVER_CALENDAR or krx")
    c.set_defaults(func=_calendar)
    b = sub.add_parser("backup", help="package and verify a day (default: every day that needs it)")
    b.add_argument("day", nargs="?", help="YYYY-MM-DD (a trading day)")
    b.set_defaults(func=_backup)
    v = sub.add_parser("verify", help="re-read a day's package (or every committed one) and check every SHA-256")
    v.add_argument("day", nargs="?", help="YYYY-MM-DD")
    v.add_argument("--all", action="store_true", help="every committed package at the destination (the weekly sweep)")
    v.set_defaults(func=_verify)
    r = sub.add_parser("restore", help="restore a day's verified package, byte for byte")
    r.add_argument("day", help="YYYY-MM-DD")
    r.add_argument("--overwrite", action="store_true", help="replace local files whose bytes differ")
    r.add_argument("--to", help="restore into this directory instead of $OBSERVER_DATA_DIR")
    r.add_argument(
        "--version",
        type=int,
        help="the package as its N-th changing backup left it (1: as first written; default: the newest)",
    )
    r.set_defaults(func=_restore)
    t = sub.add_parser("retention", help="delete local days past retention whose backup verifies")
    t.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    t.add_argument("--today", help="YYYY-MM-DD (default: today, KST)")
    t.set_defaults(func=_retention)
    m = sub.add_parser("metrics", help="serve Prometheus metrics on http://HOST:PORT/metrics until SIGTERM/SIGINT")
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)")
    m.add_argument("--port", type=int, default=9108, help="TCP port (default 9108; 0 = any free port)")
    m.set_defaults(func=_metrics)
    lk = sub.add_parser("lake", help="the lake's own maintenance")
    lk_sub = lk.add_subparsers(dest="lake_command", required=True, parser_class=_Parser)
    mg = lk_sub.add_parser(
        "migrate", help="bring a lake of the earlier layout to docs/data.md's (moves and upgrades; idempotent)"
    )
    mg.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    mg.set_defaults(func=_lake_migrate)
    q = sub.add_parser(
        "sql",
        help="query the lake with DuckDB: one view per dataset (docs/reading-the-lake.md); no SQL: a prompt",
    )
    q.add_argument("sql", nargs="?", help="statements to run (default: standard input, or a prompt on a terminal)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table", help="how to print the result")
    q.add_argument("--max-rows", type=int, default=40, help="rows a table shows (default 40; csv and json: all)")
    q.add_argument("--init", action="store_true", help="print the views as SQL, for the duckdb CLI (-init)")
    q.set_defaults(func=_sql)
    from observer_assets.replay.args import add_relay_arguments, add_replay_arguments

    rp = sub.add_parser(
        "replay", help="serve a recorded day through the KIS protocol (REST + WebSocket) at any speed (docs/replay.md)"
    )
    add_replay_arguments(rp)
    rp.set_defaults(func=_replay)
    rl = sub.add_parser(
        "relay", help="re-serve what the Track B capture receives, live, to local KIS clients (docs/replay.md)"
    )
    add_relay_arguments(rl)
    rl.set_defaults(func=_relay)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        if not isinstance(e, _config_errors()):
            raise
        # bad configuration: one line naming the variable, exit 2 (module doc)
        print(f"observer {args.command}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def _config_errors() -> tuple[type[Exception], ...]:
    """What a bad setting raises (imported on use: the lake module is heavy for `observer calendar`)."""
    from observer_assets.backup.settings import SettingsError
    from observer_resources.storage.lake import LakeConfigError

    return (CalendarConfigError, CalendarDataError, DateFormatError, KisConfigError, LakeConfigError, SettingsError)


if __name__ == "__main__":
    raise SystemExit(main())
