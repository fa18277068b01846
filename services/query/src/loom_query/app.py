"""The query app: the Studio read API over TimescaleDB and the live event feed over NATS.

HTTP is served at once; the database pool opens in the background (retrying while TimescaleDB
is down) and /readyz answers 503 until it is open and the schema ingest migrates is in place.
The live feed is one core-NATS subscription on ``loom.event.>``, fanned out in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from loom_protocol import subjects
from nats.errors import SlowConsumerError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import api, metrics
from .config import Settings
from .live import LiveFeed
from .state import State
from .telemetry import broker_middlewares, instrument_app, setup_tracing

log = logging.getLogger(__name__)


async def _open_pool(state: State) -> None:
    settings = state.settings
    timeout_ms = int(settings.statement_timeout_s * 1000)
    delay = 0.1
    while True:
        try:
            state.pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.db_pool_size,
                timeout=5,
                server_settings={"statement_timeout": str(timeout_ms), "application_name": "loom-query"},
            )
            state.pool_error = None
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            state.pool_error = f"{type(exc).__name__}: {exc}"
            log.warning("database not available (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.db_retry_max_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = State(settings, LiveFeed(settings.ws_queue_size))

    async def on_event(msg: Any) -> None:
        state.live.publish(msg.data)

    async def on_nats_error(exc: Exception) -> None:
        kind = "slow_consumer" if isinstance(exc, SlowConsumerError) else type(exc).__name__
        metrics.NATS_ERRORS.labels(kind).inc()

    tracing = setup_tracing("loom-query")
    broker = NatsBroker(
        settings.nats_url,
        log_level=logging.DEBUG,
        error_cb=on_nats_error,
        middlewares=broker_middlewares(tracing),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        await broker.start()
        sub = await broker.connection.subscribe(
            subjects.EVENT_ALL, cb=on_event, pending_msgs_limit=200_000, pending_bytes_limit=256 * 1024 * 1024
        )
        await broker.connection.flush()
        opener = asyncio.create_task(_open_pool(state), name="query-db")
        try:
            yield
        finally:
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if state.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.pool.close(), timeout=5)
            await broker.stop()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="Loom query",
        version="0.1.0",
        description="Read API of Loom Studio: stored events, topology, memory, metrics, tasks, traces; "
        "live events on WS /ws/events.",
        lifespan=lifespan,
    )
    app.state.loom = state
    instrument_app(app, tracing)
    app.include_router(api.router)

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(OSError)
    async def database_error(_: Request, exc: Exception) -> JSONResponse:
        return api.database_error_response(exc)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        nats_ok = broker.connection is not None and broker.connection.is_connected
        db_ok, reason = await state.database_ready()
        body: dict[str, object] = {"nats": nats_ok, "database": db_ok}
        if reason:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if nats_ok and db_ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws/events")
    async def events_socket(websocket: WebSocket) -> None:
        await state.live.serve(websocket)

    return app
