"""The optional Consul mirror: the mapping from heartbeats to Consul services, and the calls
py-consul makes, recorded by a real HTTP server standing in for the Consul agent API (no Consul
server can run on these machines)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from loom_protocol import AgentCapability, AgentCard, Heartbeat, InstanceLoad
from loom_registry.consul_mirror import ConsulMirror, service_registrations
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture (services/conftest.py)


def heartbeat(agents: tuple[str, ...] = ("calculator", "echo")) -> Heartbeat:
    return Heartbeat(
        instance_id="w-1",
        agents=[AgentCard(agent_id=a, name=a, capabilities=[AgentCapability.TOOL_USE]) for a in agents],
        host="10.0.0.7",
        pid=4242,
        load=InstanceLoad(in_flight=0, capacity=4),
        interval_s=2.0,
    )


def test_each_served_agent_becomes_a_service_with_a_ttl_of_the_missed_heartbeats() -> None:
    regs = service_registrations(heartbeat(), missed_heartbeats=3)
    assert [r["name"] for r in regs] == ["loom-calculator", "loom-echo"]
    assert [r["service_id"] for r in regs] == ["loom-w-1-calculator", "loom-w-1-echo"]
    first = regs[0]
    assert first["address"] == "10.0.0.7"
    assert first["check"]["ttl"] == "6s"
    assert "instance:w-1" in first["tags"] and "capability:tool_use" in first["tags"]
    assert first["meta"] == {
        "instance_id": "w-1",
        "agent_id": "calculator",
        "pid": "4242",
        "version": "0.1.0",
    }


class RecordingConsul:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, object] | None]] = []

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.calls.append((request.method, request.url.path, json.loads(body) if body else None))
        return JSONResponse(True)


@pytest.fixture
async def consul_api(wait_for: WaitFor) -> AsyncIterator[tuple[RecordingConsul, str]]:
    recorder = RecordingConsul()
    app = Starlette(routes=[Route("/{path:path}", recorder.handle, methods=["GET", "PUT", "POST"])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, 10.0)
        yield recorder, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_mirror_registers_once_passes_checks_and_deregisters(
    consul_api: tuple[RecordingConsul, str],
) -> None:
    recorder, url = consul_api
    mirror = ConsulMirror(url, missed_heartbeats=3)
    await mirror.heartbeat(heartbeat())
    await mirror.heartbeat(heartbeat())
    await mirror.down("w-1")
    paths = [(m, p) for m, p, _ in recorder.calls]
    assert paths == [
        ("PUT", "/v1/agent/service/register"),
        ("PUT", "/v1/agent/service/register"),
        ("PUT", "/v1/agent/check/pass/service:loom-w-1-calculator"),
        ("PUT", "/v1/agent/check/pass/service:loom-w-1-echo"),
        ("PUT", "/v1/agent/check/pass/service:loom-w-1-calculator"),
        ("PUT", "/v1/agent/check/pass/service:loom-w-1-echo"),
        ("PUT", "/v1/agent/service/deregister/loom-w-1-calculator"),
        ("PUT", "/v1/agent/service/deregister/loom-w-1-echo"),
    ]
    body = recorder.calls[0][2]
    assert body is not None and body["id"] == "loom-w-1-calculator" and body["name"] == "loom-calculator"
    assert body["checks"] == [{"ttl": "6s", "DeregisterCriticalServiceAfter": "1m"}]


async def test_an_unreachable_consul_never_breaks_heartbeat_handling() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    mirror = ConsulMirror(f"http://127.0.0.1:{port}", missed_heartbeats=3)
    await mirror.heartbeat(heartbeat())  # logs, does not raise
    await mirror.down("w-1")
