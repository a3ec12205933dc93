"""The small files the capture leaves for others: its status (for the sensor, metrics and the next start) and the
day's anomaly marker (which keeps the day's raw data past normal retention)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from observer_assets.track_b.capture.logs import SOURCE, iso, log_event
from observer_resources.storage import lake
from observer_resources.storage.layout import anomaly_path, status_path


def write_anomaly(data_dir: Path, day: date, rule: str, values: Mapping[str, Any], at: datetime) -> Path:
    """Add ``rule`` (with its measured values) to the day's anomaly marker (docs/collector-rules.md §9), atomically.
    The marker keeps every rule that fired; an unreadable existing marker is kept aside, never lost."""
    path = anomaly_path(data_dir, day)
    doc: dict[str, Any] = {"day": day.isoformat(), "anomaly": True, "retention_days": 7, "rules": []}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("rules"), list):
                doc.update(old)
        except (OSError, ValueError):
            aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            log_event(logging.ERROR, "anomaly_marker_unreadable", path=str(path), kept_as=str(aside))
    doc["anomaly"] = True
    doc["retention_days"] = max(int(doc.get("retention_days") or 7), 7)
    doc["rules"] = list(doc["rules"]) + [{"rule": rule, "at": iso(at), "source": SOURCE, "values": dict(values)}]
    doc["updated_at"] = iso(at)
    lake.write_bytes_atomic(path, (json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n").encode())
    return path


def read_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(status_path(data_dir).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def encode_status(doc: Mapping[str, Any]) -> bytes:
    """On the event loop: the document holds live objects, so it is encoded before another thread writes it."""
    return (json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n").encode()


def write_status(data_dir: Path, data: bytes) -> None:
    lake.write_bytes_atomic(status_path(data_dir), data)
