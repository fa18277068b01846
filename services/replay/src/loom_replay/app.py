"""The replay app: the replay API over the events table, sessions in Redis.

Replay reads TimescaleDB (ingest's ``events`` table; never writes it), keeps sessions and
fold checkpoints in Redis (so any replica serves any session) and submits deterministic
replays and forks to the dispatcher's REST API (with the caller's API key). It uses NATS only
to read the API keys stored at run time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from loom_auth import oidc_verifier
from loom_protocol.auth import (
    AccessPolicy,
    AccessRule,
    ApiKeyMiddleware,
    KeyRing,
    Scope,
    stored_keys_followed,
)
from loom_protocol.http import BodyLimitMiddleware
from loom_protocol.limits import MAX_BODY_BYTES
from redis.asyncio import Redis

from . import api, ops
from .config import Settings
from .engine import ReplayEngine
from .errors import HTTP_ERROR_HANDLERS
from .key_source import KeySource
from .runs import Runs
from .sessions import SessionStore
from .state import State
from .store import EventReader, open_pool

log = logging.getLogger(__name__)
VERSION = "0.1.0"

# the API key scope each request needs (loom_protocol.auth): time travel reads; a deterministic
# replay or a fork runs the agent again (a task submitted to the dispatcher): submit
ACCESS = AccessPolicy(
    write=Scope.SUBMIT,
    rules=(
        AccessRule(r"/api/replay/create", Scope.READ),
        AccessRule(r"/api/replay/[^/]+/(step|jump)", Scope.READ),
        AccessRule(r"/api/replay/[^/]+", Scope.READ, frozenset({"DELETE"})),
    ),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    keys = KeyRing(settings.api_keys.get_secret_value())
    key_source = KeySource(settings.nats_connection(settings.nats_url))

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
            async with stored_keys_followed(keys, key_source.values, settings.api_keys_refresh_s):
                yield
        finally:
            await key_source.aclose()
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
    app.add_middleware(ApiKeyMiddleware, ring=keys, policy=ACCESS, tokens=oidc_verifier(settings))
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)  # 413 while a body is read
    if (cors := settings.cors_options()) is not None:  # outermost: answers browsers' preflights
        app.add_middleware(CORSMiddleware, **cors)
    return app
