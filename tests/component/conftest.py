"""Fixtures of the component tier: Loom services in the test's own process and event loop
(``create_app(settings)`` with its lifespan, served by uvicorn on a loopback socket), on one
nats-server for the session with a NATS account per test, and the machine's Redis under a
per-test key prefix.

Why an account per test: subjects, stream names and durable names are the protocol's constants,
so tests cannot rename them; an account gives each test the real names in a namespace of its
own (no shared subjects, no shared JetStream streams or consumers), with nothing to clean up
and no race with a service of the previous test still shutting down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import NatsServer, Stack, session_nats, stack_of

# OpenTelemetry providers are process-wide: the component tier runs untraced (tracing is the
# process tier's test_observability)
_OTEL_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture(scope="session", autouse=True)
def _untraced() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in _OTEL_ENDPOINTS:
            mp.delenv(name, raising=False)
        yield


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
