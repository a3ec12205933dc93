"""The monitoring stack (monitoring/, docs/monitoring.md): real promtool, amtool and Prometheus.

* promtool checks the rules and the Prometheus config and runs every unit-test file; the test files themselves are
  checked for coverage: each rule fires in some test, and each silence scenario (healthy trading day, overnight,
  KRX holiday) feeds every metric the rules read, so its silence comes from the thresholds and the calendar gates,
  not from missing data.
* Every metric named in the rules and the dashboard exists in the exporter's real output (``collect_text``).
* End to end (slow): a real day on the local exchange, ``observer metrics`` as a process, a real ``prometheus``
  scraping it every second with the rules loaded; Prometheus's HTTP API returns the day's universe size.

Without the binaries (apt-get install prometheus prometheus-alertmanager) the tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "monitoring"
RULES = MON / "prometheus" / "rules" / "observer.rules.yml"
PROM_CONFIG = MON / "prometheus" / "prometheus.yml"
UNIT_TESTS = sorted((MON / "prometheus" / "tests").glob("*.yml"))
SILENT = {"silent_trading_day.yml", "silent_overnight.yml", "silent_holiday.yml"}
ALERTMANAGER = MON / "alertmanager" / "alertmanager.yml"
DASHBOARD = MON / "grafana" / "dashboards" / "observer.json"
GATES = {"observer_trading_day", "observer_market_open", "observer_track_a_window_open", "observer_track_b_window_open"}

_METRIC = re.compile(r"\b(observer_[a-zA-Z0-9_]+)")


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} missing in CI: .ci/run must apt-get install {package}")
        pytest.skip(f"needs {binary} (make deps installs the Debian package {package})")
    return path


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def metric_names(expr: str) -> set[str]:
    """The observer_* series an expression reads (histogram samples mapped to their family)."""
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in _METRIC.findall(expr)}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for sub in [p, *p.get("panels", [])]:
            out += [t["expr"] for t in sub.get("targets", []) if t.get("expr")]
    out += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return out


def exported_names(text: str) -> set[str]:
    """Sample names of the exposition text, plus families declared without a sample yet (a labelled family
    with no children): a histogram's family name, a counter's ``_total``."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names} | names


# --- promtool / amtool ------------------------------------------------------------------------------------------


def test_promtool_check_rules():
    promtool = need("promtool", "prometheus")
    r = run(promtool, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_check_config():
    promtool = need("promtool", "prometheus")
    r = run(promtool, "check", "config", str(PROM_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout


def test_promtool_unit_tests_pass():
    promtool = need("promtool", "prometheus")
    assert UNIT_TESTS, "no unit-test files"
    r = run(promtool, "test", "rules", *[p.name for p in UNIT_TESTS], cwd=UNIT_TESTS[0].parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(UNIT_TESTS), r.stdout


def test_promtool_unit_tests_fail_on_a_firing_alert(tmp_path):
    """The silence check is a real assertion: a healthy day with 70 % coverage makes promtool fail."""
    promtool = need("promtool", "prometheus")
    text = (MON / "prometheus" / "tests" / "silent_trading_day.yml").read_text()
    bad = text.replace("../rules/observer.rules.yml", str(RULES)).replace("'0 0.99x119'", "'0 0.7x119'")
    assert bad != text
    (tmp_path / "bad.yml").write_text(bad)
    r = run(promtool, "test", "rules", "bad.yml", cwd=tmp_path)
    assert r.returncode != 0
    assert 'alertname="ObserverTrackACoverageLow"' in r.stdout + r.stderr


def test_each_rule_has_for_severity_summary_runbook_and_a_firing_test():
    fired: set[str] = set()
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for t in group.get("alert_rule_test", []):
                if t.get("exp_alerts"):
                    fired.add(t["alertname"])
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    for r in rules():
        assert "for" in r, r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["runbook"], r["alert"]
    assert set(names) - fired == set(), "rules without a test that fires them"
    assert fired - set(names) == set(), "tests for rules that do not exist"


def test_rate_and_absence_rules_are_gated_by_the_calendar():
    """Every rule over a rate, a duration since, or something missing joins a calendar gate; the ungated ones are
    about state that matters at any hour."""
    ungated = {
        "ObserverExporterDown",
        "ObserverExporterAbsent",
        "ObserverExporterSourceFailing",
        "ObserverTokenRefreshFailed",
        "ObserverRateLimitRejections",  # any failure, whenever it happens
        "ObserverCriticalGapOpen",
        "ObserverMajorGapOpen",
        "ObserverGapBudgetExceeded",  # today's report
        "ObserverBackupUnverified",
        "ObserverBackupBacklog",
        "ObserverRetentionBlocked",
        "ObserverDiskFilling",
        "ObserverDiskAlmostFull",
        "ObserverRunFailures",
        "ObserverDagsterInstanceUnreachable",
    }
    for r in rules():
        gated = bool(metric_names(r["expr"]) & GATES)
        assert gated == (r["alert"] not in ungated), r["alert"]
        if re.search(r"\b(rate|increase|time)\(", r["expr"]) and r["alert"] not in ungated:
            assert gated, r["alert"]


def test_silence_scenarios_feed_every_metric_the_rules_read():
    used = set().union(*(metric_names(r["expr"]) for r in rules()))
    assert {p.name for p in UNIT_TESTS} >= SILENT
    for name in SILENT:
        doc = yaml.safe_load((MON / "prometheus" / "tests" / name).read_text())
        (group,) = doc["tests"]
        fed = set().union(*(metric_names(s["series"].split("{")[0]) for s in group["input_series"]))
        assert used - fed == set(), f"{name} lacks series for {sorted(used - fed)}"
        checks = [t for t in group["promql_expr_test"] if "ALERTS" in t["expr"]]
        assert checks and all(t["exp_samples"] == [] for t in checks), name
        # the ALERTS check looks back over the whole scenario
        span = max(len(s["values"].split()) for s in group["input_series"])
        assert any("max_over_time" in t["expr"] for t in checks), name
        assert span > 1


def test_alertmanager_config_checks_and_holds_no_secret():
    text = ALERTMANAGER.read_text()
    assert "\n  - name: observer\n" in text  # the receiver run.sh fills in
    assert not re.search(
        r"hooks\.slack\.com/services/|api\.telegram\.org/bot|bot_token:|api_url:|url:|://[^/\s]*@",
        text.split("\nglobal:")[1],
    )
    amtool = need("amtool", "prometheus-alertmanager")
    r = run(amtool, "check-config", str(ALERTMANAGER))
    assert r.returncode == 0, r.stdout + r.stderr


# canaries: what each receiver kind is given; none may reach the committed file or any output
SLACK_CANARY = "https://hooks.slack.com/services/T0CANARY/B0CANARY/slack-canary-4711"
TELEGRAM_CANARY = "987654:telegram-canary-AAE4712"
GENERIC_CANARY = "https://hooks.example.invalid/alertmanager/generic-canary-4713"
RECEIVER_KINDS = {
    "slack": ({"OBSERVER_ALERT_SLACK_URL_FILE": SLACK_CANARY}, "slack_configs"),
    "telegram": (
        {"OBSERVER_ALERT_TELEGRAM_BOT_TOKEN": TELEGRAM_CANARY, "OBSERVER_ALERT_TELEGRAM_CHAT_ID": "-1001234567890"},
        "telegram_configs",
    ),
    "generic": ({"OBSERVER_ALERTMANAGER_WEBHOOK_FILE": GENERIC_CANARY}, "webhook_configs"),
}


def _am_env(tmp_path: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVER_ALERT", "OBSERVER_ALERTMANAGER"))}
    env["OBSERVER_ALERTMANAGER_DIR"] = str(tmp_path / "am")
    for k, v in settings.items():
        if k.endswith("_FILE"):  # the secret in a file, as a mounted secret would be
            (tmp_path / k).write_text(v + "\n")
            v = str(tmp_path / k)
        env[k] = v
    return env


@pytest.mark.parametrize("kind", sorted(RECEIVER_KINDS))
def test_alertmanager_run_script_renders_each_receiver_kind_privately(tmp_path, kind):
    """run.sh renders the receiver in the format its service takes; the rendered file checks with amtool, is 0600,
    and the canary is in the private copy only: not in the committed file, not in any output."""
    amtool = need("amtool", "prometheus-alertmanager")
    settings, section = RECEIVER_KINDS[kind]
    canary = next(v for k, v in settings.items() if not k.endswith("CHAT_ID"))
    env = _am_env(tmp_path, settings)
    r = subprocess.run(
        [str(MON / "alertmanager" / "run.sh"), "--version"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "version" in r.stdout + r.stderr
    rendered = tmp_path / "am" / "alertmanager.yml"
    assert rendered.stat().st_mode & 0o077 == 0
    cfg = yaml.safe_load(rendered.read_text())
    (receiver,) = cfg["receivers"]
    assert receiver["name"] == "observer" and set(receiver) == {"name", section}
    (conf,) = receiver[section]
    if kind == "slack":  # Alertmanager reads the URL from a private file beside the config
        assert canary not in rendered.read_text()
        url_file = Path(conf["api_url_file"])
        assert url_file.read_text() == canary and url_file.stat().st_mode & 0o077 == 0
    elif kind == "telegram":
        assert conf["bot_token"] == canary and conf["chat_id"] == -1001234567890 and conf["parse_mode"] == ""
    else:
        assert conf["url"] == canary
    text = conf.get("text") or conf.get("message")
    if text:  # the message template itself renders
        (tmp_path / "empty.tmpl").write_text("")
        t = run(amtool, "template", "render", f"--template.glob={tmp_path / 'empty.tmpl'}", f"--template.text={text}")
        assert t.returncode == 0, t.stdout + t.stderr
    c = run(amtool, "check-config", str(rendered))
    assert c.returncode == 0, c.stdout + c.stderr
    for out in (r.stdout + r.stderr, c.stdout + c.stderr, ALERTMANAGER.read_text()):
        assert canary not in out
    assert not list((tmp_path / "am").glob(".*"))  # no temp file left behind


def test_alertmanager_run_script_refuses_bad_settings_without_echoing_them(tmp_path):
    need("amtool", "prometheus-alertmanager")
    script = str(MON / "alertmanager" / "run.sh")
    cases = [
        ({}, "no receiver configured"),
        ({"OBSERVER_ALERT_WEBHOOK": "https://hooks.example.invalid/dagster-canary-1"}, "no receiver configured"),
        ({"OBSERVER_ALERT_TELEGRAM_BOT_TOKEN": TELEGRAM_CANARY}, "needs both"),
        (
            {"OBSERVER_ALERT_TELEGRAM_BOT_TOKEN": TELEGRAM_CANARY, "OBSERVER_ALERT_TELEGRAM_CHAT_ID": "@channel"},
            "numeric chat id",
        ),
        ({"OBSERVER_ALERT_SLACK_URL": "hooks.slack.com/services/no-scheme-canary"}, "must start with http"),
    ]
    for settings, message in cases:
        env = _am_env(tmp_path, settings)
        r = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr, (settings, r.stderr)
        for v in settings.values():
            if "canary" in v:
                assert v not in r.stdout + r.stderr
        assert not (tmp_path / "am" / "alertmanager.yml").exists()


# --- dashboard and metric names ---------------------------------------------------------------------------------


def test_dashboard_structure_and_provisioning():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "observer" and dash["timezone"] == "Asia/Seoul"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for topic in (
        "universe",
        "coverage",
        "lateness",
        "slot duration",
        "slots per key",
        "trades received",
        "reconnects",
        "disconnected",
        "mitigation",
        "token validity",
        "refreshes",
        "limiter wait",
        "egw00201",
        "requests",
        "errors",
        "latency",
        "gaps",
        "backup",
        "last verified day",
        "unverified",
        "retention",
        "failed runs",
        "disk",
    ):
        assert topic in titles, topic
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "observer.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert dash["templating"]["list"][0]["current"]["value"] == ds["datasources"][0]["uid"]
    prov = yaml.safe_load((MON / "grafana" / "provisioning" / "dashboards" / "observer.yml").read_text())
    assert prov["providers"][0]["type"] == "file"


def test_every_metric_in_rules_and_dashboard_is_in_the_exporters_output(tmp_path):
    from observer_assets.monitoring.metrics import collect_text

    env = {
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "OBSERVER_CALENDAR": "krx",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "PATH": os.environ.get("PATH", ""),
    }
    (tmp_path / "data").mkdir()
    (tmp_path / "dagster_home").mkdir()
    exported = exported_names(collect_text(env))
    in_rules = set().union(*(metric_names(r["expr"]) for r in rules()))
    in_dash = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert len(in_rules) > 30 and len(in_dash) > 40
    assert in_rules - exported == set(), "rules use metrics the exporter does not serve"
    assert in_dash - exported == set(), "the dashboard uses metrics the exporter does not serve"


# --- end to end: the local exchange, the exporter process, a real Prometheus --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def query(base: str, q: str) -> list[dict]:
    return get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': q})}")["data"]["result"]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.slow
def test_prometheus_scrapes_the_exporter_after_a_real_day(tmp_path, monkeypatch, sim_factory):
    prometheus = need("prometheus", "prometheus")
    import dagster as dg

    from local_exchange.accounts import demo_credentials
    from observer_assets.orchestration.partitions import day_key
    from observer_assets.track_a.assets import track_a_snapshot
    from observer_assets.universe.assets import universe
    from observer_assets.universe.dataset import read_universe
    from observer_resources.calendar import KST
    from observer_resources.calendar.market import MarketCalendar
    from observer_resources.resources import KisResource
    from observer_resources.storage import lake

    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "13", "--listings", "120")
    key, secret = demo_credentials(81)
    env = {
        "OBSERVER_DATA_DIR": str(tmp_path / "data"),
        "OBSERVER_CALENDAR": "open",
        "OBSERVER_UNIVERSE_MIN_COUNT": "20",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "KIS_APP_KEY": key,
        "KIS_APP_SECRET": secret,
        "KIS_REST_URL": sim.rest_url,
        "KIS_WS_URL": sim.ws_url,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("OBSERVER_ALERT_WEBHOOK", raising=False)
    (tmp_path / "dagster_home").mkdir()

    # a real day: today's universe and one Track A slot, materialized against the local exchange
    kis = KisResource(
        app_key=key,
        app_secret=secret,
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        state_dir=str(tmp_path / "data" / "state"),
    )
    now = datetime.now(KST)
    day = now.date()
    with dg.DagsterInstance.get() as inst:
        inst.add_dynamic_partitions("trading_day", [day_key(day)])
        assert dg.materialize(
            [universe],
            partition_key=day_key(day),
            instance=inst,
            resources={"kis": kis},
            run_config={"ops": {"universe": {"config": {"min_master_codes": 50}}}},
        ).success
        slot = MarketCalendar("open").slot_at(now)
        if slot.date() != day:  # just after midnight the newest slot is yesterday's: take today's first one
            slot = slot + timedelta(minutes=10)
        key_a = slot.strftime("%Y-%m-%dT%H%M")
        inst.add_dynamic_partitions("track_a_slot", [key_a])
        assert dg.materialize(
            [track_a_snapshot, universe],
            selection=[track_a_snapshot],
            partition_key=key_a,
            instance=inst,
            resources={"kis": kis},
        ).success
    rows = read_universe(lake.data_dir(), day).num_rows
    assert rows >= 20

    observer = shutil.which("observer", path=str(Path(sys.executable).parent)) or shutil.which("observer")
    assert observer, "the `observer` command is not installed (pip install -e .)"
    exporter = subprocess.Popen(
        [observer, "metrics", "--host", "127.0.0.1", "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "exporter.log", "w"),
        text=True,
    )
    prom = None
    try:
        line = exporter.stdout.readline()
        m = re.fullmatch(r"observer metrics on (http://127\.0\.0\.1:(\d+)/metrics)\n", line)
        assert m, (line, exporter.poll())
        metrics_url, port = m.group(1), int(m.group(2))
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            text = r.read().decode()
        for s in (key, secret):
            assert s not in text

        web = f"127.0.0.1:{free_port()}"
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "observer",
                            "scrape_interval": "1s",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                        }
                    ],
                }
            )
        )
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "w"),
        )
        base = f"http://{web}"
        deadline = time.monotonic() + 90
        size = up = None
        while time.monotonic() < deadline:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                size = query(base, "observer_universe_size")
                up = query(base, 'up{job="observer"}')
            except OSError:
                size = up = None
            if size and up:
                break
            time.sleep(0.5)
        assert size and up, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert float(size[0]["value"][1]) == rows
        assert size[0]["metric"]["job"] == "observer"
        assert float(up[0]["value"][1]) == 1
        # the Track A slot and the calendar gates came through the same scrape
        assert float(query(base, "observer_track_a_slots_written")[0]["value"][1]) >= 1
        assert float(query(base, "observer_trading_day")[0]["value"][1]) == 1
        # the rules load and evaluate without error in a real Prometheus
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            groups = get_json(f"{base}/api/v1/rules")["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            if loaded and all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown" for r in loaded):
                break
            time.sleep(0.5)
        assert len(loaded) == len(rules())
        assert [r["name"] for r in loaded if r["health"] != "ok"] == [], [r.get("lastError") for r in loaded]
        # no label value anywhere in Prometheus carries a credential
        for label in get_json(f"{base}/api/v1/labels")["data"]:
            values = get_json(f"{base}/api/v1/label/{label}/values")["data"]
            assert not any(key in v or secret in v for v in values), label
    finally:
        if prom is not None:
            stop(prom)
        stop(exporter)
