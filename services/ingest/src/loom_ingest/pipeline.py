"""Ingest's background pipeline: open and migrate the database, then consume every stream.

Connects to TimescaleDB (retrying while it is down), applies the migrations, then runs one
durable pull consumer per stream and the retention job, each restarted with a growing pause
when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from loom_protocol import EVENTS_STREAM, REGISTRY_STREAM, REJECTED_STREAM, TASKS_STREAM, StreamSpec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .config import Settings
from .consumer import ConsumerOptions, StreamConsumer
from .errors import MigrationError
from .health import DatabaseHealth
from .maintenance import RetentionPolicy, apply_retention, configure_compression
from .migrate import migrate
from .state import State
from .store import SESSION_SETTINGS, EventWriter, keep_session

log = logging.getLogger(__name__)

# (stream, consumer name suffix): everything ingest stores
CONSUMED: tuple[tuple[StreamSpec, str], ...] = (
    (EVENTS_STREAM, "events"),
    (TASKS_STREAM, "tasks"),
    (REGISTRY_STREAM, "registry"),
    (REJECTED_STREAM, "rejected"),
)


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
                reset=keep_session,
                server_settings=SESSION_SETTINGS,
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


async def _retention_forever(database_url: str, policy: RetentionPolicy, interval_s: float) -> None:
    """Apply the retention every ``interval_s``, on a connection of its own: its advisory lock
    goes with the session even if the unlock never ran (the pool's connections are not reset)."""
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=5)
            try:
                await apply_retention(conn, policy)
            finally:
                await conn.close(timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("retention run failed: %r", exc)
        await asyncio.sleep(interval_s)


async def run_pipeline(settings: Settings, state: State, nc: NATS, js: JetStreamContext) -> None:
    """Open the database (migrated), then run the consumers and the retention job until cancelled."""
    policy = RetentionPolicy(
        retention_days=settings.retention_days,
        metrics_retention_days=settings.metrics_retention_days,
        compress_after_hours=settings.compress_after_hours,
    )
    state.pool = await _open_database(settings, state.health, policy)
    store = EventWriter(state.pool)
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
            state.health,
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
        group.create_task(_retention_forever(settings.database_url, policy, settings.maintenance_interval_s))
