"""What the query app holds while it runs, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from fastapi import Depends, HTTPException
from faststream.nats import NatsBroker
from starlette.requests import HTTPConnection

from .config import Settings
from .live import LiveFeed
from .store import REQUIRED_SCHEMA_VERSION

log = logging.getLogger(__name__)


@dataclass
class State:
    settings: Settings
    broker: NatsBroker
    live: LiveFeed
    pool: asyncpg.Pool | None = None
    pool_error: str | None = field(default="connecting to the database")

    async def open_pool(self) -> None:
        """Open the read pool, retrying (with a growing pause) while the database is down."""
        settings = self.settings
        delay = 0.1
        while True:
            try:
                self.pool = await asyncpg.create_pool(
                    settings.database_url,
                    min_size=1,
                    max_size=settings.db_pool_size,
                    timeout=5,
                    server_settings={
                        "statement_timeout": str(int(settings.statement_timeout_s * 1000)),
                        "application_name": "loom-query",
                    },
                )
                self.pool_error = None
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                self.pool_error = f"{type(exc).__name__}: {exc}"
                log.warning("database not available (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.db_retry_max_s)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnectionProxy]:
        if self.pool is None:
            raise HTTPException(503, f"database not available: {self.pool_error}")
        async with self.pool.acquire() as conn:
            yield conn

    async def database_ready(self) -> tuple[bool, str | None]:
        if self.pool is None:
            return False, self.pool_error
        try:
            async with asyncio.timeout(self.settings.db_ping_timeout_s):
                async with self.pool.acquire() as conn:
                    version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        except asyncpg.UndefinedTableError:
            return False, "schema not migrated yet (ingest applies it at start-up)"
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return False, f"database ping failed: {type(exc).__name__}: {exc}"
        if version is None or version < REQUIRED_SCHEMA_VERSION:
            return (
                False,
                f"schema version {version} < {REQUIRED_SCHEMA_VERSION} (ingest applies it at start-up)",
            )
        return True, None


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
