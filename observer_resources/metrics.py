"""The metrics recorded where the work happens: REST requests, limiter waits, Track A slot durations.

Dagster runs every step in a process of its own, and those processes end long before Prometheus scrapes. So these
instruments use prometheus_client's multiprocess mode: each process writes its values to small mmap files
(``counter_<pid>.db``, ``histogram_<pid>.db``) in one directory, and ``observer metrics`` (the exporter,
``observer_assets/monitoring/metrics.py``) adds them up at scrape time. The directory is ``$PROMETHEUS_MULTIPROC_DIR``, else
``<local dir>/metrics`` (``$OBSERVER_LOCAL_DIR``, or the lake itself when it is local), so the exporter and every
step process of the host agree on it without extra configuration.

The library's rules, and how they are kept here:

* the variable must be set before the first metric exists: :func:`instruments` sets it (to the directory above)
  and switches the library's value class to the mmap one if the library was imported earlier;
* "wipe the directory between runs": not here — the exporter and the Dagster processes start and stop
  independently, and wiping under a live process would lose its counts. Instead the exporter folds the files of
  dead processes into one archive per type (:func:`compact`), which keeps every count and keeps the scrape cheap;
* ``mark_process_dead`` removes the files of ``live*`` gauges: :func:`compact` calls it for every dead pid (no
  instrument here is a gauge, but other code may add one).

Labels never carry anything secret: ``tr_id`` (a KIS transaction id), ``code`` (KIS ``msg_cd`` or an HTTP status
class, never a message), ``key_id`` (the app key's non-secret hash). Recording never raises into the caller:
a failure is logged once and counted (:func:`recording_failures`).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from observer_resources import settings
from observer_resources.storage import dirs

log = logging.getLogger("observer.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUBDIR = "metrics"

API_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
RATE_LIMIT_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
TRACK_A_SLOT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RESULTS = ("ok", "error", "rate_limited")

#: a label value must look like an identifier; anything else (an unexpected server's text) becomes "other",
#: so a misbehaving answer can neither leak text into a label nor explode the number of series
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")


def safe_label(value: object) -> str:
    s = str(value)
    return s if _SAFE_LABEL.match(s) else "other"


def multiproc_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROMETHEUS_MULTIPROC_DIR``, else ``<local dir>/metrics`` (the same rule as the event log's directory)."""
    env = os.environ if environ is None else environ
    raw = settings.get(MULTIPROC_ENV, env) or (env.get(MULTIPROC_ENV.lower()) or "").strip()  # the client's old name
    if raw:
        return Path(raw).resolve()
    return dirs.local_dir(env) / SUBDIR


# --- the instruments (one set per process) ------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One metric family as exposed: ``name`` is the family name (a counter's samples add ``_total``)."""

    name: str
    type: str  # gauge | counter | histogram
    labels: tuple[str, ...]
    source: str  # S (scrape time) | C (capture status) | M (multiprocess files), and where from
    help: str

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.type == "counter" else self.name


#: the (M) families: recorded by the processes that do the work, summed by the exporter
M_SPECS: tuple[Spec, ...] = (
    Spec(
        "observer_api_requests",
        "counter",
        ("tr_id", "result"),
        "M: KisRestClient, every process",
        "KIS REST requests sent, by transaction id and result (ok | error | rate_limited = EGW00201).",
    ),
    Spec(
        "observer_api_errors",
        "counter",
        ("code",),
        "M: KisRestClient, every process",
        "KIS REST error answers by KIS msg_cd (rt_cd_N without one; http_4xx/http_5xx without a KIS body; "
        "transport when no answer came). Never a message text.",
    ),
    Spec(
        "observer_api_request_duration_seconds",
        "histogram",
        ("tr_id",),
        "M: KisRestClient, every process",
        "KIS REST round-trip time of one request (sent to answered).",
    ),
    Spec(
        "observer_rate_limit_wait_seconds",
        "histogram",
        ("key_id",),
        "M: KisRestClient, every process",
        "Time one request waited for a permit of its app key's shared rate limiter.",
    ),
    Spec(
        "observer_track_a_slot_duration_seconds",
        "histogram",
        (),
        "M: track_a_snapshot step",
        "Time one successful Track A slot took (fetch, raw archive and table).",
    ),
)
_M = {m.name: m for m in M_SPECS}


@dataclass(frozen=True)
class Instruments:
    api_requests: Any  # Counter{tr_id,result}
    api_errors: Any  # Counter{code}
    api_duration: Any  # Histogram{tr_id}
    rate_limit_wait: Any  # Histogram{key_id}
    track_a_slot: Any  # Histogram
    directory: Path | None  # None: in-memory only (the directory could not be used; logged)


_lock = threading.Lock()
_instruments: Instruments | None = None
_failures = 0
_failure_logged = False


def _build(directory: Path | None) -> Instruments:
    from prometheus_client import Counter, Histogram, values  # noqa: PLC0415 - after the variable is set

    if directory is not None and not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client chose its value class at import, before the variable was set (another module imported
        # it first): give it the one it would have chosen, so these instruments write to the shared directory.
        values.ValueClass = values.MultiProcessValue()

    def counter(name: str) -> Any:
        return Counter(name, _M[name].help, list(_M[name].labels), registry=None)

    def histogram(name: str, buckets: tuple[float, ...]) -> Any:
        return Histogram(name, _M[name].help, list(_M[name].labels), buckets=buckets, registry=None)

    # registry=None: nothing registers in the process-global registry; the exporter reads the files instead.
    return Instruments(
        api_requests=counter("observer_api_requests"),
        api_errors=counter("observer_api_errors"),
        api_duration=histogram("observer_api_request_duration_seconds", API_REQUEST_BUCKETS),
        rate_limit_wait=histogram("observer_rate_limit_wait_seconds", RATE_LIMIT_WAIT_BUCKETS),
        track_a_slot=histogram("observer_track_a_slot_duration_seconds", TRACK_A_SLOT_BUCKETS),
        directory=directory,
    )


def instruments(environ: Mapping[str, str] | None = None) -> Instruments:
    """This process's instruments, created on first use, recording into the multiprocess directory (created if
    needed). If the directory cannot be used, the instruments still work in memory and the reason is logged: the
    caller's request never fails over a metric."""
    global _instruments
    inst = _instruments
    if inst is not None:
        return inst
    with _lock:
        if _instruments is None:
            directory: Path | None
            try:
                directory = multiproc_dir(environ)
                directory.mkdir(parents=True, exist_ok=True)
                if not os.access(directory, os.W_OK):
                    raise PermissionError(f"{directory} is not writable")
                if not settings.is_set(MULTIPROC_ENV):  # prometheus_client finds its directory there
                    os.environ[MULTIPROC_ENV] = str(directory)
                directory = Path(settings.get(MULTIPROC_ENV))
            except Exception as exc:  # noqa: BLE001 - reported; metrics must not stop a request
                log.error(
                    "metrics: the multiprocess directory cannot be used (%s: %s); this process's metrics "
                    "stay in memory and the exporter will not see them",
                    type(exc).__name__,
                    exc,
                )
                directory = None
            _instruments = _build(directory)
        return _instruments


def _failed(exc: BaseException) -> None:
    global _failures, _failure_logged
    _failures += 1
    if not _failure_logged:
        _failure_logged = True
        log.error("metrics: recording failed (%s: %s); further failures are only counted", type(exc).__name__, exc)


def recording_failures() -> int:
    """Values this process could not record (logged once)."""
    return _failures


def observe_request(tr_id: str, result: str, seconds: float | None, code: str | None = None) -> None:
    """One REST request answered (or failed on the wire): its result, its time, and the error code if any."""
    try:
        m = instruments()
        tr = safe_label(tr_id)
        m.api_requests.labels(tr, result if result in RESULTS else "error").inc()
        if seconds is not None:
            m.api_duration.labels(tr).observe(max(seconds, 0.0))
        if code is not None:
            m.api_errors.labels(safe_label(code)).inc()
    except Exception as exc:  # noqa: BLE001 - see _failed
        _failed(exc)


def observe_limiter_wait(key_id: str, seconds: float) -> None:
    try:
        instruments().rate_limit_wait.labels(safe_label(key_id)).observe(max(seconds, 0.0))
    except Exception as exc:  # noqa: BLE001
        _failed(exc)


def observe_track_a_slot(seconds: float) -> None:
    try:
        instruments().track_a_slot.observe(max(seconds, 0.0))
    except Exception as exc:  # noqa: BLE001
        _failed(exc)


def error_code(code: str, rt_cd: str, http_status: int) -> str:
    """The ``code`` label of a failed answer: KIS's msg_cd, else rt_cd, else the HTTP status class."""
    if code:
        return code
    if rt_cd:
        return f"rt_cd_{rt_cd}"
    return f"http_{http_status // 100}xx"


# --- compaction (run by the exporter) ------------------------------------------------------------------------

ARCHIVE = "{typ}_archive.db"
_STAGED = ".folding"  # dead processes' files while they are folded (a subdirectory: readers glob <dir>/*.db only)
_COMMIT = ".fold.commit"  # sha256 of the archive a fold committed: tells a crashed fold's recovery what happened
_PARTIAL = ".fold.{typ}.partial"
_PID_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")
FOLDED_TYPES = ("counter", "histogram", "summary")  # additive: a dead process's values only ever add up


@contextmanager
def dir_lock(directory: Path, *, shared: bool = False) -> Iterator[None]:
    """flock on ``<dir>/.lock``: folds are exclusive, the exporter's reads shared, so a read never sees a dead
    process's values twice (in its file and in the archive) nor not at all."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _recover(directory: Path) -> None:
    """Finish or undo a fold a crash interrupted: if the archive is the one the commit record names, the staged
    files are in it (delete them); otherwise they are not (put them back to be folded again)."""
    staging = directory / _STAGED
    staged = sorted(staging.glob("*.db")) if staging.is_dir() else []
    commit = directory / _COMMIT
    if staged:
        done: set[str] = set()
        if commit.exists():
            for line in commit.read_text().splitlines():
                typ, _, sha = line.partition(" ")
                if sha and _sha(directory / ARCHIVE.format(typ=typ)) == sha:
                    done.add(typ)
        for p in staged:
            if p.name.split("_", 1)[0] in done:
                p.unlink()
            else:
                os.replace(p, directory / p.name)
        log.warning("metrics: recovered an interrupted fold in %s (%d file(s))", directory, len(staged))
    commit.unlink(missing_ok=True)
    for p in directory.glob(".fold.*.partial"):
        p.unlink()


def compact(directory: Path, *, min_idle_s: float = 600.0, now: float | None = None) -> int:
    """Fold the files of dead processes into ``<type>_archive.db``; returns how many files were folded.

    A file is folded when its process is gone *and* it has not changed for ``min_idle_s`` (a pid seen from another
    pid namespace — a container sharing the directory — is not trusted alone). The archive is written aside and
    renamed over the old one; the dead files were moved aside first and are deleted last, with a commit record in
    between, so a crash at any point neither loses nor doubles a count (see :func:`_recover`)."""
    import time as _time

    from prometheus_client.mmap_dict import MmapedDict, mmap_key  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: PLC0415

    now = _time.time() if now is None else now
    folded = 0
    with dir_lock(directory):
        _recover(directory)
        by_type: dict[str, list[Path]] = {}
        for p in directory.iterdir():
            m = _PID_FILE.match(p.name)
            if not m:
                continue
            typ, pid = m.group(1), int(m.group(2))
            if pid == os.getpid() or _alive(pid):
                continue
            try:
                idle = now - p.stat().st_mtime
            except FileNotFoundError:
                continue
            if idle < min_idle_s:
                continue
            if typ.startswith("gauge_"):
                mark_process_dead(pid, str(directory))  # the library's rule for live* gauges; others stay as they are
                continue
            if typ in FOLDED_TYPES:
                if readable(p):
                    by_type.setdefault(typ, []).append(p)
                else:  # kept aside for a person to look at, out of every later read
                    os.replace(p, p.with_name(p.name + ".corrupt"))
                    log.error(
                        "metrics: %s is not a readable metrics file; moved to %s.corrupt, its counts are not "
                        "in the totals",
                        p,
                        p.name,
                    )
        try:
            commits: list[str] = []
            staged_all: list[Path] = []
            if by_type:
                (directory / _STAGED).mkdir(exist_ok=True)
            for typ, files in sorted(by_type.items()):
                archive = directory / ARCHIVE.format(typ=typ)
                staged = []
                for f in sorted(files):
                    staged.append(directory / _STAGED / f.name)
                    os.replace(f, staged[-1])
                sources = ([archive] if archive.exists() else []) + staged
                merged = MultiProcessCollector.merge([str(s) for s in sources], accumulate=False)
                partial = directory / _PARTIAL.format(typ=typ)
                partial.unlink(missing_ok=True)
                d = MmapedDict(str(partial))
                try:
                    for metric in merged:
                        for smp in metric.samples:
                            d.write_value(
                                mmap_key(
                                    metric.name,
                                    smp.name,
                                    list(smp.labels),
                                    list(smp.labels.values()),
                                    metric.documentation,
                                ),
                                smp.value,
                                0.0,
                            )
                finally:
                    d.close()
                with open(partial, "rb+") as fh:
                    os.fsync(fh.fileno())
                commits.append(f"{typ} {_sha(partial)}")
                _write_synced(directory / _COMMIT, ("\n".join(commits) + "\n").encode())
                os.replace(partial, archive)
                staged_all += staged
                folded += len(staged)
            for f in staged_all:
                f.unlink()
            (directory / _COMMIT).unlink(missing_ok=True)
        except BaseException:
            _recover(directory)  # put back what was moved aside: nothing is lost, nothing counted twice
            raise
        if folded:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return folded


def readable(path: Path) -> bool:
    """The file parses as prometheus_client's mmap format to its end."""
    from prometheus_client.mmap_dict import MmapedDict  # noqa: PLC0415

    try:
        for _ in MmapedDict.read_all_values_from_file(str(path)):
            pass
    except FileNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - any parse failure means unreadable
        return False
    return True


def db_files(directory: Path) -> list[str]:
    """The files a reader aggregates (what MultiProcessCollector globs)."""
    return sorted(glob.glob(os.path.join(directory, "*.db")))
