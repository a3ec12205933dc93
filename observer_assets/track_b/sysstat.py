"""Host load for the mitigation rule (docs/collector-rules.md §4.6): CPU % and memory %, read from /proc.

No new dependency (psutil is not installed). The parsers are pure so they are tested on fixed text; the
meters read the live files. Where /proc is missing (not Linux) CPU falls back to the load average over
the core count and memory to 0 with ``available`` False, so the caller can say the figure is unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate ``cpu`` line of /proc/stat. Idle = idle + iowait."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            vals = [int(v) for v in line.split()[1:]]
            if len(vals) < 4:
                break
            # user nice system idle iowait irq softirq steal guest guest_nice; guest* are inside user/nice
            core = vals[:8]
            idle = core[3] + (core[4] if len(core) > 4 else 0)
            total = sum(core)
            return total - idle, total
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_meminfo(text: str) -> float:
    """Memory in use, percent: (MemTotal - MemAvailable) / MemTotal."""
    vals: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            vals[name.strip()] = int(parts[0])
    total = vals.get("MemTotal")
    if not total:
        raise ValueError("no MemTotal in /proc/meminfo")
    avail = vals.get("MemAvailable")
    if avail is None:  # kernels before 3.14
        avail = vals.get("MemFree", 0) + vals.get("Buffers", 0) + vals.get("Cached", 0)
    return max(0.0, min(100.0, 100.0 * (total - avail) / total))


class CpuMeter:
    """System-wide CPU utilisation between successive ``percent()`` calls (the first call measures since
    construction)."""

    def __init__(self, proc: Path = PROC) -> None:
        self._path = proc / "stat"
        self.available = self._path.exists()
        self._last = self._read() if self.available else None

    def _read(self) -> tuple[int, int]:
        return parse_proc_stat(self._path.read_text())

    def percent(self) -> float:
        if not self.available:
            try:
                return min(100.0, 100.0 * os.getloadavg()[0] / (os.cpu_count() or 1))
            except OSError:
                return 0.0
        cur = self._read()
        last, self._last = self._last, cur
        if last is None:
            return 0.0
        d_total = cur[1] - last[1]
        if d_total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (cur[0] - last[0]) / d_total))


@dataclass(frozen=True)
class MemInfo:
    percent: float
    available: bool


def memory(proc: Path = PROC) -> MemInfo:
    path = proc / "meminfo"
    try:
        return MemInfo(parse_meminfo(path.read_text()), True)
    except (OSError, ValueError):
        return MemInfo(0.0, False)


def process_rss_bytes(proc: Path = PROC) -> int | None:
    """This process's resident set size, or None where /proc is missing."""
    try:
        for line in (proc / "self" / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_age_s(proc: Path = PROC) -> float | None:
    """Seconds since this process started (interpreter start-up included), from /proc; None if unknown."""
    try:
        stat = (proc / "self" / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after pid and comm
        uptime = float((proc / "uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
