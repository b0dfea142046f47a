"""The sandbox's ASGI application: every venue module's routes over one shared state.

Venues plug in as :class:`~infra.sandbox.state.VenueModule` values; :data:`DEFAULT_VENUES`
lists the built-in ones, and a new venue adds its module there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from infra.sandbox import binance, coinbase, dydx, kraken
from infra.sandbox.state import SandboxState, TransportCapture, VenueModule

DEFAULT_VENUES: Final[tuple[VenueModule, ...]] = (
    coinbase.MODULE,
    dydx.MODULE,
    kraken.MODULE,
    binance.MODULE,
)


def create_app(state: SandboxState, venues: Sequence[VenueModule] = DEFAULT_VENUES) -> ASGIApp:
    """The ASGI app serving ``venues`` over ``state``."""
    names = [v.name for v in venues]
    if len(set(names)) != len(names):
        raise ValueError("each venue module may be mounted once")
    routes: list[BaseRoute] = []
    for venue in venues:
        routes.extend(venue.routes(state))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state.bind_loop(asyncio.get_running_loop())
        yield

    return TransportCapture(Starlette(routes=routes, lifespan=lifespan))
