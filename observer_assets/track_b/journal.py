"""Track B's durable raw record: append-only, self-checking JSON-lines segments with group-commit fsync.

KIS sends no sequence numbers and replays nothing, so a frame that is not written is gone. The journal keeps
**one line per received WebSocket frame, the frame text exactly as received** (malformed frames included, as
they came), because the frame text is the only form that loses nothing; parsing is left to the compaction.
One line per frame rather than per record is also the cheaper choice (one encode, one CRC per frame; see
docs/track-b-storage.md for the measurement).

This module is the writer (``Journal``, with the latency histogram it keeps); the rest of the journal lives beside
it: ``journal_format`` (segment paths, the sealed line), ``journal_recovery`` (``recover``, ``verify``,
quarantine, ``segment_closed``) and ``journal_read`` (``read_journal``). Their public names are re-exported here
for the importers that take them from ``journal``. ``Journal`` is one state machine (producer queue, flusher
thread, segment rotation, recovery on start), so it stays whole in one module above the usual size.

Durability (group commit): ``append`` only formats the line and queues it (never touches the disk); a flusher
thread writes what is queued (at most ``max_batch_bytes`` per write) and fdatasyncs it, at most every
``fsync_interval`` (0.02 s), sooner when ``flush_bytes`` are queued. A line is durable ~``fsync_interval`` + one
fsync after ``append``; ``durable_upto`` / ``durable_seq`` say how far. 0.02 s (0.2 s before) keeps the
capture's receive->durable p99 under 50 ms for ~1.5 % of a core more (docs/benchmarks.md, "Mixed feeds: trades
and order books"). A write error (ENOSPC, EIO, EFBIG…) keeps every line queued, cuts the partial write back to the
last good offset, retries with backoff, and is exposed (``error``, ``write_errors``, ``on_event``).

Crash safety: a crash can damage at most the last batch (``journal_recovery`` says why and how it is cut). A
starting journal recovers and closes every unclosed segment of its key before it writes, reading only the window
a crash can have torn (two batches) so recording resumes at once; the rest of such a file is verified on a
background thread (``verify``; corruption -> ``journal_corruption`` event).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import numpy as np

from observer_assets.track_b.journal_format import (
    _KEY_ID_RE,
    _RESERVED,
    FORMAT_VERSION,
    Segment,
    _control_line,
    _kst,
    _seal,
    line_ok,
    segment_of,
    segments,
)
from observer_assets.track_b.journal_read import JournalLine, read_journal
from observer_assets.track_b.journal_recovery import Recovery, recover, restart_tail_bytes, segment_closed, verify
from observer_resources.calendar import KST
from observer_resources.clock import now as clock_now
from observer_resources.storage.lake import fsync_dir
from observer_resources.storage.layout import journal_root, segment_path

__all__ = [
    "FORMAT_VERSION",
    "Journal",
    "JournalError",
    "JournalLine",
    "LatencyHistogram",
    "Recovery",
    "Segment",
    "line_ok",
    "read_journal",
    "recover",
    "restart_tail_bytes",
    "segment_closed",
    "segment_of",
    "segments",
    "verify",
]

log = logging.getLogger("observer.track_b.journal")

_RUNS = itertools.count()  # journals started in this process: keeps run ids distinct


class JournalError(RuntimeError):
    """The journal cannot do what was asked (closed, locked by another process, not durable in time)."""


# --- histogram -------------------------------------------------------------------------------------


class LatencyHistogram:
    """Log-spaced buckets (10 µs … ~180 s, 10 % wide): quantiles within 10 %, constant memory."""

    EDGES = 1e-5 * 1.1 ** np.arange(176)

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES) + 1, dtype=np.int64)
        self.total = 0
        self.max = 0.0
        self.sum = 0.0

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        idx = np.searchsorted(self.EDGES, values)
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.total += len(values)
        self.max = max(self.max, float(values.max()))
        self.sum += float(values.sum())

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bucket holding the q-quantile (seconds), capped by the exact maximum."""
        if not self.total:
            return None
        rank = max(1, int(np.ceil(q * self.total)))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        edge = float(self.EDGES[i]) if i < len(self.EDGES) else self.max
        return min(edge, self.max)

    def summary(self) -> dict:
        ms = lambda v: None if v is None else round(v * 1e3, 3)  # noqa: E731
        return {
            "count": self.total,
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
            "max_ms": ms(self.max if self.total else None),
            "mean_ms": ms(self.sum / self.total if self.total else None),
        }


# --- the journal -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    seg: Segment
    data: bytes
    mono: float
    rx: datetime
    n: int


class Journal:
    """Durable append-only record of one app key's WebSocket frames (thread-safe; one flusher thread).

    ``append`` is safe from an asyncio callback: it formats the line, takes a short lock and returns; disk
    I/O happens on the flusher thread. Only one ``Journal`` per key may run at a time (an ``flock`` is held;
    a second one raises ``JournalError``). Call ``close()`` (or use ``with``) to flush and seal segments.

    ``on_event(dict)`` is called from the journal's threads for ``journal_segment_opened``/``_closed``,
    ``journal_recovered`` (torn tail cut or corruption found: the capture records a gap), ``journal_corruption``
    (found by the background check of a recovered file), ``journal_write_error`` and ``journal_write_recovered``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        key_id: str,
        *,
        fsync_interval: float = 0.02,
        flush_bytes: int = 1 << 20,
        max_batch_bytes: int = 8 << 20,
        close_grace_s: float = 5.0,
        retry_max_s: float = 1.0,
        on_event: Callable[[dict], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        run_id: str | None = None,
    ) -> None:
        if not _KEY_ID_RE.match(key_id or ""):
            raise ValueError(f"key_id must match {_KEY_ID_RE.pattern}, got {key_id!r}")
        if fsync_interval < 0 or fsync_interval > 0.9:
            raise ValueError("fsync_interval must be in [0, 0.9] s so every line is durable within 1 s")
        self.data_dir = Path(data_dir)
        self.key_id = key_id
        self.fsync_interval = fsync_interval
        self.flush_bytes = flush_bytes
        self.max_batch_bytes = max(max_batch_bytes, flush_bytes)
        self.close_grace_s = close_grace_s
        self.retry_max_s = retry_max_s
        self._on_event = on_event
        self._clock = clock or clock_now
        started = self._clock()
        k = next(_RUNS)
        self.run_id = run_id or f"{started:%H%M%S}.{os.getpid()}" + (f".{k}" if k else "")
        if not _KEY_ID_RE.match(self.run_id):
            raise ValueError(f"run_id must match {_KEY_ID_RE.pattern}")

        root = journal_root(self.data_dir)
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / f".lock-{key_id}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise JournalError(f"another process holds the Track B journal of {key_id}") from None

        self._cond = threading.Condition(threading.Lock())
        self._buf: list[_Pending] = []
        self._buf_bytes = 0
        self._n = 0
        self._closing = False
        self._closed = False
        self._flush_now = False
        # flusher-owned state
        self._fd: int | None = None
        self._seg: Segment | None = None
        self._path: Path | None = None
        self._good = 0  # bytes of the open segment known written and synced
        self._dirty = False  # a failed write may have left bytes past _good
        self._floor: Segment | None = None  # lines are never routed to a segment before this one
        self._last_cycle = 0.0
        self._retry_at = 0.0
        self._failures = 0
        # public state / counters
        self.durable_seq = -1
        self.durable_upto: datetime | None = None
        self.error: str | None = None
        self.write_errors = 0
        self.lines = 0  # lines durable
        self.bytes = 0  # bytes durable (frame lines)
        self.fsyncs = 0
        self.commits = 0
        self.late_lines = 0  # receive hour earlier than the segment they went to (clock step / late append)
        self.segments_opened = 0
        self.recoveries: list[Recovery] = []
        self.latency = LatencyHistogram()  # append -> fsync done, per line
        self.commit_latency = LatencyHistogram()  # write + fdatasync, per commit
        self._recent: deque[tuple[float, float]] = deque()  # (mono, commit seconds), last 60 s
        self._verified: dict[Path, int] = {}  # segments recovered at start -> size after sealing
        self._verifiers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, name=f"journal-{key_id}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (
            f"Journal(key_id={self.key_id!r}, run={self.run_id!r}, queued={len(self._buf)}, "
            f"durable_seq={self.durable_seq}, error={self.error!r})"
        )

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- producer side ---------------------------------------------------------------------------

    def append(
        self,
        rx: datetime,
        payload: str | bytes,
        *,
        conn: int = 0,
        mitigation_level: int | None = None,
        kind: str = "frame",
        **meta: Any,
    ) -> None:
        """Queue one received frame (as received) for durable write. Never waits for the disk.

        ``rx`` the receive time (tz-aware; stored as KST); ``conn`` the capture's connection id (a new one per
        reconnect); ``mitigation_level`` 0/1/2 in force; ``kind`` for non-frame lines the capture wants in the
        record; ``meta`` extra JSON-able members (short names), e.g. ``bad="field_count"``.
        """
        k = _kst(rx)
        if type(conn) is not int:
            raise TypeError(f"conn must be an int, got {type(conn).__name__}")
        if isinstance(payload, str):
            p = ',"p":' + encode_basestring(payload)
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            try:
                p = ',"p":' + encode_basestring(bytes(payload).decode("utf-8"))
            except UnicodeDecodeError:
                p = ',"p64":"' + base64.b64encode(bytes(payload)).decode("ascii") + '"'
        else:
            raise TypeError(f"payload must be str or bytes, got {type(payload).__name__}")
        extra = ""
        if kind != "frame":
            extra += ',"t":' + encode_basestring(str(kind))
        if mitigation_level is not None:
            extra += f',"ml":{int(mitigation_level)}'
        if meta:
            bad = _RESERVED.intersection(meta)
            if bad:
                raise ValueError(f"reserved journal member(s): {sorted(bad)}")
            for name, value in meta.items():
                extra += (
                    "," + encode_basestring(name) + ":" + json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                )
        rx_iso = k.isoformat(timespec="microseconds")
        seg = (k.date(), k.hour)
        with self._cond:
            if self._closing:
                raise JournalError("journal is closed; the frame was not recorded")
            n = self._n
            self._n = n + 1
            data = _seal(f'{{"rx":"{rx_iso}","r":"{self.run_id}","c":{conn},"n":{n}{extra}{p}'.encode())
            buf = self._buf
            buf.append(_Pending(seg, data, time.monotonic(), k, n))
            self._buf_bytes += len(data)
            if len(buf) == 1 or self._buf_bytes >= self.flush_bytes:
                self._cond.notify()

    def flush(self, timeout: float = 10.0) -> None:
        """Make everything appended so far durable now; raise ``JournalError`` if it is not within ``timeout``."""
        with self._cond:
            target = self._n - 1
            self._flush_now = True
            self._cond.notify()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.durable_seq < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise JournalError(
                        f"journal not durable up to line {target} after {timeout:g}s "
                        f"(durable {self.durable_seq}, error {self.error})"
                    )
                self._cond.wait(min(left, 0.05))

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting lines, make every queued line durable, seal the open segment, release the lock.
        If the lines cannot be written within ``timeout`` it raises ``JournalError`` saying how many are
        still only in memory (they are lost when the process exits)."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                queued = len(self._buf)
            raise JournalError(f"journal close timed out with {queued} lines not durable (error: {self.error})")
        self._closed = True
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        with self._cond:
            left = len(self._buf)
        if left:
            raise JournalError(f"journal closed with {left} lines not durable (error: {self.error})")

    # --- state -----------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._buf)

    @property
    def queued_bytes(self) -> int:
        return self._buf_bytes

    @property
    def oldest_pending_s(self) -> float:
        """Age of the oldest line not yet durable (0 when none): above 1 s the durability promise is broken."""
        with self._cond:
            return time.monotonic() - self._buf[0].mono if self._buf else 0.0

    @property
    def write_latency_mean_60s(self) -> float | None:
        """Mean write+fsync time over the last minute (the mitigation rule's "disk-write latency")."""
        recent = list(self._recent)
        return sum(d for _, d in recent) / len(recent) if recent else None

    def stats(self) -> dict:
        return {
            "key_id": self.key_id,
            "run": self.run_id,
            "segment": str(self._path) if self._path else None,
            "lines": self.lines,
            "bytes": self.bytes,
            "fsyncs": self.fsyncs,
            "commits": self.commits,
            "queue_lines": self.queue_depth,
            "queue_bytes": self.queued_bytes,
            "oldest_pending_s": round(self.oldest_pending_s, 4),
            "durable_seq": self.durable_seq,
            "durable_upto": self.durable_upto.isoformat() if self.durable_upto else None,
            "error": self.error,
            "write_errors": self.write_errors,
            "late_lines": self.late_lines,
            "segments_opened": self.segments_opened,
            "recovered_cut_bytes": sum(r.cut_bytes for r in self.recoveries),
            "recovered_bad_lines": sum(r.bad_lines for r in self.recoveries),
            "durable_latency": self.latency.summary(),
            "commit_latency": self.commit_latency.summary(),
            "write_latency_mean_60s_ms": (
                None if self.write_latency_mean_60s is None else round(self.write_latency_mean_60s * 1e3, 3)
            ),
        }

    # --- flusher ---------------------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        event.setdefault("at", clock_now().isoformat(timespec="microseconds"))
        event.setdefault("key_id", self.key_id)
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("journal: on_event callback failed for %s", event.get("event"))

    def _run(self) -> None:
        try:
            self._seal_stale()
        except Exception:  # sealing is housekeeping; its failure must not stop recording
            log.exception("journal %s: sealing earlier segments failed", self.key_id)
        next_idle = time.monotonic() + 1.0
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._buf:
                        if now < self._retry_at:  # backing off after a write error (also when closing)
                            self._cond.wait(self._retry_at - now)
                            continue
                        due = self._last_cycle + self.fsync_interval
                        if now >= due or self._closing or self._flush_now or self._buf_bytes >= self.flush_bytes:
                            break
                        self._cond.wait(due - now)
                    elif self._closing or now >= next_idle:
                        break
                    else:
                        self._cond.wait(next_idle - now)
                batch = self._take()
                closing = self._closing
            if batch:
                self._last_cycle = time.monotonic()
                self._commit(batch)
            elif closing:
                self._close_segment("close")
                return
            else:
                next_idle = time.monotonic() + 1.0
                try:
                    self._idle_close()
                except Exception:
                    log.exception("journal %s: idle close failed", self.key_id)

    def _take(self) -> list[_Pending]:
        """Up to ``max_batch_bytes`` of queued lines (caller holds the lock). Capping each write+fsync bounds
        what a crash can tear to one batch, which is what lets a restart verify only the file's tail."""
        buf = self._buf
        if self._buf_bytes <= self.max_batch_bytes:
            batch, self._buf, self._buf_bytes = buf, [], 0
            self._flush_now = False
            return batch
        size = k = 0
        cap = self.max_batch_bytes
        while k < len(buf) and (k == 0 or size + len(buf[k].data) <= cap):
            size += len(buf[k].data)
            k += 1
        batch, self._buf = buf[:k], buf[k:]
        self._buf_bytes -= size
        self._flush_now = True  # the rest goes out right after this batch
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        i = 0
        while i < len(batch):
            seg = self._route(batch[i].seg)
            j = i + 1
            while j < len(batch) and self._route(batch[j].seg) == seg:
                j += 1
            group = batch[i:j]
            try:
                t0 = time.monotonic()
                self._write_group(seg, group)
                done = time.monotonic()
            except Exception as exc:  # OSError (disk) or a bug: either way keep the lines and retry loudly
                self._fail(exc, batch[i:])
                return
            self._succeeded(group, t0, done)
            i = j
        if self._failures:
            self._failures = 0
            err, self.error = self.error, None
            log.warning("journal %s: writing again after %s", self.key_id, err)
            self._emit({"event": "journal_write_recovered", "previous_error": err})

    def _route(self, seg: Segment) -> Segment:
        floor = self._floor
        return seg if floor is None or seg >= floor else floor

    def _write_group(self, seg: Segment, group: list[_Pending]) -> None:
        if self._fd is None or self._seg != seg:
            self._open_segment(seg)
        fd = self._fd
        assert fd is not None
        if self._dirty:  # a failed write may have left part of a batch: cut it, then write it whole
            os.ftruncate(fd, self._good)
            self._dirty = False
        data = b"".join(p.data for p in group)
        self._dirty = True
        _write_all(fd, data)
        os.fdatasync(fd)
        self._dirty = False
        self._good += len(data)

    def _succeeded(self, group: list[_Pending], t0: float, done: float) -> None:
        last = group[-1]
        floor = self._floor
        late = 0
        for p in group:
            if p.seg < floor:  # type: ignore[operator]
                late += 1
        self.fsyncs += 1
        self.commits += 1
        self.lines += len(group)
        self.bytes += sum(len(p.data) for p in group)
        self.late_lines += late
        self.latency.add(done - np.fromiter((p.mono for p in group), dtype=np.float64, count=len(group)))
        self.commit_latency.add(np.array([done - t0]))
        self._recent.append((done, done - t0))
        while self._recent and self._recent[0][0] < done - 60.0:
            self._recent.popleft()
        with self._cond:
            self.durable_seq = last.n
            self.durable_upto = last.rx
            self._cond.notify_all()

    def _fail(self, exc: Exception, pending: list[_Pending]) -> None:
        self.write_errors += 1
        self._failures += 1
        if isinstance(exc, OSError):
            name = errno.errorcode.get(exc.errno or 0, "OSError")
            self.error = f"{name}: {exc.strerror or exc}"
        else:
            name = type(exc).__name__
            self.error = f"{name}: {exc}"
            log.exception("journal %s: unexpected flusher failure", self.key_id)
        delay = min(self.retry_max_s, 0.05 * 2 ** min(self._failures, 10))
        if self._failures == 1 or self._failures % 100 == 0:
            log.error(
                "journal %s: write failed (%s), %d lines kept in memory, retrying every <= %.2fs",
                self.key_id,
                self.error,
                len(pending),
                self.retry_max_s,
            )
        self._emit(
            {
                "event": "journal_write_error",
                "error": self.error,
                "errno": name,
                "queued_lines": len(pending) + len(self._buf),
                "failures": self._failures,
                "path": str(self._path) if self._path else None,
            }
        )
        if self._fd is not None and self._dirty:
            try:
                os.ftruncate(self._fd, self._good)
                self._dirty = False
            except OSError:
                pass  # retried before the next write
        with self._cond:
            self._buf[:0] = pending
            self._buf_bytes += sum(len(p.data) for p in pending)
            self._retry_at = time.monotonic() + delay

    def _open_segment(self, seg: Segment) -> None:
        if self._fd is not None:
            self._close_segment("rotate")
        day, hour = seg
        path = segment_path(self.data_dir, self.key_id, day, hour)
        fields: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "key": self.key_id,
            "pid": os.getpid(),
            "seg": f"{day.isoformat()}T{hour:02d}",
        }
        if path.exists() and self._verified.get(path) != path.stat().st_size:
            rec = self._recover(path)
            if rec.cut_bytes or rec.bad_lines:
                fields["recovered"] = {"cut_bytes": rec.cut_bytes, "bad_lines": rec.bad_lines}
        else:
            _mkdirs_synced(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.fstat(fd).st_size
        try:
            fsync_dir(path.parent)
            _write_all(fd, _control_line("open", self.run_id, self._clock(), **fields))  # synced with the data
        except OSError:
            try:  # leave no partial line behind; the retry reopens (and re-verifies) the file
                os.ftruncate(fd, start)
            finally:
                os.close(fd)
            raise
        self._fd, self._seg, self._path = fd, seg, path
        self._good = os.fstat(fd).st_size
        self._dirty = False
        if self._floor is None or seg > self._floor:
            self._floor = seg
        self.segments_opened += 1
        self._emit({"event": "journal_segment_opened", "path": str(path)})

    def _close_segment(self, reason: str) -> None:
        fd, path = self._fd, self._path
        if fd is None:
            return
        try:
            if self._dirty:
                os.ftruncate(fd, self._good)
                self._dirty = False
            _write_all(fd, _control_line("close", self.run_id, self._clock(), reason=reason, last_n=self.durable_seq))
            os.fdatasync(fd)
        except OSError as exc:  # the data lines are already durable; only the seal is missing
            log.error(
                "journal %s: could not seal %s (%s); the next start recovers and seals it", self.key_id, path, exc
            )
            try:
                os.ftruncate(fd, self._good)
            except OSError:
                pass
        finally:
            os.close(fd)
            self._fd = None
            self._seg = None
        self._emit({"event": "journal_segment_closed", "path": str(path), "reason": reason})

    def _idle_close(self) -> None:
        """Seal the open segment once its hour is over (+ grace) and nothing is queued, so the sensor sees it
        complete even when the stream went quiet; later lines of that hour go to the next segment."""
        if self._fd is None or self._seg is None:
            return
        day, hour = self._seg
        end = datetime(day.year, day.month, day.day, tzinfo=KST) + timedelta(hours=hour + 1)
        now = self._clock()
        if now >= end + timedelta(seconds=self.close_grace_s):
            with self._cond:
                if self._buf:
                    return
            self._close_segment("hour_over")
            nxt = _kst(end)
            self._floor = max(self._floor or (nxt.date(), nxt.hour), (nxt.date(), nxt.hour))

    def _recover(self, path: Path) -> Recovery:
        """Cut a torn tail, verifying only the window a crash can have torn (two batches), so recording resumes
        in milliseconds; the older part of the file is verified on a background thread."""
        rec = recover(path, tail_bytes=restart_tail_bytes(self.max_batch_bytes))
        self.recoveries.append(rec)
        if rec.cut_bytes or rec.bad_lines:
            self._emit({"event": "journal_recovered", **rec.as_dict()})
        if rec.scanned_from:
            t = threading.Thread(
                target=self._verify_head,
                args=(path, rec.scanned_from),
                daemon=True,
                name=f"journal-verify-{self.key_id}",
            )
            self._verifiers.append(t)
            t.start()
        return rec

    def _verify_head(self, path: Path, upto: int) -> None:
        try:
            rec = verify(path, upto=upto)
        except OSError as exc:
            log.error("journal %s: could not verify %s: %s", self.key_id, path, exc)
            self._emit({"event": "journal_verify_failed", "path": str(path), "error": str(exc)})
            return
        self.recoveries.append(rec)
        if rec.bad_lines:
            self._emit({"event": "journal_corruption", **rec.as_dict()})

    def wait_verified(self, timeout: float = 60.0) -> None:
        """Wait for the background verification of recovered segments (tests, orderly shutdown)."""
        deadline = time.monotonic() + timeout
        for t in list(self._verifiers):
            t.join(max(0.0, deadline - time.monotonic()))

    def _seal_stale(self) -> None:
        """Recover and seal every unclosed segment of this key (a crashed writer's), before writing."""
        root = journal_root(self.data_dir)
        for path in sorted(root.glob(f"date=*/key={self.key_id}/[0-2][0-9].jsonl")):
            if segment_closed(path):
                continue
            rec = self._recover(path)
            if rec.closed:
                continue
            fields: dict[str, Any] = {"reason": "recovered", "cut_bytes": rec.cut_bytes, "bad_lines": rec.bad_lines}
            with open(path, "ab") as f:
                f.write(_control_line("close", self.run_id, self._clock(), **fields))
                f.flush()
                os.fdatasync(f.fileno())
                self._verified[path] = f.tell()
            self._emit({"event": "journal_segment_closed", "path": str(path), "reason": "recovered"})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _mkdirs_synced(path: Path) -> None:
    """Create the directory chain and fsync each new entry's parent, so a new segment survives a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        fsync_dir(d.parent)
