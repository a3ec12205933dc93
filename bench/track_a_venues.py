"""Track A on the two-venue day: what each way of quoting NXT's stocks costs, against the bound (requests / rate).

On the local exchange's KRX calendar (default 2,600 listings, a day before KRX's own extended sessions), real mode:
the universe with each member's NXT status (one search-stock-info per member), then three ways to quote a 10:00
slot — KRX only (every member on J, what Observer did before), unified (NXT's stocks on UN, the rest on J: the
decision) and per venue (every member on J plus NXT's stocks again on NX) — and a 19:00 slot, when only NXT's
stocks trade. The per-venue figure is the two fetches it needs, run one after the other."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path

import dagster as dg

from bench.common import kis_resource, local_exchange

DAY = date(2026, 6, 11)


def run(rate: float = 18.0) -> list[dict]:
    from observer_resources.calendar import KST

    def kst(h: int, m: int) -> datetime:
        return datetime.combine(DAY, dtime(h, m), KST)

    start = kst(5, 0)
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_exchange("--clock", "krx", "--speed", "0", "--start", start.isoformat(), "--listings", "2600") as sim,
    ):
        os.environ.update(
            OBSERVER_DATA_DIR=str(Path(tmp) / "data"),
            OBSERVER_CALENDAR="krx",
            OBSERVER_TRACK_A_WINDOW="08:00-20:00",
            OBSERVER_CLOCK_FILE=str(Path(tmp) / "clock.json"),
        )
        from observer_assets.orchestration.partitions import calendar, day_key, slot_key
        from observer_assets.track_a.assets import track_a_snapshot
        from observer_assets.track_a.fetch import fetch_shards
        from observer_assets.track_a.venues import slot_markets
        from observer_assets.universe.assets import universe
        from observer_assets.universe.dataset import read_universe
        from observer_resources import clock
        from observer_resources.storage import lake

        def at(t: datetime) -> None:
            clock.write_sim(Path(os.environ["OBSERVER_CLOCK_FILE"]), t)
            sim.admin("clock", {"at": t.isoformat(), "speed": 0})

        kis = kis_resource(sim, Path(tmp) / "state", 1, rate_per_s=rate)
        out: list[dict] = []
        with dg.instance_for_test() as inst:
            at(start)
            inst.add_dynamic_partitions("trading_day", [day_key(DAY)])
            t0 = time.monotonic()
            res = dg.materialize([universe], partition_key=day_key(DAY), instance=inst, resources={"kis": kis})
            md = res.asset_materializations_for_node("universe")[0].metadata
            seconds = time.monotonic() - t0
            out.append(
                {
                    "bench": "universe_with_nxt_status",
                    "members": md["count"].value,
                    "nxt_tradable": md["nxt_tradable"].value,
                    "requests": md["requests_used"].value,
                    "seconds": round(seconds, 1),
                    "bound_s": round(md["requests_used"].value / rate, 1),
                }
            )
            uni = read_universe(lake.data_dir(), DAY)
            for h in (10, 19):
                slot = kst(h, 0)
                at(slot)
                inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])
                res = dg.materialize(
                    [track_a_snapshot, universe.to_source_asset()],
                    partition_key=slot_key(slot),
                    instance=inst,
                    resources={"kis": kis},
                )
                md = res.asset_materializations_for_node("track_a_snapshot")[0].metadata
                out.append(
                    {
                        "bench": f"track_a_unified_{h}00",
                        "rows": md["rows"].value,
                        "quoted_unified": md.get("quoted_unified").value if "quoted_unified" in md else 0,
                        "quoted_krx": md.get("quoted_krx").value if "quoted_krx" in md else 0,
                        "requests": md["requests_used"].value,
                        "fetch_seconds": md["fetch_seconds"].value,
                        "bound_s": round(md["requests_used"].value / rate, 3),
                        "ratio_to_bound": round(md["fetch_seconds"].value / (md["requests_used"].value / rate), 3),
                    }
                )
            # the alternatives at 10:00, through the same fetch: KRX only, and per venue (J for all, NX again)
            markets = slot_markets(uni, calendar(), kst(10, 0))
            codes = list(markets)
            on_nxt = [c for c, m in markets.items() if m == "UN"]
            for name, plans in (
                ("track_a_krx_only_1000", [dict.fromkeys(codes, "J")]),
                ("track_a_per_venue_1000", [dict.fromkeys(codes, "J"), dict.fromkeys(on_nxt, "NX")]),
            ):
                requests, rows, t0 = 0, 0, time.monotonic()
                for plan in plans:
                    shards = asyncio.run(fetch_shards(kis, list(plan), time.monotonic() + 300, 8, plan))
                    requests += sum(s.requests for s in shards)
                    rows += sum(len(s.lines) for s in shards)
                seconds = time.monotonic() - t0
                out.append(
                    {
                        "bench": name,
                        "rows": rows,
                        "requests": requests,
                        "fetch_seconds": round(seconds, 3),
                        "bound_s": round(requests / rate, 3),
                        "ratio_to_bound": round(seconds / (requests / rate), 3),
                    }
                )
        return out


if __name__ == "__main__":
    for r in run():
        print(r)
