"""Minute bars: KIS's 1-minute bars of every universe member, fetched after the day (the completeness proof's source)."""
