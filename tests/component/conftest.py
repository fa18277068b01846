"""The component tier (its fixtures are in ``tests/conftest.py``): Loom services in the test's
own process and event loop (``create_app(settings)`` with its lifespan, served by uvicorn on a
loopback socket), on one nats-server for the session with a NATS account per test, and the
machine's Redis under a per-test key prefix.

Why an account per test: subjects, stream names and durable names are the protocol's constants,
so tests cannot rename them; an account gives each test the real names in a namespace of its
own (no shared subjects, no shared JetStream streams or consumers), with nothing to clean up
and no race with a service of the previous test still shutting down.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# OpenTelemetry providers are process-wide: the component tier runs untraced (tracing is the
# process tier's test_observability)
_OTEL_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture(scope="session", autouse=True)
def _untraced() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in _OTEL_ENDPOINTS:
            mp.delenv(name, raising=False)
        yield
