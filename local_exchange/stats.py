"""Counters of the local exchange, served by ``GET /__sim__/stats``.

Tests and benchmarks assert on them (how many requests were rate limited, how many ticks the
stream delivered), so every counter is incremented where the event happens, once. Per-key
counters are keyed by :func:`local_exchange.accounts.appkey_id`, never by the key.
"""

from __future__ import annotations

from collections import defaultdict

from local_exchange.accounts import appkey_id

COUNTERS = (
    "requests_total",
    "rate_limited_total",
    "tokens_issued_total",
    "tokens_new_total",
    "token_refused_total",
    "approval_keys_issued_total",
    "rest_errors_total",
    "ws_sessions_total",
    "ws_sessions_refused_total",
    "ws_frames_sent_total",
    "ws_ticks_sent_total",
    "ws_orderbook_frames_total",
    "ws_pingpong_sent_total",
    "ws_dropped_total",
)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.totals: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.by_key: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))

    def inc(self, name: str, appkey: str | None = None, n: int = 1) -> None:
        self.totals[name] += n
        if appkey:
            self.by_key[appkey][name] += n

    def snapshot(self, *, ws_sessions_active: int, ws_active_by_key: dict[str, int]) -> dict:
        out: dict = dict(self.totals)
        out["ws_sessions_active"] = ws_sessions_active
        by = {k: dict(v) for k, v in self.by_key.items()}
        for k in ws_active_by_key:
            by.setdefault(k, dict.fromkeys(COUNTERS, 0))
        for k, v in by.items():
            v["ws_sessions_active"] = ws_active_by_key.get(k, 0)
            v["appkey_id"] = appkey_id(k)
        out["by_appkey"] = by
        return out
