"""Dagster definitions for the multi-process resource test: three assets, each in its own step
process under the multiprocess executor, each fetching a quote through ``KisResource``.

The code and the exchange come from the environment (set by the test before the run starts), so
the step processes need nothing but this importable module.
"""

from __future__ import annotations

import asyncio
import os

import dagster as dg

from observer_resources.resources import KisResource, kis_resource_from_env


def _quote(kis: KisResource) -> int:
    async def go() -> int:
        async with kis.rest_client() as client:
            return (await client.inquire_price(os.environ["OBSERVER_TEST_CODE"])).price

    return asyncio.run(go())


@dg.asset
def quote_a(kis: KisResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"price": _quote(kis)})


@dg.asset
def quote_b(kis: KisResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"price": _quote(kis)})


@dg.asset
def quote_c(kis: KisResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"price": _quote(kis)})


def quotes_job() -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=[quote_a, quote_b, quote_c],
        jobs=[dg.define_asset_job("quotes", selection=["quote_a", "quote_b", "quote_c"])],
        resources={"kis": kis_resource_from_env()},
    )
    return defs.resolve_job_def("quotes")
