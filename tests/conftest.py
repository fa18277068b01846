"""Fixtures of the component and integration tiers: one nats-server for the session (an account
per test), the test's stack of Loom services (in-process, or processes where a test asks),
stopped in ``finally``, and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import NatsServer, Stack, session_nats, stack_of


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
