"""Making a Track B journal segment safe to append to again, and checking one for corruption.

Lines are only ever appended and only one batch is ever un-synced, so a crash can damage at most the last batch:
a torn tail. ``recover`` verifies lines, cuts a torn tail back to the last good line (fsync) and reports it; a bad
line *followed by good ones* (which appending cannot produce) is left in place, the file is quarantine-copied and
reported. ``verify`` is the read-only check of the part of a file a restart did not scan.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from observer_assets.track_b.journal_format import _READ_CHUNK, _kind_rx, line_ok
from observer_resources.storage.lake import fsync_dir

log = logging.getLogger("observer.track_b.journal")


@dataclass(frozen=True)
class Recovery:
    """What ``recover`` found. ``cut_bytes`` > 0 means a torn tail was cut (the capture records a gap);
    ``bad_lines`` > 0 means corruption *inside* the file, kept in place and copied to ``quarantined``."""

    path: Path
    valid_lines: int  # valid lines in the scanned range (the whole file unless ``scanned_from`` > 0)
    cut_bytes: int
    last_rx: datetime | None
    bad_lines: int = 0
    quarantined: Path | None = None
    size: int = 0  # file size after recovery
    closed: bool = False  # the last valid line is a ``close`` control line
    scanned_from: int = 0  # byte offset the verification started at (0 = whole file)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "valid_lines": self.valid_lines,
            "cut_bytes": self.cut_bytes,
            "last_rx": self.last_rx.isoformat() if self.last_rx else None,
            "bad_lines": self.bad_lines,
            "quarantined": str(self.quarantined) if self.quarantined else None,
            "size": self.size,
            "closed": self.closed,
            "scanned_from": self.scanned_from,
        }


def _scan(f: BinaryIO, offset: int = 0, upto: int | None = None) -> tuple[int, int, int, int, int, deque[bytes]]:
    """Verify every line from the file position ``offset`` (a line start) to ``upto`` (default: the end).
    Returns (valid, good_end, bad_in_middle, first_bad_offset, end, last_good_lines): good_end is the offset just
    past the last valid line; bad_in_middle counts bad lines that have valid lines after them (everything after
    good_end is the torn tail)."""
    valid = bad_mid = 0
    good_end = offset
    first_bad = -1
    pending_bad: list[int] = []  # offsets of bad lines after the last good one
    last_good: deque[bytes] = deque(maxlen=64)
    carry = b""
    left = -1 if upto is None else upto - offset
    while left:
        chunk = f.read(_READ_CHUNK if left < 0 else min(_READ_CHUNK, left))
        if not chunk:
            break
        if left > 0:
            left -= len(chunk)
        buf = carry + chunk if carry else chunk
        lines = buf.split(b"\n")
        carry = lines.pop()
        for ln in lines:
            end = offset + len(ln) + 1
            if line_ok(ln):
                if pending_bad:
                    bad_mid += len(pending_bad)
                    if first_bad < 0:
                        first_bad = pending_bad[0]
                    pending_bad = []
                valid += 1
                good_end = end
                last_good.append(ln)
            else:
                pending_bad.append(offset)
            offset = end
    return valid, good_end, bad_mid, first_bad, offset + len(carry), last_good


def restart_tail_bytes(max_batch_bytes: int = 8 << 20) -> int:
    """What a crash can have torn: two write batches (plus a line's slack). A restart scans only this much."""
    return 2 * max_batch_bytes + (64 << 10)


def recover(
    path: str | os.PathLike, *, tail_bytes: int | None = None, quarantine_dir: str | os.PathLike | None = None
) -> Recovery:
    """Verify a segment and make it safe to append to. Call only when no writer has it open.

    * torn tail (a partial last line, or bad lines after the last good one): truncated to the end of the last
      good line, fsynced, ``cut_bytes`` reported;
    * a bad line followed by good lines: left in place (never truncated away); the file is first copied to
      ``<name>.quarantine-<offset>`` (once per corruption) and ``bad_lines`` / ``quarantined`` reported.

    ``tail_bytes`` limits the scan to the file's last bytes (from the first line start in that window): a crash
    can only tear the last un-fsynced batch, so a restarting writer need not read a 2 GB hour before it writes
    again. Without a valid line in the window it falls back to the whole file. ``verify`` reads the rest.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        start = 0
        if tail_bytes is not None and size > tail_bytes:
            f.seek(size - tail_bytes - 1)
            f.readline()  # to the first line start inside the window
            start = f.tell()
        f.seek(start)
        valid, good_end, bad_mid, first_bad, size, last_good = _scan(f, start)
        if start and not valid:
            start = 0
            f.seek(0)
            valid, good_end, bad_mid, first_bad, size, last_good = _scan(f, 0)
        quarantined = _quarantine(f, path, first_bad, bad_mid, quarantine_dir) if bad_mid else None
        cut = size - good_end
        if cut:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
            log.warning("journal %s: torn tail of %d bytes cut after line %d", path, cut, valid)
    kinds = [_kind_rx(ln) for ln in reversed(last_good)]
    closed = bool(kinds) and kinds[0][0] == "close"
    last_rx = next((datetime.fromisoformat(rx) for k, rx in kinds if k == "frame" and rx), None)
    return Recovery(path, valid, cut, last_rx, bad_mid, quarantined, good_end, closed, start)


def verify(
    path: str | os.PathLike, *, upto: int | None = None, quarantine_dir: str | os.PathLike | None = None
) -> Recovery:
    """Read-only check of every line up to ``upto`` bytes (default: all). Any bad line is corruption inside the
    record (the tail was already cut): the file is quarantine-copied and ``bad_lines`` reported. Nothing is cut."""
    path = Path(path)
    with open(path, "rb") as f:
        valid, good_end, bad_mid, first_bad, end, last_good = _scan(f, 0, upto)
        bad = bad_mid + (1 if end > good_end else 0)
        if bad and first_bad < 0:
            first_bad = good_end
        quarantined = _quarantine(f, path, first_bad, bad, quarantine_dir, upto) if bad else None
    kinds = [_kind_rx(ln) for ln in reversed(last_good)]
    last_rx = next((datetime.fromisoformat(rx) for k, rx in kinds if k == "frame" and rx), None)
    return Recovery(path, valid, 0, last_rx, bad, quarantined, end, bool(kinds) and kinds[0][0] == "close")


def _quarantine(
    f: BinaryIO, path: Path, first_bad: int, bad: int, quarantine_dir: str | os.PathLike | None, upto: int | None = None
) -> Path:
    qdir = Path(quarantine_dir) if quarantine_dir else path.parent
    target = qdir / f"{path.name}.quarantine-{first_bad}"
    if not target.exists():
        qdir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        f.seek(0)
        left = upto
        with open(tmp, "wb") as q:
            while left is None or left > 0:
                chunk = f.read(_READ_CHUNK if left is None else min(_READ_CHUNK, left))
                if not chunk:
                    break
                q.write(chunk)
                if left is not None:
                    left -= len(chunk)
            q.flush()
            os.fsync(q.fileno())
        os.replace(tmp, target)
        fsync_dir(qdir)
    log.error(
        "journal %s: %d corrupt line(s) inside the file (first at byte %d); kept in place, copied to %s",
        path,
        bad,
        first_bad,
        target,
    )
    return target


def segment_closed(path: str | os.PathLike) -> bool:
    """True when the segment's last line is a valid ``close`` line: its writer finished it (rotation,
    idle close after the hour, ``close()``, or recovery of a crashed writer's segment)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read()
    except FileNotFoundError:
        return False
    if not tail.endswith(b"\n"):
        return False
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    return line_ok(last) and _kind_rx(last)[0] == "close"
