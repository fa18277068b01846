"""The ingest app: JetStream → TimescaleDB, plus ``WS /ws/ingest`` for producers outside NATS.

Start-up: connect to NATS, declare the streams, serve HTTP at once; in the background, connect
to TimescaleDB (retrying while it is down), apply the migrations under an advisory lock, then
run one durable pull consumer per stream and the retention job. /readyz answers 503 until the
schema is in place and whenever database writes fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, Response
from faststream.nats import NatsBroker
from loom_protocol import EVENTS_STREAM, REGISTRY_STREAM, REJECTED_STREAM, TASKS_STREAM, StreamSpec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import ws
from .config import Settings
from .consumer import ConsumerOptions, StreamConsumer
from .errors import MigrationError
from .health import DatabaseHealth
from .maintenance import RetentionPolicy, apply_retention, configure_compression
from .migrate import migrate
from .store import EventWriter, init_connection
from .streams import ensure_streams
from .telemetry import broker_middlewares, instrument_app, setup_tracing

log = logging.getLogger(__name__)

# (stream, consumer name suffix): everything ingest stores
CONSUMED: tuple[tuple[StreamSpec, str], ...] = (
    (EVENTS_STREAM, "events"),
    (TASKS_STREAM, "tasks"),
    (REGISTRY_STREAM, "registry"),
    (REJECTED_STREAM, "rejected"),
)


@dataclass
class Runtime:
    """What the lifespan opens and the endpoints use."""

    health: DatabaseHealth = field(default_factory=DatabaseHealth)
    js: JetStreamContext | None = None
    pool: asyncpg.Pool | None = None


async def _backoff_forever(what: str, attempt: Callable[[], Awaitable[None]], lo: float, hi: float) -> None:
    """Run ``attempt`` again (after a growing pause) whenever it fails or returns."""
    delay = lo
    while True:
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it", what)
        await asyncio.sleep(delay)
        delay = min(delay * 2, hi)


async def _open_database(settings: Settings, health: DatabaseHealth, policy: RetentionPolicy) -> asyncpg.Pool:
    delay = settings.db_retry_min_s
    while True:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                applied = await migrate(conn)
                if applied:
                    log.info("applied migrations %s", applied)
                with contextlib.suppress(asyncpg.PostgresError):
                    await configure_compression(conn, policy)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.db_pool_size,
                init=init_connection,
                timeout=5,
            )
        except MigrationError as exc:
            health.failed("startup", exc)
            log.error("cannot migrate the database: %s", exc)
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            health.failed("startup", exc)
            log.warning("database not available (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.db_retry_max_s)
            continue
        health.migrated = True
        health.ok("startup")
        return pool


async def _retention_forever(pool: asyncpg.Pool, policy: RetentionPolicy, interval_s: float) -> None:
    while True:
        try:
            async with pool.acquire() as conn:
                await apply_retention(conn, policy)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("retention run failed: %r", exc)
        await asyncio.sleep(interval_s)


async def _run_pipeline(settings: Settings, runtime: Runtime, nc: NATS, js: JetStreamContext) -> None:
    policy = RetentionPolicy(
        retention_days=settings.retention_days,
        metrics_retention_days=settings.metrics_retention_days,
        compress_after_hours=settings.compress_after_hours,
    )
    runtime.pool = await _open_database(settings, runtime.health, policy)
    store = EventWriter(runtime.pool)
    options = ConsumerOptions(
        batch_size=settings.batch_size,
        linger_s=settings.batch_linger_s,
        fetch_wait_s=settings.fetch_wait_s,
        ack_wait_s=settings.ack_wait_s,
        max_ack_pending=settings.max_ack_pending,
        max_event_bytes=settings.max_event_bytes,
        retry_min_s=settings.db_retry_min_s,
        retry_max_s=settings.db_retry_max_s,
    )
    consumers = [
        StreamConsumer(
            nc,
            js,
            store,
            runtime.health,
            stream=spec.name,
            subject=spec.subjects[0],
            durable=f"{settings.durable_prefix}-{suffix}",
            options=options,
        )
        for spec, suffix in CONSUMED
    ]
    log.info("ingest consuming %s", [c.stream for c in consumers])
    # a TaskGroup (unlike gather) waits for every job to finish its clean-up when cancelled
    async with asyncio.TaskGroup() as group:
        for c in consumers:
            group.create_task(
                _backoff_forever(
                    f"consumer {c.durable}", c.run, settings.db_retry_min_s, settings.db_retry_max_s
                )
            )
        group.create_task(_retention_forever(runtime.pool, policy, settings.maintenance_interval_s))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tracing = setup_tracing("loom-ingest")
    broker = NatsBroker(settings.nats_url, log_level=logging.DEBUG, middlewares=broker_middlewares(tracing))
    runtime = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js)
        await broker.start()
        runtime.js = js
        pipeline = asyncio.create_task(
            _run_pipeline(settings, runtime, broker.connection, js), name="ingest-pipeline"
        )
        try:
            yield
        finally:
            pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipeline
            if runtime.pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runtime.pool.close(), timeout=5)
            await broker.stop()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(title="Loom ingest", version="0.1.0", lifespan=lifespan)
    instrument_app(app, tracing)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        nats_ok = broker.connection is not None and broker.connection.is_connected
        db_ok, reason = await runtime.health.check(runtime.pool, settings.db_ping_timeout_s)
        body: dict[str, object] = {"nats": nats_ok, "database": db_ok}
        if reason:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if nats_ok and db_ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws/ingest")
    async def ingest_socket(websocket: WebSocket) -> None:
        assert runtime.js is not None
        await ws.serve(
            websocket,
            runtime.js,
            max_event_bytes=settings.max_event_bytes,
            max_events=settings.ws_max_batch_events,
            timeout_s=settings.ws_publish_timeout_s,
        )

    return app
