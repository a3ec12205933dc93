"""Stored objects of a backup package: copied out with the transport codec, read back, and hashed.

Every hash is over the original bytes (what the lake holds), never over the stored form, so a zstd-wrapped JSONL
file and a Parquet file stored as is are checked the same way and a restore gives back exactly what was packaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
from upath import UPath

from observer_assets.backup.manifest import FILES, VERSIONS, Entry

CHUNK = 1 << 20
COMPRESSED_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".log")


def _codec_for(rel: str) -> str:
    return "zstd" if rel.endswith(COMPRESSED_SUFFIXES) else "none"


def stored_name(rel: str, version: int, first: bool) -> str:
    """Where a version is stored: the first copy of a path under files/ (the readable lake), later ones under
    versions/<n>/."""
    suffix = ".zst" if _codec_for(rel) == "zstd" else ""
    return f"{FILES}/{rel}{suffix}" if first else f"{VERSIONS}/{version}/{rel}{suffix}"


class _Counting:
    """A write-only file wrapper that counts the bytes that reach the destination."""

    def __init__(self, f: BinaryIO):
        self.f, self.n = f, 0

    def write(self, b: bytes) -> int:
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    @property
    def closed(self) -> bool:
        return self.f.closed


def _copy_out(src: Path | UPath, dst: UPath, codec: str) -> tuple[int, str, int, int]:
    """Stream `src` to `dst` (zstd-wrapped when asked), hashing the original bytes on the way.
    Returns (size, sha256, newline count, stored bytes); the hash is over exactly the bytes stored."""
    h = hashlib.sha256()
    size = lines = 0
    with src.open("rb") as fin:
        raw = _Counting(dst.open("wb"))
        out: Any = pa.CompressedOutputStream(raw, "zstd") if codec == "zstd" else raw
        try:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                out.write(chunk)
        finally:
            out.close()
    return size, h.hexdigest(), lines, raw.n


def _read_stored(src: UPath, codec: str) -> Iterable[bytes]:
    with src.open("rb") as f:
        stream: Any = pa.CompressedInputStream(f, "zstd") if codec == "zstd" else f
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            yield bytes(chunk)


def _hash_stored(src: UPath, codec: str, sink: BinaryIO | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for chunk in _read_stored(src, codec):
        h.update(chunk)
        n += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return n, h.hexdigest()


def _check_stored(pkg: UPath, e: Entry, sink: BinaryIO | None = None) -> tuple[int, str | None]:
    """(bytes read, the problem or None): the stored file, decoded, must give the manifest's size and SHA-256."""
    try:
        n, sha = _hash_stored(pkg / e.stored, e.codec, sink)
    except FileNotFoundError:
        return 0, "missing from the package"
    except (OSError, pa.ArrowException) as ex:
        return 0, f"unreadable in the package ({type(ex).__name__}: {str(ex)[:200]})"
    if n != e.size or sha != e.sha256:
        return n, (
            f"checksum mismatch: package gives {n} B sha256 {sha[:12]}…, "
            f"manifest says {e.size} B sha256 {e.sha256[:12]}…"
        )
    return n, None


def hash_file(path: Path | UPath, prefix: int | None = None) -> tuple[int, str] | tuple[int, str, str | None]:
    """(size, sha256) of a lake file (local, or an object of a URL lake); with `prefix`, also the sha256 of its
    first `prefix` bytes (None when the file is shorter), so an append-only file's growth is told from a rewrite in
    one read."""
    h = hashlib.sha256()
    hp = hashlib.sha256() if prefix is not None else None
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if hp is not None and n < prefix:  # type: ignore[operator]
                hp.update(chunk[: prefix - n])  # type: ignore[operator]
            h.update(chunk)
            n += len(chunk)
    if hp is None:
        return n, h.hexdigest()
    return n, h.hexdigest(), (hp.hexdigest() if n >= prefix else None)  # type: ignore[operator]
