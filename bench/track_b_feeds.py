"""Track B capture with mixed feeds: the real capture process against the local exchange on loopback, 41
registrations split between trades and order books, and what each costs (frames, records and bytes per second,
receive->durable latency, CPU, peak RSS), plus the group-commit interval's price for a p99 under 50 ms.

Each run starts its own exchange (``--clock krx``, default 2,600 listings, seed 5) frozen at 2026-12-01 10:00 KST
(a KRX and NXT trading day, regular session), pre-generates the day's tapes of the busiest codes, starts the
capture (``OBSERVER_CALENDAR=krx``, ``OBSERVER_CLOCK_FILE`` following the exchange's clock) with those codes
pinned, waits for every registration, then lets both clocks run at the run's speed (1 = real time: the
exchange's own per-symbol rates) for a warm-up plus ``--seconds`` of real time, and stops the capture with SIGTERM.
Configs:

* ``a``: ``OBSERVER_TRACK_B_FEEDS=trades:KRX``, 41 symbols, 41 registrations (H0STCNT0);
* ``b``: ``OBSERVER_TRACK_B_FEEDS=trades:UN,book:KRX``, 20 symbols, 40 registrations (H0UNCNT0 + H0STASP0).

Receive->durable: the capture stamps every frame's receive time ``rx`` (its clock, the one in the journal line)
before it parses it, and the journal makes a line durable when the write+fdatasync that carries it returns. The
capture's files say only up to which line is durable, so the benchmark runs the capture's own entry point under a
hook (``--child``): after every commit it records the commit's end on the same clock and the last line number it
carried; at close it dumps the commits and ``Journal.stats()``. A line's durable instant is then the first commit
whose last line number is at or past its own; its latency is that minus ``rx`` (over the speed, so real seconds).
The hook adds one clock reading per commit; it changes nothing else. ``BENCH_FSYNC_INTERVAL`` in the child sets
``Journal(fsync_interval=...)``, which the capture does not expose (it takes the journal's default).

CPU is the capture process's user+system time over the measured window (``/proc/<pid>/stat``), peak RSS its
``VmHWM``; frames lost are the exchange's data frames sent to the key (``ws_frames_sent_total``) that are not in the
journal.

``python -m bench.track_b_feeds --seconds 60`` (options below); ``python -m bench track_b_feeds`` runs the default
set with ``BENCH_TRACK_B_SECONDS`` (default 60) seconds each.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from observer_resources.calendar import KST  # the capture's own imports only: the child imports this module

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=KST)  # a KRX + NXT trading day, regular session
CONFIGS: dict[str, tuple[str, int]] = {"a": ("trades:KRX", 41), "b": ("trades:UN,book:KRX", 20)}
SIM_ARGS = ("--mode", "real", "--clock", "krx", "--seed", "5", "--hold-after-disconnect", "0.2")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_P99_MS = 50.0
_creds = iter(range(9100, 9200))


# --- the child: the capture's own entry point, with a commit hook ------------------------------------------------


def child() -> int:
    """The capture (``observer_assets.track_b.capture.cli.main``) with each journal's commits recorded."""
    from observer_assets.track_b import journal as jr
    from observer_assets.track_b.capture.cli import main
    from observer_resources import clock

    out_dir = Path(os.environ["BENCH_COMMITS_DIR"])
    interval = os.environ.get("BENCH_FSYNC_INTERVAL")
    orig_init, orig_succeeded, orig_close = jr.Journal.__init__, jr.Journal._succeeded, jr.Journal.close

    def init(self, *args: Any, **kw: Any) -> None:
        if interval:
            kw["fsync_interval"] = float(interval)
        self._bench_commits = []
        orig_init(self, *args, **kw)

    def succeeded(self, group: list, t0: float, done: float) -> None:
        orig_succeeded(self, group, t0, done)
        at, mono = clock.now().timestamp(), time.monotonic()
        self._bench_commits.append((at, mono, done, group[-1].n, len(group), done - t0))

    def close(self, timeout: float = 30.0) -> None:
        try:
            orig_close(self, timeout)
        finally:
            doc = {"fsync_interval": self.fsync_interval, "stats": self.stats(), "commits": self._bench_commits}
            (out_dir / f"{self.key_id}.json").write_text(json.dumps(doc))

    jr.Journal.__init__, jr.Journal._succeeded, jr.Journal.close = init, succeeded, close
    return main(sys.argv[2:])


# --- the parent ----------------------------------------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def _proc_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen, log: Path):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"capture: no {what} (exit {proc.poll()}); log tail: {tail}")
        time.sleep(0.1)


def _pcts(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p99": None, "max": None}
    ms = values * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


def analyse(data: Path, key: str, dump: dict, *, t_from: float, t_to: float, speed: float) -> dict[str, Any]:
    """Frames, records and bytes of the journal lines received in [t_from, t_to) (capture clock, epoch s), and
    their receive->durable latency (real seconds)."""
    from observer_assets.track_b.journal import read_journal, segments
    from observer_resources.kis import protocol as p
    from observer_resources.kis.frames import FeedFrame, OrderBookFrame, TradeBatch, parse_message

    c = np.array(dump["commits"], dtype=np.float64).reshape(-1, 6)
    at, mono, done, c_n = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    c_at = at - (mono - done) * speed  # each commit's end on the capture's clock (it runs ``speed`` x real time)
    # the capture's clock follows the wall clock: a step of it (or a paused VM) would show here and in rx, not in
    # the journal's own append->durable (monotonic) figures
    in_window = (c_at >= t_from) & (c_at < t_to)  # not the frozen clock before the start
    offset = (c_at / speed - done)[in_window]
    clock_step_ms = float(np.abs(offset - np.median(offset)).max() * 1e3) if len(offset) else 0.0
    lines = list(read_journal(segments(data, T0.date(), key_id=key)))
    sizes = {}
    for a, b in zip(lines, lines[1:]):
        if a.path == b.path:
            sizes[(a.path, a.offset)] = b.offset - a.offset
    if lines:
        last = lines[-1]
        sizes[(last.path, last.offset)] = last.path.stat().st_size - last.offset
    data_frames_total = 0
    frames = trades = books = other = nbytes = 0
    lat: list[float] = []
    rx_in: list[float] = []
    by_tr: Counter[str] = Counter()
    trade_trs = {p.TR_WS_TRADE, p.TR_WS_TRADE_UN, p.TR_WS_TRADE_NXT}
    for ln in lines:
        if not ln.ok or ln.kind != "frame":
            continue
        msg = parse_message(ln.payload)
        is_data = isinstance(msg, TradeBatch | OrderBookFrame | FeedFrame)
        data_frames_total += is_data
        rx = ln.rx.timestamp()
        if not (t_from <= rx < t_to):
            continue
        frames += 1
        rx_in.append(rx)
        nbytes += sizes.get((ln.path, ln.offset), 0)
        i = int(np.searchsorted(c_n, ln.n, side="left"))
        lat.append((c_at[i] - rx) / speed if i < len(c_n) else np.nan)
        if not is_data:
            continue
        by_tr[msg.tr_id] += len(msg.records)
        if isinstance(msg, TradeBatch) and msg.tr_id in trade_trs:
            trades += len(msg.records)
        elif isinstance(msg, OrderBookFrame):
            books += len(msg.records)
        else:
            other += len(msg.records)
    lat_a = np.array(lat)
    # the exchange reveals each (simulated) second's trades when its clock reaches it: how spread is a second's
    # arrival (first to last frame received in it, real ms)
    span: dict[int, list[float]] = {}
    for rx in rx_in:
        s = span.setdefault(int(rx), [rx, rx])
        s[1] = rx
    spans = np.array([(b - a) / speed * 1e3 for a, b in span.values()])
    not_durable = int(np.isnan(lat_a).sum())
    window_commits = in_window.sum()
    secs = (t_to - t_from) / speed
    return {
        "frames": frames,
        "frames_per_s": round(frames / secs, 1),
        "trade_records_per_s": round(trades / secs, 1),
        "book_records_per_s": round(books / secs, 1),
        "other_records_per_s": round(other / secs, 1),
        "records_by_tr": dict(by_tr),
        "journal_bytes_per_s": round(nbytes / secs),
        "fdatasyncs_per_s": round(float(window_commits) / secs, 1),
        "lines_per_commit": round(frames / max(1, int(window_commits)), 1),
        "rx_durable_ms": {k: None if v is None else round(v, 2) for k, v in _pcts(lat_a[~np.isnan(lat_a)]).items()},
        "not_durable_lines": not_durable,
        "clock_vs_monotonic_max_ms": round(clock_step_ms, 2),
        "arrival_span_per_second_ms_p50": round(float(np.median(spans)), 1) if len(spans) else None,
        "data_frames_journaled_total": data_frames_total,
    }


def run_one(
    config: str,
    *,
    seconds: float = 60.0,
    warmup: float = 5.0,
    speed: float = 1.0,
    fsync_interval: float | None = None,
    listings: int = 2600,
) -> dict[str, Any]:
    from local_exchange.accounts import demo_credentials
    from local_exchange.server import run_sim_process
    from observer_assets.track_b.capture import read_status

    feeds, n_codes = CONFIGS[config]
    creds = demo_credentials(next(_creds))
    with tempfile.TemporaryDirectory(prefix="bench-track-b-", dir=os.environ.get("BENCH_DIR")) as tmp_s:
        tmp = Path(tmp_s)
        data, commits_dir, clock_file, log_path = tmp / "data", tmp / "commits", tmp / "clock.json", tmp / "capture.log"
        commits_dir.mkdir()
        sim = run_sim_process(*SIM_ARGS, "--listings", str(listings), "--speed", "0", "--start", T0.isoformat())
        cap: subprocess.Popen | None = None
        try:
            from observer_resources import clock
            from observer_resources.kis.config import configs_from_env

            rows = sim.admin("listings", params={"order": "activity", "limit": "100"})["listings"]
            codes = [r["code"] for r in rows if not r["halted"]][:n_codes]
            venue = "UN" if "trades:UN" in feeds else "KRX"
            t_gen = time.monotonic()
            for code in codes:  # the day's tapes now, not at the first trade inside the measured window
                q = {"code": code, "day": "20261201", "venue": venue, "records": "0", "from": "095959", "to": "095959"}
                sim.admin("truth/ticks", params=q)
            gen_s = time.monotonic() - t_gen
            clock.write_sim(clock_file, T0, 0)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "OBSERVER_", "BENCH_"))}
            env.update(
                OBSERVER_DATA_DIR=str(data),
                OBSERVER_CALENDAR="krx",
                OBSERVER_CLOCK_FILE=str(clock_file),
                OBSERVER_TRACK_B_FEEDS=feeds,
                KIS_REST_URL=sim.rest_url,
                KIS_WS_URL=sim.ws_url,
                KIS_APP_KEY=creds[0],
                KIS_APP_SECRET=creds[1],
                PYTHONUNBUFFERED="1",
                BENCH_COMMITS_DIR=str(commits_dir),
            )
            if fsync_interval is not None:
                env["BENCH_FSYNC_INTERVAL"] = str(fsync_interval)
            (key,) = [c.key_id for c in configs_from_env(env)]
            until = T0 + timedelta(seconds=(warmup + seconds) * speed + 600)
            argv = [sys.executable, "-m", "bench.track_b_feeds", "--child", "--pins", ",".join(codes)]
            argv += ["--until", until.isoformat(), "--status-interval", "1"]
            with open(log_path, "wb") as err:
                cap = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            regs = n_codes * len(feeds.split(","))  # registrations per symbol x symbols

            def registered() -> bool:
                s = read_status(data)
                return bool(s and s["keys"].get(key, {}).get("registrations") == regs)

            _wait(registered, 60, f"{regs} registrations", cap, log_path)
            sim.admin("clock", {"at": T0.isoformat(), "speed": speed})
            clock.write_sim(clock_file, T0, speed)
            t_run = time.monotonic()
            time.sleep(warmup)
            cpu0, sim_cpu0, t0 = _proc_cpu_s(cap.pid), _proc_cpu_s(sim.proc.pid), time.monotonic()
            rss_max = 0
            while (left := t0 + seconds - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                rss_max = max(rss_max, _proc_kib(cap.pid, "VmRSS"))
            cpu1, sim_cpu1, t1 = _proc_cpu_s(cap.pid), _proc_cpu_s(sim.proc.pid), time.monotonic()
            hwm = _proc_kib(cap.pid, "VmHWM")
            load1 = os.getloadavg()[0]
            cap.send_signal(signal.SIGTERM)
            code = cap.wait(60)
            sent = sim.admin("stats", params={"appkey": creds[0]})["for_appkey"]
        finally:
            if cap is not None and cap.poll() is None:
                cap.kill()
                cap.wait(10)
            sim.stop()
        dump = json.loads((commits_dir / f"{key}.json").read_text())
        t_from = T0.timestamp() + (t0 - t_run) * speed
        t_to = T0.timestamp() + (t1 - t_run) * speed
        res = analyse(data, key, dump, t_from=t_from, t_to=t_to, speed=speed)
        logs = [json.loads(x) for x in log_path.read_text(errors="replace").splitlines() if x.startswith("{")]
        loud = Counter(
            f"{x['level']}:{x['event']}" + (f"({x.get('reason')}/{x.get('kind')})" if x["event"] == "gap_open" else "")
            for x in logs
            if x.get("level") in ("warning", "error", "critical")
        )
        st = (read_status(data) or {}).get("keys", {}).get(key, {})
        secs = t1 - t0
        p99 = res["rx_durable_ms"]["p99"]
        return {
            "bench": "track_b_feeds",
            "config": config,
            "feeds": feeds,
            "symbols": n_codes,
            "registrations": regs,
            "speed": speed,
            "fsync_interval_s": dump["fsync_interval"],
            "seconds": round(secs, 1),
            **{k: v for k, v in res.items() if k != "data_frames_journaled_total"},
            "p99_over_50ms": None if p99 is None else round(p99 / TARGET_P99_MS, 2),
            "journal_append_durable_ms": dump["stats"]["durable_latency"],
            "journal_commit_ms": dump["stats"]["commit_latency"],
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_pct_of_core": round(100 * (cpu1 - cpu0) / secs, 1),
            "exchange_cpu_pct_of_core": round(100 * (sim_cpu1 - sim_cpu0) / secs, 1),
            "rss_peak_mib": round(max(hwm, rss_max) / 1024, 1),
            "exit_code": code,
            "data_frames_sent": sent.get("ws_frames_sent_total"),
            "data_frames_journaled": res["data_frames_journaled_total"],
            "frames_lost": (sent.get("ws_frames_sent_total") or 0) - res["data_frames_journaled_total"],
            "reconnects": st.get("reconnects"),
            "bad_frames": st.get("bad_frames"),
            "frames_not_recorded": st.get("frames_not_recorded"),
            "log_warnings": dict(loud),
            "tape_generation_s": round(gen_s, 1),
            "loadavg_1m": round(load1, 2),
        }


def run(
    seconds: float | None = None,
    *,
    warmup: float = 5.0,
    configs: tuple[str, ...] = ("a", "b"),
    intervals: tuple[float, ...] = (0.2, 0.05),
    stress: tuple[tuple[str, float, float | None], ...] = (("a", 10.0, None), ("b", 3.0, None), ("a", 10.0, 0.2)),
) -> list[dict]:
    """Each config at real time with the journal's default interval; config b at the other ``intervals``; then
    the ``stress`` (config, speed, interval or None for the default) runs."""
    secs = seconds if seconds is not None else float(os.environ.get("BENCH_TRACK_B_SECONDS", "60"))
    plan: list[tuple[str, float, float | None]] = [(c, 1.0, None) for c in configs]
    plan += [("b", 1.0, i) for i in intervals]
    plan += list(stress)
    return [run_one(c, seconds=secs, warmup=warmup, speed=s, fsync_interval=i) for c, s, i in plan]


def _spec(text: str) -> tuple[str, float, float | None]:
    """CONFIG[:SPEED[:INTERVAL]] -> (config, speed, interval or None)."""
    parts = text.split(":")
    if parts[0] not in CONFIGS:
        raise SystemExit(f"unknown config {parts[0]!r}: one of {sorted(CONFIGS)}")
    speed = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
    interval = float(parts[2]) if len(parts) > 2 and parts[2] else None
    return parts[0], speed, interval


def main(argv: list[str]) -> None:
    from bench.common import git_rev, machine

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped benchmark stops its exchange and capture
    ap = argparse.ArgumentParser(prog="python -m bench.track_b_feeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured real seconds per run (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="real seconds run before measuring (default 5)")
    ap.add_argument("--configs", default="a,b", help="configs run at real time with the default interval")
    ap.add_argument("--intervals", default="0.2,0.05", help="other group-commit intervals tried on config b")
    ap.add_argument(
        "--stress", default="a:10,b:3,a:10:0.2", help="CONFIG:SPEED[:INTERVAL],... faster than real time ('' none)"
    )
    ap.add_argument("--only", metavar="CONFIG[:SPEED[:INTERVAL]]", help="one run instead, e.g. b:1:0.05")
    a = ap.parse_args(argv)
    print(json.dumps({"machine": machine(), "rev": git_rev()}), flush=True)
    if a.only:
        c, speed, interval = _spec(a.only)
        rows = [run_one(c, seconds=a.seconds, warmup=a.warmup, speed=speed, fsync_interval=interval)]
    else:
        rows = run(
            a.seconds,
            warmup=a.warmup,
            configs=tuple(c for c in a.configs.split(",") if c),
            intervals=tuple(float(i) for i in a.intervals.split(",") if i),
            stress=tuple(_spec(x) for x in a.stress.split(",") if x),
        )
    for r in rows:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child())
    main(sys.argv[1:])
