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
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from redis.asyncio import Redis

from . import api, ops
from .config import Settings
from .engine import ReplayEngine
from .errors import HTTP_ERROR_HANDLERS
from .runs import Runs
from .sessions import SessionStore
from .state import State
from .store import EventReader, open_pool

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        pool = await open_pool(settings.database_url, settings.db_pool_size)
        dispatcher = httpx.AsyncClient(base_url=settings.dispatcher_url.rstrip("/"), timeout=30)
        reader = EventReader(pool)
        sessions = SessionStore(redis, settings.redis_prefix, settings.session_ttl_s)
        engine = ReplayEngine(reader, sessions, settings)
        app.state.loom = State(settings, redis, reader, engine, Runs(reader, dispatcher, settings))
        log.info("replay up", extra={"dispatcher": settings.dispatcher_url})
        try:
            yield
        finally:
            await dispatcher.aclose()
            await pool.close()
            await redis.aclose()

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom replay",
        version=VERSION,
        lifespan=lifespan,
        exception_handlers=HTTP_ERROR_HANDLERS,
        description="Time-travel over recorded events, deterministic replay and re-run forks.",
    )
    app.include_router(ops.router)
    app.include_router(api.router)
    return app
