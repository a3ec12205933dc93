"""The capture's logs: one JSON object per line on stderr, which the supervisor parses and forwards to the run."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any

from observer_resources.calendar import KST

log = logging.getLogger("observer.track_b.capture")

SOURCE = "track_b.capture"  # the ``source`` of every event and anomaly rule the capture writes


def iso(dt: datetime | None) -> str | None:
    return dt.astimezone(KST).isoformat(timespec="milliseconds") if dt is not None else None


class JsonLineFormatter(logging.Formatter):
    """``{"at", "level", "event", ...fields}``; records from other loggers carry ``event`` = logger name and
    ``message``. Values that are not JSON become strings."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, KST).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            for k, v in fields.items():  # the record's own at/level/event win; a clashing field is renamed
                out[f"{k}_" if k in ("at", "level", "event") else k] = v
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(stream=None, level: int = logging.INFO) -> logging.Handler:  # noqa: ANN001 - a text stream
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return handler


def log_event(level: int, event: str, **fields: Any) -> None:
    log.log(
        level,
        event,
        extra={"event": event, "fields": {k: iso(v) if isinstance(v, datetime) else v for k, v in fields.items()}},
    )
