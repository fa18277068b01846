"""Versioned schema migrations: the SQL files in ``migrations/``, applied in order at start-up.

Hand-written rather than a library: the whole job is "apply ``NNNN_name.sql`` files not yet in
``schema_migrations``, each in its own transaction, under an advisory lock", and the libraries
that do it (alembic, yoyo) bring a synchronous driver and a model layer for no gain here.
A file that was applied and later edited is refused (its checksum is recorded), so a schema is
only ever changed by a new file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from .errors import MigrationError

log = logging.getLogger(__name__)

# pg_advisory_lock key shared by every ingest replica ("loommigr" as a big-endian int64).
LOCK_KEY = int.from_bytes(b"loommigr", "big") & 0x7FFF_FFFF_FFFF_FFFF
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: Traversable | None = None) -> list[Migration]:
    """The migration files of ``source`` (default: this package's ``migrations``), by version.

    Raises:
        MigrationError: Two files share a version, or the versions are not 1, 2, 3...
    """
    source = source or resources.files("loom_ingest.migrations")
    found: dict[int, Migration] = {}
    for entry in source.iterdir():
        match = _NAME_RE.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"migrations {found[version].name} and {entry.name} share version {version}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    ordered = [found[v] for v in sorted(found)]
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise MigrationError(f"versions must run 1, 2, 3...; {migration.name} breaks the sequence")
    return ordered


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations; returns the names of those applied now.

    Replicas starting together serialise on a session-level advisory lock; the second one
    finds everything applied and does nothing.
    """
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was changed after it was applied "
                        f"(as {row['name']}); add a new migration instead"
                    )
                continue
            log.info("applying migration %s", migration.name)
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            log.warning(
                "the database has migrations this ingest does not know: %s (a newer ingest ran)", unknown
            )
    finally:
        # a lost connection releases the lock by itself
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied_now


SCHEMA_VERSION = len(load_migrations())
"""The schema version this ingest brings the database to."""
