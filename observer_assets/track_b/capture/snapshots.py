"""Track A's snapshots as the capture reads them: the slot triggers' view of the whole market every 10 minutes."""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path

from observer_assets.track_b.capture.logs import log_event
from observer_assets.track_b.triggers import Snapshot, snapshot_from_rows
from observer_resources.calendar import KST
from observer_resources.storage import lake
from observer_resources.storage.layout import slot_label

SNAPSHOT_HISTORY = 12  # Track A snapshots kept for the triggers (2 h at 10 min)


class TrackASnapshots:
    """Today's Track A snapshots (``track_a/date=D/slot=THHMM/snapshot.parquet``), read once each (again if
    rewritten). A file that cannot be read is logged and retried at the next poll."""

    COLUMNS = ["code", "price", "volume", "trade_value"]

    def __init__(self, data_dir: Path, day: date, keep: int = SNAPSHOT_HISTORY) -> None:
        self.dir = lake.partition_dir(data_dir, "track_a", day)
        self.day = day
        self.keep = keep
        self._seen: dict[Path, int] = {}
        self.history: dict[datetime, Snapshot] = {}
        self.errors = 0

    def poll(self) -> list[Snapshot]:
        """New or rewritten snapshots since the last poll, oldest first."""
        new: list[Snapshot] = []
        for path in sorted(self.dir.glob("slot=T*/snapshot.parquet")):  # slot=THHMM (storage/layout.py)
            try:
                st = path.stat()
                mtime = getattr(st, "st_mtime_ns", None) or (st.st_mtime, st.st_size)
            except FileNotFoundError:
                continue
            if self._seen.get(path) == mtime:
                continue
            label = path.parent.name.removeprefix("slot=")
            try:
                hhmm = datetime.strptime(label, "T%H%M")
            except ValueError:
                continue  # not a slot directory
            ts = datetime(self.day.year, self.day.month, self.day.day, hhmm.hour, hhmm.minute, tzinfo=KST)
            if slot_label(ts) != label:
                continue  # e.g. T930: not how a slot is spelt
            try:
                rows = lake.read_table(path, columns=self.COLUMNS).to_pylist()
                snap = snapshot_from_rows(ts, rows)
            except Exception as exc:  # a bad file must not stop the capture; it is reported and retried
                self.errors += 1
                log_event(logging.ERROR, "track_a_snapshot_unreadable", path=str(path), error=str(exc)[:300])
                continue
            self._seen[path] = mtime
            self.history[ts] = snap
            new.append(snap)
        for ts in sorted(self.history)[: -self.keep]:
            del self.history[ts]
        return sorted(new, key=lambda s: s.ts)

    def ordered(self) -> list[Snapshot]:
        return [self.history[t] for t in sorted(self.history)]
