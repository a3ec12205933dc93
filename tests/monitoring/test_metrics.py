"""The Prometheus exporter on real parts: a day built by the real assets in a child process against the local
exchange, the real Track B capture, a real token store, real backup packages, a real Dagster instance, and the
``observer metrics`` command answering real HTTP.

What is checked: each figure equals what the files say (universe rows, coverage, last slot, gaps by severity and
status, backup marker, token expiry), the (M) values recorded by the child's KisRestClient reach the exporter through
the multiprocess files (and survive folding), the calendar gates at fixed instants (a holiday, night, late opens),
a broken source costs only its own metrics, every catalogue name has samples, and no secret appears anywhere.

Run as a script (``python tests/monitoring/test_metrics.py build``) it is the child that builds the day.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the contract (docs/metrics_catalogue.md): every name below must have samples in a real day's scrape.
#: docs/metrics_catalogue.md (the contract the rules and the dashboard were written against) must list exactly these.
CATALOGUE_NAMES = {
    "observer_trading_day",
    "observer_market_open",
    "observer_track_a_window_open",
    "observer_track_b_window_open",
    "observer_universe_size",
    "observer_universe_previous_size",
    "observer_universe_built_timestamp_seconds",
    "observer_track_a_last_slot_timestamp_seconds",
    "observer_track_a_last_slot_coverage_ratio",
    "observer_track_a_slots_expected",
    "observer_track_a_slots_written",
    "observer_track_a_slot_duration_seconds",
    "observer_track_a_slot_lateness_seconds",
    "observer_track_b_slots_capacity",
    "observer_track_b_slots_allocated",
    "observer_ws_connected",
    "observer_ws_reconnects_total",
    "observer_ws_disconnected_seconds_total",
    "observer_track_b_ticks_total",
    "observer_track_b_triggers_total",
    "observer_track_b_overflows_total",
    "observer_track_b_mitigation_level",
    "observer_track_b_capture_up",
    "observer_track_b_status_age_seconds",
    "observer_token_validity_seconds",
    "observer_token_refreshes_total",
    "observer_rate_limit_rejections_total",
    "observer_rate_limit_wait_seconds",
    "observer_api_requests_total",
    "observer_api_errors_total",
    "observer_api_request_duration_seconds",
    "observer_gaps",
    "observer_gap_report_timestamp_seconds",
    "observer_anomaly_day",
    "observer_backup_last_success_timestamp_seconds",
    "observer_backup_last_verified_day_timestamp_seconds",
    "observer_backup_unverified_days",
    "observer_retention_deleted_files_total",
    "observer_retention_deleted_bytes_total",
    "observer_retention_blocked_days",
    "observer_dagster_runs_failed",
    "observer_dagster_instance_up",
    "observer_disk_used_ratio",
    "observer_exporter_scrape_errors_total",
    "observer_build_info",
}
CATALOGUE_FILES = (ROOT / "docs" / "metrics_catalogue.md",)
PINS = 3


# --- the child: build a real day ---------------------------------------------------------------------------------


def _child_build() -> None:
    """Universe, one live Track A slot, the gap report and one failing run, through the real assets and a
    persistent Dagster instance ($DAGSTER_HOME); the KIS calls go through KisRestClient in this process."""
    import dagster as dg

    from observer_assets.gaps.assets import gap_report
    from observer_assets.orchestration.partitions import day_key, slot_key
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.universe.assets import universe
    from observer_resources.calendar import KST
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.resources import kis_resource_from_env

    kis = kis_resource_from_env()
    inst = dg.DagsterInstance.get()
    now = datetime.now(KST)
    day = now.date()
    inst.add_dynamic_partitions("trading_day", [day_key(day)])
    assert dg.materialize(
        [universe],
        partition_key=day_key(day),
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"universe": {"config": {"min_master_codes": 50}}}},
    ).success
    slot = slot_key(MarketCalendar("open").slot_at(now))
    inst.add_dynamic_partitions("track_a_slot", [slot])
    assert dg.materialize(
        [track_a_snapshot, universe],
        selection=[track_a_snapshot],
        partition_key=slot,
        instance=inst,
        resources={"kis": kis},
        run_config={"ops": {"track_a_snapshot": {"config": {"live_window_min": 1440}}}},
    ).success
    assert dg.materialize([gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst).success
    bad = dg.materialize(
        [gap_report, universe.to_source_asset()],
        partition_key=day_key(day),
        instance=inst,
        run_config={"ops": {"gap_report": {"config": {"as_of": "2020-01-01T00:00:00"}}}},
        raise_on_error=False,
    )
    assert not bad.success  # a naive as_of is refused: one failed run for observer_dagster_runs_failed
    print(json.dumps({"pid": os.getpid(), "slot": slot}), flush=True)


# --- parsing the exposition ------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[m[1]].append((dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    hits = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: {samples.get(name)}"
    return hits[0]


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def has_samples(samples: dict, name: str) -> bool:
    return any(samples.get(name + sfx) for sfx in ("", "_bucket", "_count", "_sum"))


# --- the module's day ---------------------------------------------------------------------------------------------


@dataclass
class Day:
    env: dict[str, str]
    data: Path
    backups: Path
    day: date
    slot: datetime
    child_pid: int
    key: tuple[str, str]
    key_id: str
    capture: subprocess.Popen
    logs: list[Path]


def _env(tmp: Path, sim, key: tuple[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KIS_", "OBSERVER_", "DAGSTER_")) and k.upper() != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        OBSERVER_DATA_DIR=str(tmp / "data"),
        OBSERVER_BACKUP_URL=str(tmp / "backups"),
        OBSERVER_CALENDAR="open",
        OBSERVER_UNIVERSE_MIN_COUNT="20",
        DAGSTER_HOME=str(tmp / "dagster_home"),
        KIS_APP_KEY=key[0],
        KIS_APP_SECRET=key[1],
        KIS_REST_URL=sim.rest_url,
        KIS_WS_URL=sim.ws_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait(cond, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    from local_exchange.accounts import demo_credentials
    from local_exchange.server import run_sim_process
    from observer_assets.backup import backup
    from observer_assets.backup.settings import backup_dest
    from observer_resources.calendar import KST
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.events import EventLog
    from observer_resources.kis.config import configs_from_env
    from observer_resources.storage import lake
    from observer_resources.storage.layout import status_path

    tmp = tmp_path_factory.mktemp("metrics")
    sim = run_sim_process("--mode", "real", "--clock", "open", "--seed", "13", "--listings", "120")
    capture = None
    try:
        key = demo_credentials(8801)
        env = _env(tmp, sim, key)
        (tmp / "dagster_home").mkdir()
        # one EGW00201 for the first REST call: the client retries it, and every layer must show it
        sim.admin("faults", json={"kind": "rest_rate_limit", "n": 1, "appkey": key[0]})
        logs = [tmp / "child.log", tmp / "capture.log"]
        with open(logs[0], "wb") as err:
            out = subprocess.run(
                [sys.executable, __file__, "build"], env=env, stdout=subprocess.PIPE, stderr=err, timeout=180, cwd=tmp
            )
        assert out.returncode == 0, logs[0].read_text(errors="replace")[-3000:]
        built = json.loads(out.stdout.decode().strip().splitlines()[-1])
        data = tmp / "data"
        now = datetime.now(KST)
        today = now.date()
        # a backup of today through the real backup code, and a dated file of yesterday with no package
        ev = EventLog(data, source="test")
        ev.emit(
            "retention_deleted",
            at=now - timedelta(days=1),
            day=(today - timedelta(days=8)).isoformat(),
            universe=False,
            files=3,
            bytes=4096,
            paths=["a", "b", "c"],
            reason="age",
            backup="(test)",
        )
        ev.emit(
            "retention_blocked",
            at=now - timedelta(minutes=1),
            day=(today - timedelta(days=11)).isoformat(),
            reason="no verified backup",
            files=2,
            bytes=10,
            severity="critical",
        )
        backup.run(lake.local_dir(env), backup_dest(env), MarketCalendar("open"), today, events=ev, environ=env)
        # the Track B capture, for real, pinned to a few busy codes
        codes = [
            r["code"]
            for r in sim.admin("listings", params={"order": "activity", "limit": "20"})["listings"]
            if not r["halted"]
        ][:PINS]
        with open(logs[1], "wb") as err:
            capture = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "observer_assets.track_b.capture",
                    "--pins",
                    ",".join(codes),
                    "--status-interval",
                    "0.5",
                    "--until",
                    (now + timedelta(minutes=5)).isoformat(),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=tmp,
            )
        key_id = configs_from_env(env)[0].key_id

        def registered() -> bool:
            try:
                st = json.loads(status_path(data).read_text())
            except (OSError, ValueError):
                return False
            k = (st.get("keys") or {}).get(key_id) or {}
            return len(k.get("registered") or []) >= PINS and k.get("ticks", 0) > 0

        _wait(registered, 60, "the capture to register its pins and receive ticks")
        slot = datetime.strptime(built["slot"], "%Y-%m-%dT%H%M").replace(tzinfo=KST)
        yield Day(env, data, tmp / "backups", today, slot, built["pid"], key, key_id, capture, logs)
    finally:
        if capture is not None and capture.poll() is None:
            capture.send_signal(signal.SIGTERM)
            try:
                capture.wait(20)
            except subprocess.TimeoutExpired:
                capture.kill()
                capture.wait(10)
        sim.stop()


def scrape(d: Day, **kw) -> tuple[str, dict]:  # noqa: ANN003
    from observer_assets.monitoring.metrics import collect_text

    text = collect_text(d.env, **kw)
    return text, parse(text)


# --- the tests ---------------------------------------------------------------------------------------------------


def test_a_real_day_shows_what_its_files_say(day):
    import pandas as pd
    import pyarrow.parquet as pq

    from observer_assets.backup import package
    from observer_resources.calendar import KST
    from observer_resources.events import read_events
    from observer_resources.shared.token_store import SqliteTokenStore
    from observer_resources.storage import lake
    from observer_resources.storage.layout import report_path, slot_dir, universe_path

    _, s = scrape(day)
    root = lake.data_dir(day.env)
    uni = pq.read_table(universe_path(root, day.day))
    assert value(s, "observer_universe_size") == uni.num_rows > 20
    assert value(s, "observer_universe_built_timestamp_seconds") == universe_path(root, day.day).stat().st_mtime
    assert value(s, "observer_universe_previous_size") == 0  # no universe yesterday

    snap_path = slot_dir(root, day.slot) / "snapshot.parquet"
    snap = pq.read_table(snap_path).to_pandas()
    assert value(s, "observer_track_a_slots_written") == 1
    assert value(s, "observer_track_a_last_slot_timestamp_seconds") == day.slot.timestamp()
    assert value(s, "observer_track_a_last_slot_coverage_ratio") == pytest.approx(
        (snap["price"] > 0).sum() / uni.num_rows
    )
    assert value(s, "observer_track_a_last_slot_coverage_ratio") > 0.9
    assert value(s, "observer_track_a_slot_lateness_seconds") == pytest.approx(
        snap_path.stat().st_mtime - day.slot.timestamp()
    )

    rep = pd.read_parquet(report_path(root, day.day), columns=["severity", "status"])
    for (sev, st), n in rep.value_counts().items():
        assert value(s, "observer_gaps", severity=sev, status=st) == n
    assert total(s, "observer_gaps") == len(rep)
    assert value(s, "observer_gap_report_timestamp_seconds") == report_path(root, day.day).stat().st_mtime

    marker = json.loads((day.backups / day.day.isoformat() / package.MARKER).read_text())
    assert value(s, "observer_backup_last_success_timestamp_seconds") == pytest.approx(
        datetime.fromisoformat(marker["verified_at"]).timestamp()
    )
    assert (
        value(s, "observer_backup_last_verified_day_timestamp_seconds")
        == datetime.combine(day.day, datetime.min.time(), KST).timestamp()
    )
    assert value(s, "observer_backup_unverified_days") == 1  # yesterday's event file, never packaged
    assert value(s, "observer_retention_deleted_files_total") == 3
    assert value(s, "observer_retention_deleted_bytes_total") == 4096
    assert value(s, "observer_retention_blocked_days") == 1

    rec = SqliteTokenStore(day.data / "state" / "tokens.sqlite").get(day.key_id, "access")
    assert rec is not None
    validity = value(s, "observer_token_validity_seconds", key_id=day.key_id)
    assert 0 < validity == pytest.approx((rec.expires_at - datetime.now(KST)).total_seconds(), abs=5)
    events = list(read_events(day.data, day.day))
    issued = [e for e in events if e["event_type"] == "token_issued" and e.get("issued_by") == "this_process"]
    assert value(s, "observer_token_refreshes_total", key_id=day.key_id, result="issued") == len(issued) >= 1
    rejected = [e for e in events if e["event_type"] == "rate_limit_rejected"]
    assert value(s, "observer_rate_limit_rejections_total", key_id=day.key_id) == len(rejected) == 1

    # (M): the child's KisRestClient calls, through its multiprocess files
    files = sorted(p.name for p in (day.data / "metrics").glob("*.db"))
    assert f"counter_{day.child_pid}.db" in files and f"histogram_{day.child_pid}.db" in files, files
    requests = total(s, "observer_api_requests_total")
    assert requests > 0 and total(s, "observer_api_requests_total", result="ok") > 0
    assert total(s, "observer_api_requests_total", result="rate_limited") == 1
    assert value(s, "observer_api_errors_total", code="EGW00201") == 1
    assert total(s, "observer_api_request_duration_seconds_count") == requests  # every request timed once
    assert value(s, "observer_rate_limit_wait_seconds_count", key_id=day.key_id) == requests  # one permit each
    assert value(s, "observer_track_a_slot_duration_seconds_count") == 1
    assert 0 < value(s, "observer_track_a_slot_duration_seconds_sum") < 600

    assert value(s, "observer_dagster_instance_up") == 1
    assert value(s, "observer_dagster_runs_failed", job="__ephemeral_asset_job__") == 1  # dg.materialize runs
    assert 0 < value(s, "observer_disk_used_ratio", path=str(day.data)) < 1
    assert total(s, "observer_exporter_scrape_errors_total") == 0
    assert value(s, "observer_build_info", version="0.1.0") == 1


def test_the_capture_status_is_exposed_per_key(day):
    from observer_resources.events import read_events
    from observer_resources.storage.layout import status_path

    st = json.loads(status_path(day.data).read_text())["keys"][day.key_id]
    _, s = scrape(day)
    slot_events = [
        e
        for e in read_events(day.data, day.day)
        if e["event_type"] == "slot_change" and e.get("action") in ("allocate", "replace")
    ]
    k = {"key_id": day.key_id}
    assert value(s, "observer_track_b_slots_capacity", **k) == 41
    assert value(s, "observer_track_b_slots_allocated", **k) == len(st["registered"]) >= PINS
    assert value(s, "observer_ws_connected", **k) == 1
    assert value(s, "observer_ws_reconnects_total", **k) == 0
    assert value(s, "observer_track_b_ticks_total", **k) >= st["ticks"] > 0  # the capture keeps counting
    assert value(s, "observer_track_b_capture_up") == 1
    assert 0 <= value(s, "observer_track_b_status_age_seconds") < 5
    assert value(s, "observer_track_b_mitigation_level") == 0
    # the capture bootstrapped its free slots from the Track A snapshot: each allocation is a trigger
    boot = sum(e.get("trigger") == "bootstrap" for e in slot_events)
    assert value(s, "observer_track_b_triggers_total", trigger="bootstrap") == boot > 0
    assert value(s, "observer_track_b_triggers_total", trigger="velocity") == 0  # every kind, even at zero
    assert value(s, "observer_track_b_overflows_total") == 0


def test_every_catalogue_name_has_samples(day):
    for f in CATALOGUE_FILES:
        if f.exists():
            named = set(re.findall(r"`(observer_[a-z0-9_]+)", f.read_text()))
            assert named == CATALOGUE_NAMES, (f, named ^ CATALOGUE_NAMES)
            break
    _, s = scrape(day)
    missing = sorted(n for n in CATALOGUE_NAMES if not has_samples(s, n))
    assert not missing, missing


def test_no_secret_anywhere(day):
    """App key and secret, the access token, the approval key and a DB password: not in the scrape, not in the
    HTTP answer, not in the exporter's log."""
    from observer_resources.shared.token_store import SqliteTokenStore

    store = SqliteTokenStore(day.data / "state" / "tokens.sqlite")
    token, approval = store.get(day.key_id, "access"), store.get(day.key_id, "approval")
    assert token is not None and approval is not None  # the capture took an approval key
    password = "Pw-d0-not-leak-7731"
    env = {**day.env, "OBSERVER_STATE_DB_URL": f"postgresql://observer:{password}@127.0.0.1:9/observer"}
    from observer_assets.monitoring.metrics import ObserverCollector, collect_text

    texts = [collect_text(day.env)]
    c = ObserverCollector(env, cache_seconds=0)
    try:
        handler = _ListHandler()
        logging.getLogger("observer.metrics").addHandler(handler)
        try:
            texts.append(collect_text(env, collector=c))
        finally:
            logging.getLogger("observer.metrics").removeHandler(handler)
    finally:
        c.close()
    assert c.errors["tokens"] == 1  # the unreachable database is a counted source error, not a failed scrape
    blob = "\n".join(texts + handler.lines)
    assert "tokens" in "\n".join(handler.lines)
    for secret in (day.key[0], day.key[1], token.value, approval.value, password):
        assert secret not in blob


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_broken_source_costs_only_its_own_metrics(day, tmp_path):
    """A status file that is not JSON, a gap report that is not Parquet: their metrics go, the rest stays, the
    errors are counted by source."""
    import shutil

    from observer_assets.monitoring.metrics import ObserverCollector, collect_text
    from observer_resources.storage.layout import report_path, status_path

    data = tmp_path / "data"
    shutil.copytree(day.data / "universe", data / "universe")
    status_path(data).parent.mkdir(parents=True)
    status_path(data).write_text("{not json")
    report_path(data, day.day).parent.mkdir(parents=True)
    report_path(data, day.day).write_bytes(b"PAR1 not really")
    env = {**day.env, "OBSERVER_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "no-such-home")}
    c = ObserverCollector(env, cache_seconds=0)
    try:
        s = parse(collect_text(env, collector=c))
        s = parse(collect_text(env, collector=c))
    finally:
        c.close()
    assert value(s, "observer_exporter_scrape_errors_total", source="track_b") == 2
    assert value(s, "observer_exporter_scrape_errors_total", source="gaps") == 2
    assert value(s, "observer_exporter_scrape_errors_total", source="dagster") == 2
    assert value(s, "observer_dagster_instance_up") == 0
    assert "observer_gaps" not in s and "observer_track_b_capture_up" not in s
    assert value(s, "observer_universe_size") > 20  # the sources that work still answer
    assert total(s, "observer_exporter_scrape_errors_total") == 6


def test_calendar_gates_at_fixed_instants(tmp_path):
    """KRX: a holiday, night, a normal session, the year's late first open, and the CSAT day's late session."""
    from observer_assets.monitoring.metrics import collect_text
    from observer_resources.calendar import session
    from observer_resources.calendar.market import calendar_from_env

    env = {
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "OBSERVER_CALENDAR": "krx",
        "OBSERVER_TRACK_A_WINDOW": "session",  # the KRX-only day first
        "OBSERVER_TRACK_B_WINDOW": "09:30-15:00",
    }

    def gates(at: str) -> dict[str, float]:
        s = parse(collect_text(env, now=datetime.fromisoformat(at)))
        return {
            n.removeprefix("observer_"): value(s, n)
            for n in (
                "observer_trading_day",
                "observer_market_open",
                "observer_track_a_window_open",
                "observer_track_b_window_open",
                "observer_track_a_slots_expected",
            )
        }

    assert session(date(2025, 10, 6)) is None  # Chuseok
    assert gates("2025-10-06T11:00:00+09:00") == {
        "trading_day": 0,
        "market_open": 0,
        "track_a_window_open": 0,
        "track_b_window_open": 0,
        "track_a_slots_expected": 0,
    }
    assert gates("2025-11-14T02:00:00+09:00") == {
        "trading_day": 1,
        "market_open": 0,
        "track_a_window_open": 0,
        "track_b_window_open": 0,
        "track_a_slots_expected": 0,
    }
    assert gates("2025-11-14T10:00:00+09:00") == {
        "trading_day": 1,
        "market_open": 1,
        "track_a_window_open": 1,
        "track_b_window_open": 1,
        "track_a_slots_expected": 7,
    }
    assert gates("2025-11-14T15:35:00+09:00") == {
        "trading_day": 1,
        "market_open": 0,
        "track_a_window_open": 1,
        "track_b_window_open": 0,
        "track_a_slots_expected": 40,
    }
    assert gates("2025-11-14T15:41:00+09:00")["track_a_window_open"] == 0  # last slot 15:30 + 10 min grace
    assert session(date(2025, 1, 2)).open.hour == 10  # the year's first trading day opens at 10:00
    assert gates("2025-01-02T09:45:00+09:00") == {
        "trading_day": 1,
        "market_open": 0,
        "track_a_window_open": 0,
        "track_b_window_open": 0,
        "track_a_slots_expected": 0,
    }
    assert gates("2025-11-13T16:10:00+09:00") == {
        "trading_day": 1,
        "market_open": 1,
        "track_a_window_open": 1,
        "track_b_window_open": 0,
        "track_a_slots_expected": 38,
    }
    # a wall clock in another zone is the same instant
    assert gates("2025-11-14T01:00:00+00:00")["market_open"] == 1

    # the two-venue day, the default: both windows follow the venues' phases, so a late open moves them and a
    # holiday has none
    del env["OBSERVER_TRACK_A_WINDOW"], env["OBSERVER_TRACK_B_WINDOW"]
    assert gates("2026-12-01T08:05:00+09:00") == {  # NXT's pre-market
        "trading_day": 1,
        "market_open": 0,
        "track_a_window_open": 1,
        "track_b_window_open": 1,
        "track_a_slots_expected": 1,
    }
    assert gates("2026-12-01T19:55:00+09:00")["track_b_window_open"] == 1  # both after-markets to 20:00
    assert gates("2026-12-01T20:00:00+09:00")["track_b_window_open"] == 0
    first_phase = min(p.start for p in calendar_from_env(env).phases(date(2026, 11, 19)))
    assert first_phase.hour >= 9  # CSAT day: the table starts the day late
    assert gates("2026-11-19T08:30:00+09:00") == {
        "trading_day": 1,
        "market_open": 0,
        "track_a_window_open": 0,
        "track_b_window_open": 0,
        "track_a_slots_expected": 0,
    }
    assert gates("2026-12-25T10:00:00+09:00")["track_b_window_open"] == 0  # Christmas


def test_folding_finished_processes_keeps_every_count(tmp_path):
    """Real processes record, die; compact() folds their files into the archive: the totals do not move, the
    files go, a second round adds to the archive, and an interrupted fold is undone, not counted twice."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from observer_resources import metrics as om

    d = tmp_path / "mp"
    d.mkdir()
    env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(d)
    code = (
        "import sys\nfrom observer_resources import metrics as m\n"
        "for i in range(int(sys.argv[1])): m.observe_request('FHKST01010100', 'ok', 0.03 * i)\n"
        "m.observe_request('FHKST01010100', 'error', 0.2, 'EGW00123')\nm.observe_limiter_wait('key-x', 0.3)\n"
        "m.observe_track_a_slot(12.5)\n"
    )

    def run(n: int) -> None:
        subprocess.run([sys.executable, "-c", code, str(n)], env=env, check=True, timeout=60)

    def totals() -> dict:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in MultiProcessCollector.merge(om.db_files(d))
            for s in f.samples
        }

    run(3), run(4)
    before = totals()
    assert before[("observer_api_requests_total", (("result", "ok"), ("tr_id", "FHKST01010100")))] == 7
    assert om.compact(d, min_idle_s=3600) == 0  # just written: not idle yet
    assert om.compact(d, min_idle_s=0) == 4
    assert totals() == before
    assert sorted(p.name for p in d.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
    run(5)
    assert om.compact(d, min_idle_s=0) == 2
    after = totals()
    assert after[("observer_api_requests_total", (("result", "ok"), ("tr_id", "FHKST01010100")))] == 12
    assert after[("observer_track_a_slot_duration_seconds_count", ())] == 3
    assert after[("observer_api_errors_total", (("code", "EGW00123"),))] == 3
    # a fold interrupted after its files were moved aside, before the archive was replaced: undone next time
    run(1)
    staged = d / ".folding"
    for p in d.glob("*_[0-9]*.db"):
        os.replace(p, staged / p.name)
    (d / ".fold.commit").write_text("counter 0000\n")
    assert om.compact(d, min_idle_s=0) == 2
    assert totals()[("observer_api_requests_total", (("result", "ok"), ("tr_id", "FHKST01010100")))] == 13
    assert not list(staged.iterdir())


def test_observer_metrics_command_serves_http(day):
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "observer_assets.cli", "metrics", "--port", "0"],
        env=day.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline().rstrip("\n")
        m = re.fullmatch(r"observer metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = f"http://127.0.0.1:{m[1]}"
        r = httpx.get(base + "/metrics", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        s = parse(r.text)
        assert value(s, "observer_universe_size") > 20 and total(s, "observer_api_requests_total") > 0
        t0 = time.perf_counter()
        assert httpx.get(base + "/metrics", timeout=30).status_code == 200
        assert time.perf_counter() - t0 < 1.0  # a second scrape is served from the 5-second cache
        h = httpx.get(base + "/health", timeout=10)
        assert (h.status_code, h.text) == (200, "ok")
        assert httpx.get(base + "/nothing", timeout=10).status_code == 404
        for secret in day.key:
            assert secret not in r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
        err = proc.stderr.read()
        for secret in day.key:
            assert secret not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_scrape_is_fast_on_a_full_day(tmp_path):
    """2,500 symbols, 40 Track A slots, a 400-row gap report, 20,000 events, a 2,000-evaluation overflow ledger:
    the first scrape reads it all well under a second; later ones only what changed."""
    import numpy as np
    import pyarrow as pa

    from observer_assets.gaps.detect import GAP_SCHEMA
    from observer_assets.monitoring.metrics import ObserverCollector, collect_text
    from observer_assets.track_a.snapshot import SNAPSHOT_SCHEMA
    from observer_resources.calendar import KST
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.events import events_path
    from observer_resources.storage import lake
    from observer_resources.storage.layout import overflow_path, report_path, slot_dir, universe_path

    root = tmp_path / "data"
    now = datetime(2025, 11, 14, 15, 35, tzinfo=KST)
    d = now.date()
    codes = [f"{i:06d}" for i in range(2500)]
    lake.write_table_atomic(universe_path(root, d), pa.table({"code": codes, "name": codes}))
    for slot in MarketCalendar("krx").track_a_slots(d):
        cols = {f.name: pa.nulls(2500, f.type) for f in SNAPSHOT_SCHEMA}
        cols.update(code=pa.array(codes), price=pa.array(np.arange(2500) + 1000))
        lake.write_table_atomic(slot_dir(root, slot) / "snapshot.parquet", pa.table(cols, schema=SNAPSHOT_SCHEMA))
    rows = {f.name: pa.nulls(400, f.type) for f in GAP_SCHEMA}
    rows.update(severity=pa.array(["minor", "major"] * 200), status=pa.array(["open"] * 400))
    lake.write_table_atomic(report_path(root, d), pa.table(rows, schema=GAP_SCHEMA))
    ep = events_path(root, d)
    ep.parent.mkdir(parents=True)
    ep.write_text(
        "".join(
            json.dumps(
                {
                    "event_type": "slot_change",
                    "timestamp": now.isoformat(),
                    "action": "allocate",
                    "trigger": "velocity",
                    "key_id": "k",
                    "code": c,
                }
            )
            + "\n"
            for c in codes * 8
        )
    )
    op = overflow_path(root, d)
    op.parent.mkdir(parents=True)
    op.write_text(
        "".join(
            json.dumps(
                {
                    "timestamp": now.isoformat(),
                    "rejected": [
                        {"symbol": c, "trigger_type": "volume_surge", "reason": "lower_priority"} for c in codes[:5]
                    ],
                    "selected": [{"code": c} for c in codes[:41]],
                }
            )
            + "\n"
            for _ in range(2000)
        )
    )
    env = {"OBSERVER_DATA_DIR": str(root), "OBSERVER_CALENDAR": "krx", "OBSERVER_TRACK_A_WINDOW": "session"}
    collect_text(env, now=now)  # imports and first-use costs out of the way
    c = ObserverCollector(env, now=now, cache_seconds=0, slow_cache_seconds=0)
    try:
        t0 = time.perf_counter()
        s = parse(collect_text(env, collector=c))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        collect_text(env, collector=c)
        warm = time.perf_counter() - t0
    finally:
        c.close()
    print(f"full-day scrape: first {cold * 1000:.0f} ms, next {warm * 1000:.0f} ms")
    assert value(s, "observer_track_a_slots_written") == 40 == value(s, "observer_track_a_slots_expected")
    assert value(s, "observer_track_a_last_slot_coverage_ratio") == 1.0
    assert value(s, "observer_track_b_triggers_total", trigger="velocity") == 20_000
    assert value(s, "observer_track_b_triggers_total", trigger="volume_surge") == 10_000
    assert value(s, "observer_track_b_overflows_total") == 10_000
    assert value(s, "observer_gaps", severity="major", status="open") == 200
    assert cold < 1.0 and warm < 0.3


def test_docs_reference_is_generated_from_the_specs():
    from observer_assets.monitoring.metrics import ALL_SPECS, reference_markdown

    text = (ROOT / "docs" / "metrics.md").read_text()
    assert reference_markdown() in text, "docs/metrics.md is out of date: paste reference_markdown() into it"
    names = {s.sample_name for s in ALL_SPECS}
    assert names == CATALOGUE_NAMES


if __name__ == "__main__" and sys.argv[1:] == ["build"]:
    _child_build()
