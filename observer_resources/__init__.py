"""Observer's Dagster-free lower layer: the KIS client, shared token and rate-limit state, calendar, clock, storage, events, settings."""
