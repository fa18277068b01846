"""What the query app holds while it runs: settings, the database pool, the live feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
from fastapi import HTTPException, Request

from .config import Settings
from .live import LiveFeed
from .store import REQUIRED_SCHEMA_VERSION


@dataclass
class State:
    settings: Settings
    live: LiveFeed
    pool: asyncpg.Pool | None = None
    pool_error: str | None = field(default="connecting to the database")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
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


def get_state(request: Request) -> State:
    state: State = request.app.state.loom
    return state
