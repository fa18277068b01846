"""The registry app: FastAPI for /api/agents, a FastStream NatsBroker for heartbeats and picks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from loom_protocol import MemberChanged, MembershipChange
from opentelemetry.instrumentation.redis import RedisInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from redis.asyncio import Redis

from . import api
from .config import Settings
from .consul_mirror import ConsulMirror
from .handlers import announce, build_router, count_pick, reject
from .membership import Membership
from .picks import PickServer
from .streams import ensure_streams
from .telemetry import broker_middlewares, instrument_app, setup_tracing

log = logging.getLogger(__name__)
INSTANCES = Gauge("loom_registry_instances", "Live instances known to the registry")
HEARTBEAT_AGE = Gauge(
    "loom_registry_heartbeat_age_seconds", "Age of each instance's last heartbeat", ["instance"]
)


async def _evict_forever(
    broker: NatsBroker, membership: Membership, interval_s: float, grace_s: float, mirror: ConsulMirror | None
) -> None:
    # A registry that was down saw no heartbeats: give instances one grace period to send
    # theirs before declaring anyone down, so a registry restart does not evict the fleet.
    evict_after = time.monotonic() + grace_s
    while True:
        try:
            evicted = await membership.evict_expired() if time.monotonic() >= evict_after else []
            for instance_id in evicted:
                log.warning("instance down: missed heartbeats", extra={"instance_id": instance_id})
                if mirror is not None:
                    await mirror.down(instance_id)
                await announce(
                    broker,
                    MemberChanged(
                        instance_id=instance_id, change=MembershipChange.DOWN, reason="missed heartbeats"
                    ),
                )
            instances = await membership.all_instances()
            INSTANCES.set(len(instances))
            for inst in instances:
                HEARTBEAT_AGE.labels(inst.heartbeat.instance_id).set(inst.age_s)
            for instance_id in evicted:
                with contextlib.suppress(KeyError):  # never seen by this replica
                    HEARTBEAT_AGE.remove(instance_id)
        except Exception:
            log.exception("eviction sweep failed; trying again")
        await asyncio.sleep(interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    provider = setup_tracing("loom-registry")
    if provider is not None:
        RedisInstrumentor().instrument(tracer_provider=provider)
    # apply_types=False: no FastDepends per message (see handlers.as_message)
    broker = NatsBroker(
        settings.nats_url,
        log_level=logging.DEBUG,
        middlewares=broker_middlewares(provider),
        apply_types=False,
    )
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    membership = Membership(redis, settings.redis_prefix, settings.missed_heartbeats)
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
        settings.pick_strategy,
        reject=reject_pick,
        count=count_pick,
        traced=provider is not None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        await ensure_streams(broker.connection.jetstream())
        await broker.start()
        await picks.start()
        sweeper = asyncio.create_task(
            _evict_forever(broker, membership, settings.sweep_interval_s, settings.startup_grace_s, mirror)
        )
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await picks.stop()
            await broker.stop()
            await redis.aclose()
            if provider is not None:
                provider.shutdown()

    app = FastAPI(title="Loom registry", version="0.1.0", lifespan=lifespan)
    app.state.membership = membership
    instrument_app(app, provider)
    app.include_router(api.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = {"nats": broker.connection.is_connected}
        try:
            checks["redis"] = bool(await redis.ping())
        except Exception:
            checks["redis"] = False
        return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
