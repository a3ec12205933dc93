"""The command lines of `observer replay` and `observer relay` (no heavy imports: `observer --help` builds them)."""

from __future__ import annotations

import argparse


def add_replay_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("day", help="the recorded day, YYYY-MM-DD")
    ap.add_argument("--speed", type=float, default=1.0, help="replay seconds per real second (default 1; 0 pauses)")
    ap.add_argument("--from", dest="t_from", help="HH:MM KST to start at (default: the first recorded frame)")
    ap.add_argument("--to", dest="t_to", help="HH:MM KST to stop emitting at (default: the day's last frame)")
    ap.add_argument(
        "--data-dir", help="the lake holding the day (e.g. a directory `observer restore --to` filled); default: "
        "$OBSERVER_DATA_DIR (and $OBSERVER_LOCAL_DIR for the journal)"
    )  # fmt: skip
    ap.add_argument(
        "--source", choices=("auto", "journal", "tables"), default="auto",
        help="frames from the raw journal, from the compacted tick tables, or the journal when it exists (default)",
    )  # fmt: skip
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)")
    add_server_arguments(ap, rest_port=18710, ws_port=18711)


def add_server_arguments(ap: argparse.ArgumentParser, *, rest_port: int, ws_port: int) -> None:
    ap.add_argument("--rest-port", type=int, default=rest_port, help=f"REST port (default {rest_port}; 0 = any)")
    ap.add_argument("--ws-port", type=int, default=ws_port, help=f"WebSocket port (default {ws_port}; 0 = any)")
    ap.add_argument("--ping-interval", type=float, default=10.0, help="PINGPONG every S real seconds (default 10)")
    ap.add_argument("--ping-grace", type=float, default=60.0, help="drop a client silent S s after one (default 60)")
    ap.add_argument(
        "--hold-after-disconnect", type=float, default=2.0, help="an app key stays in use S s after a disconnect"
    )


def add_relay_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--data-dir", help="the local directory the capture journals into (default: $OBSERVER_LOCAL_DIR / the lake)"
    )
    ap.add_argument("--poll", type=float, default=0.01, help="seconds between looks at the journal (default 0.01)")
    add_server_arguments(ap, rest_port=18720, ws_port=18721)
