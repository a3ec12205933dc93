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
from datetime import date, datetime

from observer_resources.calendar import KST
from observer_resources.sim.server import DEFAULT_REST_PORT, DEFAULT_WS_PORT, SimServer


def _start(value: str) -> datetime:
    """--start: ISO date or datetime; a value without an offset is taken as KST."""
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            at = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            raise argparse.ArgumentTypeError(f"--start must be ISO 8601 (e.g. 2026-03-03T09:00:00+09:00), got {value!r}") from None
    return at.replace(tzinfo=KST) if at.tzinfo is None else at.astimezone(KST)


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
    ap = argparse.ArgumentParser(prog="observer-sim", description="Local KIS-compatible exchange (REST + WebSocket).")
    ap.add_argument("--mode", choices=("real", "paper"), default="real", help="default mode of app keys (rate limits, paper refusals)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    ap.add_argument("--rest-port", type=_positive(int), default=DEFAULT_REST_PORT, help="REST port; 0 picks a free one")
    ap.add_argument("--ws-port", type=_positive(int), default=DEFAULT_WS_PORT, help="WebSocket port; 0 picks a free one")
    ap.add_argument("--seed", type=int, default=0, help="market seed (same seed, same market)")
    ap.add_argument("--listings", type=_positive(int), default=2600, help="number of securities")
    ap.add_argument("--clock", choices=("krx", "open"), default="krx", help="krx: KRX calendar and hours; open: trades around the clock every day")
    ap.add_argument("--speed", type=_positive(float), default=1.0, help="sim seconds per real second (0 freezes the clock)")
    ap.add_argument("--start", type=_start, default=None, help="sim start instant, ISO 8601 (default: now)")
    ap.add_argument("--fields", type=int, choices=(46, 47), default=46, help="H0STCNT0 record width")
    ap.add_argument("--ping-interval", type=_positive(float), default=10.0, help="PINGPONG every N real seconds")
    ap.add_argument("--ping-grace", type=_positive(float), default=60.0, help="drop a client that answers no PINGPONG for N s")
    ap.add_argument("--hold-after-disconnect", type=_positive(float), default=2.0, help="app key stays in use N s after a disconnect")
    ap.add_argument("--rate-real", type=_positive(float), default=20.0, help="REST calls/s per real-mode app key")
    ap.add_argument("--rate-paper", type=_positive(float), default=2.0, help="REST calls/s per paper-mode app key")
    ap.add_argument("--accounts", default=None, help="JSON list of {appkey, appsecret, mode}: only these keys are accepted")
    ap.add_argument("--log-level", default="INFO", help="stderr log level")
    ap.add_argument("--nice", type=int, default=-5,
                    help="scheduling priority change (default -5 where permitted): KIS is another machine, so the load "
                         "of the clients under test must not delay this server's clock and bunch requests into its "
                         "rate window")
    return ap


async def serve(args: argparse.Namespace) -> int:
    from observer_resources.sim.accounts import load_accounts_file

    accounts = load_accounts_file(args.accounts) if args.accounts else None
    server = SimServer(
        mode=args.mode, seed=args.seed, listings=args.listings, clock_mode=args.clock, speed=args.speed,
        start=args.start, fields=args.fields, ping_interval=args.ping_interval, ping_grace=args.ping_grace,
        hold_after_disconnect=args.hold_after_disconnect, rate_real=args.rate_real, rate_paper=args.rate_paper,
        accounts=accounts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(args.host, args.rest_port, args.ws_port)
    sys.stdout.write(f"observer-sim ready rest={server.rest_url} ws={server.ws_url} mode={args.mode} "
                     f"clock={args.clock} seed={args.seed}\n")
    sys.stdout.flush()
    logging.getLogger("observer.sim").info("serving; sim clock %s x%s", server.clock.now().isoformat(), server.clock.speed)
    try:
        await stop.wait()
    finally:
        logging.getLogger("observer.sim").info("shutting down")
        await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:  # not permitted (not root): run at normal priority
            logging.getLogger("observer.sim").info("could not change priority by %s; running at normal priority", args.nice)
    try:
        return asyncio.run(serve(args))
    except (ValueError, OSError) as exc:
        print(f"observer-sim: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
