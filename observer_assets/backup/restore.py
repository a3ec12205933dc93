"""Restoring a day's backup package into a lake: all or nothing, every byte hashed before anything is placed.

A refusal (an uncommitted package, a manifest entry that cannot be trusted or would land outside the target, a
conflicting local file, a stored object that does not match) places nothing and removes the directories it made.
The package's state is read through ``package`` (this module imports it; it never imports this one).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from upath import UPath

from observer_assets.backup import package
from observer_assets.backup.daysets import Tree
from observer_assets.backup.manifest import Entry, _inside, _int, check_manifest, unsafe_path
from observer_assets.backup.stored import _check_stored, hash_file
from observer_resources.storage import lake
from observer_resources.storage.lake import LakePath


class RestoreError(RuntimeError):
    """A restore refused: nothing was placed; `problems` names every file and why."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


def restore(
    dest: UPath,
    day: date,
    root: Path | Tree,
    *,
    overwrite: bool = False,
    only: Callable[[str], bool] | None = None,
    version: int | None = None,
) -> dict[str, Any]:
    """Bring a verified package back, byte for byte, atomically per file; all or nothing.

    The whole manifest is checked first (paths, types, hashes' shape), then every file is streamed to a temp file
    beside its target and hashed; only when every file matched its manifest entry are the temps renamed into place
    (mtime set back to the original, so the next backup's quick check sees the day unchanged). A local file that
    already holds the same bytes is left alone; one with other bytes is a conflict, refused unless `overwrite`.
    `version` picks the package as that write left it (1: as first packaged; a version is one write that changed
    something); default the newest. With the lake on a URL, its files go back to the object store (each one PUT
    whole: a temp object moved over the target) and the local directory's to the local directory."""

    st = package.read_state(dest, day)
    where = package.package_dir(dest, day)
    if st.manifest is None:
        raise RestoreError(
            f"no backup of {day} at {where} ({st.error or 'no manifest.json'})", [(package.MANIFEST, "missing")]
        )
    if not st.committed:
        why = (
            "no SUCCESS.marker: the package was never verified"
            if st.marker is None
            else "SUCCESS.marker does not name this manifest.json (the manifest changed after verification)"
        )
        raise RestoreError(f"refusing to restore {day}: {why}", [(package.MARKER, why)])
    problems = check_manifest(st.manifest)
    picked: list[Entry] = []
    tree = Tree.of(root)
    root = tree.local
    if tree.remote is not None:  # what another process wrote or deleted since this one last listed the store
        tree.remote.fs.invalidate_cache()
    if not problems and version is not None and (not _int(version, 1) or version > st.manifest.max_version):
        problems.append(("(version)", f"version must be 1..{st.manifest.max_version}, got {version!r}"))
    if not problems:
        chosen = st.manifest.by_path() if version is None else st.manifest.as_of(version)
        picked = [e for p, e in sorted(chosen.items()) if only is None or only(p)]
        for e in picked:
            why = _inside(root, e.path) if isinstance(tree / e.path, Path) else unsafe_path(e.path)
            if why:
                problems.append((e.path, why))
    if problems:
        raise RestoreError(
            f"refusing to restore {day}: the manifest holds {len(problems)} entr(y/ies) that could "
            "write outside the target or cannot be trusted; nothing was placed: "
            + "; ".join(f"{p}: {w}" for p, w in problems[:5]),
            problems,
        )
    temps: list[tuple[LakePath, LakePath, Entry]] = []
    made: list[Path] = []  # directories this restore created: removed again when it refuses
    skipped = 0
    placed = False
    try:
        for e in picked:
            target = tree / e.path
            if not isinstance(target, Path):
                if target.exists():
                    n, sha = hash_file(target)  # type: ignore[misc]
                    if n == e.size and sha == e.sha256:
                        skipped += 1
                        continue
                    if not overwrite:
                        problems.append((e.path, "a different object is in the way (use overwrite to replace it)"))
                        continue
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
                temps.append((tmp, target, e))
                with tmp.open("wb") as out:
                    _, why = _check_stored(where, e, out)
                if why:
                    problems.append((e.label, why))
                continue
            if target.exists() or target.is_symlink():
                if target.is_file() and not target.is_symlink():
                    n, sha = hash_file(target)  # type: ignore[misc]
                    if n == e.size and sha == e.sha256:
                        skipped += 1
                        continue
                if not overwrite or not target.is_file() or target.is_symlink():
                    problems.append(
                        (
                            e.path,
                            "a different local file is in the way (use overwrite to replace it)"
                            if target.is_file() and not target.is_symlink()
                            else "something that is not a regular file is in the way",
                        )
                    )
                    continue
            try:
                made.extend(_mkdirs(target.parent))
            except OSError as ex:
                problems.append((e.path, f"cannot create its directory ({type(ex).__name__}: {ex})"))
                continue
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            temps.append((tmp, target, e))
            with open(tmp, "wb") as out:
                _, why = _check_stored(where, e, out)
                out.flush()
                os.fsync(out.fileno())
            if why:
                problems.append((e.label, why))
        if problems:
            raise RestoreError(
                f"refusing to restore {day}: {len(problems)} file(s) failed: "
                + "; ".join(f"{p}: {w}" for p, w in problems[:5]),
                problems,
            )
        dirs = set()
        for tmp, target, e in temps:
            if not isinstance(target, Path):
                target.fs.mv(tmp.path, target.path)  # the store's modification time is its own: no mtime to set
                continue
            os.replace(tmp, target)
            os.utime(target, ns=(e.mtime_ns, e.mtime_ns))
            dirs.add(target.parent)
        placed = True
        for d in dirs:
            lake.fsync_dir(d)
    finally:
        for tmp, _, _ in temps:
            if isinstance(tmp, Path):
                tmp.unlink(missing_ok=True)
            elif tmp.exists():
                tmp.unlink()
        if not placed:
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
    return {
        "day": day.isoformat(),
        "restored": len(temps),
        "already_present": skipped,
        "bytes": sum(e.size for _, _, e in temps),
        "files": [e.path for _, _, e in temps],
        "version": version if version is not None else st.manifest.max_version,
    }


def _mkdirs(d: Path) -> list[Path]:
    """mkdir -p that returns the directories it created, outermost first."""
    missing = []
    while not d.exists():
        missing.append(d)
        d = d.parent
    out = []
    for m in reversed(missing):
        m.mkdir()
        out.append(m)
    return out
