from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from loom_replay.app import create_app
from loom_replay.config import Settings
from loom_replay.errors import Invalid
from loom_replay.play import Breakpoint, parse_breakpoint, parse_speed
from loom_replay.store import Selection

TOOL_RESULT = {
    "type": "tool.result",
    "agentid": "calculator",
    "source": "/workers/w1/agents/calculator",
    "subject": "tool:calculator",
    "data": {"is_error": True},
}


def test_breakpoints_match_type_globs_nodes_and_errors() -> None:
    assert Breakpoint(type="tool.*").matches(TOOL_RESULT)
    assert not Breakpoint(type="tool.call").matches(TOOL_RESULT)
    assert Breakpoint(node="calculator").matches(TOOL_RESULT)
    assert Breakpoint(node="tool:calculator").matches(TOOL_RESULT)
    assert not Breakpoint(node="echo").matches(TOOL_RESULT)
    assert Breakpoint(error=True).matches(TOOL_RESULT)
    assert not Breakpoint(error=False).matches(TOOL_RESULT)
    assert not Breakpoint(type="tool.*", node="echo").matches(TOOL_RESULT)  # all conditions must hold


def test_breakpoint_and_speed_parameters_are_validated_with_a_reason() -> None:
    assert parse_breakpoint() is None
    assert parse_breakpoint("tool.*", None, "TRUE") == Breakpoint("tool.*", None, True)
    assert parse_breakpoint(None, "calculator", "0") == Breakpoint(None, "calculator", False)
    for args, reason in [
        ((None, None, "maybe"), "error must be true or false"),
        (("", None, None), "type must be a non-empty string"),
        ((None, 7, None), "node must be a non-empty string"),
    ]:
        with pytest.raises(Invalid, match=reason):
            parse_breakpoint(*args)
    assert parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast", None, "1e9"):
        with pytest.raises(Invalid, match="speed must be"):
            parse_speed(bad)


def test_selections_are_parameterised_and_survive_redis() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    selection = Selection(trace_id="t' OR 1=1", start=when, as_of=when)
    where, args = selection.where(3)
    assert where == "trace_id = $3 AND time >= $4 AND ingested_at <= $5"
    assert args == ["t' OR 1=1", when, when]
    assert Selection.from_json(selection.to_json()) == selection


def test_the_app_serves_health_docs_and_refuses_bad_input_without_its_backends() -> None:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:1/none", redis_url="redis://127.0.0.1:1/0", lock_wait_s=0
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"redis": False, "database": False} and ready.json()["reason"]
        paths = client.get("/openapi.json").json()["paths"]
        for path in (
            "/api/replay/create",
            "/api/replay/{session_id}/step",
            "/api/replay/{session_id}/jump",
            "/api/replay/deterministic",
            "/api/replay/fork",
        ):
            assert path in paths
        assert client.get("/docs").status_code == 200
        assert "loom_replay" in client.get("/metrics").text
        refused = client.post("/api/replay/fork", json={"taskId": "x", "fromStep": 0})
        assert refused.status_code == 422 and "fromStep" in refused.text
        refused = client.post("/api/replay/deterministic", json={"taskId": "x", "overrides": {"nope": 1}})
        assert refused.status_code == 422 and "nope" in refused.text
        refused = client.post("/api/replay/some-session/jump", params={"index": "one"})
        assert refused.status_code == 422 and "index" in refused.text
        # well-formed requests that need a store that is down: 503 with Retry-After, never 500
        for method, path, body in (
            ("POST", "/api/replay/create", {"taskId": "x"}),
            ("POST", "/api/replay/deterministic", {"taskId": "x"}),
            ("GET", "/api/replay/" + "0" * 32, None),
        ):
            down = client.request(method, path, json=body)
            assert down.status_code == 503, (path, down.status_code, down.text)
            assert down.headers["retry-after"] == "1" and down.json()["error"]["code"] == "unavailable"
