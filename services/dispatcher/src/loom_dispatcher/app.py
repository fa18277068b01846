"""The dispatcher app: FastAPI for REST, a FastStream NatsBroker for JetStream, one factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from opentelemetry.instrumentation.redis import RedisInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis

from . import api
from .bus import NatsOutbox, RegistryPicker
from .config import Settings
from .dispatching import Dispatcher, Policy
from .handlers import build_consumers, build_router
from .state import State, get_state
from .store import TaskStore
from .streams import ensure_streams
from .telemetry import broker_middlewares, instrument_app, setup_tracing

log = logging.getLogger(__name__)


async def _sweep_forever(dispatcher: Dispatcher, outbox: NatsOutbox, interval_s: float) -> None:
    while True:
        try:
            outbox.acks.expire()
            await dispatcher.sweep()
        except Exception:
            log.exception("sweep failed; trying again")
        await asyncio.sleep(interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = setup_tracing("loom-dispatcher")
    if provider is not None:
        RedisInstrumentor().instrument(tracer_provider=provider)
    # apply_types=False: no FastDepends per message (see handlers.as_message)
    broker = NatsBroker(
        settings.nats_url,
        log_level=logging.DEBUG,
        middlewares=broker_middlewares(provider),
        apply_types=False,
    )
    # blocking pool: past max_connections a command waits for a connection instead of failing
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
    )
    dispatcher = Dispatcher(store, RegistryPicker(broker, settings.pick_timeout_s), outbox, policy)
    state = State(settings, broker, redis, store, dispatcher, outbox)
    broker.include_router(build_router(state, settings.durable_prefix))
    consumers = build_consumers(state, settings.durable_prefix, traced=provider is not None)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        await ensure_streams(broker.connection.jetstream())
        await broker.start()
        for consumer in consumers:
            await consumer.start()
        sweeper = asyncio.create_task(_sweep_forever(dispatcher, outbox, settings.sweep_interval_s))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            for consumer in consumers:
                await consumer.stop()
            await outbox.acks.drain(5.0)
            await broker.stop()
            await redis.aclose()
            if provider is not None:
                provider.shutdown()

    app = FastAPI(title="Loom dispatcher", version="0.1.0", lifespan=lifespan)
    app.state.loom = state
    instrument_app(app, provider)
    app.include_router(api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        s = get_state(request)
        checks = {"nats": s.broker.connection.is_connected}
        try:
            checks["redis"] = bool(await s.redis.ping())
        except Exception:
            checks["redis"] = False
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
