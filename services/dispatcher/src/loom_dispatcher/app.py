"""The dispatcher app: FastAPI for REST, a FastStream NatsBroker for JetStream, one factory."""

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
from loom_protocol.auth import (
    AccessPolicy,
    AccessRule,
    ApiKeyMiddleware,
    KeyRing,
    Scope,
    stored_keys_followed,
)
from loom_protocol.jetstream import (
    ALL_STREAMS,
    stream_create_error,
    stream_create_request,
    stream_direct_update,
)
from loom_protocol.logconfig import broker_logging, tracing_enabled
from redis.asyncio import BlockingConnectionPool, Redis

from . import a2a, api, keys, ops
from .admission import AgentDirectory
from .bus import NatsOutbox, RegistryPicker
from .config import Settings
from .dispatching import Dispatcher, Policy, sweep_forever
from .errors import HTTP_ERROR_HANDLERS
from .handlers import build_consumers
from .picking import RedisPicker, RedisStrikes
from .rate_limit import SubmitRateLimit
from .state import State
from .store import TaskStore

log = logging.getLogger(__name__)

# the API key scope each request needs (loom_protocol.auth): reads need read, anything else
# submit, but approvals need approve and key management admin; A2A agent cards are public
ACCESS = AccessPolicy(
    write=Scope.SUBMIT,
    rules=(
        AccessRule(r"/api/keys(/[^/]*)?", Scope.ADMIN),
        AccessRule(r"/api/tasks/[^/]+/(approve|reject)", Scope.APPROVE),
        AccessRule(r"(/a2a(/[^/]+)?)?/\.well-known/agent-card\.json", None, frozenset({"GET", "HEAD"})),
    ),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    traced = tracing_enabled(os.environ)
    nats_conn = settings.nats_connection(settings.nats_url)
    broker = NatsBroker(
        nats_conn.servers,
        **nats_conn.options,
        middlewares=[NatsTelemetryMiddleware()] if traced else [],
        graceful_timeout=settings.graceful_timeout_s,
        **broker_logging(),
    )
    # blocking pool: past max_connections a command waits for a connection instead of failing.
    # Redis connects on first use, in the lifespan.
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            decode_responses=True,
            max_connections=settings.redis_max_connections,
            timeout=10,
        )
    )
    store = TaskStore(redis, settings.redis_prefix)
    outbox = NatsOutbox(broker)
    policy = Policy(
        max_attempts=settings.max_attempts,
        task_timeout_s=settings.task_timeout_s,
        no_instance_timeout_s=settings.no_instance_timeout_s,
        retry_backoff_s=settings.retry_backoff_s,
        approval_timeout_s=settings.approval_timeout_s,
        approval_timeout_action=settings.approval_timeout_action,
        max_cascade=settings.max_cascade,
    )
    registry = RegistryPicker(broker, settings.pick_timeout_s)
    # picks: from the registry's state in Redis (picking.py), or asked of the registry over NATS
    picker = (
        RedisPicker(store.scripts, settings.redis_prefix, settings.max_strikes)
        if settings.pick_from_redis
        else registry
    )
    strikes = RedisStrikes(store.scripts, settings.redis_prefix, settings.strike_window_s)
    # which agents exist: asked of the registry, cached here
    dispatcher = Dispatcher(store, picker, outbox, policy, AgentDirectory(registry.known_agents), strikes)
    state = State(
        settings,
        broker,
        redis,
        store,
        dispatcher,
        outbox,
        keys=KeyRing(settings.api_keys.get_secret_value()),
        submits=SubmitRateLimit(settings.submit_rate_per_key, settings.submit_burst_per_key),
    )
    consumers = build_consumers(state, settings.durable_prefix, traced=traced)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await broker.connect()
        for spec in ALL_STREAMS:  # create where missing; one configured otherwise stays as it is
            reply = await nc.request(*stream_create_request(spec, settings.nats_replicas), timeout=5)
            if error := stream_create_error(reply.data):
                log.warning("stream %s left as it is: %s", spec.name, error)
                info = await nc.request(f"$JS.API.STREAM.INFO.{spec.name}", b"", timeout=5)
                if update := stream_direct_update(spec, info.data):  # made by an earlier version
                    reply = await nc.request(*update, timeout=5)
                    log.info(
                        "stream %s: direct gets on (%s)", spec.name, stream_create_error(reply.data) or "ok"
                    )
        await broker.start()
        await state.answers.start(nc, outbox.rejected)
        for consumer in consumers:
            await consumer.start()
        stop = asyncio.Event()
        sweeper = asyncio.create_task(
            sweep_forever(dispatcher, settings.sweep_interval_s, outbox.acks.expire, stop)
        )
        try:
            async with stored_keys_followed(state.keys, state.stored_keys, settings.api_keys_refresh_s):
                yield
        finally:
            stop.set()
            await asyncio.wait({sweeper}, timeout=settings.graceful_timeout_s)
            for consumer in consumers:
                await consumer.stop()
            await state.answers.stop()
            await outbox.acks.drain(5.0)
            await outbox.waiters.close()  # requests still waiting read the task and answer
            await broker.stop()
            await redis.aclose()

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom dispatcher", version="0.1.0", lifespan=lifespan, exception_handlers=HTTP_ERROR_HANDLERS
    )
    app.state.loom = state
    app.include_router(ops.router)
    app.include_router(api.router)
    app.include_router(a2a.router)  # A2A: every agent at /a2a/<agentId> (docs/adr/0003-a2a.md)
    app.include_router(keys.router)
    # before any body is read (outside it: only CORS, when on)
    app.add_middleware(ApiKeyMiddleware, ring=state.keys, policy=ACCESS, tokens=oidc_verifier(settings))
    if (cors := settings.cors_options()) is not None:  # outermost: answers browsers' preflights
        app.add_middleware(CORSMiddleware, **cors)
    return app
