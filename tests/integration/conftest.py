"""Fixtures of the process tier: one nats-server for the session (an account per test), the
machine's Redis under a per-test key prefix, and Loom services as processes on free ports,
stopped in ``finally``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from .harness import NatsServer, Stack, session_nats, stack_of


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    async with session_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
async def stack(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    """The test's services; a test that also takes ``database_url`` names it first, so that its
    database is dropped after the services stop."""
    async with stack_of(nats_server, tmp_path) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
