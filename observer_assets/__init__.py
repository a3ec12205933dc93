"""Observer's Dagster code: one folder per domain, each with its own ``defs.py``; ``definitions.py`` assembles them."""
