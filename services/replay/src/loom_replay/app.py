"""The replay app: the replay API over the events table, sessions in Redis.

Replay reads TimescaleDB (ingest's ``events`` table; never writes it), keeps sessions and
fold checkpoints in Redis (so any replica serves any session) and submits deterministic
replays and forks to the dispatcher's REST API. It does not use NATS.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from .api import router
from .config import Settings
from .engine import ReplayEngine
from .errors import ReplayError
from .runs import Runs
from .sessions import SessionStore
from .store import EventReader, open_pool
from .telemetry import instrument_app, setup_tracing

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tracing = setup_tracing("loom-replay")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        pool = await open_pool(settings.database_url, settings.db_pool_size)
        dispatcher = httpx.AsyncClient(base_url=settings.dispatcher_url.rstrip("/"), timeout=30)
        store = EventReader(pool)
        app.state.store = store
        app.state.redis = redis
        app.state.engine = ReplayEngine(
            store, SessionStore(redis, settings.redis_prefix, settings.session_ttl_s), settings
        )
        app.state.runs = Runs(store, dispatcher, settings)
        log.info("replay up", extra={"dispatcher": settings.dispatcher_url})
        try:
            yield
        finally:
            await dispatcher.aclose()
            await pool.close()
            await redis.aclose()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="Loom replay",
        version=VERSION,
        lifespan=lifespan,
        description="Time-travel over recorded events, deterministic replay and re-run forks.",
    )
    app.include_router(router)
    instrument_app(app, tracing)

    @app.exception_handler(ReplayError)
    async def replay_error(_: Request, exc: ReplayError) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        problems: list[str] = []
        try:
            await request.app.state.redis.ping()
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}: {exc}")
        database = await request.app.state.store.ready()
        if database is not None:
            problems.append(database)
        body = {"redis": not any(p.startswith("redis") for p in problems), "database": database is None}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
