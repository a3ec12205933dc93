"""The Prometheus exporter behind ``observer metrics``: every metric of docs/metrics.md on one /metrics.

Three kinds of values (docs/metrics.md names the kind of each metric):

* (S) read at scrape time from today's files in the lake and the local directory, the token store, the backup
  destination and the Dagster instance — today's files only, so a scrape stays cheap on a full day;
* (C) the Track B capture's live status file ``system/capture/status.json``;
* (M) what the Dagster step processes recorded through ``observer_resources.metrics`` (prometheus_client's
  multiprocess files), summed here; dead processes' files are folded into an archive now and then
  (``observer_resources.metrics.compact``) so their number, and the scrape's cost, stays small.

A source that fails (an unreadable file, a database down) never fails the scrape: its metrics are left out of that
scrape, ``observer_exporter_scrape_errors_total{source}`` goes up and the reason is logged (secrets scrubbed).
Values are cached per source for a few seconds (``cache_seconds``; 30 s for the backup destination, which changes
once a day and may be a remote bucket). ``now`` can be fixed, so the calendar gates are testable at any instant.
Nothing here writes to the lake: the exporter only reads (it creates the metrics directory if missing).

This module is the collector (caching, error isolation) and the HTTP server; the metric table is
``metric_specs``, the readers per source ``metric_sources``, and the incremental JSON-lines readers (the event log
through ``observer_resources.events.parse_line``) ``metric_events``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

# the table, the readers and the tails live beside this module; importable from here as before
from observer_assets.monitoring.metric_events import (  # noqa: F401
    NO_SLOT_REASONS,
    TAIL_CHUNK,
    EventFigures,
    Ledger,
    Tail,
    feed_event,
    feed_ledger,
)
from observer_assets.monitoring.metric_sources import (  # noqa: F401
    CAPTURE_FRESH_S,
    GAP_STATUSES,
    RETENTION_EVENT_DAYS,
    SEVERITIES,
    SLOTS_PER_KEY,
    TOKEN_RESULTS,
    TRACK_A_GRACE,
    TRIGGERS,
    Sources,
    scrub,
)
from observer_assets.monitoring.metric_specs import (  # noqa: F401
    ALL_SPECS,
    SPEC,
    SPECS,
    family,
    one,
    reference_markdown,
)
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.metrics import safe_label

log = logging.getLogger("observer.metrics")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9108
SOURCES = (
    "calendar",
    "universe",
    "track_a",
    "track_b",
    "tokens",
    "gaps",
    "backup",
    "retention",
    "dagster",
    "disk",
    "multiprocess",
)


class ObserverCollector:
    """A prometheus_client collector for every (S), (C) and (M) metric. ``environ`` defaults to the process
    environment; ``now`` (a tz-aware datetime, or a callable returning one) fixes the clock for tests."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        now: datetime | Callable[[], datetime] | None = None,
        cache_seconds: float = 5.0,
        slow_cache_seconds: float = 30.0,
        compact_every_s: float = 60.0,
        compact_min_idle_s: float = 600.0,
    ):
        self.env = dict(os.environ if environ is None else environ)
        self._now = now
        self.cache_seconds, self.slow_cache_seconds = cache_seconds, slow_cache_seconds
        self.errors: Counter = Counter({s: 0 for s in SOURCES})
        self.sources = Sources(
            self.env, self.errors, compact_every_s=compact_every_s, compact_min_idle_s=compact_min_idle_s
        )
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[Metric]]] = {}
        self.version = _version()

    def now(self) -> datetime:
        n = self._now() if callable(self._now) else self._now
        return (n or clock.now()).astimezone(KST)

    # -- prometheus_client protocol ------------------------------------------------------------------------
    def describe(self) -> list[Metric]:
        return []  # registering must not run a scrape

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.now()
            out: list[Metric] = []
            for name, fn, ttl in self._sources():
                out += self._cached(name, fn, now, ttl)
            errs = family("observer_exporter_scrape_errors")
            for s in SOURCES:
                errs.add_metric([s], float(self.errors[s]))
            info = family("observer_build_info")
            info.add_metric([safe_label(self.version)], 1.0)
            out += [errs, info]
        yield from out

    def _sources(self) -> list[tuple[str, Callable[[datetime], list[Metric]], float]]:
        """Each source's reader and how long its figures are reused."""
        src, fast, slow = self.sources, self.cache_seconds, self.slow_cache_seconds
        return [
            ("calendar", src.calendar_gates, 0.0),
            ("universe", src.universe, fast),
            ("track_a", src.track_a, fast),
            ("track_b", src.track_b, min(fast, 2.0)),
            ("tokens", src.tokens, fast),
            ("gaps", src.gaps, fast),
            ("backup", src.backup, slow),
            ("retention", src.retention, fast),
            ("dagster", src.dagster, fast),
            ("disk", src.disk, fast),
            ("multiprocess", src.multiprocess, min(fast, 2.0)),
        ]

    def _cached(self, name: str, fn: Callable[[datetime], list[Metric]], now: datetime, ttl: float) -> list[Metric]:
        hit = self._cache.get(name)
        t = time.monotonic()
        if hit is not None and t - hit[0] < ttl:
            return hit[1]
        try:
            fams = fn(now)
        except Exception as exc:  # noqa: BLE001 - one broken source never fails the scrape
            self.errors[name] += 1
            log.error(
                "metrics source %s failed: %s: %s",
                name,
                type(exc).__name__,
                scrub(str(exc), self.sources.secrets)[:300],
            )
            fams = []
        self._cache[name] = (t, fams)
        return fams

    def close(self) -> None:
        self.sources.close()


def _version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("observer")
    except Exception:  # noqa: BLE001
        return "unknown"


# --- exposition ------------------------------------------------------------------------------------------------


def registry(collector: ObserverCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def collect_text(
    environ: Mapping[str, str] | None = None, *, now: datetime | None = None, collector: ObserverCollector | None = None
) -> str:
    """The exposition text one scrape would return (Prometheus text format 0.0.4)."""
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    c = collector or ObserverCollector(
        environ, now=now, cache_seconds=0.0, slow_cache_seconds=0.0, compact_every_s=math.inf
    )
    try:
        return generate_latest(registry(c)).decode("utf-8")
    finally:
        if collector is None:
            c.close()


def make_app(collector: ObserverCollector) -> Callable:
    """WSGI: /metrics (also /), /health → 200 "ok", anything else 404."""
    from prometheus_client.exposition import make_wsgi_app  # noqa: PLC0415

    metrics_app = make_wsgi_app(registry(collector))

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/health":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok"]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /health\n"]

    return app


def make_server(host: str, port: int, collector: ObserverCollector):  # noqa: ANN201 - a WSGIServer
    import socket  # noqa: PLC0415
    from wsgiref.simple_server import WSGIRequestHandler  # noqa: PLC0415
    from wsgiref.simple_server import make_server as _make

    from prometheus_client.exposition import ThreadingWSGIServer  # noqa: PLC0415

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    family_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family_

    return _make(host, port, make_app(collector), server_class=Server, handler_class=Quiet)


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    environ: Mapping[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """Serve /metrics until SIGTERM or SIGINT; ``ready`` gets the URL (the real port when ``port`` is 0)."""
    import signal  # noqa: PLC0415

    collector = ObserverCollector(environ)
    server = make_server(host, port, collector)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_port}/metrics"

    def stop(signum: int, _frame: Any) -> None:
        log.info("metrics: signal %d, stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        list(collector.collect())  # imports and first reads before "ready": the first real scrape is quick
        if ready is not None:
            ready(url)
        server.serve_forever(poll_interval=0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.server_close()
        collector.close()
    return 0
