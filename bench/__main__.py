"""Run the benchmarks and print one JSON line each, plus the machine. `make bench` or
`python -m bench [name ...]` (names: the ALL list below, plus rate_limit_pg, which needs PostgreSQL)."""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import git_rev, machine

ALL = [
    "frames",
    "multiquote",
    "track_a",
    "definitions_load",
    "partition_shapes",
    "journal",
    "gap_report",
    "rate_limit",
    "backup",
    "track_a_multikey",
    "partition_registrar",
    "track_a_scan",
    "exchange_day",
    "track_a_venues",
    "track_b_feeds",
    "daily_bars",
    "minute_bars",
    "replay",
]


def main(argv: list[str]) -> None:
    names = argv or ALL
    print(json.dumps({"machine": machine(), "rev": git_rev()}), flush=True)
    for name in names:
        for row in importlib.import_module(f"bench.{name}").run():
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
