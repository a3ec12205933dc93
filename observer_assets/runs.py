"""Run tags shared by schedules and sensors, so dagster.yaml's queue limits apply to every KIS-heavy run."""

KIS_REST_TAGS = {"observer/kis": "rest"}
BACKFILL_TAGS = {"observer/kind": "backfill"}
LATE_TAG = "observer/late"
