"""OpenID Connect tokens on the services' APIs (dispatcher, registry, a worker and ingest in process,
with an API key set and LOOM_OIDC_ISSUER pointing at a real HTTP identity provider on loopback):
a provider's token carries its Loom scopes through REST and WebSocket, bad tokens are 401, a token
without Loom scopes is 403, and API keys keep working beside tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from loom_auth.testing import TestProvider, serve_provider
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.events_support import (  # noqa: F401 (fixture)
    FAST_INGEST,
    database_url_fixture,
    ws_url,
)
from tests.integration.harness import AnyService, Stack, wait_for

pytestmark = pytest.mark.component

ADMIN = "loom_oidc_test_admin_key_0123456789abcdefghijklmnop"


class Services:
    def __init__(self, stack: Stack, provider: TestProvider, database_url: str) -> None:
        env = {"LOOM_API_KEYS": ADMIN, "LOOM_OIDC_ISSUER": provider.issuer, "LOOM_OIDC_AUDIENCE": "loom"}
        self.registry = stack.registry_service(**env)
        self.dispatcher = stack.dispatcher_service(**env)
        self.worker = stack.worker_service("w1", **env)
        self.ingest = stack.add(
            "ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST, **env}
        )

    @property
    def all(self) -> tuple[AnyService, ...]:
        return (self.registry, self.dispatcher, self.worker, self.ingest)


@pytest.fixture
async def provider() -> AsyncIterator[TestProvider]:
    with serve_provider() as p:
        yield p


@pytest.fixture
async def services(stack: Stack, provider: TestProvider, database_url: str) -> Services:
    services = Services(stack, provider, database_url)
    await asyncio.gather(*(svc.started(120) for svc in services.all))
    await wait_for(lambda: _echo_listed(services.registry), 30, "the worker's agents in the registry")
    return services


async def _echo_listed(registry: AnyService) -> bool:
    async with httpx.AsyncClient(timeout=2) as client:
        answer = await client.get(f"{registry.url}/api/agents", headers=_bearer(ADMIN))
    return any(agent["agentId"] == "echo" for agent in answer.json()["agents"])


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_providers_token_carries_its_scopes(services: Services, provider: TestProvider) -> None:
    submitter = provider.token("loom:submit loom:read")
    reader = provider.token("read")
    task = {"targetAgent": "echo", "parameters": {"text": "hello"}}
    async with httpx.AsyncClient(base_url=services.dispatcher.url, timeout=15) as api:
        submitted = await api.post("/api/tasks?wait=10", json=task, headers=_bearer(submitter))
        assert submitted.status_code in (200, 201, 202), submitted.text
        task_id = submitted.json()["taskId"]
        read = await api.get(f"/api/tasks/{task_id}", headers=_bearer(reader))
        assert read.status_code == 200 and read.json()["status"] == "completed", read.text
        refused = await api.post("/api/tasks", json=task, headers=_bearer(reader))
        assert refused.status_code == 403 and refused.json()["error"]["scope"] == "submit", refused.text
        # a key beside the tokens
        assert (await api.get(f"/api/tasks/{task_id}", headers=_bearer(ADMIN))).status_code == 200
    async with httpx.AsyncClient(timeout=5) as client:
        agents = await client.get(f"{services.registry.url}/api/agents", headers=_bearer(reader))
        assert agents.status_code == 200


async def test_bad_tokens_are_401_and_tokens_without_loom_scopes_403(
    services: Services, provider: TestProvider
) -> None:
    expired = provider.token("admin", exp=int(time.time()) - 600)
    cases = {
        expired: 401,
        provider.token("admin", audience="another-api"): 401,
        provider.token("admin", iss="http://127.0.0.1:1"): 401,
        provider.token("admin") + "tampered": 401,
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.": 401,
        provider.token("openid email"): 403,
    }
    async with httpx.AsyncClient(base_url=services.dispatcher.url, timeout=5) as api:
        for token, status in cases.items():
            answer = await api.get("/api/tasks/some-task", headers=_bearer(token))
            assert answer.status_code == status, (token[:40], answer.text)
            assert answer.json()["error"]["message"], answer.text
        assert (await api.get("/api/tasks/some-task")).status_code == 401  # nothing at all


async def test_a_browser_websocket_sends_its_token_in_the_query_string(
    services: Services, provider: TestProvider
) -> None:
    feed = ws_url(services.ingest, "/ws/ingest")
    async with connect(f"{feed}?access_token={provider.token('ingest')}", open_timeout=5) as ws:
        await ws.ping()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{feed}?access_token={provider.token('ingest', audience='x')}", open_timeout=5):
            pass
    assert refused.value.response.status_code == 401
