"""The storage layer: where every dataset lives (``layout``) and how it is written (``lake``). Dagster-free, so
collectors, monitoring and backups read paths from one home instead of from each other's asset modules."""
