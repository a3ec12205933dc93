"""Where Track B journal segments live and what a sealed line looks like: shared by the writer, recovery and readers.

Layout (docs/collector-rules.md §10: hour of receipt, KST, plain text, uncompressed)::

    <data_dir>/raw/track_b/date=YYYY-MM-DD/key=<key_id>/HH.jsonl

A line is a JSON object whose last member is a CRC32 of every byte before it, at a fixed offset from the end,
so a torn or corrupted line is *detected*, not merely "does not parse"::

    {"rx":"2026-03-10T10:00:00.123456+09:00","r":"093000.4242","c":1,"n":17,"ml":0,"p":"0|H0STCNT0|002|…","crc":"1a2b3c4d"}

``rx`` receive time (µs, +09:00) · ``r`` run id (one per process) · ``c`` connection id (per process, from the
capture) · ``n`` line counter (per run, every appended line, so a hole is visible) · ``p`` the frame text
(``p64`` base64 when it was not UTF-8) · optional ``t`` kind (absent = ``frame``), ``ml`` mitigation level and any
caller metadata. The journal adds control lines ``{"t":"open",…}`` / ``{"t":"close",…}`` (no ``n``) when it opens
or closes a segment; a segment whose last line is ``close`` is complete (``segment_closed``).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from observer_resources.calendar import KST
from observer_resources.storage.layout import journal_root

FORMAT_VERSION = 1
_KST_OFFSET = timedelta(hours=9)
_CRC_KEY = b',"crc":"'
_TAIL_LEN = len(_CRC_KEY) + 8 + 2  # ,"crc":"xxxxxxxx"}
_RESERVED = frozenset({"rx", "r", "c", "n", "t", "p", "p64", "crc", "ml"})
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_READ_CHUNK = 8 << 20
Segment = tuple[date, int]  # (day, hour) of receipt, KST


# --- paths -----------------------------------------------------------------------------------------


def segments(data_dir: str | os.PathLike, day: date, hour: int | None = None, key_id: str | None = None) -> list[Path]:
    """Existing segment files of a day (one hour, one key, or all), sorted by key then hour."""
    base = journal_root(data_dir) / f"date={day.isoformat()}"
    keys = f"key={key_id}" if key_id else "key=*"
    name = f"{hour:02d}.jsonl" if hour is not None else "[0-2][0-9].jsonl"
    return sorted(base.glob(f"{keys}/{name}"))


def segment_of(rx: datetime) -> Segment:
    k = _kst(rx)
    return k.date(), k.hour


def _kst(rx: datetime) -> datetime:
    off = rx.utcoffset()
    if off is None:
        raise ValueError(f"receive time must be timezone-aware (KST), got naive {rx!r}")
    return rx if off == _KST_OFFSET else rx.astimezone(KST)


def _key_of(path: Path) -> str | None:
    name = path.parent.name
    return name[4:] if name.startswith("key=") else None


# --- line format -----------------------------------------------------------------------------------


def _seal(head: bytes) -> bytes:
    """Close a JSON object prefix (``{...`` without ``}``) with its CRC member and a newline."""
    return b'%s,"crc":"%08x"}\n' % (head, zlib.crc32(head))


def line_ok(line: bytes) -> bool:
    """True when ``line`` (without its newline) is a complete journal line whose CRC matches."""
    if len(line) <= _TAIL_LEN or line[:1] != b"{" or line[-2:] != b'"}':
        return False
    cut = len(line) - _TAIL_LEN
    if line[cut : cut + len(_CRC_KEY)] != _CRC_KEY:
        return False
    try:
        want = int(line[-10:-2], 16)
    except ValueError:
        return False
    return zlib.crc32(memoryview(line)[:cut]) == want


def _control_line(kind: str, run: str, at: datetime, **fields: Any) -> bytes:
    body = {"rx": _kst(at).isoformat(timespec="microseconds"), "r": run, "t": kind, **fields}
    head = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)[:-1]
    return _seal(head.encode())


def _kind_rx(line: bytes) -> tuple[str, str | None]:
    try:
        obj = json.loads(line)
        return obj.get("t", "frame"), obj.get("rx")
    except ValueError:
        return "?", None
