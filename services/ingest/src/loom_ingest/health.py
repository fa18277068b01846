"""What /readyz reports: the database side of ingest's readiness."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg


@dataclass
class DatabaseHealth:
    """Schema state plus the last failure of each writer (``key``: a stream, or "startup")."""

    migrated: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def failed(self, key: str, exc: BaseException) -> bool:
        """Record a failure; True when ``key`` was healthy until now (worth a log line)."""
        first = key not in self.errors
        self.errors[key] = f"{type(exc).__name__}: {exc}"[:500]
        return first

    def ok(self, key: str) -> bool:
        """Record a success; True when ``key`` was failing until now."""
        return self.errors.pop(key, None) is not None

    async def check(self, pool: asyncpg.Pool | None, timeout_s: float) -> tuple[bool, str | None]:
        """(ready, reason): migrated, no failing writer, and the database answers a ping."""
        if self.errors:
            return False, "; ".join(f"{key}: {error}" for key, error in sorted(self.errors.items()))
        if pool is None or not self.migrated:
            return False, "schema migrations not applied yet"
        try:
            async with asyncio.timeout(timeout_s):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return False, f"database ping failed: {type(exc).__name__}: {exc}"
        return True, None
