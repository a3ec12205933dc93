"""The Dagster side of the Track B capture: the op that hosts the supervisor for one window, and its job.

Kept apart from ``supervisor.py`` so the supervisor stays plain Python (testable with any child); everything that
speaks Dagster (config, run tags, the job's run-time budget, the journal's materialization) lives here.
"""

import json
import sys
from datetime import datetime

import dagster as dg

from observer_assets.orchestration.runs import KIS_WS_POOL, MAX_RUNTIME_TAG
from observer_assets.track_b.supervisor import CaptureSupervisor, RestartPolicy, capture_window, window_now, window_spec
from observer_assets.track_b.window import parse_window
from observer_resources.calendar import KST
from observer_resources.calendar.market import MarketCalendar, calendar_from_env
from observer_resources.clock import now as clock_now
from observer_resources.dates import DateFormatError, parse_aware_datetime
from observer_resources.storage import lake

CAPTURE_MODULE = "observer_assets.track_b.capture"
MAX_RUNTIME_MARGIN_S = 900  # after the window end: the child's orderly stop, late_grace_s, slack
# Run tags: never `observer/kis: rest` (the capture spends no REST budget and must not queue behind snapshots);
# first out of the run queue when it is busy.
CAPTURE_TAGS = {"observer/kis": "ws", "observer/track": "b", "dagster/priority": "10"}


def full_window_seconds(cal: MarketCalendar | None = None, spec: str | None = None) -> int:
    """Length of a normal day's window (the job's default ``dagster/max_runtime`` before the margin)."""
    cal = cal or calendar_from_env()
    if cal.mode == "open":
        return 24 * 3600
    start, end = parse_window(spec or window_spec())
    return (end.hour * 60 + end.minute - start.hour * 60 - start.minute) * 60


def run_tags(until: datetime, now: datetime) -> dict[str, str]:
    """Tags of one capture run ending at ``until``: a numeric ``dagster/max_runtime`` (a non-numeric value
    would mean no timeout at all) covering the rest of the window plus the stop margin."""
    remaining = max(0.0, (until - now).total_seconds())
    return {**CAPTURE_TAGS, MAX_RUNTIME_TAG: str(int(remaining + MAX_RUNTIME_MARGIN_S))}


class CaptureConfig(dg.Config):
    until: str | None = None  # ISO 8601 end of the capture; default: the end of today's Track B window
    pins: list[str] = []  # extra manual pins (--pins); OBSERVER_TRACK_B_PINS is passed through as well
    status_interval_s: float = 2.0
    command: list[str] | None = None  # the child's argv before the contract flags; default python -m capture
    term_grace_s: float = 15.0
    late_grace_s: float = 60.0
    restart_delays_s: list[float] = [1.0, 2.0, 5.0, 10.0, 20.0]
    stable_after_s: float = 30.0


def child_argv(config: CaptureConfig) -> list[str]:
    argv = list(config.command) if config.command else [sys.executable, "-m", CAPTURE_MODULE]
    argv += ["--status-interval", f"{config.status_interval_s:g}"]
    if config.pins:
        argv += ["--pins", ",".join(config.pins)]
    return argv


@dg.op(
    out=dg.Out(dg.Nothing),
    pool=KIS_WS_POOL,  # one capture at a time, however it is launched: KIS allows one session per app key
    description="Runs the Track B capture process (every configured app key, one WebSocket session each) until "
    "the end of the Track B window, restarting it within seconds if it dies; its log lines appear here.",
)
def track_b_capture(context: dg.OpExecutionContext, config: CaptureConfig) -> None:
    now = clock_now()
    if config.until:
        try:
            until = parse_aware_datetime(config.until, "until")
        except DateFormatError as e:
            raise dg.Failure(str(e)) from None
    else:
        cal = calendar_from_env()
        w = window_now(cal, now)
        if w is None:
            nxt = capture_window(cal, now.date())
            context.log.warning(
                f"nothing to capture: {now:%Y-%m-%d %H:%M:%S%z} is outside the Track B window"
                + (f" ({nxt.start:%H:%M}-{nxt.end:%H:%M} KST)" if nxt else f" ({now.date()} is not a trading day)")
            )
            return
        until = w.end
    if until <= now:
        context.log.warning(f"nothing to capture: the window ended at {until.isoformat()}")
        return

    def log(level: str, msg: str) -> None:
        getattr(context.log, level, context.log.info)(msg)

    sup = CaptureSupervisor(
        child_argv(config),
        until=until,
        on_log=log,
        data_dir=lake.local_dir(),
        run_id=context.run_id,
        policy=RestartPolicy(tuple(config.restart_delays_s), config.stable_after_s),
        term_grace_s=config.term_grace_s,
        late_grace_s=config.late_grace_s,
    )
    result = sup.run()
    context.log.info("capture supervision over: " + json.dumps(result.as_dict(), ensure_ascii=False))
    _report_journal(context, now, result.restarts)
    if result.reason == "late_stop":
        raise dg.Failure(
            "the capture did not stop at the window end and was stopped", metadata={"restarts": result.restarts}
        )


def _report_journal(context: dg.OpExecutionContext, started: datetime, restarts: int) -> None:
    """A materialization of ``track_b_journal`` from this run: the catalog then shows which capture run wrote the
    day's journal (capture -> journal -> ticks). Never fails the run: the journal itself is what matters."""
    from observer_assets.track_b.assets import journal_event_metadata, journal_summary, track_b_journal

    try:
        summary = journal_summary(lake.local_dir(), started.astimezone(KST).date())
        context.log_event(
            dg.AssetMaterialization(
                asset_key=track_b_journal.key,
                description=f"written by capture run {context.run_id[:8]} ({restarts} restarts)",
                metadata={**journal_event_metadata(summary), "capture_restarts": restarts},
                tags={"dagster/data_version": summary["fingerprint"]} if summary["fingerprint"] else None,
            )
        )
    except Exception as e:  # noqa: BLE001 - reporting only, see docstring
        context.log.warning(f"could not report the journal's materialization: {type(e).__name__}: {e}")


def _job_max_runtime() -> str:
    try:
        return str(full_window_seconds() + MAX_RUNTIME_MARGIN_S)
    except ValueError:  # a bad OBSERVER_TRACK_B_WINDOW: the sensor's ticks say so; manual runs get a day
        return str(24 * 3600 + MAX_RUNTIME_MARGIN_S)


@dg.job(
    name="track_b_capture_job",
    description="The Track B capture for one window: one run hosting every app key's WebSocket session "
    "(started by track_b_capture_sensor; terminate the run to stop the capture).",
    executor_def=dg.in_process_executor,
    tags=CAPTURE_TAGS,
    run_tags={**CAPTURE_TAGS, MAX_RUNTIME_TAG: _job_max_runtime()},
)
def track_b_capture_job() -> None:
    track_b_capture()
