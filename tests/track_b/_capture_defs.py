"""Definitions `dagster dev` loads in the supervisor test: Track B's, with the KIS resource definitions.py gives every
domain (the restore asset needs it to load), so only the capture and compaction sensors run."""

import dagster as dg

from observer_assets.track_b import defs as track_b  # the module: one Definitions object at module scope
from observer_resources.resources import kis_pool_from_env

defs = dg.Definitions.merge(track_b.defs, dg.Definitions(resources={"kis": kis_pool_from_env()}))
