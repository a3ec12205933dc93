"""Start several ``kis_worker.py`` processes and release them at the same instant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("kis_worker.py")
REPO = Path(__file__).resolve().parents[2]


class Workers:
    """``n`` worker processes of one mode: spawned, set up in parallel, then started together."""

    def __init__(self, count: int, mode: str, *, creds: tuple[str, str], rest_url: str, state: Path, **opts: object):
        args = [sys.executable, str(WORKER), mode, "--rest-url", rest_url, "--state", str(state)]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.procs = [
            subprocess.Popen(
                args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(count)
        ]
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{creds[0]} {creds[1]}\n")
            proc.stdin.flush()

    def wait_ready(self) -> None:
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                self.kill()
                raise AssertionError(f"worker not ready ({line!r}): {proc.stderr.read() if proc.stderr else ''}")

    def go(self, timeout: float = 300) -> list[dict]:
        """Release every worker at once; their JSON results, in start order."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                self.kill()
                raise AssertionError(f"worker failed (rc={proc.returncode}):\n{err[-4000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
            self.stderr = getattr(self, "stderr", "") + err
        return results

    def run(self, timeout: float = 300) -> list[dict]:
        self.wait_ready()
        return self.go(timeout)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
