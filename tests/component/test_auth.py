"""API keys on every service (registry, dispatcher, a worker, ingest, query, replay in process,
all with ``LOOM_API_KEYS``): requests without a key refused, scopes enforced per route, the ops
endpoints open, the WebSocket key in the query string, keys created and revoked at run time
through the dispatcher and honoured by every service, replay running a task with its caller's
key, and the real OpenTelemetry exporter sending its key in a header."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.helpers.proto_helpers import new_text_part
from a2a.types import Message, Role, SendMessageRequest, TaskState
from loom_protocol.auth import API_KEYS_BUCKET, key_hash
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.events_support import (
    FAST_INGEST,
    database_url_fixture,  # noqa: F401 (fixture)
    ws_url,
)
from tests.integration.harness import AnyService, Stack, wait_for
from tests.integration.replay_support import trace_of, wait_trace_stored

pytestmark = pytest.mark.component

ADMIN = "loom_test_admin_key_0123456789abcdefghijklmnopqrstu"
READER = "loom_test_read_only_key_0123456789abcdefghijklmnop"
KEYS = {"LOOM_API_KEYS": f"{ADMIN},read:{READER}", "LOOM_API_KEYS_REFRESH_S": "0.2"}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class Services:
    def __init__(self, stack: Stack, database_url: str) -> None:
        self.registry = stack.registry_service(**KEYS)
        self.dispatcher = stack.dispatcher_service(**KEYS)
        self.worker = stack.worker_service("w1", **KEYS)
        self.ingest = stack.add(
            "ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST, **KEYS}
        )
        self.query = stack.service("query-0", "loom_query", LOOM_DATABASE_URL=database_url, **KEYS)
        self.replay = stack.service(
            "replay-0",
            "loom_replay",
            LOOM_DATABASE_URL=database_url,
            LOOM_DISPATCHER_URL=self.dispatcher.url,
            LOOM_NATS_URL=stack.nats_url,
            **KEYS,
        )

    @property
    def all(self) -> tuple[AnyService, ...]:
        return (self.registry, self.dispatcher, self.worker, self.ingest, self.query, self.replay)


@pytest.fixture
async def services(database_url: str, stack: Stack) -> Services:
    services = Services(stack, database_url)
    await asyncio.gather(*(svc.started(120) for svc in services.all))
    await wait_for(lambda: _agent_listed(services.registry), 30, "the worker's agents in the registry")
    return services


async def _agent_listed(registry: AnyService) -> bool:
    async with httpx.AsyncClient(timeout=2) as client:
        body = (await client.get(f"{registry.url}/api/agents", headers=bearer(ADMIN))).json()
    return any(agent["agentId"] == "calculator" for agent in body["agents"])


async def submit(http: httpx.AsyncClient, dispatcher: AnyService, key: str, **params: Any) -> httpx.Response:
    body = {"targetAgent": "calculator", "parameters": params or {"prompt": "what is 6*7?"}}
    return await http.post(f"{dispatcher.url}/api/tasks?wait=10", json=body, headers=bearer(key))


async def test_every_api_wants_a_key_and_a_scope_and_the_probes_stay_open(
    services: Services, http: httpx.AsyncClient
) -> None:
    s = services
    reads = [
        f"{s.registry.url}/api/agents",
        f"{s.dispatcher.url}/api/tasks/nope",
        f"{s.query.url}/api/tasks",
        f"{s.replay.url}/api/replay/nope",
        f"{s.ingest.url}/api/nothing-here",
    ]
    for url in reads:
        refused = await http.get(url)
        assert refused.status_code == 401, (url, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == 'Bearer realm="loom"'
        assert (await http.get(url, headers=bearer("loom_unknown"))).status_code == 401
        assert (await http.get(url, headers=bearer(READER))).status_code not in (401, 403), url
    for svc in s.all:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(f"{svc.url}{path}")).status_code == 200, (svc.name, path)
    assert (await http.get(f"{s.dispatcher.url}/openapi.json")).status_code == 200
    assert (await http.get(f"{s.query.url}/")).status_code == 200  # the Studio's page asks for a key itself

    # the read-only key reads, and is refused everything else, naming the scope it lacks
    denied = await submit(http, s.dispatcher, READER)
    assert denied.status_code == 403
    assert denied.json()["error"]["scope"] == "submit"
    done = await submit(http, s.dispatcher, ADMIN)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    task_id = done.json()["taskId"]
    assert (
        await http.get(f"{s.dispatcher.url}/api/tasks/{task_id}", headers=bearer(READER))
    ).status_code == 200
    approve = await http.post(
        f"{s.dispatcher.url}/api/tasks/{task_id}/approve", json={}, headers=bearer(READER)
    )
    assert approve.status_code == 403 and approve.json()["error"]["scope"] == "approve"
    keys = await http.get(f"{s.dispatcher.url}/api/keys", headers=bearer(READER))
    assert keys.status_code == 403 and keys.json()["error"]["scope"] == "admin"
    otlp = await http.post(
        f"{s.ingest.url}/v1/traces",
        content=b"{}",
        headers={**bearer(READER), "content-type": "application/json"},
    )
    assert otlp.status_code == 403 and otlp.json()["error"]["scope"] == "ingest"
    fork = await http.post(
        f"{s.replay.url}/api/replay/deterministic", json={"taskId": task_id}, headers=bearer(READER)
    )
    assert fork.status_code == 403 and fork.json()["error"]["scope"] == "submit"


async def test_websockets_take_the_key_in_the_query_string(services: Services) -> None:
    live = ws_url(services.query, "/ws/events")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(live, open_timeout=5):
            pass
    assert refused.value.response.status_code in (401, 403)
    async with connect(f"{live}?access_token={READER}", open_timeout=5) as ws:
        await ws.send('{"filters": {}}')
        first = await asyncio.wait_for(ws.recv(), 5)
        assert "subscribed" in str(first)
    async with connect(live, additional_headers=bearer(READER), open_timeout=5) as ws:
        await ws.send('{"filters": {}}')
        assert "subscribed" in str(await asyncio.wait_for(ws.recv(), 5))
    with pytest.raises(InvalidStatus) as lacking:  # sending events needs the ingest scope
        async with connect(f"{ws_url(services.ingest, '/ws/ingest')}?access_token={READER}", open_timeout=5):
            pass
    assert lacking.value.response.status_code == 403


async def test_keys_created_at_run_time_work_everywhere_until_revoked(
    services: Services, http: httpx.AsyncClient, stack: Stack
) -> None:
    s = services
    created = await http.post(
        f"{s.dispatcher.url}/api/keys",
        json={"name": "ci-bot", "scopes": ["submit", "read"]},
        headers=bearer(ADMIN),
    )
    assert created.status_code == 201, created.text
    key, record = created.json()["key"], created.json()["record"]
    assert key.startswith("loom_") and record["scopes"] == ["read", "submit"]
    listed = (await http.get(f"{s.dispatcher.url}/api/keys", headers=bearer(ADMIN))).json()["keys"]
    assert [(r["id"], r["name"]) for r in listed] == [(record["id"], "ci-bot")]
    assert key not in str(listed)  # only its hint
    # stored hashed: the bucket every service reads holds the key's SHA-256, never the key
    bucket = await (await stack.nats()).jetstream().key_value(API_KEYS_BUCKET)
    stored = {name: (await bucket.get(name)).value or b"" for name in await bucket.keys()}
    assert stored and all(key not in name and key.encode() not in value for name, value in stored.items())
    assert any(key_hash(key) in name or key_hash(key).encode() in value for name, value in stored.items())

    done = await submit(http, s.dispatcher, key)  # the dispatcher knows it at once
    assert done.status_code == 200, done.text

    async def query_accepts(expected: int) -> bool:
        return (await http.get(f"{s.query.url}/api/tasks", headers=bearer(key))).status_code == expected

    await wait_for(lambda: query_accepts(200), 10, "query to read the new key")

    revoked = await http.delete(f"{s.dispatcher.url}/api/keys/{record['id']}", headers=bearer(ADMIN))
    assert revoked.status_code == 204
    assert (await submit(http, s.dispatcher, key)).status_code == 401  # at once where it was revoked
    await wait_for(lambda: query_accepts(401), 10, "query to refuse the revoked key")
    again = await http.delete(f"{s.dispatcher.url}/api/keys/{record['id']}", headers=bearer(ADMIN))
    assert again.status_code == 404
    bad = await http.post(
        f"{s.dispatcher.url}/api/keys", json={"name": "x", "scopes": ["root"]}, headers=bearer(ADMIN)
    )
    assert bad.status_code == 422


async def test_replay_runs_a_task_with_its_callers_key(
    services: Services, http: httpx.AsyncClient, database_url: str
) -> None:
    s = services
    done = await submit(http, s.dispatcher, ADMIN)
    task_id = done.json()["taskId"]
    await wait_trace_stored(database_url, trace_of(done.json()))  # the whole recording, then replay
    answer = await http.post(
        f"{s.replay.url}/api/replay/deterministic", json={"taskId": task_id}, headers=bearer(ADMIN)
    )
    assert answer.status_code == 200, answer.text  # the dispatcher took the run with the caller's key
    assert answer.json()["diverged"] is False
    assert answer.json()["replay"]["status"] == "completed"


def finished_spans() -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("auth-test").start_as_current_span(
        "chat m", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    ):
        pass
    provider.shutdown()
    return memory.get_finished_spans()


async def test_the_opentelemetry_exporter_sends_its_key_in_a_header(services: Services) -> None:
    endpoint = f"{services.ingest.url}/v1/traces"
    spans = finished_spans()
    without = OTLPSpanExporter(endpoint=endpoint, timeout=5)
    keyed = OTLPSpanExporter(endpoint=endpoint, headers=bearer(ADMIN), timeout=5)
    try:
        assert await asyncio.to_thread(without.export, spans) == SpanExportResult.FAILURE
        assert await asyncio.to_thread(keyed.export, spans) == SpanExportResult.SUCCESS
    finally:
        without.shutdown()
        keyed.shutdown()


async def test_an_a2a_client_reads_the_scheme_from_the_card_and_calls_with_its_key(
    services: Services,
) -> None:
    url = f"{services.dispatcher.url}/a2a/calculator"
    async with (
        httpx.AsyncClient(timeout=30) as anonymous,
        httpx.AsyncClient(timeout=30, headers=bearer(ADMIN)) as keyed,
    ):
        card = await A2ACardResolver(anonymous, url).get_agent_card()  # cards are public
        assert card.security_schemes["loomApiKey"].http_auth_security_scheme.scheme == "Bearer"
        assert list(card.security_requirements[0].schemes["loomApiKey"].list) == ["submit", "read"]
        request = SendMessageRequest(
            message=Message(
                role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[new_text_part("what is 6*7?")]
            )
        )
        with pytest.raises(A2AClientError, match="401"):
            async for _ in (
                ClientFactory(ClientConfig(httpx_client=anonymous, streaming=False))
                .create(card)
                .send_message(request)
            ):
                pass
        answers = [
            item
            async for item in ClientFactory(ClientConfig(httpx_client=keyed, streaming=False))
            .create(card)
            .send_message(request)
        ]
        task = answers[-1].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
