"""Reading Track B journal segments back, line by line, without ever changing them (the compaction's input)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from observer_assets.track_b.journal_format import _READ_CHUNK, _key_of, line_ok


@dataclass(slots=True)
class JournalLine:
    """One line of a segment. ``ok`` False means torn/corrupt (``error`` says how, ``raw`` has the bytes)."""

    path: Path
    offset: int
    ok: bool
    kind: str  # 'frame' | 'open' | 'close' | caller kinds | 'bad'
    rx: datetime | None = None
    run: str | None = None
    conn: int | None = None
    n: int | None = None
    payload: str | bytes | None = None  # bytes when the frame was not UTF-8 (stored base64)
    mitigation_level: int | None = None
    meta: dict = field(default_factory=dict)
    key_id: str | None = None
    error: str | None = None
    raw: bytes | None = None

    @property
    def conn_id(self) -> str:
        """The connection across processes: ``<run>/<conn>``."""
        return f"{self.run}/{self.conn}"


def read_journal(paths: Iterable[str | os.PathLike]) -> Iterator[JournalLine]:
    """Every line of the given segments, in file order, verified. Read-only: a torn tail is yielded as a
    ``bad`` line (``error='torn_tail'``), never cut here (that is ``recover``'s job, with no writer)."""
    for p in paths:
        path = Path(p)
        key = _key_of(path)
        with open(path, "rb") as f:
            carry = b""
            offset = 0
            while True:
                chunk = f.read(_READ_CHUNK)
                if not chunk:
                    break
                buf = carry + chunk if carry else chunk
                lines = buf.split(b"\n")
                carry = lines.pop()
                for ln in lines:
                    yield _decode(path, key, offset, ln)
                    offset += len(ln) + 1
            if carry:
                yield JournalLine(path, offset, False, "bad", key_id=key, error="torn_tail", raw=carry)


def _decode(path: Path, key: str | None, offset: int, ln: bytes) -> JournalLine:
    if not line_ok(ln):
        return JournalLine(path, offset, False, "bad", key_id=key, error="bad_crc", raw=ln)
    try:
        obj = json.loads(ln)
        rx = datetime.fromisoformat(obj.pop("rx"))
    except (ValueError, KeyError, TypeError) as exc:  # CRC fine but not ours: still reported, never dropped
        return JournalLine(path, offset, False, "bad", key_id=key, error=f"bad_json: {exc}"[:200], raw=ln)
    obj.pop("crc", None)
    payload: str | bytes | None = obj.pop("p", None)
    if payload is None and "p64" in obj:
        payload = base64.b64decode(obj.pop("p64"))
    return JournalLine(
        path,
        offset,
        True,
        obj.pop("t", "frame"),
        rx,
        obj.pop("r", None),
        obj.pop("c", None),
        obj.pop("n", None),
        payload,
        obj.pop("ml", None),
        obj,
        key,
    )
