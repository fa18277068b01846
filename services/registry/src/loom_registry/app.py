"""The registry app: FastAPI for /api/agents, a FastStream NatsBroker for heartbeats and picks."""

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
from loom_protocol.http import BodyLimitMiddleware
from loom_protocol.jetstream import ALL_STREAMS, stream_create_error, stream_create_request
from loom_protocol.limits import MAX_BODY_BYTES
from loom_protocol.logconfig import broker_logging, tracing_enabled
from redis.asyncio import Redis

from . import api, ops
from .config import Settings
from .consul_mirror import ConsulMirror
from .errors import HTTP_ERROR_HANDLERS
from .eviction import EvictionHold, evict_forever, is_connected
from .handlers import build_router, count_pick, reject
from .membership import Membership
from .picks import PickServer
from .state import State

log = logging.getLogger(__name__)

# the API key scope each request needs (loom_protocol.auth): the registry's API only reads
ACCESS = AccessPolicy(write=Scope.ADMIN)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    traced = tracing_enabled(os.environ)
    keys = KeyRing(settings.api_keys.get_secret_value())
    hold = EvictionHold(
        settings.reconnect_grace_s,
        lambda: is_connected(broker),
        startup_grace_s=settings.startup_grace_s,
    )

    async def on_disconnected() -> None:
        hold.lost()

    async def on_reconnected() -> None:
        hold.back()

    nats_conn = settings.nats_connection(settings.nats_url)
    broker = NatsBroker(
        nats_conn.servers,
        **nats_conn.options,
        middlewares=[NatsTelemetryMiddleware()] if traced else [],
        graceful_timeout=settings.graceful_timeout_s,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        **broker_logging(),
    )
    # connects on first use; a Redis that stops answering fails a call in seconds, not never
    redis = Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
    )
    membership = Membership(redis, settings.redis_prefix, settings.missed_heartbeats, settings.pick_strategy)
    mirror = (
        ConsulMirror(settings.consul_url, settings.missed_heartbeats, settings.consul_token)
        if settings.consul_url
        else None
    )
    broker.include_router(build_router(broker, membership, mirror))

    async def reject_pick(subject: str, raw: bytes, reason: str) -> None:
        await reject(broker, subject, raw, reason)

    picks = PickServer(
        lambda: broker.connection,
        membership,
        reject=reject_pick,
        count=count_pick,
        traced=traced,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await broker.connect()
        for spec in ALL_STREAMS:  # create where missing; one configured otherwise stays as it is
            reply = await nc.request(*stream_create_request(spec, settings.nats_replicas), timeout=5)
            if error := stream_create_error(reply.data):
                log.warning("stream %s left as it is: %s", spec.name, error)
        await broker.start()
        await picks.start()
        stop = asyncio.Event()
        sweeper = asyncio.create_task(
            evict_forever(
                broker, membership, settings.sweep_interval_s, settings.startup_grace_s, mirror, stop, hold
            )
        )
        try:
            js = nc.jetstream()
            async with stored_keys_followed(
                keys, lambda: latest_values(js, API_KEYS_BUCKET), settings.api_keys_refresh_s
            ):
                yield
        finally:
            stop.set()
            await asyncio.wait({sweeper}, timeout=settings.graceful_timeout_s)
            await picks.stop()
            await broker.stop()
            await redis.aclose()

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom registry", version="0.1.0", lifespan=lifespan, exception_handlers=HTTP_ERROR_HANDLERS
    )
    app.state.loom = State(broker, membership, picks)
    app.include_router(ops.router)
    app.include_router(api.router)
    app.add_middleware(ApiKeyMiddleware, ring=keys, policy=ACCESS, tokens=oidc_verifier(settings))
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)  # 413 while a body is read
    if (cors := settings.cors_options()) is not None:  # outermost: answers browsers' preflights
        app.add_middleware(CORSMiddleware, **cors)
    return app
