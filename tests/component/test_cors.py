"""CORS on every service's API: off unless LOOM_CORS_ORIGINS names origins, then a browser page
of those origins (and no other) may call the API with its key. Each app as the service builds it
(its middleware stack), without its lifespan: no broker or database is reached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from loom_dispatcher.app import create_app as dispatcher_app
from loom_dispatcher.config import Settings as DispatcherSettings
from loom_ingest.app import create_app as ingest_app
from loom_ingest.config import Settings as IngestSettings
from loom_query.app import create_app as query_app
from loom_query.config import Settings as QuerySettings
from loom_registry.app import create_app as registry_app
from loom_registry.config import Settings as RegistrySettings
from loom_replay.app import create_app as replay_app
from loom_replay.config import Settings as ReplaySettings
from pydantic import ValidationError

pytestmark = pytest.mark.component

ALLOWED = "https://studio.example.com"
# each service: how to build it, and an API path of its own
SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type, str]] = {
    "dispatcher": (dispatcher_app, DispatcherSettings, "/api/tasks"),
    "registry": (registry_app, RegistrySettings, "/api/agents"),
    "ingest": (ingest_app, IngestSettings, "/api/events"),
    "query": (query_app, QuerySettings, "/api/tasks"),
    "replay": (replay_app, ReplaySettings, "/api/replay/create"),
}


def _preflight(client: TestClient, path: str, origin: str) -> Any:
    return client.options(
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_cors_is_off_by_default_and_allows_only_the_configured_origins(service: str) -> None:
    build, settings, path = SERVICES[service]
    off = TestClient(build(settings(api_keys="loom_k_0123456789abcdefghijklmnopqrstuvwx")))
    answered = _preflight(off, path, ALLOWED)
    assert "access-control-allow-origin" not in answered.headers, answered.headers
    key = "loom_k_0123456789abcdefghijklmnopqrstuvwx"
    on = TestClient(build(settings(api_keys=key, cors_origins=f"{ALLOWED}, http://localhost:3000")))
    answered = _preflight(on, path, ALLOWED)
    assert answered.status_code == 200, answered.text
    assert answered.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in answered.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in answered.headers  # a key, never cookies
    refused = _preflight(on, path, "https://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    # an actual call from the allowed origin still needs its key, and says so to the page
    unauthenticated = on.get("/api/does-not-matter", headers={"origin": ALLOWED})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize(
    "origins", ["javascript:alert(1)", "https://a.example/path", "https://a b", "ftp://x"]
)
def test_origins_that_are_not_origins_are_refused_at_start(origins: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        QuerySettings(cors_origins=origins)
