"""Where backups go and how long local days are kept, from the environment, checked once with clear errors.

Destination credentials are never ours to hold: an ``s3://`` destination takes them from the backend's own
environment (``AWS_ACCESS_KEY_ID`` … for s3fs), and ``OBSERVER_BACKUP_OPTIONS`` carries only non-secret fsspec
options (``{"endpoint_url": …}``); option names that look like secrets are refused. A local destination inside the
lake or the local directory is refused too: the backup would sit on the very disk it protects, and retention would
see its packages as lake files.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from upath import UPath

from observer_resources import settings
from observer_resources.secrets import config_snapshot_settings, is_secret_param, redact_url
from observer_resources.settings import SettingsError
from observer_resources.storage import lake

__all__ = [
    "BACKUP_OPTIONS_ENV",
    "BACKUP_URL_ENV",
    "RetentionPolicy",
    "SettingsError",
    "backup_dest",
    "backup_url",
    "config_snapshot",
    "local_path",
    "redact_url",
]

BACKUP_URL_ENV = "OBSERVER_BACKUP_URL"
BACKUP_OPTIONS_ENV = "OBSERVER_BACKUP_OPTIONS"


def _as_local(url: str) -> Path | None:
    """The destination as a resolved local path (``file://`` and ``local://`` URLs, plain paths), else None."""
    for scheme in ("file://", "local://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
            break
    else:
        if lake.is_url(url):
            return None
    return Path(url).expanduser().resolve()


def _refuse_inside_lake(url: str, environ: Mapping[str, str] | None) -> None:
    data = lake.data_dir(environ)
    dest = _as_local(url)
    if dest is None:  # a remote destination: refuse only the lake's own prefix on the same store
        lake_url = str(data).rstrip("/")
        if not isinstance(data, Path) and (url.rstrip("/") == lake_url or url.startswith(lake_url + "/")):
            raise SettingsError(
                f"{BACKUP_URL_ENV} ({redact_url(url)}) is inside the lake (OBSERVER_DATA_DIR, "
                f"{redact_url(lake_url)}): a backup must live outside it"
            )
        return
    dirs: list[tuple[str, Path]] = []
    if isinstance(data, Path):
        dirs.append(("the data directory (OBSERVER_DATA_DIR)", data.resolve()))
    try:
        dirs.append(("the local directory (OBSERVER_LOCAL_DIR)", lake.local_dir(environ).resolve()))
    except lake.LakeConfigError:
        pass  # the lake's own settings error is raised where the lake is used
    for what, d in dirs:
        if dest == d or d in dest.parents:
            raise SettingsError(
                f"{BACKUP_URL_ENV} ({redact_url(url)}) is inside {what}, {d}: a backup must live "
                "outside the lake (another disk or a bucket)"
            )


def backup_url(environ: Mapping[str, str] | None = None) -> str:
    """``OBSERVER_BACKUP_URL``, or ``<local dir>/../backups``; a local destination inside the lake is refused."""
    url = settings.get(BACKUP_URL_ENV, environ)
    if url:
        _refuse_inside_lake(url, environ)
        return url
    return str(lake.local_dir(environ).parent / "backups")


def backup_dest(environ: Mapping[str, str] | None = None) -> UPath:
    opts: dict[str, Any] = settings.get(BACKUP_OPTIONS_ENV, environ) or {}
    bad = [k for k in opts if is_secret_param(str(k))]
    if bad:
        raise SettingsError(
            f"{BACKUP_OPTIONS_ENV} may not carry credentials ({', '.join(sorted(bad))}); "
            "use the storage backend's own environment variables"
        )
    return UPath(backup_url(environ), **opts)


def local_path(dest: UPath) -> Path | None:
    """The destination as a local path when it is one (so the lake scan can skip a destination inside it)."""
    proto = getattr(dest, "protocol", "") or ""
    if proto in ("", "file", "local"):
        return Path(dest.path)
    return None


_RETENTION_ENV = {
    "keep_days": "OBSERVER_RETENTION_DAYS",
    "anomaly_days": "OBSERVER_RETENTION_ANOMALY_DAYS",
    "max_days": "OBSERVER_RETENTION_MAX_DAYS",
    "universe_days": "OBSERVER_RETENTION_UNIVERSE_DAYS",
}


@dataclass(frozen=True)
class RetentionPolicy:
    """Ages count trading days (sessions) after the day: 0 today, 1 the previous session …"""

    keep_days: int = 3
    anomaly_days: int = 7
    max_days: int = 10
    universe_days: int = 14

    def __post_init__(self) -> None:
        env = _RETENTION_ENV
        for name, v in asdict(self).items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"retention {name} ({env[name]}) must be a whole number of days >= 1, got {v!r}")
        if not self.keep_days <= self.anomaly_days <= self.max_days:
            raise SettingsError(
                f"retention needs {env['keep_days']} ({self.keep_days}) <= {env['anomaly_days']} ({self.anomaly_days}) "
                f"<= {env['max_days']} ({self.max_days})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionPolicy:
        return cls(**{field_name: settings.get(var, environ) for field_name, var in _RETENTION_ENV.items()})


def config_snapshot(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configuration a package records: allow-listed settings (URLs redacted, backup options by name only)
    and versions. An allow-list, so a setting added later stays out of every manifest until it is listed."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    recorded = dict(sorted(config_snapshot_settings(environ).items()))
    # KIS_ENV as set (a manifest records, it does not refuse)
    kis_env = settings.raw("KIS_ENV", environ) or settings.setting("KIS_ENV").default
    return {
        "observer": ver("observer"),
        "dagster": ver("dagster"),
        "pyarrow": ver("pyarrow"),
        "python": sys.version.split()[0],
        "settings": recorded,
        "kis_real_keys": settings.is_set("KIS_APP_KEY", environ),
        "kis_env": kis_env,
    }
