"""Secrets (observer_resources/secrets.py): the one list, the allow-listed config snapshot, alerts that cannot hang.

* The rules themselves: every secret name form, URLs with userinfo and secret query values, scrubbing, and the
  snapshot allow-list (which also covers every setting the code reads: a new one must be classified).
* Where they are used: the backup destination refused inside the lake, the event log scrubbing a secret that slips
  into a message.
* Alerts against a real loopback server that answers one byte a second forever: a post gives up at its deadline,
  and the check-failure sensor's tick stays inside its budget and still advances its cursor.
* The canary: every secret-bearing setting holds a unique value, a day runs through the real parts (assets against
  the local exchange with the shared state on a real PostgreSQL, a backup, the exporter, alerts to a loopback
  webhook, an event quoting a secret), and no byte of any file written, log line or webhook body holds a canary.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import select
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from observer_resources import secrets
from observer_resources.secrets import (
    SNAPSHOT_SETTINGS,
    config_snapshot_settings,
    is_secret_name,
    redact_url,
    scrub,
    secret_values,
)

ROOT = Path(__file__).resolve().parents[1]
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# --- the rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "KIS_APP_KEY",
        "KIS_APP_SECRET",
        "KIS_APP_KEY_2",
        "KIS_APP_SECRET_2",
        "KIS_APP_KEY_17",
        "KIS_APP_SECRET_17",
        "OBSERVER_ALERT_WEBHOOK",
        "OBSERVER_ALERT_SLACK_URL",
        "OBSERVER_ALERT_TELEGRAM_BOT_TOKEN",
        "OBSERVER_ALERTMANAGER_WEBHOOK",
        "DAGSTER_PG_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GITHUB_TOKEN",
        "SMTP_PASSWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SOME_APPKEY",
        "kis_app_key",
        "X_API_KEY",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "OBSERVER_ALERT_TELEGRAM_CHAT_ID",
        "OBSERVER_ALERT_WEBHOOK_FILE",
        "OBSERVER_ALERT_SLACK_URL_FILE",
        "OBSERVER_ALERTMANAGER_DIR",
        "OBSERVER_ALERTMANAGER_LISTEN",
        "OBSERVER_DATA_DIR",
        "OBSERVER_STATE_DB_URL",
        "OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S",
        "OBSERVER_DEMO_KEYS",
        "KIS_ENV",
        "KIS_REST_URL",
        "DAGSTER_PG_USER",
        "DAGSTER_HOME",
        "PATH",
    ],
)
def test_not_secret_names(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://observer:pw-123456@db:5432/state", "postgresql://***@db:5432/state"),
        (
            "postgresql://u:p@h:5432/db?sslmode=require&password=x",
            "postgresql://***@h:5432/db?sslmode=require&password=***",
        ),
        ("https://tok3n-only@hooks.example/x", "https://***@hooks.example/x"),
        (
            "postgresql://u:pa/ss#w@rd@h/db",
            "postgresql://***@h/db",
        ),  # unencoded / # @ in the password: all of it hidden
        (
            "s3://bucket/lake?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&versionId=3#f",
            "s3://bucket/lake?X-Amz-Signature=***&X-Amz-Credential=***&versionId=3#f",
        ),
        ("https://h/p?api_key=k&token=t&sig=s&page=2", "https://h/p?api_key=***&token=***&sig=***&page=2"),
        ("u:sekret@h/d", "***@h/d"),
        ("/data/observer", "/data/observer"),
        ("file:///data/observer", "file:///data/observer"),
        ("s3://bucket/backups", "s3://bucket/backups"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_secret_values_and_scrub():
    env = {
        "KIS_APP_KEY": "PSKEYCANARY00000000000000000000000001",
        "KIS_APP_SECRET_2": "second-secret-value",
        "DAGSTER_PG_PASSWORD": "pg-pass-word",
        "OBSERVER_ALERT_WEBHOOK": "https://hooks.example/services/T1/hook-tok",
        "OBSERVER_STATE_DB_URL": "postgresql://observer:p%40ss-w0rd@db:5432/state?sslmode=require&password=q-pass-99",
        "OBSERVER_BACKUP_URL": "https://bkp-user:bkp-pass-1@store.example/b?token=bkp-token-1",
        "OBSERVER_BACKUP_OPTIONS": json.dumps(
            {"endpoint_url": "http://minio:9000", "client_kwargs": {"aws_secret_access_key": "opt-secret-1"}}
        ),
        "KIS_APP_SECRET": "short",  # under 6 characters: never scrubbed from free text (it would mangle words)
        "OBSERVER_DATA_DIR": "/data/observer",
        "OBSERVER_CALENDAR": "krx",
    }
    vals = secret_values(env)
    assert vals == sorted(vals, key=len, reverse=True)
    for v in (
        "PSKEYCANARY00000000000000000000000001",
        "second-secret-value",
        "pg-pass-word",
        "p%40ss-w0rd",
        "p@ss-w0rd",
        "q-pass-99",
        "bkp-pass-1",
        "bkp-user:bkp-pass-1",
        "bkp-token-1",
        "opt-secret-1",
        "https://hooks.example/services/T1/hook-tok",
        "/services/T1/hook-tok",
    ):
        assert v in vals, v
    assert "short" not in vals and "/data/observer" not in vals and "krx" not in vals and "minio" not in " ".join(vals)
    text = (
        "connect to postgresql://observer:p@ss-w0rd@db/state failed; key PSKEYCANARY00000000000000000000000001; "
        "POST /services/T1/hook-tok -> 500; fetch https://anyone:else@x.example/y?token=zzz&n=1; pw p%40ss-w0rd"
    )
    out = scrub(text, env)
    for v in vals + ["anyone:else", "zzz"]:
        assert v not in out, v
    assert "postgresql://***@db/state" in out and "token=***&n=1" in out and "POST *** -> 500" in out
    # given values are masked whatever their length; the environment is not consulted then
    assert scrub("a-b-c xyz", values=["xyz"]) == "a-b-c ***"


def test_config_snapshot_is_an_allow_list():
    from observer_assets.backup.settings import config_snapshot

    env = {
        "OBSERVER_STATE_DB_URL": "postgresql://observer:Manifest-PW-1@db:5432/state?sslmode=require",
        "OBSERVER_BACKUP_URL": "s3://bucket/backups",
        "OBSERVER_CALENDAR": "krx",
        "OBSERVER_RETENTION_DAYS": "3",
        "OBSERVER_BACKUP_OPTIONS": json.dumps({"endpoint_url": "http://minio:9000", "region_name": "kr"}),
        "KIS_REST_URL": "https://u:rest-pw-1@openapi.example:9443",
        "KIS_APP_KEY": "k" * 36,
        "KIS_APP_SECRET": "s" * 40,
        "OBSERVER_SOMETHING_NEW": "not listed yet",
        "OBSERVER_ALERT_WEBHOOK": "https://hooks.example/x/y-tok",
        "DAGSTER_PG_PASSWORD": "pg-pw-123",
    }
    got = config_snapshot_settings(env)
    assert got == {
        "OBSERVER_STATE_DB_URL": "postgresql://***@db:5432/state?sslmode=require",
        "OBSERVER_BACKUP_URL": "s3://bucket/backups",
        "OBSERVER_CALENDAR": "krx",
        "OBSERVER_RETENTION_DAYS": "3",
        "OBSERVER_BACKUP_OPTIONS": ["endpoint_url", "region_name"],
        "KIS_REST_URL": "https://***@openapi.example:9443",
    }
    snap = json.dumps(config_snapshot(env))
    for v in ("Manifest-PW-1", "rest-pw-1", "k" * 36, "s" * 40, "y-tok", "pg-pw-123", "minio", "not listed yet"):
        assert v not in snap
    assert json.loads(snap)["kis_real_keys"] is True


def test_every_setting_the_code_reads_is_classified():
    """A new OBSERVER_*/KIS_* setting is declared in settings.py, where its declaration decides: secret, fit for a
    backup manifest (snapshot), or knowingly neither. No secret is ever allow-listed for a manifest."""
    from observer_resources import settings

    names: set[str] = set()
    for pkg in ("observer_assets", "observer_resources"):
        for f in (ROOT / pkg).rglob("*.py"):
            if f.name == "secrets.py":  # the rules' own name fragments
                continue
            names |= set(re.findall(r'"((?:OBSERVER|KIS)_[A-Z0-9_]+)"', f.read_text(encoding="utf-8")))
    assert names, "no settings found"
    assert sorted(n for n in names if settings.lookup(n) is None) == [], "declare these in settings.py"
    assert not [n for n in SNAPSHOT_SETTINGS if is_secret_name(n)]
    assert set(SNAPSHOT_SETTINGS) == {s.name for s in settings.SETTINGS if s.snapshot}


# --- where the rules are used --------------------------------------------------------------------------------------


def test_a_backup_destination_inside_the_lake_is_refused(tmp_path):
    from observer_assets.backup.settings import SettingsError, backup_dest, backup_url

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    base = {"OBSERVER_DATA_DIR": str(data)}
    for bad in (
        str(data),
        str(data) + "/",
        str(data / "backups"),
        f"file://{data}/b",
        str(tmp_path / "link"),
        str(tmp_path / "link" / "backups"),
        f"{tmp_path}/other/../data/x",
    ):
        with pytest.raises(SettingsError) as err:
            backup_dest({**base, "OBSERVER_BACKUP_URL": bad})
        msg = str(err.value)
        assert "\n" not in msg and "OBSERVER_BACKUP_URL" in msg and "inside the data directory" in msg, msg
    for good in (
        str(tmp_path / "backups"),
        f"file://{tmp_path}/backups",
        str(tmp_path / "data-backups"),
        "memory://elsewhere",
    ):
        assert backup_url({**base, "OBSERVER_BACKUP_URL": good}) == good
    assert backup_url(base) == str(tmp_path / "backups")  # the default, beside the lake
    # a lake on a URL: its local directory, and the lake's own prefix, are refused too
    url_lake = {"OBSERVER_DATA_DIR": "memory://lake", "OBSERVER_LOCAL_DIR": str(tmp_path / "local")}
    for bad, what in ((str(tmp_path / "local" / "b"), "local directory"), ("memory://lake/backups", "inside the lake")):
        with pytest.raises(SettingsError, match=what):
            backup_dest({**url_lake, "OBSERVER_BACKUP_URL": bad})
    assert backup_url({**url_lake, "OBSERVER_BACKUP_URL": "memory://lake-backups"}) == "memory://lake-backups"
    # options that look like credentials are still refused, by the shared rule
    with pytest.raises(SettingsError, match="may not carry credentials"):
        backup_dest(
            {
                **base,
                "OBSERVER_BACKUP_URL": "memory://b",
                "OBSERVER_BACKUP_OPTIONS": json.dumps({"key": "AKIA", "secret": "x"}),
            }
        )


def test_events_scrub_secret_values_from_every_string(tmp_path, monkeypatch):
    from observer_resources.events import EventLog, events_dir

    pw, key = "event-canary-pw-31", "PSEVENTCANARY000000000000000000000031"
    monkeypatch.setenv("OBSERVER_STATE_DB_URL", f"postgresql://observer:{pw}@127.0.0.1:9/observer")
    monkeypatch.setenv("KIS_APP_KEY_3", key)
    ev = EventLog(tmp_path)
    rec = ev.emit(
        "api_error",
        message=f"connect failed: password {pw} for key {key}",
        detail={"errors": [f"x {key}", {"deep": pw}], "n": 3, "ok": True, "none": None},
        where=tmp_path,
    )
    assert rec["detail"]["n"] == 3 and rec["detail"]["ok"] is True and rec["detail"]["none"] is None
    assert rec["where"] == str(tmp_path)
    blob = b"".join(p.read_bytes() for p in events_dir(tmp_path).iterdir())
    assert pw.encode() not in blob and key.encode() not in blob and blob.count(b"***") == 4
    with pytest.raises(ValueError, match="looks like a secret"):
        ev.emit("x", app_key="whatever")


# --- alerts that cannot hang -----------------------------------------------------------------------------------


class TrickleServer:
    """A real loopback HTTP server that reads each POST whole, then answers one byte a second, forever (a header
    line that never ends). Records the bodies, and when each client hung up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.bodies: list[bytes] = []
        self.hangups: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            n = int(re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE).group(1))
            while len(body) < n:
                body += conn.recv(65536)
            self.bodies.append(body)
            answer = itertools.chain(b"HTTP/1.1 200 OK\r\nX-Slow: ", itertools.repeat(ord("a")))
            for byte in answer:
                if self._stop.is_set():
                    return
                readable, _, _ = select.select([conn], [], [], 1.0)
                try:
                    if readable and not conn.recv(1):
                        self.hangups.append(time.monotonic())
                        return
                    conn.send(bytes([byte]))
                except OSError:
                    self.hangups.append(time.monotonic())
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def trickle(monkeypatch):
    for k in PROXIES:
        monkeypatch.delenv(k, raising=False)
    srv = TrickleServer()
    yield srv
    srv.close()


def _post_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "observer-alert-post" and t.is_alive()]


def test_a_trickling_webhook_costs_one_deadline_and_leaks_nothing(trickle, monkeypatch, caplog):
    from observer_assets.monitoring import alerts

    monkeypatch.setenv(alerts.WEBHOOK_ENV, trickle.url)
    with caplog.at_level(logging.ERROR, logger="observer.alerts"):
        t0 = time.monotonic()
        d = alerts.send("[Observer] a slow webhook")
        took = time.monotonic() - t0
    assert alerts.POST_DEADLINE_S - 0.5 <= took <= alerts.POST_DEADLINE_S + 2.0, took
    assert not d.posted and d.status is None and "no complete answer within" in d.error
    assert json.loads(trickle.bodies[0])["text"] == "[Observer] a slow webhook"  # it did reach the server
    # the connection was closed, not abandoned: the server sees the hang-up within a byte's time
    deadline = time.monotonic() + 3
    while not trickle.hangups and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trickle.hangups and trickle.hangups[0] - t0 <= alerts.POST_DEADLINE_S + 3
    assert _post_threads() == []
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "ALERT [Observer] a slow webhook" and "alert not delivered" in msgs[1]
    assert all(trickle.url not in m for m in msgs)


def test_run_failure_posts_share_the_tick_budget():
    from observer_assets.monitoring import alerts, sensors

    # Dagster hands one tick of a run-status sensor up to 5 runs: 5 posts of 8 s fill the 40 s budget exactly
    assert sensors.run_failure_post_deadline({}) == alerts.TICK_BUDGET_S / 5 <= alerts.POST_DEADLINE_S
    assert sensors.run_failure_post_deadline({"DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT": "20"}) == 2.0
    assert sensors.run_failure_post_deadline({"DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT": "1"}) == alerts.POST_DEADLINE_S


def test_the_check_alert_tick_stays_in_budget_and_advances_its_cursor(tmp_path, trickle, monkeypatch, caplog):
    """Several failed checks, a webhook trickling its answers: the tick ends inside its budget, every alert is
    logged, the ones past the budget are counted, and the next tick starts after them (no repeats)."""
    from gaps.test_checks_alerts import CODES, SLOT, run_track_a_checks, snapshot, write_universe

    from observer_assets.monitoring import alerts, sensors
    from observer_resources.storage import lake
    from observer_resources.storage.layout import slot_dir

    monkeypatch.setenv("OBSERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OBSERVER_CALENDAR", "open")
    monkeypatch.setenv(alerts.WEBHOOK_ENV, trickle.url)
    monkeypatch.delenv(alerts.CHAT_ID_ENV, raising=False)
    # the real rule, scaled down so the test takes seconds: 2 s per post, 5 s per tick
    monkeypatch.setattr(alerts, "POST_DEADLINE_S", 2.0)
    monkeypatch.setattr(alerts, "TICK_BUDGET_S", 5.0)
    write_universe()
    bad = snapshot(CODES[:36])  # 90 % coverage, and a float price column: both checks fail
    bad = bad.set_column(bad.schema.get_field_index("price"), "price", pa.array([5100.5] * 36, pa.float64()))
    lake.write_table_atomic(slot_dir(lake.data_dir(), SLOT) / "snapshot.parquet", bad)
    with dg.instance_for_test() as inst, caplog.at_level(logging.INFO, logger="observer.alerts"):

        def tick(cursor):
            return sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=cursor))

        c0 = tick(None).cursor
        for _ in range(3):
            assert sum(not e.passed for e in run_track_a_checks(inst).values()) == 2
        t0 = time.monotonic()
        res = tick(c0)
        took = time.monotonic() - t0
        assert took <= alerts.TICK_BUDGET_S + 2.5, took
        c1 = res.cursor
        assert c1 and c1 != c0 and "6 failed" in res.skip_message
        msgs = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("ALERT [Observer] check FAILED") for m in msgs) == 6
        assert all(m.startswith("ALERT") for m in msgs[:6])  # every alert logged before any post
        (over,) = [m for m in msgs if "alert budget ran out" in m]
        n_over = int(over.split()[0])
        assert 1 <= n_over <= 4 and len(trickle.bodies) == 6 - n_over
        # the next tick starts after everything the slow tick read: nothing is alerted twice
        caplog.clear()
        res2 = tick(c1)
        assert res2.cursor == c1 and "0 failed" in res2.skip_message
        assert not [r for r in caplog.records if r.getMessage().startswith("ALERT")]
    deadline = time.monotonic() + 5
    while _post_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _post_threads() == []


# --- the canary ------------------------------------------------------------------------------------------------------


class Webhook:
    """A real loopback webhook recording every raw body."""

    def __init__(self, path: str) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *a):  # noqa: ANN002
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}{path}"
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.th.join(5)


def _canary_key(tag: str, n: int) -> str:
    """An app key of KIS's shape (36 alphanumerics) the local exchange accepts, unmistakable in any byte dump."""
    return f"PSCANARY{tag}{n:d}".ljust(36, "0")[:36]


def _canary_secret(tag: str) -> str:
    return f"CanarySecret{tag}{uuid.uuid4().hex}".ljust(180, "Q")[:180]


def test_no_canary_reaches_any_file_log_or_webhook(tmp_path, monkeypatch, caplog, capfd, postgres):
    from local_exchange.server import run_sim_process
    from observer_assets.backup.assets import daily_backup
    from observer_assets.gaps.assets import gap_report
    from observer_assets.gaps.checks import TRACK_A_CHECKS
    from observer_assets.monitoring import alerts, sensors
    from observer_assets.monitoring.metrics import ObserverCollector, collect_text
    from observer_assets.orchestration.partitions import day_key, slot_key
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.universe.assets import universe
    from observer_resources.calendar import KST
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.events import EventLog
    from observer_resources.resources import kis_pool_from_env
    from observer_resources.storage import lake

    run = uuid.uuid4().hex[:8]
    sim = run_sim_process("--mode", "real", "--clock", "open", "--seed", "17", "--listings", "120")
    hook = Webhook(f"/hook/webhook-path-canary-{run}")
    try:
        db = f"canary_{run}"
        postgres.create_database(db)
        canaries = {
            "KIS_APP_KEY": _canary_key("A", 1),
            "KIS_APP_SECRET": _canary_secret("A"),
            "KIS_APP_KEY_2": _canary_key("B", 2),
            "KIS_APP_SECRET_2": _canary_secret("B"),
            "pg password": f"state-db-pw-canary-{run}",
            "DAGSTER_PG_PASSWORD": f"dagster-pg-canary-{run}",
            "webhook path": f"webhook-path-canary-{run}",
            "OBSERVER_ALERT_TELEGRAM_BOT_TOKEN": f"123456:telegram-canary-{run}",
            "OBSERVER_ALERT_SLACK_URL": f"https://hooks.slack.com/services/T0/B0/slack-canary-{run}",
            "OBSERVER_ALERTMANAGER_WEBHOOK": f"https://am.example.invalid/am-canary-{run}",
            "AWS_SECRET_ACCESS_KEY": f"aws-secret-canary-{run}",
            "ws password": f"ws-userinfo-canary-{run}",
        }
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = {
            "OBSERVER_DATA_DIR": str(tmp_path / "data"),
            "OBSERVER_BACKUP_URL": str(tmp_path / "backups"),
            "OBSERVER_CALENDAR": "open",
            "OBSERVER_UNIVERSE_MIN_COUNT": "20",
            "DAGSTER_HOME": str(home),
            "KIS_REST_URL": sim.rest_url,
            # recorded (redacted) in every manifest; the Track B socket it names is not opened here
            "KIS_WS_URL": sim.ws_url.replace("://", f"://observer:{canaries['ws password']}@", 1),
            "OBSERVER_STATE_DB_URL": f"postgresql://{postgres.user}:{canaries['pg password']}@127.0.0.1:"
            f"{postgres.port}/{db}?sslmode=disable",  # trust auth: any password is let in
            "OBSERVER_ALERT_WEBHOOK": hook.url,
            "OBSERVER_ALERT_TELEGRAM_CHAT_ID": "-100777",
            **{k: v for k, v in canaries.items() if re.fullmatch(r"[A-Z0-9_]+", k)},
        }
        for k in list(os.environ):
            if k.startswith(("OBSERVER_", "KIS_", "DAGSTER_PG_")) or k in PROXIES:
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        caplog.set_level(logging.DEBUG)

        root = lake.data_dir()
        now = datetime.now(KST)
        day = now.date()
        cal = MarketCalendar("open")
        with dg.DagsterInstance.get() as inst:
            # a day from the real assets, both canary keys sharing their tokens and budget through PostgreSQL
            kis = kis_pool_from_env()
            inst.add_dynamic_partitions("trading_day", [day_key(day)])
            assert dg.materialize(
                [universe],
                partition_key=day_key(day),
                instance=inst,
                resources={"kis": kis},
                run_config={"ops": {"universe": {"config": {"min_master_codes": 50}}}},
            ).success
            slot = cal.slot_at(now)
            inst.add_dynamic_partitions("track_a_slot", [slot_key(slot)])
            assert dg.materialize(
                [track_a_snapshot, universe],
                selection=[track_a_snapshot],
                partition_key=slot_key(slot),
                instance=inst,
                resources={"kis": kis},
            ).success
            assert dg.materialize(
                [gap_report, universe.to_source_asset()], partition_key=day_key(day), instance=inst
            ).success

            # an event whose message quotes secrets, as an error text might
            EventLog(root, source="canary").emit(
                "api_error",
                message=f"connect to {env['OBSERVER_STATE_DB_URL']} failed for {env['KIS_APP_KEY']}",
                detail={"urls": [env["OBSERVER_ALERT_WEBHOOK"], env["OBSERVER_ALERT_SLACK_URL"]]},
            )

            # alerts: a failed check through the real sensor, and a text stuffed with every canary
            def tick(cursor):
                return sensors.check_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=inst, cursor=cursor))

            c0 = tick(None).cursor
            missing = slot_key(slot + timedelta(minutes=10))  # no snapshot there: both checks fail
            inst.add_dynamic_partitions("track_a_slot", [missing])
            dg.materialize(
                [track_a_snapshot, universe, *TRACK_A_CHECKS],
                tags={"dagster/partition": missing},
                instance=inst,
                selection=dg.AssetSelection.checks(*TRACK_A_CHECKS),
                raise_on_error=False,
                resources={"kis": dg.ResourceDefinition.none_resource()},
            )
            assert "2 failed" in tick(c0).skip_message
            d = alerts.send("[Observer] leak test: " + " | ".join(canaries.values()) + " " + json.dumps(env))
            assert d.posted and len(hook.bodies) == 3

            # the backup of the day (its manifest records the configuration)
            assert dg.materialize([daily_backup], partition_key=day_key(day), instance=inst).success
            manifest = json.loads((tmp_path / "backups" / day.isoformat() / "manifest.json").read_text())
            recorded = manifest["config"]["settings"]
            assert recorded["OBSERVER_STATE_DB_URL"].startswith("postgresql://***@127.0.0.1:")
            assert recorded["KIS_WS_URL"].startswith("ws://***@127.0.0.1:")
            assert not [k for k in recorded if secrets.is_secret_name(k)]

            # the exporter: a scrape, its log, and a source error naming the database
            c = ObserverCollector(dict(os.environ), cache_seconds=0)
            try:
                scrape = collect_text(dict(os.environ), collector=c)
            finally:
                c.close()
            assert "observer_universe_size" in scrape and c.errors["tokens"] == 0
            broken = {
                **os.environ,
                "OBSERVER_STATE_DB_URL": env["OBSERVER_STATE_DB_URL"].replace(f":{postgres.port}/", ":9/"),
            }
            c = ObserverCollector(broken, cache_seconds=0)
            try:
                scrape += collect_text(broken, collector=c)
            finally:
                c.close()
            assert c.errors["tokens"] == 1
        out, err = capfd.readouterr()
    finally:
        hook.close()
        sim.stop()

    # every byte of every file written, every log line, every webhook body
    blobs: list[tuple[str, bytes]] = []
    for base in (tmp_path / "data", tmp_path / "backups", home):
        files = [p for p in base.rglob("*") if p.is_file()]
        assert files, base
        blobs += [(str(p), p.read_bytes()) for p in files]
    logs = "\n".join([caplog.text] + [r.getMessage() + " " + (r.exc_text or "") for r in caplog.records])
    blobs += [("logs", logs.encode()), ("stdout", out.encode()), ("stderr", err.encode()), ("scrape", scrape.encode())]
    blobs += [(f"webhook body {i}", b) for i, b in enumerate(hook.bodies)]
    assert any(p.endswith("manifest.json") for p, _ in blobs)
    leaks = [(what, name) for name, v in canaries.items() for what, blob in blobs if v.encode() in blob]
    assert leaks == []
    assert b"***" in hook.bodies[-1] and len(logs) > 1000  # the scan saw the masked alert and real log output
