"""The exporter's metric table: every scrape-time (S) and capture (C) family, and with them the multiprocess (M)
families of ``observer_resources.metrics`` (``ALL_SPECS``). docs/metrics.md's reference table is generated from it
(:func:`reference_markdown`), so the table here and the document cannot drift apart."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from observer_resources import metrics as m_metrics
from observer_resources.metrics import Spec

S, C = "S", "C"
#: the scrape-time (S) and capture (C) families; the (M) ones are observer_resources.metrics.M_SPECS
SPECS: tuple[Spec, ...] = (
    # calendar gates
    Spec(
        "observer_trading_day",
        "gauge",
        (),
        "S: KRX calendar (OBSERVER_CALENDAR)",
        "1 when today (KST) is a trading day.",
    ),
    Spec(
        "observer_market_open",
        "gauge",
        (),
        "S: KRX calendar",
        "1 while now is inside today's regular session (open..close; late opens honoured).",
    ),
    Spec(
        "observer_track_a_window_open",
        "gauge",
        (),
        "S: KRX calendar",
        "1 from today's first Track A slot to 10 minutes after its last.",
    ),
    Spec(
        "observer_track_b_window_open",
        "gauge",
        (),
        "S: KRX calendar + OBSERVER_TRACK_B_WINDOW",
        "1 inside today's Track B capture window.",
    ),
    # universe
    Spec(
        "observer_universe_size",
        "gauge",
        (),
        "S: universe/date=today/universe.parquet",
        "Symbols in today's universe (0 when it is not built yet).",
    ),
    Spec(
        "observer_universe_previous_size",
        "gauge",
        (),
        "S: the previous trading day's universe file",
        "Symbols in the previous trading day's universe (0 when it has none).",
    ),
    Spec(
        "observer_universe_built_timestamp_seconds",
        "gauge",
        (),
        "S: mtime of today's universe file",
        "When today's universe file was written (Unix time; 0 when none).",
    ),
    # Track A
    Spec(
        "observer_track_a_last_slot_timestamp_seconds",
        "gauge",
        (),
        "S: track_a/date=today/slot=T*/",
        "Slot time of today's newest Track A snapshot (Unix time; 0 when there is none today).",
    ),
    Spec(
        "observer_track_a_last_slot_coverage_ratio",
        "gauge",
        (),
        "S: newest snapshot today + today's universe",
        "Rows with a price in today's newest snapshot / universe size (absent when there is no snapshot today).",
    ),
    Spec(
        "observer_track_a_slots_expected",
        "gauge",
        (),
        "S: KRX calendar",
        "Track A slots due so far today (slot time <= now).",
    ),
    Spec(
        "observer_track_a_slots_written", "gauge", (), "S: track_a/date=today/", "Track A snapshot files written today."
    ),
    Spec(
        "observer_track_a_slot_lateness_seconds",
        "gauge",
        (),
        "S: newest snapshot today",
        "Write time of today's newest snapshot minus its slot time (absent when there is none today).",
    ),
    # Track B
    Spec(
        "observer_track_b_slots_capacity",
        "gauge",
        ("key_id",),
        "C: capture status",
        "WebSocket registrations one app key may hold (41).",
    ),
    Spec(
        "observer_track_b_slots_allocated",
        "gauge",
        ("key_id",),
        "C: capture status",
        "Symbols registered on the key's WebSocket session now.",
    ),
    Spec("observer_ws_connected", "gauge", ("key_id",), "C: capture status", "1 while the key's WebSocket is up."),
    Spec(
        "observer_ws_reconnects",
        "counter",
        ("key_id",),
        "C: capture status",
        "WebSocket reconnections since the capture started.",
    ),
    Spec(
        "observer_ws_disconnected_seconds",
        "counter",
        ("key_id",),
        "C: capture status",
        "Seconds the key's WebSocket was down since the capture started (a current outage included).",
    ),
    Spec(
        "observer_track_b_ticks",
        "counter",
        ("key_id",),
        "C: capture status",
        "Trades received on the key's session since the capture started.",
    ),
    Spec(
        "observer_track_b_triggers",
        "counter",
        ("trigger",),
        "S: today's slot_change events + overflow ledger",
        "Trigger candidates today: those given a slot (allocate/replace) plus those the ledger turned away.",
    ),
    Spec(
        "observer_track_b_overflows",
        "counter",
        (),
        "S: today's overflow ledger",
        "Candidates refused today for lack of a slot (dwell, all slots occupied, lower priority).",
    ),
    Spec(
        "observer_track_b_mitigation_level",
        "gauge",
        (),
        "C: capture status",
        "Recording-rate mitigation level (0 normal .. 2).",
    ),
    Spec(
        "observer_track_b_capture_up",
        "gauge",
        (),
        "C: capture status",
        "1 when the capture's status file was updated within the last 30 s.",
    ),
    Spec(
        "observer_track_b_status_age_seconds",
        "gauge",
        (),
        "C: capture status",
        "Seconds since the capture's status file was last updated (absent when there is none).",
    ),
    # tokens and rate limit
    Spec(
        "observer_token_validity_seconds",
        "gauge",
        ("key_id",),
        "S: token store (SQLite or PostgreSQL)",
        "Seconds the stored access token is still valid (0 once expired, -1 when none is stored).",
    ),
    Spec(
        "observer_token_refreshes",
        "counter",
        ("key_id", "result"),
        "S: today's token events",
        "Access-token issuances asked of KIS today (issued | refreshed) and failures (failed); adoptions of a "
        "token another process issued are not counted.",
    ),
    Spec(
        "observer_rate_limit_rejections",
        "counter",
        ("key_id",),
        "S: today's rate_limit_rejected events",
        "EGW00201 (rate limit) answers today.",
    ),
    # gaps
    Spec(
        "observer_gaps",
        "gauge",
        ("severity", "status"),
        "S: gaps/date=today/gap_report.parquet",
        "Rows of today's gap report by severity and status (0 for combinations without rows).",
    ),
    Spec(
        "observer_gap_report_timestamp_seconds",
        "gauge",
        (),
        "S: mtime of today's gap report",
        "When today's gap report was written (Unix time; 0 when none).",
    ),
    Spec(
        "observer_anomaly_day",
        "gauge",
        (),
        "S: system/anomaly marker + gap verdict",
        "1 when today is an anomaly day (a marker, or the gap report's verdict).",
    ),
    # backup and retention
    Spec(
        "observer_backup_last_success_timestamp_seconds",
        "gauge",
        (),
        "S: backup destination, SUCCESS.marker",
        "verified_at of the newest SUCCESS.marker (Unix time; 0 when none).",
    ),
    Spec(
        "observer_backup_last_verified_day_timestamp_seconds",
        "gauge",
        (),
        "S: backup destination",
        "00:00 KST of the newest day with a committed package (Unix time; 0 when none).",
    ),
    Spec(
        "observer_backup_unverified_days",
        "gauge",
        (),
        "S: local files + backup destination",
        "Days older than today without a committed package: with local data, or with a package at the "
        "destination that failed verification (its marker withdrawn) or is unreadable.",
    ),
    Spec(
        "observer_retention_deleted_files",
        "counter",
        (),
        "S: retention_deleted events, last 14 days",
        "Files retention deleted in the last 14 days' event logs (drops when a day leaves the window).",
    ),
    Spec(
        "observer_retention_deleted_bytes",
        "counter",
        (),
        "S: retention_deleted events, last 14 days",
        "Bytes retention deleted in the last 14 days' event logs.",
    ),
    Spec(
        "observer_retention_blocked_days",
        "gauge",
        (),
        "S: the latest retention run's events (last 26 h)",
        "Days past the retention cap kept because they have no verified backup.",
    ),
    # runs and host
    Spec(
        "observer_dagster_runs_failed",
        "gauge",
        ("job",),
        "S: Dagster instance (DAGSTER_HOME)",
        "Failed runs in the last 24 h per job (0 for jobs that only succeeded; absent without an instance).",
    ),
    Spec("observer_dagster_instance_up", "gauge", (), "S: Dagster instance", "1 when the Dagster instance answered."),
    Spec(
        "observer_disk_used_ratio",
        "gauge",
        ("path",),
        "S: the local directory's filesystem",
        "Used / total bytes of the filesystem holding the local directory (the lake when it is local).",
    ),
    Spec(
        "observer_exporter_scrape_errors",
        "counter",
        ("source",),
        "S: this exporter",
        "Sources that failed while building a scrape (the scrape itself still succeeded), since start.",
    ),
    Spec("observer_build_info", "gauge", ("version",), "S: this exporter", "Always 1; the Observer version."),
)
SPEC = {s.name: s for s in SPECS}
ALL_SPECS: tuple[Spec, ...] = SPECS + m_metrics.M_SPECS


def family(name: str) -> Metric:
    s = SPEC[name]
    cls = CounterMetricFamily if s.type == "counter" else GaugeMetricFamily
    return cls(s.name, s.help, labels=list(s.labels))


def one(name: str, value: float | None) -> list[Metric]:
    f = family(name)
    if value is not None:
        f.add_metric([], float(value))
    return [f]


def reference_markdown() -> str:
    """docs/metrics.md's table, from the specs above (the test keeps the file in step)."""
    rows = ["| metric (as scraped) | type | labels | source | meaning |", "|---|---|---|---|---|"]
    for s in sorted(ALL_SPECS, key=lambda s: s.name):
        name = f"`{s.sample_name}`" + (" (`_bucket`, `_sum`, `_count`)" if s.type == "histogram" else "")
        labels = ", ".join(s.labels) or "—"
        cells = [name, s.type, labels, s.source, s.help]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
