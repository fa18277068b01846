"""The query app: the Studio read API over TimescaleDB and the live event feed over NATS.

HTTP is served at once; the database pool opens in the background (retrying while TimescaleDB
is down) and /readyz answers 503 until it is open and the schema ingest migrates is in place.
The live feed is one core-NATS subscription on ``loom.event.>`` while WebSocket clients are
connected, fanned out in-process.
Loom Studio (the debugger's UI) is served at ``/`` below every API route, with its proxy to the
dispatcher and the replay service under ``/studio-api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from loom_auth import oidc_verifier
from loom_nats import latest_values
from loom_protocol.auth import (
    API_KEYS_BUCKET,
    AccessPolicy,
    AccessRule,
    ApiKeyMiddleware,
    KeyRing,
    Scope,
    stored_keys_followed,
)
from loom_protocol.http import BodyLimitMiddleware
from loom_protocol.limits import MAX_BODY_BYTES
from loom_protocol.logconfig import broker_logging, tracing_enabled

from . import api, export, ops
from .config import Settings
from .errors import HTTP_ERROR_HANDLERS
from .live import LiveFeed, count_nats_error
from .state import State
from .studio import export as studio_export
from .studio.files import mount_studio
from .studio.proxy import Proxy
from .studio.proxy import router as studio_proxy_router

# the API key scope each request needs (loom_protocol.auth): the read API and the live feed need
# read; the Studio's page and files are open (it asks for a key); its proxy to the dispatcher
# and replay passes the caller's key on, and they check it
ACCESS = AccessPolicy(
    write=Scope.READ,
    rules=(
        AccessRule(r"/studio-api/.*", None),
        AccessRule(r"/(api|ws)/.*", Scope.READ),
        AccessRule(r"/.*", None, frozenset({"GET", "HEAD"})),
    ),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    nats_conn = settings.nats_connection(settings.nats_url)
    broker = NatsBroker(
        nats_conn.servers,
        **nats_conn.options,
        error_cb=count_nats_error,
        middlewares=[NatsTelemetryMiddleware()] if tracing_enabled(os.environ) else [],
        graceful_timeout=settings.graceful_timeout_s,
        **broker_logging(),
    )
    state = State(settings, broker, LiveFeed(settings.ws_queue_size))
    keys = KeyRing(settings.api_keys.get_secret_value())
    proxy = Proxy(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        await broker.start()
        opener = asyncio.create_task(state.open_pool(), name="query-db")
        try:
            js = broker.connection.jetstream()
            async with stored_keys_followed(
                keys, lambda: latest_values(js, API_KEYS_BUCKET), settings.api_keys_refresh_s
            ):
                yield
        finally:
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener
            await state.live.close()
            if state.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.pool.close(), timeout=5)
            await broker.stop()
            await proxy.aclose()

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom query",
        version="0.1.0",
        description="Read API of Loom Studio: stored events, topology, memory, metrics, tasks, traces; "
        "live events on WS /ws/events.",
        lifespan=lifespan,
        exception_handlers=HTTP_ERROR_HANDLERS,
    )
    app.state.loom = state
    app.state.studio_proxy = proxy
    app.include_router(ops.router)
    app.include_router(studio_export.router)
    app.include_router(api.router)
    app.include_router(export.router)
    app.include_router(studio_proxy_router)
    mount_studio(app)  # last: it answers only the paths no route took
    app.add_middleware(ApiKeyMiddleware, ring=keys, policy=ACCESS, tokens=oidc_verifier(settings))
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)  # 413 while a body is read
    if (cors := settings.cors_options()) is not None:  # outermost: answers browsers' preflights
        app.add_middleware(CORSMiddleware, **cors)
    return app
