"""The exchange's two aiohttp applications, assembled here (not in rest.py or ws.py) so the REST, WebSocket and
admin modules never import each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from local_exchange import admin
from local_exchange.rest import RestApi
from local_exchange.ws import register_ws_routes
from observer_resources.kis import protocol as p

if TYPE_CHECKING:
    from local_exchange.state import SimState
    from local_exchange.ws import WsHub

STATE: web.AppKey[Any] = web.AppKey("sim_state", object)


def make_rest_app(state: SimState, *, market: bool = True) -> web.Application:
    """The REST application: KIS paths, master files and the ``/__sim__`` admin API.

    ``market=False`` (a replay or relay: no synthetic market behind it) leaves out the master files and the admin
    routes that read the market, keeping stats and faults."""
    app = web.Application(client_max_size=1 << 20)
    api = RestApi(state)
    app[STATE] = state
    app.router.add_post(p.PATH_TOKEN, api.token)
    app.router.add_post(p.PATH_REVOKE, api.revoke)
    app.router.add_post(p.PATH_APPROVAL, api.approval)
    app.router.add_get(p.QUOTE_BASE + "/{name}", api.quotations)
    if market:
        app.router.add_get("/common/master/{name}", api.master)
    admin.add_routes(app, state, market=market)
    return app


def make_ws_app(hub: WsHub) -> web.Application:
    """The WebSocket application: KIS's stream paths on their own port."""
    app = web.Application()
    register_ws_routes(app, hub)
    return app
