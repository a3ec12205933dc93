"""Gaps: the daily gap report (pure detection in ``detect``), the data checks, and the backfill and restore that close gaps."""
