"""`observer replay` / `observer relay` as a child process, waited for by its ready line (tests and benchmarks)."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

READY = re.compile(r"^observer-(replay|relay) ready rest=(?P<rest>\S+) ws=(?P<ws>\S+)")


class ServedProc:
    """A running `observer replay|relay`: its URLs, the admin API, stop()."""

    def __init__(self, proc: subprocess.Popen, rest: str, ws: str, err: Path, ready: str) -> None:
        self.proc, self.rest_url, self.ws_url, self._err, self.ready_line = proc, rest, ws, err, ready
        self._http = httpx.Client(base_url=rest, timeout=30.0)

    def get(self, path: str, **params: Any) -> Any:
        r = self._http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        r = self._http.post(path, json=body)
        r.raise_for_status()
        return r.json()

    def admin(self, path: str, json: Any = None, *, method: str | None = None, params: dict | None = None) -> Any:
        """The exchange's ``/__sim__`` routes it keeps (stats, faults): what the python-kis harness calls."""
        r = self._http.request(method or ("POST" if json is not None else "GET"), "/__sim__/" + path, json=json,
                               params=params)  # fmt: skip
        r.raise_for_status()
        return r.json()

    def stderr_text(self) -> str:
        return self._err.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int | None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.unlink(missing_ok=True)
        return self.proc.returncode


def run_observer(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> ServedProc:
    """``python -m observer_assets.cli <args> --rest-port 0 --ws-port 0``, once its ready line is out."""
    argv = [sys.executable, "-m", "observer_assets.cli", *args, "--rest-port", "0", "--ws-port", "0"]
    fd, name = tempfile.mkstemp(prefix="observer-replay-", suffix=".stderr")
    with os.fdopen(fd, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                env=env, bufsize=1)  # fmt: skip
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(0.2):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            m = READY.match(line.strip())
            if m:
                return ServedProc(proc, m["rest"], m["ws"], Path(name), line.strip())
    finally:
        sel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    text = Path(name).read_text(encoding="utf-8", errors="replace")[-3000:]
    Path(name).unlink(missing_ok=True)
    raise AssertionError(f"{' '.join(args[:1])} did not come up (exit {proc.returncode}):\n{text}")
