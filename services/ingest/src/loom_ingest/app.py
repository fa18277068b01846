"""The ingest app: JetStream → TimescaleDB, plus ``WS /ws/ingest`` for producers outside NATS.

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
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from loom_protocol.jetstream import ALL_STREAMS, stream_config
from loom_protocol.logconfig import tracing_enabled
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from . import api, ops
from .config import Settings
from .errors import HTTP_ERROR_HANDLERS
from .pipeline import run_pipeline
from .state import State


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    broker = NatsBroker(
        settings.nats_url,
        logger=logging.getLogger("faststream"),  # JSON through the root handler, no colours
        log_level=logging.DEBUG,
        middlewares=[NatsTelemetryMiddleware()] if tracing_enabled(os.environ) else [],
    )
    state = State(settings, broker)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        for spec in ALL_STREAMS:  # create where missing; one configured otherwise stays as it is
            try:
                await js.add_stream(StreamConfig.from_response(stream_config(spec)))
            except BadRequestError as exc:
                logging.getLogger(__name__).warning("stream %s: %s", spec.name, exc.description)
        await broker.start()
        state.js = js
        pipeline = asyncio.create_task(
            run_pipeline(settings, state, broker.connection, js), name="ingest-pipeline"
        )
        try:
            yield
        finally:
            pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipeline
            if state.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.pool.close(), timeout=5)
            await broker.stop()

    app = FastAPI(
        title="Loom ingest", version="0.1.0", lifespan=lifespan, exception_handlers=HTTP_ERROR_HANDLERS
    )
    app.state.loom = state
    app.include_router(ops.router)
    app.include_router(api.router)
    return app
