"""Settings (observer_resources/settings.py): one declaration per variable, the only reader of the environment.

* The README's table is the generated one.
* Every OBSERVER_*/KIS_* name the code or the monitoring/deploy configs use is declared; no module but settings.py
  reads a declared variable itself (an AST scan; the modules still being split are allow-listed below).
* Bad values fail with the variable, the value (never a secret's) and what was expected, through the real readers.
* The secret flags agree with ``secrets.is_secret_name`` and its naming rule; the derived lists stay what they were.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from observer_resources import secrets, settings
from observer_resources.settings import SETTINGS, SettingsError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("observer_assets", "observer_resources", "local_exchange")
NAME = re.compile(r"(?:OBSERVER|KIS)_[A-Z0-9_]*[A-Z0-9]")

#: an example name of each numbered family, for the checks that need a concrete name
FAMILY_EXAMPLES = {
    "KIS_APP_KEY_<n>": ("KIS_APP_KEY_2", "KIS_APP_KEY_17"),
    "KIS_APP_SECRET_<n>": ("KIS_APP_SECRET_2", "KIS_APP_SECRET_17"),
    "<name>_FILE": (
        "OBSERVER_ALERT_SLACK_URL_FILE",
        "OBSERVER_ALERT_TELEGRAM_BOT_TOKEN_FILE",
        "OBSERVER_ALERTMANAGER_WEBHOOK_FILE",
    ),
}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _example_names() -> list[str]:
    return [n for s in SETTINGS for n in (FAMILY_EXAMPLES[s.name] if s.pattern else (s.name,))]


# --- the declarations ------------------------------------------------------------------------------------------------


def test_declarations_are_well_formed():
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert {s.group for s in SETTINGS} == set(settings.GROUPS)
    for s in SETTINGS:
        assert s.meaning and "\n" not in s.meaning and "|" not in s.meaning, s.name
        assert not (s.secret and s.snapshot), s.name
        assert settings.lookup(s.name) is (None if s.pattern else s)
    assert sorted(s.name for s in SETTINGS if s.pattern) == sorted(FAMILY_EXAMPLES)
    for family, examples in FAMILY_EXAMPLES.items():
        assert all(settings.lookup(n).name == family for n in examples)
    # a default is a value the setting's own parser accepts (documented defaults are the real ones)
    for s in SETTINGS:
        if s.default is not None:
            assert s.parse(str(s.default)) == s.default, s.name


def test_retention_defaults_are_the_policy_defaults():
    from observer_assets.backup.settings import _RETENTION_ENV, RetentionPolicy

    assert RetentionPolicy.from_env({}) == RetentionPolicy()
    for field, var in _RETENTION_ENV.items():
        assert settings.setting(var).default == getattr(RetentionPolicy(), field)


def test_the_readme_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(settings.BEGIN) == 1 and text.count(settings.END) == 1
    section = text[text.index(settings.BEGIN) + len(settings.BEGIN) : text.index(settings.END)]
    assert section == "\n" + settings.markdown() + "\n", "README.md's settings table is stale: run `make settings`"
    assert settings.with_table(text) == text
    for name in _example_names():
        assert f"`{settings.lookup(name).name}`" in section


def test_every_setting_the_code_uses_is_declared():
    found: dict[str, str] = {}
    for f in _sources():
        if f.name == "secrets.py":  # the naming rule's own fragments (OBSERVER_ALERT)
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
                found.setdefault(node.value, f"{_rel(f)}:{node.lineno}")
    assert "OBSERVER_DATA_DIR" in found and "KIS_APP_KEY" in found
    undeclared = {n: where for n, where in found.items() if settings.lookup(n) is None}
    assert undeclared == {}, "declare these in observer_resources/settings.py"


def test_every_setting_the_deploy_and_monitoring_configs_use_is_declared():
    found: dict[str, str] = {}
    files = [p for d in ("monitoring", "deploy") for p in (ROOT / d).rglob("*") if p.is_file()]
    files += [ROOT / "dagster.yaml", ROOT / "Makefile"]
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        names = set(NAME.findall(text)) | set(re.findall(r"\{env: ([A-Z0-9_]+)\}", text))
        for n in names:
            found.setdefault(n, _rel(f))
    expected = {"OBSERVER_ALERT_SLACK_URL", "OBSERVER_ALERTMANAGER_DIR", "DAGSTER_PG_PASSWORD", "KIS_APP_KEY_3"}
    assert expected <= found.keys()
    undeclared = {n: where for n, where in found.items() if settings.lookup(n) is None}
    assert undeclared == {}, "declare these in observer_resources/settings.py"


# --- the only reader -------------------------------------------------------------------------------------------------


def _constants() -> dict[str, str]:
    """Module-level ``NAME = "VARIABLE"`` constants of every module, by name (``alerts.WEBHOOK_ENV`` → its value)."""
    out: dict[str, str] = {}
    for f in _sources():
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                out[node.targets[0].id] = node.value.value
    return out


def _declared_arg(node: ast.AST, consts: dict[str, str]) -> str | None:
    value = None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value
    elif isinstance(node, ast.Name):
        value = consts.get(node.id)
    elif isinstance(node, ast.Attribute):
        value = consts.get(node.attr)
    return value if value is not None and settings.lookup(value) is not None else None


def env_reads(tree: ast.AST, consts: dict[str, str]) -> list[tuple[int, str]]:
    """Reads of a declared variable from any mapping: ``x.get(NAME)``, ``x.setdefault(NAME …)``, ``x[NAME]`` (load),
    ``os.getenv(NAME)``; NAME a literal or a module constant holding one."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            via_settings = isinstance(node.func.value, ast.Name) and node.func.value.id == "settings"
            if node.func.attr in ("get", "getenv", "setdefault", "pop") and not via_settings:
                name = _declared_arg(node.args[0], consts)
                if name:
                    out.append((node.lineno, name))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            name = _declared_arg(node.slice, consts)
            if name:
                out.append((node.lineno, name))
    return out


def test_the_scan_sees_every_form_of_read():
    src = (
        'import os\nENV = "OBSERVER_CLOCK_FILE"\nos.environ.get("KIS_ENV")\nos.getenv(ENV)\n'
        'env["OBSERVER_CALENDAR"]\nenv.setdefault("KIS_APP_KEY_2", "")\nalerts.WEBHOOK_ENV\n'
        "os.environ.get(alerts.WEBHOOK_ENV)\n"
        'env["OBSERVER_CALENDAR"] = "open"\nd.get("name")\nsettings.get("KIS_ENV", env)\n'
    )
    consts = {"ENV": "OBSERVER_CLOCK_FILE", "WEBHOOK_ENV": "OBSERVER_ALERT_WEBHOOK"}
    assert env_reads(ast.parse(src), consts) == [
        (3, "KIS_ENV"),
        (4, "OBSERVER_CLOCK_FILE"),
        (5, "OBSERVER_CALENDAR"),
        (6, "KIS_APP_KEY_2"),
        (8, "OBSERVER_ALERT_WEBHOOK"),
    ]


def test_no_module_but_settings_reads_a_declared_variable():
    consts = _constants()
    reads = []
    for f in _sources():
        rel = _rel(f)
        if rel == "observer_resources/settings.py":
            continue
        reads += [f"{rel}:{line} {name}" for line, name in env_reads(ast.parse(f.read_text(encoding="utf-8")), consts)]
    assert reads == [], "read these through observer_resources.settings (get / is_set / raw)"


# --- bad values ------------------------------------------------------------------------------------------------------


def test_a_non_integer_universe_minimum_names_the_variable_and_the_value(monkeypatch):
    from observer_assets.universe import checks

    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", "1,000")
    with pytest.raises(SettingsError) as err:
        checks.thresholds()
    assert str(err.value) == "OBSERVER_UNIVERSE_MIN_COUNT must be a whole number, got '1,000'"
    assert err.value.name == "OBSERVER_UNIVERSE_MIN_COUNT"
    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_COUNT", " ")  # blank: the default
    assert checks.thresholds() == (1000, 0.30)


def test_a_bad_min_master_codes_fails_the_run_with_the_message(monkeypatch):
    import dagster as dg

    from observer_assets.universe.assets import min_master_codes_from_env

    monkeypatch.setenv("OBSERVER_UNIVERSE_MIN_MASTER_CODES", "0")
    with pytest.raises(dg.Failure, match=r"OBSERVER_UNIVERSE_MIN_MASTER_CODES must be a whole number >= 1, got '0'"):
        min_master_codes_from_env()


@pytest.mark.parametrize("value", ["live", "REAL-ish", "1"])
def test_a_bad_kis_env_is_a_kis_config_error(value):
    from observer_resources.kis.config import configs_from_env, from_env
    from observer_resources.kis.errors import KisConfigError
    from observer_resources.resources import kis_pool_from_env

    for build in (from_env, configs_from_env, kis_pool_from_env):
        with pytest.raises(KisConfigError) as err:
            build({"KIS_ENV": value})
        assert str(err.value) == f"KIS_ENV must be one of 'real', 'paper', got {value!r}"
    assert from_env({"KIS_ENV": " Paper "}).env == "paper"


def test_a_bad_calendar_is_a_calendar_config_error():
    from observer_resources.calendar.market import CalendarConfigError, calendar_from_env

    with pytest.raises(CalendarConfigError, match=r"^OBSERVER_CALENDAR must be one of 'krx', 'open', got 'nyse'$"):
        calendar_from_env({"OBSERVER_CALENDAR": "nyse"})
    assert calendar_from_env({"OBSERVER_CALENDAR": "OPEN"}).mode == "open"
    assert calendar_from_env({}).mode == "krx"


def test_values_that_may_hold_a_credential_are_never_quoted():
    secret = settings.Setting("OBSERVER_TEST_TOKEN", settings.integer(), None, "m", settings.KIS, secret=True)
    with pytest.raises(SettingsError) as err:
        secret.parse("hunter2-not-a-number")
    assert "hunter2" not in str(err.value) and "OBSERVER_TEST_TOKEN must be a whole number" in str(err.value)
    with pytest.raises(SettingsError) as err:
        settings.get("OBSERVER_BACKUP_OPTIONS", {"OBSERVER_BACKUP_OPTIONS": '["key=s3cr3t-value"]'})
    assert "s3cr3t" not in str(err.value) and "got a JSON list" in str(err.value)


def test_reading_rules():
    assert settings.get("OBSERVER_DEMO_KEYS", {}) == 1
    assert settings.get("OBSERVER_DEMO_KEYS", {"OBSERVER_DEMO_KEYS": " 3 "}) == 3
    assert settings.get("KIS_APP_KEY", {"KIS_APP_KEY": " k "}) == " k "  # a key as set: EnvVar resolves it so
    assert settings.get("KIS_APP_KEY_2", {"KIS_APP_KEY_2": ""}) is None and not settings.is_set("KIS_APP_KEY_2", {})
    assert settings.raw("OBSERVER_CALENDAR", {"OBSERVER_CALENDAR": "Open"}) == "Open"
    with pytest.raises(KeyError, match="OBSERVER_NOT_DECLARED"):
        settings.get("OBSERVER_NOT_DECLARED", {})
    with pytest.raises(KeyError):
        settings.get("KIS_APP_KEY_<n>", {})


# --- secrets ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", _example_names())
def test_the_secret_flag_is_what_secrets_says(name):
    declared = settings.lookup(name)
    assert secrets.is_secret_name(name) is declared.secret
    assert secrets.is_secret_name(name.lower()) is declared.secret
    # the naming rule that covers undeclared variables agrees, so no declaration changed what is secret
    assert secrets.name_looks_secret(name) is declared.secret


def test_the_lists_derived_for_secrets_are_unchanged():
    assert set(secrets.URL_SETTINGS) == {
        "OBSERVER_STATE_DB_URL",
        "OBSERVER_DATA_DIR",
        "OBSERVER_LOCAL_DIR",
        "OBSERVER_BACKUP_URL",
        "KIS_REST_URL",
        "KIS_WS_URL",
    }
    assert not [n for n in secrets.SNAPSHOT_SETTINGS if secrets.is_secret_name(n)]
    assert set(secrets.SNAPSHOT_SETTINGS) == {s.name for s in SETTINGS if s.snapshot}


def test_the_markdown_command(capsys, tmp_path):
    assert settings.main(["--markdown"]) == 0
    assert capsys.readouterr().out == settings.markdown()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{settings.BEGIN}\nold\n{settings.END}\n\nafter\n", encoding="utf-8")
    assert settings.main(["--write", str(readme)]) == 0
    table = f"{settings.BEGIN}\n{settings.markdown()}\n{settings.END}"
    assert readme.read_text(encoding="utf-8") == f"# x\n\n{table}\n\nafter\n"
    readme.write_text("no markers\n", encoding="utf-8")
    assert settings.main(["--write", str(readme)]) == 2
