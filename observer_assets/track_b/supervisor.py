"""Track B capture supervision: one long run per Track B window hosts the capture as one child process.

Shape (docs/architecture.md, Track B): KIS gives one WebSocket session per app key and replays nothing, so the
session must live for the whole window in one long-lived process. The capture process
(``python -m observer_assets.track_b.capture``) runs every configured key in one child with one SlotManager
(slot sets disjoint by construction), so **one run hosts all keys**: per-key runs would need a cross-process slot
manager and would multiply what can die. The run exists so the UI shows the capture alive, with its logs; the
child exists so a crash of the capture (or a ``kill -9``) costs seconds, not the run.

The supervisor (pure Python, no Dagster, testable with any child; the op and job that host it are in
``capture_job.py``):

* starts the child with ``--until`` = the window end, streams its stdout+stderr lines (JSON, one per log event)
  to ``on_log``, rate-limited for info/debug (warnings and errors always pass; suppressed lines are counted);
* restarts it after any exit other than 0 before the window end, after 1 s, backing off 1-2-5-10-20 s only
  while it keeps dying young (so a restart is always within the 30 s promise), logging every exit and restart;
* ends when the child exits 0 (the window is over), and stops a child still running ``late_grace_s`` after the
  window end;
* on any exception (Dagster delivers a run termination as ``KeyboardInterrupt`` in the main thread) sends
  SIGTERM to the child's process group, waits ``term_grace_s``, then SIGKILL;
* asks the kernel to SIGTERM the child if the supervising process dies (``PR_SET_PDEATHSIG``), so a killed run
  worker never leaves an orphan holding the journal locks;
* writes a heartbeat, ``system/capture/supervisor.json`` (run id, host, pids, restarts, window end), that the
  supervisor sensor uses to tell a live run from a dead one.

The window is ``track_b/window.py``'s (``OBSERVER_TRACK_B_WINDOW``, default 09:30-15:00 KST, shifted with the
session on special days; the whole day on the always-open demo calendar), the same rule the capture uses.
"""

import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from observer_assets.track_b.window import Window, track_b_window, window_text_from_env
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar
from observer_resources.clock import now as clock_now
from observer_resources.events import EventLog
from observer_resources.storage import lake
from observer_resources.storage.layout import heartbeat_path

# --- the window (track_b/window.py is the one rule; the capture process uses it too) ---------------------------


def window_spec(environ: dict[str, str] | None = None) -> str:
    return window_text_from_env(os.environ if environ is None else environ)


def capture_window(cal: MarketCalendar, d: date, spec: str | None = None) -> Window | None:
    """The Track B window of ``d`` (None when the market is closed)."""
    return track_b_window(d, cal, spec or window_spec())


def window_now(cal: MarketCalendar, now: datetime, spec: str | None = None) -> Window | None:
    """The window containing ``now``, if any."""
    w = capture_window(cal, now.astimezone(KST).date(), spec)
    return w if w is not None and w.contains(now) else None


# --- files the supervisor and the capture leave for the sensor ------------------------------------------


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing; a torn or foreign file is reported as such."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"_unreadable": f"{type(e).__name__}: {e}"}
    return obj if isinstance(obj, dict) else {"_unreadable": "not a JSON object"}


def wall_age_s(doc: dict, now: datetime) -> float | None:
    """Seconds since a status or heartbeat file was written, in physical time (its ``updated_wall``): liveness is
    about processes, not about the market clock, which a simulated day moves in steps. A file without the field
    falls back to ``updated_at`` against ``now``."""
    wall = doc.get("updated_wall")
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        return _time.time() - float(wall)
    try:
        return (now - datetime.fromisoformat(str(doc["updated_at"]))).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def pid_alive(pid: object) -> bool:
    """Is a process with this pid running on this host (a zombie counts as alive until reaped)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the supervisor --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """Delay before restart n of a child that keeps dying young; a child that lived ``stable_after_s``
    resets the sequence. Every delay is well under the 30 s a dead capture may stay dead."""

    delays_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    stable_after_s: float = 30.0

    def delay(self, young_deaths: int) -> float:
        return self.delays_s[min(max(young_deaths, 1), len(self.delays_s)) - 1]


@dataclass
class ChildExit:
    pid: int
    started_at: str
    ended_at: str
    lived_s: float
    returncode: int
    restart_in_s: float | None = None  # None: not restarted


@dataclass
class SupervisorResult:
    reason: str  # window_end | window_over | late_stop
    started_at: str
    ended_at: str
    restarts: int
    exits: list[ChildExit] = field(default_factory=list)
    suppressed_log_lines: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


LogFn = Callable[[str, str], None]  # (level, message)
_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "critical": "critical",
    "fatal": "critical",
    "exception": "error",
}


def _pdeathsig_preexec(parent_pid: int) -> Callable[[], None] | None:
    """Linux: the child gets SIGTERM when the thread that started it dies (a killed run worker)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def format_line(line: str, pid: int) -> tuple[str, str]:
    """A child output line -> (level, message). JSON lines keep their level and become ``event k=v …``;
    anything else (a traceback) is a warning with the raw text, never dropped."""
    text = line.rstrip("\n")
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return "warning", f"[capture {pid}] {text}"
    level = _LEVELS.get(str(obj.pop("level", "info")).lower(), "info")
    event = obj.pop("event", None) or obj.pop("msg", None) or obj.pop("message", "")
    at = obj.pop("at", None)
    rest = " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in obj.items())
    stamp = f" @{at}" if at else ""
    return level, f"[capture {pid}{stamp}] {event}{' ' + rest if rest else ''}"


class _LogLimiter:
    """Token bucket for info/debug lines, so a chatty child cannot flood the run's event log."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.last = _time.monotonic()
        self.suppressed = 0
        self.suppressed_total = 0

    def allow(self, level: str) -> bool:
        now = _time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if level not in ("debug", "info"):
            return True
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.suppressed += 1
        self.suppressed_total += 1
        return False


class CaptureSupervisor:
    """Runs ``argv`` until ``until`` (see the module docstring). ``run()`` blocks; it re-raises whatever
    interrupted it after the child is stopped."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        until: datetime,
        on_log: LogFn,
        data_dir: Path,
        run_id: str = "local",
        env: dict[str, str] | None = None,
        policy: RestartPolicy = RestartPolicy(),
        term_grace_s: float = 15.0,
        late_grace_s: float = 60.0,
        heartbeat_s: float = 5.0,
        log_rate_per_s: float = 50.0,
        log_burst: float = 500.0,
        clock: Callable[[], datetime] | None = None,
        events: EventLog | None = None,
    ) -> None:
        if until.tzinfo is None:
            raise ValueError(f"until must be timezone-aware, got {until!r}")
        self.argv = list(argv)
        self.until = until.astimezone(KST)
        self.on_log = on_log
        self.data_dir = Path(data_dir)
        self.run_id = run_id
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.policy = policy
        self.term_grace_s = term_grace_s
        self.late_grace_s = late_grace_s
        self.heartbeat_s = heartbeat_s
        self.clock = clock or clock_now
        self.events = events if events is not None else EventLog(self.data_dir, source="track_b_supervisor")
        self._limiter = _LogLimiter(log_rate_per_s, log_burst)
        self.proc: subprocess.Popen | None = None
        self.child_started: datetime | None = None
        self.exits: list[ChildExit] = []
        self.restarts = 0
        self.state = "starting"
        self._lines: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._last_beat = 0.0
        self._tail: deque[str] = deque(maxlen=20)

    # -- logging & heartbeat --

    def _log(self, level: str, msg: str) -> None:
        try:
            self.on_log(level, msg)
        except Exception as e:  # a logging failure must never stop the capture
            print(f"track_b supervisor: log callback failed ({e!r}): {msg}", file=sys.stderr)

    def _event(self, event_type: str, **fields: Any) -> None:
        try:
            self.events.emit(event_type, run_id=self.run_id, **fields)
        except Exception as e:  # noqa: BLE001 - recorded in the run log instead
            self._log("error", f"could not write the {event_type} event: {e!r}")

    def beat(self, force: bool = False) -> None:
        now_m = _time.monotonic()
        if not force and now_m - self._last_beat < self.heartbeat_s:
            return
        self._last_beat = now_m
        p = self.proc
        body = {
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": self.state,
            "child_pid": p.pid if p is not None and p.poll() is None else None,
            "child_started_at": self.child_started.isoformat() if self.child_started else None,
            "restarts": self.restarts,
            "until": self.until.isoformat(),
            "updated_at": self.clock().isoformat(),
            "updated_wall": _time.time(),  # liveness is judged in physical time, whatever clock the day runs on
            "last_exit": asdict(self.exits[-1]) if self.exits else None,
        }
        try:
            lake.write_bytes_atomic(heartbeat_path(self.data_dir), json.dumps(body, indent=1).encode())
        except OSError as e:
            self._log("error", f"could not write the supervisor heartbeat: {e!r}")

    def _pump(self, timeout: float) -> None:
        """Forward queued child lines (waiting at most ``timeout`` for the first)."""
        try:
            item = self._lines.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            pid, line = item
            if line is not None:
                self._tail.append(line.rstrip("\n")[:500])
                level, msg = format_line(line, pid)
                if self._limiter.allow(level):
                    if self._limiter.suppressed:
                        self._log(
                            "warning",
                            f"{self._limiter.suppressed} capture log lines at info/debug were "
                            "not forwarded (more than the rate limit)",
                        )
                        self._limiter.suppressed = 0
                    self._log(level, msg)
            try:
                item = self._lines.get_nowait()
            except queue.Empty:
                return

    # -- the child --

    def _start(self) -> None:
        argv = self.argv + ["--until", self.until.isoformat()]
        self._tail.clear()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(os.getpid()),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.child_started = self.clock()
        pid, out = self.proc.pid, self.proc.stdout
        assert out is not None

        def read() -> None:
            for line in out:
                self._lines.put((pid, line))
            self._lines.put((pid, None))

        self._reader = threading.Thread(target=read, name=f"capture-{pid}-output", daemon=True)
        self._reader.start()
        self.state = "running"
        self._log(
            "info",
            f"capture started: pid {pid}, until {self.until.isoformat()}"
            f"{f' (restart {self.restarts})' if self.restarts else ''}",
        )
        self.beat(force=True)

    def _drain(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        self._pump(0)

    def stop_child(self, why: str) -> int | None:
        """SIGTERM the child's process group, wait ``term_grace_s``, then SIGKILL. Returns its exit code."""
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        self.state = "stopping"
        self._log("info", f"stopping capture pid {p.pid} ({why}): SIGTERM, SIGKILL after {self.term_grace_s:g} s")
        _signal_group(p.pid, signal.SIGTERM)
        deadline = _time.monotonic() + self.term_grace_s
        while p.poll() is None and _time.monotonic() < deadline:
            self._pump(0.1)
        if p.poll() is None:
            self._log("error", f"capture pid {p.pid} ignored SIGTERM for {self.term_grace_s:g} s: SIGKILL")
            _signal_group(p.pid, signal.SIGKILL)
            p.wait()
        _signal_group(p.pid, signal.SIGKILL)  # anything it left in its group
        self._drain()
        self._log("info", f"capture pid {p.pid} stopped, exit code {p.returncode}")
        return p.returncode

    def run(self) -> SupervisorResult:
        started = self.clock()
        young = 0
        reason = "window_over"
        try:
            while True:
                if self.clock() >= self.until:
                    break
                self._start()
                p = self.proc
                assert p is not None
                t_start = _time.monotonic()
                late = False
                over_since: float | None = None  # monotonic instant the window end was first seen
                while p.poll() is None:
                    self._pump(0.2)
                    self.beat()
                    if self.clock() >= self.until:
                        # the grace is the child's time to react, so it runs in physical time from the moment the
                        # end is seen, not on the market clock (which a clock step or a simulated day moves at once)
                        over_since = _time.monotonic() if over_since is None else over_since
                        if _time.monotonic() - over_since >= self.late_grace_s:
                            late = True
                            break
                if late:
                    self._log(
                        "error",
                        f"capture pid {p.pid} still running {self.late_grace_s:g} s after the window end: stopping it",
                    )
                    self.stop_child("late after the window end")
                    reason = "late_stop"
                    self._record_exit(p, t_start, None)
                    break
                self._drain()
                rc = p.returncode
                lived = _time.monotonic() - t_start
                if rc == 0:
                    self._record_exit(p, t_start, None)
                    early = (self.until - self.clock()).total_seconds()
                    if early > 5:
                        self._log(
                            "warning",
                            f"capture exited 0 {early:.0f} s before the window end; "
                            "the supervisor sensor starts a new run if the window is still open",
                        )
                    else:
                        self._log("info", "capture finished: the window is over (exit 0)")
                    reason = "window_end"
                    break
                if self.clock() >= self.until:
                    self._record_exit(p, t_start, None)
                    self._log("error", f"capture pid {p.pid} exited with {_describe_rc(rc)} at the window end")
                    break
                young = young + 1 if lived < self.policy.stable_after_s else 1
                delay = self.policy.delay(young)
                ex = self._record_exit(p, t_start, delay)
                self.restarts += 1
                tail = " | ".join(list(self._tail)[-5:])
                self._log(
                    "error",
                    f"capture pid {p.pid} died ({_describe_rc(rc)}) after {lived:.1f} s; "
                    f"restart {self.restarts} in {delay:g} s. Last output: {tail or '(none)'}",
                )
                self._event(
                    "capture_supervisor_restart",
                    child_pid=p.pid,
                    returncode=rc,
                    lived_s=round(lived, 3),
                    restart=self.restarts,
                    delay_s=delay,
                    died_at=ex.ended_at,
                )
                self.state = "restarting"
                self.beat(force=True)
                wake = _time.monotonic() + delay
                while _time.monotonic() < wake:
                    self._pump(min(0.2, max(0.0, wake - _time.monotonic())))
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.stop_child("the run is stopping")
            self.state = "ended"
            self.beat(force=True)
        return SupervisorResult(
            reason,
            started.isoformat(),
            self.clock().isoformat(),
            self.restarts,
            self.exits,
            self._limiter.suppressed_total,
        )

    def _record_exit(self, p: subprocess.Popen, t_start: float, restart_in: float | None) -> ChildExit:
        ex = ChildExit(
            p.pid,
            self.child_started.isoformat() if self.child_started else "",
            self.clock().isoformat(),
            round(_time.monotonic() - t_start, 3),
            p.returncode if p.returncode is not None else -999,
            restart_in,
        )
        self.exits.append(ex)
        return ex


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session/group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_rc(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    if rc == 2:
        return "exit code 2 (bad configuration)"
    return f"exit code {rc}"
