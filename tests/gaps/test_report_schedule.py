"""The gap report's schedule follows the collected day: through the after-market on the two-venue day (so a loss
there is backfilled within the hour), KRX's session on the KRX-only day; evaluated as the daemon evaluates it, on a
real instance."""

from datetime import datetime

import dagster as dg
import pytest

from observer_assets.definitions import defs
from observer_assets.gaps.schedules import gap_report_through_the_day
from observer_resources.calendar import KST

DAY = (2026, 12, 24)  # a Thursday


def verdict(inst: dg.DagsterInstance, h: int, m: int, day: tuple[int, int, int] = DAY) -> str | None:
    """The report a tick at h:m asks for ("session", "final"), or None when it skips."""
    ctx = dg.build_schedule_context(
        instance=inst,
        scheduled_execution_time=datetime(*day, h, m, tzinfo=KST),
        repository_def=defs.get_repository_def(),
    )
    data = gap_report_through_the_day.evaluate_tick(ctx)
    reqs = data.run_requests or []
    return reqs[0].tags["observer/gap_report"] if reqs else None


@pytest.mark.env(OBSERVER_CALENDAR="krx", OBSERVER_TRACK_A_WINDOW="08:00-20:00")
def test_the_two_venue_day_is_reported_from_its_first_slot_to_the_final_report(env):
    with dg.instance_for_test() as inst:
        got = {
            f"{h:02d}{m:02d}": verdict(inst, h, m) for h, m in ((7, 30), (8, 0), (17, 0), (20, 30), (20, 40), (21, 0))
        }
        assert got == {
            "0730": None,
            "0800": "session",
            "1700": "session",
            "2030": "session",
            "2040": "final",
            "2100": None,
        }
        assert verdict(inst, 12, 0, (2026, 12, 25)) is None  # Christmas


@pytest.mark.env(OBSERVER_CALENDAR="krx", OBSERVER_TRACK_A_WINDOW="session")
def test_the_krx_only_day_is_reported_through_its_session_and_the_hour_after(env):
    with dg.instance_for_test() as inst:
        got = {f"{h:02d}{m:02d}": verdict(inst, h, m) for h, m in ((8, 30), (9, 0), (16, 30), (17, 0), (20, 40))}
        assert got == {"0830": None, "0900": "session", "1630": "session", "1700": None, "2040": "final"}
