"""Shared helpers for benchmarks: the machine they ran on, a local exchange, a KIS resource."""

from __future__ import annotations

import os
import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path

from local_exchange.accounts import demo_credentials
from local_exchange.server import run_sim_process
from observer_resources.resources import KisResource


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()} {platform.release()}"


@contextmanager
def local_exchange(*args: str):
    p = run_sim_process(*args)
    try:
        yield p
    finally:
        p.stop()


def kis_resource(sim, state_dir: Path, i: int = 0, **kw) -> KisResource:
    key, secret = demo_credentials(900 + i)
    return KisResource(
        app_key=key, app_secret=secret, rest_url=sim.rest_url, ws_url=sim.ws_url, state_dir=str(state_dir), **kw
    )


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
