"""Track A freshness during the session (dagster-notes §7: FreshnessPolicy attached to the asset spec).

`FreshnessPolicy.cron("5-55/10 9-14 * * 1-5", lower_bound_delta=10 min, timezone="Asia/Seoul")`: five minutes after
every slot from 09:00 to 14:50 on weekdays, the asset must have materialized in the previous 10 minutes, i.e. that
slot's snapshot exists (evaluated by the freshness daemon). One cron cannot also say "15:00..15:30 only" — extending
the hours to 15 would fail at 15:45 and 15:55 every day — so the last four slots are judged by the gap report and the
coverage checks instead.

Holiday caveat: a cron cannot read the KRX calendar. On a weekday holiday (and the CSAT day's shifted hours, and the
10:00 late opens) the policy reports Track A stale although nothing is wrong; Saturdays and Sundays are excluded by
the cron. The authoritative judgment is the calendar-aware gap report and the coverage checks; treat a freshness
failure on a non-trading day as expected. (How FreshnessPolicy treats partition exclusions is unverified.)
"""

from datetime import timedelta

import dagster as dg

TRACK_A_DEADLINE_CRON = "5-55/10 9-14 * * 1-5"
TRACK_A_LOWER_BOUND = timedelta(minutes=10)

track_a_freshness = dg.FreshnessPolicy.cron(
    deadline_cron=TRACK_A_DEADLINE_CRON, lower_bound_delta=TRACK_A_LOWER_BOUND, timezone="Asia/Seoul"
)


def apply_track_a_freshness(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with the session freshness policy on `track_a_snapshot` (other assets untouched). Use in
    definitions.py: `defs = apply_track_a_freshness(dg.Definitions.merge(...))`."""
    return defs.map_resolved_asset_specs(
        func=lambda spec: dg.apply_freshness_policy(spec, track_a_freshness),
        selection=dg.AssetSelection.assets("track_a_snapshot"),
    )
