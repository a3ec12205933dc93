"""Track B capture process: one WebSocket session per app key, every frame archived, every hole recorded.

Run as ``python -m observer_assets.track_b.capture [--until ISO] [--pins A,B] [--status-interval 2]``; Dagster
starts it as a supervised child (restarting it if it dies), but it needs nothing from Dagster. One process holds
every configured key, so one :class:`SlotManager` gives the sessions disjoint slot sets by construction.

A :class:`KeySession` never looks into the capture: what all sessions share is handed over once in a frozen
:class:`SessionContext` (run id, settings, event log, stream triggers, start instants), and the few live calls back
(mitigation level, exchange clock, slot manager on a reconnect or a refusal, apply, anomaly) go through
:class:`SessionHost`. A session is then readable and testable on its own, and what it may change in the capture is
listed in one place.

Order of work for a received frame, on the socket reader (``KisWebSocketClient.on_frame``): its raw bytes and
receive time go to the key's :class:`Journal` first (with the connection id, the mitigation level in force and,
for an unusable frame, a ``bad`` flag); only then are its trades handed on (stream triggers). A malformed frame is
kept, flagged, counted and logged; nothing in this path stops the reader.

Gap markers (scope ``scalp``, symbol null, ``metadata.key_id`` names the session):

* **disconnect** (``ws_disconnect``, major): opens at the **last frame received before the drop** — with a busy
  stream that is within one emit interval (~50 ms) of the drop, and it never starts after data stopped, whereas
  the detection time can trail the drop by the watchdog's 60 s on a half-open socket. It closes when the session
  is back **and the whole slot set is registered again** (the client's ``ws_connected``, sent after the
  re-subscription acks): from then on every slot is recording; a code re-registered late in the paced
  re-subscription loses ticks up to that point, so an earlier end (the first frame after reconnecting, kept as
  ``metadata.first_frame_at``) would leave real losses outside every gap. Longer than the failure threshold
  (300 s) -> closed as ``critical``.
* **5-minute rule**: after ``failure_after`` s of continuous failure the open gap is re-marked ``critical`` (a
  ``gap_marker`` with the same ``gap_id``), a ``ws_failure_critical`` event and the anomaly marker
  ``system/anomaly/YYYYMMDD.json`` are written; reconnecting goes on (backoff 1, 2, 5, 10, 20, 30, 60 s).
* **never connected**: a session that fails from the start opens the same gap from the process start.
* **restart** (``system_error``): at start every unclosed journal segment of today is recovered (a torn tail cut);
  an unclean end of the previous process opens a gap from its last durable frame to the new session's first
  registration of the slot set. Gaps the dead process left open are closed where that gap begins; a gap a clean
  stop left open (``manual_stop``) is closed when this session is registered.
* **SIGTERM inside the window** opens a ``manual_stop`` gap (the next start closes it).

Files: journals ``raw/track_b/date=D/key=K/HH.jsonl``; events ``system/events/YYYYMMDD.<host>.jsonl``; overflow ledger
``system/overflow/YYYYMMDD.jsonl``; anomaly ``system/anomaly/YYYYMMDD.json``; status
``system/capture/status.json`` (atomic, every ``--status-interval`` s). Logs: one JSON object per line on stderr.
Exit 0 at ``--until`` / the window's end / SIGTERM / a closed day, 2 on bad configuration, 1 on a failure.

Tuning knobs (defaults in parentheses; tests shorten them): ``OBSERVER_TRACK_B_WINDOW``, ``OBSERVER_TRACK_B_PINS``,
``OBSERVER_TRACK_B_EVAL_S`` (30), ``OBSERVER_TRACK_B_SAMPLE_S`` (10), ``OBSERVER_TRACK_B_FAILURE_S`` (300),
``OBSERVER_TRACK_B_BACKOFF`` ("1,2,5,10,20,30,60"), ``OBSERVER_TRACK_B_KEY_IN_USE_BACKOFF_S`` (5: KIS holds a key a
few seconds after a session ends, and a 30 s floor would break the "back within 30 s" promise after a crash),
``OBSERVER_TRACK_B_MITIGATION`` (JSON: ``hold_enter_s``, ``hold_recover_s``, partial ``enter1``/``enter2``/
``recover1``).
"""

from observer_assets.track_b.capture.capture import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, Capture
from observer_assets.track_b.capture.cli import main
from observer_assets.track_b.capture.logs import JsonLineFormatter, log_event, setup_logging
from observer_assets.track_b.capture.restart import CaptureError, recover_key
from observer_assets.track_b.capture.session import KeySession, OpenGap, SessionContext, SessionHost
from observer_assets.track_b.capture.settings import ConfigError, Settings, build_parser, load_settings, parse_until
from observer_assets.track_b.capture.snapshots import TrackASnapshots
from observer_assets.track_b.capture.status import read_status, write_anomaly

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "Capture",
    "CaptureError",
    "ConfigError",
    "JsonLineFormatter",
    "KeySession",
    "OpenGap",
    "SessionContext",
    "SessionHost",
    "Settings",
    "TrackASnapshots",
    "build_parser",
    "load_settings",
    "log_event",
    "main",
    "parse_until",
    "read_status",
    "recover_key",
    "setup_logging",
    "write_anomaly",
]
