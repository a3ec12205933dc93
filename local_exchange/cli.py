"""``observer-sim``: run the local KIS-compatible exchange in the foreground.

Prints exactly one line to stdout once both listeners are up (tests and scripts wait for it):
``observer-sim ready rest=http://127.0.0.1:PORT ws=ws://127.0.0.1:PORT mode=real clock=open seed=0``.
Everything else (logs) goes to stderr. SIGTERM / SIGINT shut it down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import datetime

from local_exchange.server import DEFAULT_REST_PORT, DEFAULT_WS_PORT, SimServer
from observer_resources.calendar import KST
from observer_resources.dates import DateFormatError, parse_iso_date, parse_iso_datetime


def _start(value: str) -> datetime:
    """--start: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS][offset]`` (strict: no ``20260303``, no week dates); a
    value without an offset is taken as KST."""
    try:
        at = (
            datetime.combine(parse_iso_date(value, "--start"), datetime.min.time())
            if len(value) == 10
            else parse_iso_datetime(value, "--start")
        )
    except DateFormatError:
        raise argparse.ArgumentTypeError(
            f"must be YYYY-MM-DD or ISO 8601 (e.g. 2026-03-03T09:00:00+09:00), got {value!r}"
        ) from None
    return at.replace(tzinfo=KST) if at.tzinfo is None else at.astimezone(KST)


def _port(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value!r}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (and exit 2): scripts and tests read stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _positive(kind: type):  # noqa: ANN202
    def parse(value: str):  # noqa: ANN202
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="observer-sim", description="Local KIS-compatible exchange (REST + WebSocket).")
    ap.add_argument(
        "--mode",
        choices=("real", "paper"),
        default="real",
        help="default mode of app keys (rate limits, paper refusals)",
    )
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    ap.add_argument("--rest-port", type=_port, default=DEFAULT_REST_PORT, help="REST port; 0 picks a free one")
    ap.add_argument("--ws-port", type=_port, default=DEFAULT_WS_PORT, help="WebSocket port; 0 picks a free one")
    ap.add_argument("--seed", type=int, default=0, help="market seed (same seed, same market)")
    ap.add_argument("--listings", type=_positive(int), default=2600, help="number of securities")
    ap.add_argument(
        "--activity",
        type=_positive(float),
        default=1.0,
        help="every listing's trade rate times this (default 1: as busy as KRX; below 1 a quieter market for slow "
        "machines and long end-to-end runs)",
    )
    ap.add_argument(
        "--clock",
        choices=("krx", "open"),
        default="krx",
        help="krx: KRX calendar and hours; open: trades around the clock every day",
    )
    ap.add_argument(
        "--speed", type=_positive(float), default=1.0, help="sim seconds per real second (0 freezes the clock)"
    )
    ap.add_argument("--start", type=_start, default=None, help="sim start instant, ISO 8601 (default: now)")
    ap.add_argument("--fields", type=int, choices=(46, 47), default=46, help="H0STCNT0 record width")
    ap.add_argument("--ping-interval", type=_positive(float), default=10.0, help="PINGPONG every N real seconds")
    ap.add_argument(
        "--ping-grace", type=_positive(float), default=60.0, help="drop a client that answers no PINGPONG for N s"
    )
    ap.add_argument(
        "--hold-after-disconnect",
        type=_positive(float),
        default=2.0,
        help="app key stays in use N s after a disconnect",
    )
    ap.add_argument("--rate-real", type=_positive(float), default=20.0, help="REST calls/s per real-mode app key")
    ap.add_argument("--rate-paper", type=_positive(float), default=2.0, help="REST calls/s per paper-mode app key")
    ap.add_argument(
        "--accounts", default=None, help="JSON list of {appkey, appsecret, mode}: only these keys are accepted"
    )
    ap.add_argument("--log-level", default="INFO", help="stderr log level")
    ap.add_argument(
        "--nice",
        type=int,
        default=-5,
        help="scheduling priority change (default -5 where permitted): KIS is another machine, so the load "
        "of the clients under test must not delay this server's clock and bunch requests into its "
        "rate window",
    )
    return ap


async def serve(args: argparse.Namespace) -> int:
    from local_exchange.accounts import load_accounts_file

    accounts = load_accounts_file(args.accounts) if args.accounts else None
    server = SimServer(
        mode=args.mode,
        seed=args.seed,
        listings=args.listings,
        activity=args.activity,
        clock_mode=args.clock,
        speed=args.speed,
        start=args.start,
        fields=args.fields,
        ping_interval=args.ping_interval,
        ping_grace=args.ping_grace,
        hold_after_disconnect=args.hold_after_disconnect,
        rate_real=args.rate_real,
        rate_paper=args.rate_paper,
        accounts=accounts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(args.host, args.rest_port, args.ws_port)
    sys.stdout.write(
        f"observer-sim ready rest={server.rest_url} ws={server.ws_url} mode={args.mode} "
        f"clock={args.clock} seed={args.seed}\n"
    )
    sys.stdout.flush()
    logging.getLogger("observer.sim").info(
        "serving; sim clock %s x%s", server.clock.now().isoformat(), server.clock.speed
    )
    try:
        await stop.wait()
    finally:
        logging.getLogger("observer.sim").info("shutting down")
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.activity <= 0:
        ap.error(f"argument --activity: must be > 0, got {args.activity}")
    level = logging.getLevelName(args.log_level.upper())
    if not isinstance(level, int):
        ap.error(f"argument --log-level: must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {args.log_level!r}")
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:  # not permitted (not root): run at normal priority
            logging.getLogger("observer.sim").info(
                "could not change priority by %s; running at normal priority", args.nice
            )
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError, OverflowError) as exc:  # bad --accounts file, port taken: one line, exit 2
        print(f"observer-sim: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
