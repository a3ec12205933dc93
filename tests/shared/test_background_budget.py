"""Background permits (history fetches) yield to live collectors on the same shared budget."""

from __future__ import annotations

import asyncio

from observer_resources.shared.rate_limit import BackgroundLimiter, SharedRateLimiter, gcra_reserve_idle


def test_the_rule_stands_aside_only_while_others_have_queued():
    # nothing queued: claims like a foreground caller
    assert gcra_reserve_idle(None, 100.0, 0.05, 1, 600.0, 0.15) == (100.0, 100.05)
    assert gcra_reserve_idle(100.125, 100.0, 0.125, 1, 600.0, 0.25) == (100.125, 100.25)
    # a live burst queued 1 s ahead: no slot, the schedule untouched
    assert gcra_reserve_idle(101.0, 100.0, 0.05, 1, 600.0, 0.15) == (None, 101.0)
    # a schedule far ahead is a clock that stepped back, not a queue: restart as the foreground rule does
    assert gcra_reserve_idle(1000.0, 100.0, 0.05, 1, 600.0, 0.15) == (100.0, 100.05)


def test_a_live_burst_is_served_before_background_work_that_was_already_running(tmp_path):
    """Two handles on one SQLite store, as two processes have: a background fetch with eight requests in flight (as
    the history fetches run) streams permits; a live burst of 20 arrives and is served ahead of all but the few
    background permits already claimed. Without the yield, the eight in flight would each stand in its way again."""
    path = tmp_path / "limits.sqlite"
    live = SharedRateLimiter("k", 50.0, path)
    back = BackgroundLimiter(SharedRateLimiter("k", 50.0, path))
    order: list[tuple[str, int]] = []

    async def background() -> None:
        async def worker(w: int) -> None:
            for i in range(5):
                await back.acquire()
                order.append(("background", w * 5 + i))

        await asyncio.gather(*(worker(w) for w in range(8)))

    async def burst() -> None:
        await asyncio.sleep(0.2)  # the background fetch is under way
        order.append(("burst", 0))

        async def one(i: int) -> None:
            await live.acquire()
            order.append(("live", i))

        await asyncio.gather(*(one(i) for i in range(20)))

    async def main() -> None:
        await asyncio.gather(background(), burst())

    asyncio.run(main())
    arrived = order.index(("burst", 0))
    last_live = max(n for n, (who, _) in enumerate(order) if who == "live")
    ahead = [x for x in order[arrived : last_live + 1] if x[0] == "background"]
    # only the permits the background had claimed within its allowance (3 intervals) when the burst arrived, and one
    # being claimed then; standing in line like a live caller, its eight in flight would all be served first
    assert len(ahead) <= 4, order
    assert back.counters.yielded > 0  # it stood aside while the burst was queued
    assert sum(1 for who, _ in order if who == "background") == 40
