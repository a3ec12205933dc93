"""The capture's entry point (``python -m observer_assets.track_b.capture``): exit codes are its contract with the
supervisor, which restarts the child after anything but 0."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence

from observer_assets.track_b.capture.capture import EXIT_CONFIG, EXIT_FAILED, Capture
from observer_assets.track_b.capture.logs import log, log_event, setup_logging
from observer_assets.track_b.capture.restart import CaptureError
from observer_assets.track_b.capture.settings import ConfigError, load_settings
from observer_assets.track_b.journal import JournalError


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    setup_logging()
    env = os.environ if environ is None else environ
    try:
        settings, configs = load_settings(argv, env)
    except ConfigError as exc:
        log_event(logging.ERROR, "bad_config", error=str(exc))
        return EXIT_CONFIG
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2)
        return int(exc.code or 0)
    cap = Capture(settings, configs)
    try:
        return asyncio.run(cap.run())
    except CaptureError as exc:
        log_event(logging.CRITICAL, "capture_failed", error=str(exc))
        return EXIT_FAILED
    except JournalError as exc:
        log_event(logging.CRITICAL, "capture_failed", error=str(exc))
        return EXIT_FAILED
    except Exception:
        log.exception("capture: unexpected failure")
        return EXIT_FAILED
