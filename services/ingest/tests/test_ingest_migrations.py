"""Migration files: found in order, contiguous, and refused when inconsistent."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from loom_ingest.errors import MigrationError, is_data_error
from loom_ingest.migrate import SCHEMA_VERSION, load_migrations


def test_the_package_migrations_are_numbered_from_one() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, SCHEMA_VERSION + 1))
    assert migrations[0].name == "0001_events.sql"
    assert "CREATE EXTENSION IF NOT EXISTS timescaledb" in migrations[0].sql
    assert len({m.checksum for m in migrations}) == len(migrations)


def test_gaps_and_duplicates_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 3")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(MigrationError, match="breaks the sequence"):
        load_migrations(tmp_path)
    (tmp_path / "0003_c.sql").rename(tmp_path / "0002_b.sql")
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_a.sql", "0002_b.sql"]
    (tmp_path / "0002_again.sql").write_text("SELECT 2")
    with pytest.raises(MigrationError, match="share version 2"):
        load_migrations(tmp_path)


def test_data_errors_are_told_from_transient_ones() -> None:
    assert is_data_error(asyncpg.exceptions.UntranslatableCharacterError("\\u0000"))  # 22P05
    assert is_data_error(asyncpg.exceptions.ProgramLimitExceededError("index row too big"))  # 54000
    assert is_data_error(asyncpg.exceptions.NotNullViolationError("null"))  # 23502
    assert not is_data_error(asyncpg.exceptions.AdminShutdownError("terminating"))  # 57P01
    assert not is_data_error(asyncpg.exceptions.DeadlockDetectedError("deadlock"))  # 40P01
    assert not is_data_error(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert not is_data_error(OSError("refused"))
    assert not is_data_error(ValueError("a bug of ours is not the data's fault"))
