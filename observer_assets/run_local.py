"""`make run`: the pipeline on embedded defaults.

Starts the local KIS exchange (unless real keys are set), then `dagster dev` (webserver + daemon) on
127.0.0.1:3000 with the SQLite instance in $DAGSTER_HOME and the lake in $OBSERVER_DATA_DIR. With no keys the
exchange runs an always-open market (`--clock open`) and Observer the matching demo calendar, so a newcomer
sees the universe and Track A materialized at any hour, through the same schedules, sensors and assets that run
live. Ctrl-C stops both.

``OBSERVER_INSTANCE`` picks the Dagster instance profile copied into $DAGSTER_HOME: ``embedded`` (default,
``dagster.yaml``: SQLite under $DAGSTER_HOME) or ``postgres`` (``deploy/dagster.postgres.yaml``: storage in the
PostgreSQL named by DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB; PORT defaults to 5432).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from observer_resources import settings
from observer_resources.kis.config import LOCAL_REST_URL, LOCAL_WS_URL

ROOT = Path(__file__).resolve().parent.parent
PROFILES = {"embedded": ROOT / "dagster.yaml", "postgres": ROOT / "deploy" / "dagster.postgres.yaml"}
PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


class ProfileError(ValueError):
    """An OBSERVER_INSTANCE that cannot be used as given (unknown name, missing connection variables)."""


def instance_profile(env: dict[str, str]) -> Path:
    """The dagster.yaml for ``OBSERVER_INSTANCE``; fills DAGSTER_PG_PORT's default into ``env``.

    Checked here, before anything starts, so a half-configured PostgreSQL profile fails with the names of the
    missing variables (never their values) instead of a stack trace from the daemon minutes later."""
    name = settings.get("OBSERVER_INSTANCE", env, error=ProfileError)
    if name == "postgres":
        _default(env, "DAGSTER_PG_PORT", str(settings.setting("DAGSTER_PG_PORT").default))
        missing = [v for v in PG_VARS if not settings.is_set(v, env)]
        if missing:
            raise ProfileError(f"OBSERVER_INSTANCE=postgres needs {', '.join(missing)} set")
    return PROFILES[name]


def _default(env: dict[str, str], name: str, value: str) -> None:
    """Give the child processes' environment ``value`` for ``name`` unless the setting is given (blank is not)."""
    if not settings.is_set(name, env):
        env[name] = value


def install_profile(profile: Path, home: Path) -> None:
    """Copy the profile to $DAGSTER_HOME/dagster.yaml atomically: a reader never sees half a file."""
    tmp = home / f".dagster.yaml.{os.getpid()}.tmp"
    shutil.copyfile(profile, tmp)
    os.replace(tmp, home / "dagster.yaml")


def apply_pool_limits(home: Path, env: dict[str, str]) -> dict[str, int]:
    """Write the concurrency pools' limits into the instance in ``home`` before anything can queue a run.

    Dagster keeps per-pool limits in the instance, not in dagster.yaml; an instance started without them would hold
    kis_rest to pools.default_limit until the pool_limits sensor's first tick. A limit already set is kept."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from observer_assets.orchestration.runs import ensure_pool_limits

    names = {k: v for k, v in env.items() if k.startswith("DAGSTER_")}  # the profile reads {env: ...} from os.environ
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            return ensure_pool_limits(instance)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def migrate_old_layout(data: Path) -> None:
    """A lake of the earlier layout is migrated before anything writes the new one beside it (docs/data.md)."""
    from observer_assets.lake_migration import migrate, needs_migration

    if needs_migration(data):
        rep = migrate(data)
        print(f"observer: lake migrated to the current layout: {rep.summary()}", flush=True)
        if rep.conflicts:
            print("observer: some old files were left in place: run `observer lake migrate`", file=sys.stderr)


def _default_sigint() -> None:
    # A shell that starts us in the background leaves SIGINT ignored, and ignored signals survive exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> int:
    env = dict(os.environ)  # the children's environment, with make run's defaults filled in
    home = Path(settings.get("DAGSTER_HOME", env) or ROOT / ".dagster_home").resolve()
    env["DAGSTER_HOME"] = str(home)
    _default(env, "OBSERVER_DATA_DIR", str(ROOT / "data"))
    try:
        profile = instance_profile(env)
        port = settings.get("DAGSTER_PORT", env)
    except (ProfileError, settings.SettingsError) as e:
        print(f"observer: {e}", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    data = Path(settings.get("OBSERVER_DATA_DIR", env))
    data.mkdir(parents=True, exist_ok=True)
    migrate_old_layout(data)
    install_profile(profile, home)
    print(f"observer: Dagster instance profile {profile.relative_to(ROOT)}", flush=True)
    try:
        done = apply_pool_limits(home, env)
        print(
            f"observer: concurrency pool limits set: {done}"
            if done
            else "observer: concurrency pool limits already set",
            flush=True,
        )
    except Exception as e:  # noqa: BLE001 - never block the start; the pool_limits sensor sets them on its first tick
        why = (str(e).splitlines() or [""])[0][:200]
        print(
            f"observer: concurrency pool limits not set now ({type(e).__name__}: {why}); "
            "the pool_limits sensor sets them once the daemon runs",
            file=sys.stderr,
            flush=True,
        )

    sim = None
    if not settings.is_set("KIS_APP_KEY", env):
        _default(env, "OBSERVER_CALENDAR", "open")
        _default(env, "KIS_REST_URL", LOCAL_REST_URL)
        _default(env, "KIS_WS_URL", LOCAL_WS_URL)
        rest_port = settings.get("KIS_REST_URL", env).rsplit(":", 1)[1]
        ws_port = settings.get("KIS_WS_URL", env).rsplit(":", 1)[1]
        clock = "open" if settings.raw("OBSERVER_CALENDAR", env) == "open" else "krx"
        sim = subprocess.Popen(
            [sys.executable, "-m", "local_exchange", "--clock", clock, "--rest-port", rest_port, "--ws-port", ws_port],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert sim.stdout is not None
        line = sim.stdout.readline()
        if "ready" not in line:
            sim.kill()
            print("observer: the local exchange did not start (is port %s in use?)" % rest_port, file=sys.stderr)
            return 1
        print(line.strip(), flush=True)
    dagster = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    print("observer: Dagster UI on http://127.0.0.1:%s (Ctrl-C stops everything)" % port, flush=True)

    def stop(*_: object) -> None:
        # `dagster dev` shuts its webserver, daemon and code servers down on SIGINT (on SIGTERM it leaves them).
        if dagster.poll() is None:
            dagster.send_signal(signal.SIGINT)
        if sim is not None and sim.poll() is None:
            sim.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        code = dagster.wait()
    finally:
        stop()
        for p in (dagster, sim):
            if p is None:
                continue
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        try:  # anything of dagster's process group still alive
            os.killpg(dagster.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return code


if __name__ == "__main__":
    raise SystemExit(main())
