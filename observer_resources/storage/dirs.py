"""Where the lake and the host's local directory are: the environment's rules, and nothing heavier.

Kept apart from ``lake`` (which imports pyarrow and fsspec) so the processes that only need a directory — the KIS
resource's token cache and rate-limit state, the event log — stay light (docs/architecture.md, "The storage layer").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

from observer_resources import settings

if TYPE_CHECKING:
    from upath import UPath

DEFAULT_DATA_DIR = settings.setting("OBSERVER_DATA_DIR").default
LakePath = Union[Path, "UPath"]  # a local Path, or a UPath on any fsspec filesystem
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


class LakeConfigError(ValueError):
    """OBSERVER_DATA_DIR / OBSERVER_LOCAL_DIR that cannot work together."""


def is_url(s: str) -> bool:
    return bool(_URL.match(s))


def data_dir(environ: Mapping[str, str] | None = None) -> LakePath:
    """The lake: a resolved local Path, or a UPath for an fsspec URL (``file://`` URLs become local Paths)."""
    raw = settings.get("OBSERVER_DATA_DIR", environ)
    if is_url(raw):
        if raw.startswith("file://"):
            return Path(raw[len("file://") :]).resolve()
        from upath import UPath  # noqa: PLC0415 - fsspec only for a lake on a URL

        return UPath(raw)
    return Path(raw).resolve()


def local_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where appends and fsync are needed (journal, event log, state): the lake itself when it is local (one tree,
    one backup), else OBSERVER_LOCAL_DIR, which a URL lake requires."""
    raw = settings.get("OBSERVER_LOCAL_DIR", environ)
    if raw and is_url(raw):
        raise LakeConfigError(f"OBSERVER_LOCAL_DIR must be a local directory, got a URL ({raw.split('://')[0]}://…)")
    d = data_dir(environ)
    if isinstance(d, Path):
        if raw and Path(raw).resolve() != d:
            raise LakeConfigError(
                "OBSERVER_LOCAL_DIR is only for a lake on a URL; with a local OBSERVER_DATA_DIR "
                "everything lives there (unset OBSERVER_LOCAL_DIR)"
            )
        return d
    if not raw:
        raise LakeConfigError(
            "OBSERVER_DATA_DIR is a URL: set OBSERVER_LOCAL_DIR to a local (or NFS) directory for "
            "the Track B journal, the event log and the token cache"
        )
    return Path(raw).resolve()


def existing_local_dir(environ: Mapping[str, str] | None = None) -> Path:
    """:func:`local_dir`, refused unless it is an existing directory. For commands that read the lake (the
    ``observer`` CLI): one pointed at a typo'd or unmounted path must fail, not report an empty lake. Only
    ``make run`` (and Dagster runs, as they write) create it."""
    d = local_dir(environ)
    var = (
        "OBSERVER_LOCAL_DIR"
        if settings.is_set("OBSERVER_LOCAL_DIR", environ) and is_url(settings.get("OBSERVER_DATA_DIR", environ))
        else "OBSERVER_DATA_DIR"
    )
    if not d.exists():
        raise LakeConfigError(
            f"{var} {str(d)!r} does not exist (a typo, or not mounted?); create it first "
            "(`make run` does) or point the variable at the data directory"
        )
    if not d.is_dir():
        raise LakeConfigError(f"{var} {str(d)!r} is not a directory")
    return d
