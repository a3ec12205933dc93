"""Nothing unwired: every asset and check has a path to being materialized or evaluated without a person.

A path is a schedule or a sensor whose target job selects the asset (asset jobs run their assets' checks with them),
a sensor that observes an observable source asset, or an automation condition. What only an operator should start
is listed here with its reason; a new asset or check without a path, and not listed, fails this test — the defect of
a system whose suite was green while nothing ever ran its gap report.
"""

from __future__ import annotations

import dagster as dg

from observer_assets.definitions import defs

#: key -> why no automation runs it (an operator starts it from the UI or the CLI on purpose)
OPERATOR_ONLY: dict[str, str] = {}

#: observable source assets -> the sensor whose ticks observe them (observations are not run targets)
OBSERVED_BY: dict[str, str] = {"track_b_journal": "track_b_journal_sensor"}


def _job_entities(repo: dg.RepositoryDefinition, job_name: str) -> set[str]:
    job = repo.get_job(job_name)
    layer = job.asset_layer
    keys = {k.to_user_string() for k in layer.selected_asset_keys}
    # the job's own asset graph holds exactly the checks it executes (with their asset, or alone in a checks job)
    checks = {f"{c.asset_key.to_user_string()}:{c.name}" for c in layer.asset_graph.asset_check_keys}
    return keys | checks


def automated() -> dict[str, list[str]]:
    """entity (asset key, or asset:check) -> the schedules and sensors that reach it."""
    repo = defs.get_repository_def()
    out: dict[str, list[str]] = {}
    for s in repo.schedule_defs:
        for e in _job_entities(repo, s.job_name):
            out.setdefault(e, []).append(f"schedule {s.name}")
    for s in repo.sensor_defs:
        names = {t.job_name for t in s.targets if t.job_name}
        for n in names:
            for e in _job_entities(repo, n):
                out.setdefault(e, []).append(f"sensor {s.name}")
    for spec in defs.resolve_all_asset_specs():
        if spec.automation_condition is not None:
            out.setdefault(spec.key.to_user_string(), []).append("automation condition")
    sensors = {s.name for s in repo.sensor_defs}
    for key, sensor in OBSERVED_BY.items():
        if sensor in sensors:
            out.setdefault(key, []).append(f"observed by sensor {sensor}")
    return out


def entities() -> set[str]:
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    checks = {f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys}
    return assets | checks


def test_every_asset_and_check_runs_without_a_person_or_says_why_not():
    reached = automated()
    unwired = sorted(e for e in entities() if e not in reached and e not in OPERATOR_ONLY)
    assert not unwired, f"no schedule, sensor or automation reaches {unwired}: wire them or list them in OPERATOR_ONLY"


def test_the_operator_only_list_holds_no_stale_or_automated_entry():
    reached, known = automated(), entities()
    for key, why in OPERATOR_ONLY.items():
        assert key in known, f"{key} is listed as operator-only but no longer exists"
        assert key not in reached, f"{key} is listed as operator-only but {reached[key]} runs it"
        assert why.strip(), key


def test_the_gap_report_is_reached_by_its_schedule_and_after_every_repair():
    reached = automated()
    assert {"schedule gap_report_through_the_day", "sensor gap_report_after_repair"} <= set(reached["gap_report"])
