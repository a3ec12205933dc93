"""Monitoring: the system-event summary, Track A freshness, alerts, and the Prometheus exporter."""
