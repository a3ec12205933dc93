"""What every domain runs on: partitions registered as time passes, and the pool limits written into the instance."""

import dagster as dg

from observer_assets.orchestration.partition_registrar import partition_registrar
from observer_assets.orchestration.runs import pool_limits

defs = dg.Definitions(sensors=[partition_registrar, pool_limits])
