"""Track A in real mode on a 2,500-symbol universe with three app keys, through the Dagster asset, against the
single-key bound divided by three (docs/multi-key.md: target <= 1.2x, no EGW00201 at the exchange).

Each run is cold, as bench/track_a.py's is: three keys the exchange has not seen, a fresh state directory (so each
key's token is issued inside the measured fetch) and a fresh Dagster instance; each is followed by a warm run with
the same keys (their tokens in the store, as at every slot after the day's first). Medians are reported."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import dagster as dg

from bench.common import local_exchange
from local_exchange.accounts import demo_credentials

MULTPRICE_MAX = 30


def run(n_symbols: int = 2500, keys: int = 3, rate: float = 18.0, runs: int = 5) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp, local_exchange("--clock", "open", "--listings", "2600") as sim:
        os.environ["OBSERVER_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["OBSERVER_CALENDAR"] = "open"
        from bench.track_a import write_universe
        from observer_assets.orchestration.partitions import slot_key
        from observer_assets.track_a.assets import track_a_snapshot
        from observer_assets.universe.assets import universe
        from observer_resources.resources import KisKey, KisPool

        slot = write_universe(sim, n_symbols)
        key = slot_key(slot)
        config = {"ops": {"track_a_snapshot": {"config": {"refetch": True, "live_window_min": 1440}}}}
        rows = []
        for r in range(runs):
            creds = [demo_credentials(950 + 10 * r + i) for i in range(keys)]
            kis = KisPool(
                app_key=creds[0][0],
                app_secret=creds[0][1],
                rest_url=sim.rest_url,
                ws_url=sim.ws_url,
                state_dir=str(Path(tmp) / f"state{r}"),
                rate_per_s=rate,
                more_keys=[KisKey(app_key=k, app_secret=s) for k, s in creds[1:]],
            )
            for state in ("cold", "warm"):  # warm: the keys' tokens are in the store, as at every later slot
                before = sim.admin("stats")
                with dg.instance_for_test() as inst:
                    inst.add_dynamic_partitions("track_a_slot", [key])
                    res = dg.materialize(
                        [track_a_snapshot, universe],
                        selection=[track_a_snapshot],
                        partition_key=key,
                        instance=inst,
                        resources={"kis": kis},
                        run_config=config,
                    )
                md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
                after = sim.admin("stats")
                per_key = [
                    after["by_appkey"].get(k, {}).get("requests_total", 0)
                    - before["by_appkey"].get(k, {}).get("requests_total", 0)
                    for k, _ in creds
                ]
                rows.append(
                    {
                        "state": state,
                        "fetch_seconds": md["fetch_seconds"].value,
                        "requests": md["requests_used"].value,
                        "rows": md["rows"].value,
                        "per_key": per_key,
                        "degraded": md["keys_degraded"].value,
                        "egw00201": after["rate_limited_total"] - before["rate_limited_total"],
                    }
                )
    requests = -(-n_symbols // MULTPRICE_MAX)
    single_bound = requests / rate  # the single-key bound of bench/track_a.py (quote requests ÷ rate)
    target_bound = single_bound / keys
    out = []
    for state in ("cold", "warm"):
        these = [r for r in rows if r["state"] == state]
        median = statistics.median(r["fetch_seconds"] for r in these)
        out.append(
            {
                "bench": f"track_a_real_{n_symbols}_{keys}keys_{state}",
                "universe": n_symbols,
                "keys": keys,
                "tokens": "issued inside the measured fetch" if state == "cold" else "already in the store",
                "rate_per_s_per_key": rate,
                "requests": these[0]["requests"],
                "runs": [r["fetch_seconds"] for r in these],
                "requests_per_key": these[0]["per_key"],
                "rows": [r["rows"] for r in these],
                "keys_degraded": sum(r["degraded"] for r in these),
                "single_key_bound_s": round(single_bound, 3),
                "bound_s": round(target_bound, 3),
                "median_fetch_seconds": median,
                "ratio_to_bound": round(median / target_bound, 3),
                "egw00201_at_exchange": sum(r["egw00201"] for r in these),
            }
        )
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
