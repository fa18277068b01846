"""Retention (and compression where the database can): run by ingest, one replica at a time.

Retention is TimescaleDB's ``drop_chunks`` called on a schedule by ingest rather than
``add_retention_policy``: policies are background jobs of the Timescale License, which the
Apache build most distributions ship (Debian's ``postgresql-17-timescaledb``) does not have.
``drop_chunks`` is in both, so the same code works everywhere. When the database runs the
Timescale License, native compression is configured as well (no Apache equivalent exists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

LOCK_KEY = int.from_bytes(b"loommain", "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class RetentionPolicy:
    retention_days: int
    metrics_retention_days: int
    compress_after_hours: float


async def license_of(conn: asyncpg.Connection) -> str:
    value = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return str(value or "apache")


async def configure_compression(conn: asyncpg.Connection, policy: RetentionPolicy) -> bool:
    """Enable native compression of ``events`` (Timescale License only); True when configured."""
    if await license_of(conn) != "timescale":
        log.info("TimescaleDB runs the apache license: compression is not available; retention still applies")
        return False
    enabled = await conn.fetchval(
        "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = 'events'"
    )
    if not enabled:
        await conn.execute(
            "ALTER TABLE events SET (timescaledb.compress, timescaledb.compress_segmentby = 'node_id', "
            "timescaledb.compress_orderby = 'time DESC, id')"
        )
    await conn.execute(
        "SELECT add_compression_policy('events', compress_after => make_interval(secs => $1), "
        "if_not_exists => true)",
        policy.compress_after_hours * 3600.0,
    )
    return True


async def apply_retention(
    conn: asyncpg.Connection | PoolConnectionProxy, policy: RetentionPolicy
) -> dict[str, int]:
    """Drop what is older than the retention; returns how many chunks / rows went, per table.

    Only one replica does the work at a time (an advisory try-lock); the others return {}.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        return {}
    try:
        days = policy.retention_days
        dropped: dict[str, int] = {}
        for table, keep in (
            ("events", days),
            ("dead_letters", days),
            ("event_metrics_1m", policy.metrics_retention_days),
        ):
            chunks = await conn.fetch(
                "SELECT drop_chunks($1::regclass, older_than => make_interval(days => $2))", table, keep
            )
            dropped[table] = len(chunks)
        status = await conn.execute(
            "DELETE FROM tasks WHERE updated_at < now() - make_interval(days => $1)", days
        )
        dropped["tasks"] = int(status.split()[-1])
        if any(dropped.values()):
            log.info("retention dropped %s", dropped)
        return dropped
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
