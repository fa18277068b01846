"""GET /api/agents and the registry's error body, in process with a stand-in membership."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from loom_protocol import AgentCard, Heartbeat, InstanceLoad
from loom_registry.app import create_app
from loom_registry.membership import Instance


class _Membership:
    async def all_instances(self) -> list[Instance]:
        beat = Heartbeat(
            instance_id="w-1",
            agents=[AgentCard(agent_id="calc", name="calc"), AgentCard(agent_id="echo", name="echo")],
            host="h",
            pid=7,
            load=InstanceLoad(in_flight=1, capacity=4),
            version="0.1.0",
        )
        return [Instance(beat, 1.23456)]


def test_agents_are_listed_in_camel_case_and_errors_in_the_one_shape() -> None:
    app = create_app()
    state: Any = app.state.loom
    state.membership = _Membership()
    client = TestClient(app)  # no lifespan: nothing reaches NATS or Redis
    body = client.get("/api/agents").json()
    assert [a["agentId"] for a in body["agents"]] == ["calc", "echo"]
    instance = body["agents"][0]["instances"][0]
    assert instance["instanceId"] == "w-1" and instance["lastHeartbeatAgeS"] == 1.235
    assert instance["load"]["inFlight"] == 1 and body["agents"][0]["card"]["agentId"] == "calc"
    missing = client.get("/api/agent")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_a_redis_that_is_down_answers_503_with_retry_after() -> None:
    from loom_registry.config import Settings

    closed = Settings(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    client = TestClient(create_app(closed), raise_server_exceptions=False)  # no lifespan
    down = client.get("/api/agents")
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "1"
    assert down.json()["error"]["code"] == "unavailable" and "Redis" in down.json()["error"]["message"]
