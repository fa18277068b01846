"""The ingest app: JetStream → TimescaleDB, plus ``WS /ws/ingest``, ``POST /v1/traces`` (OTLP/HTTP)
and ``POST /api/events`` (CloudEvents over HTTP) for producers outside NATS.

Start-up: connect to NATS, declare the streams, serve HTTP at once; the database side runs in
the background (pipeline.py). /readyz answers 503 until the schema is in place and whenever
database writes fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    ApiKeyMiddleware,
    KeyRing,
    Scope,
    stored_keys_followed,
)
from loom_protocol.jetstream import ALL_STREAMS, stream_create_error, stream_create_request
from loom_protocol.logconfig import broker_logging, tracing_enabled

from . import api, ce_http, ops, otlp_http
from .config import Settings
from .errors import HTTP_ERROR_HANDLERS
from .normalise import Normaliser
from .pipeline import run_pipeline
from .publish import Admission
from .state import State

log = logging.getLogger(__name__)

# the API key scope each request needs (loom_protocol.auth): sending events and traces (the
# WebSocket, OTLP, CloudEvents) needs ingest
ACCESS = AccessPolicy(write=Scope.INGEST, websocket=Scope.INGEST)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    traced = tracing_enabled(os.environ)
    keys = KeyRing(settings.api_keys.get_secret_value())
    nats_conn = settings.nats_connection(settings.nats_url)
    broker = NatsBroker(
        nats_conn.servers,
        **nats_conn.options,
        middlewares=[NatsTelemetryMiddleware()] if traced else [],
        graceful_timeout=settings.graceful_timeout_s,
        **broker_logging(),
    )
    state = State(
        settings,
        broker,
        admission=Admission(settings.http_max_inflight),
        normaliser=Normaliser(price=settings.price_table.cost),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await broker.connect()
        for spec in ALL_STREAMS:  # create where missing; one configured otherwise stays as it is
            reply = await nc.request(*stream_create_request(spec, settings.nats_replicas), timeout=5)
            if error := stream_create_error(reply.data):
                log.warning("stream %s left as it is: %s", spec.name, error)
        js = nc.jetstream()
        await broker.start()
        state.js = js
        pipeline = asyncio.create_task(
            run_pipeline(settings, state, broker.connection, js), name="ingest-pipeline"
        )
        try:
            async with stored_keys_followed(
                keys, lambda: latest_values(js, API_KEYS_BUCKET), settings.api_keys_refresh_s
            ):
                yield
        finally:
            pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipeline
            if state.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.pool.close(), timeout=5)
            await broker.stop()

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom ingest", version="0.1.0", lifespan=lifespan, exception_handlers=HTTP_ERROR_HANDLERS
    )
    app.state.loom = state
    app.include_router(ops.router)
    app.include_router(api.router)
    app.include_router(otlp_http.router)
    app.include_router(ce_http.router)
    app.add_middleware(ApiKeyMiddleware, ring=keys, policy=ACCESS, tokens=oidc_verifier(settings))
    if (cors := settings.cors_options()) is not None:  # outermost: answers browsers' preflights
        app.add_middleware(CORSMiddleware, **cors)
    return app
