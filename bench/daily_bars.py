"""A year of daily history (raw and adjusted) for a 2,500-symbol universe through the ``daily_bars`` asset, against
the request bound: 2 series x 3 pages (a KRX year is ~248 trading days, 100 rows a call) = 6 calls a symbol, at the
key's 18/s (2,500 symbols: 15,000 calls, 833 s on one key). Target: calls and wall time within 1.15x the bound.

The kill variant runs the same materialization in a child process, kill -9s it once ``kill_at`` of the symbols are
checkpointed, and re-runs it: the calls of both runs together against the bound show what the kill cost (at most the
symbols in flight and those finished but not yet in a part).

``python -m bench daily_bars`` (full, ~15 min); ``python -m bench.daily_bars 500`` for a 500-symbol run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

YEAR = 2023  # a whole past year: the exchange draws these bars without ticks, so the client is what is measured


def _materialize(kis, key: str, chunk: int):  # noqa: ANN001, ANN202
    import dagster as dg

    from observer_assets.daily_bars.assets import daily_bars

    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("bar_year", [key])
        return dg.materialize(
            [daily_bars],
            partition_key=key,
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"daily_bars": {"config": {"chunk": chunk}}}},
        )


def _kis(rest_url: str, ws_url: str, state: Path, keys: int, rate: float, first: int):  # noqa: ANN202
    """Demo keys ``first``.. of the local exchange (not secrets) as one pool."""
    from local_exchange.accounts import demo_credentials
    from observer_resources.resources import KisKey, KisPool

    creds = [demo_credentials(first + i) for i in range(keys)]
    return KisPool(
        app_key=creds[0][0],
        app_secret=creds[0][1],
        rest_url=rest_url,
        ws_url=ws_url,
        state_dir=str(state),
        rate_per_s=rate,
        more_keys=[KisKey(app_key=k, app_secret=s) for k, s in creds[1:]],
    )


def _rate_limited(sim, kis) -> int:  # noqa: ANN001
    """EGW00201 answers the exchange gave the pool's keys (each one retried by the client: a call over the bound)."""
    from observer_resources.resources import kis_members

    return sum(
        sim.admin("stats", params={"appkey": m.app_key})["for_appkey"].get("rate_limited_total", 0)
        for m in kis_members(kis)
    )


def _calls(sim, kis) -> int:  # noqa: ANN001
    from observer_resources.resources import kis_members

    return sum(
        sim.admin("stats", params={"appkey": m.app_key})["for_appkey"].get("requests_total", 0)
        for m in kis_members(kis)
    )


def _trading_days(year: int) -> int:
    from datetime import date

    from observer_resources.calendar.market import MarketCalendar

    return len(MarketCalendar("krx").trading_days(date(year, 1, 1), date(year, 12, 31)))


def run(n_symbols: int = 2500, keys: int = 1, rate: float = 18.0, kill_at: float = 0.5, chunk: int = 50) -> list[dict]:
    from bench.common import local_exchange
    from bench.track_a import write_universe
    from observer_resources.storage import lake
    from observer_resources.storage.layout import daily_bars_parts_dir, daily_bars_path

    days = _trading_days(YEAR)
    per_symbol = 2 * math.ceil(days / 100)
    bound_calls = n_symbols * per_symbol
    bound_s = bound_calls / (rate * keys)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, local_exchange("--listings", "2600") as sim:
        os.environ["OBSERVER_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["OBSERVER_CALENDAR"] = "open"  # today's universe on any day; the exchange keeps KRX's calendar
        write_universe(sim, n_symbols)
        root = lake.data_dir()
        # 1. one uninterrupted year
        kis = _kis(sim.rest_url, sim.ws_url, Path(tmp) / "state1", keys, rate, 700)
        t0 = time.monotonic()
        res = _materialize(kis, str(YEAR), chunk)
        wall = time.monotonic() - t0
        md = res.asset_materializations_for_node("daily_bars")[0].metadata
        calls = _calls(sim, kis)
        table_rows = lake.read_table(daily_bars_path(root, YEAR)).num_rows
        rows.append(
            {
                "bench": "daily_bars",
                "variant": "one run",
                "symbols": n_symbols,
                "keys": keys,
                "trading_days": days,
                "rows": table_rows,
                "calls": calls,
                "asset_calls": md["calls"].value,
                "rate_limited": _rate_limited(sim, kis),
                "bound_calls": bound_calls,
                "calls_ratio": round(calls / bound_calls, 4),
                "wall_s": round(wall, 1),
                "fetch_s": md["duration_s"].value,
                "bound_s": round(bound_s, 1),
                "wall_ratio": round(wall / bound_s, 3),
                "corporate_actions": md["corporate_actions"].value,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        # 2. killed at kill_at, then resumed
        daily_bars_path(root, YEAR).unlink()
        kis = _kis(sim.rest_url, sim.ws_url, Path(tmp) / "state2", keys, rate, 720)
        parts = daily_bars_parts_dir(root, YEAR)
        t0 = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.daily_bars", "--child", str(YEAR), sim.rest_url, sim.ws_url]
            + [str(Path(tmp) / "state2"), str(keys), str(rate), "720", str(chunk)],
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        want_parts = max(1, int(n_symbols * kill_at / chunk))
        while child.poll() is None and len(list(parts.glob("part-*.parquet"))) < want_parts:
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        killed_calls = _calls(sim, kis)
        from observer_assets.daily_bars import fetch

        done = len(fetch.read_parts(parts, fetch.span_text(*_span()))[0])
        res = _materialize(kis, str(YEAR), chunk)
        wall = time.monotonic() - t0
        md = res.asset_materializations_for_node("daily_bars")[0].metadata
        calls = _calls(sim, kis)
        resumed_calls = calls - killed_calls
        rows.append(
            {
                "bench": "daily_bars",
                "variant": f"kill -9 at {done} checkpointed symbols, then resume",
                "symbols": n_symbols,
                "keys": keys,
                "symbols_resumed": md["symbols_resumed"].value,
                "calls_before_kill": killed_calls,
                "calls_after_kill": resumed_calls,
                "resume_calls_expected": (n_symbols - done) * per_symbol,
                "refetched_calls": resumed_calls - (n_symbols - done) * per_symbol,
                "lost_to_kill_calls": killed_calls - done * per_symbol,
                "calls": calls,
                "rate_limited": _rate_limited(sim, kis),
                "bound_calls": bound_calls,
                "calls_ratio": round(calls / bound_calls, 4),
                "wall_s_both_runs": round(wall, 1),
                "wall_ratio": round(wall / bound_s, 3),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _span():  # noqa: ANN202
    from datetime import date

    return date(YEAR, 1, 1), date(YEAR, 12, 31)


def _child(year: str, rest_url: str, ws_url: str, state: str, keys: str, rate: str, first: str, chunk: str) -> None:
    _materialize(_kis(rest_url, ws_url, Path(state), int(keys), float(rate), int(first)), year, int(chunk))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:10])
    else:
        for row in run(n_symbols=int(sys.argv[1]) if len(sys.argv) > 1 else 2500):
            print(json.dumps(row), flush=True)
