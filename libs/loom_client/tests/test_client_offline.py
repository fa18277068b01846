"""The client without services: what it sends (paths, query, body, bearer token) and how it reads
answers and errors, through an httpx mock transport; settings from the environment; the pure
helpers (answer joining, live filters, batch files, trace steps, --param values)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from loom_client import (
    AsyncLoomClient,
    ClientSettings,
    Conflict,
    InvalidRequest,
    LoomClient,
    LoomError,
    NotFound,
    Unavailable,
    join_answer,
)
from loom_client.calls import submission_body
from loom_client.cli_batch import read_batch
from loom_client.cli_common import parse_params
from loom_client.live import live_filters, live_url, matches
from loom_client.models import TaskDetail
from loom_client.trace import steps_of
from loom_protocol import CloudEvent, Task, TaskStreamChunk, TaskSubmission, new_event

Handler = Callable[[httpx.Request], httpx.Response]
TASK = Task(task_id="t1", target_agent="echo").to_wire()


def client(handler: Handler, **kwargs: Any) -> LoomClient:
    return LoomClient(
        "http://dispatcher", query_url="http://query", transport=httpx.MockTransport(handler), **kwargs
    )


def error(status: int, code: str, message: str = "m", **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, **details}})


def test_submit_sends_the_wire_body_with_a_task_id_and_the_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=TASK)

    with client(handler, api_key="s3cret") as loom:
        task = loom.submit("echo", {"n": 1}, session_id="s", metadata={"k": "v"}, wait=0, wait_for_agent=True)
    assert task.task_id == "t1"
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/api/tasks"
    assert request.url.params.get("waitForAgent") == "true" and "wait" not in request.url.params
    assert request.headers["authorization"] == "Bearer s3cret"
    body = json.loads(request.content)
    assert body["targetAgent"] == "echo" and body["parameters"] == {"n": 1}
    assert body["sessionId"] == "s" and body["metadata"] == {"k": "v"}
    assert len(body["taskId"]) == 32  # the client's own id: resubmitting is idempotent


def test_no_api_key_no_authorization_header_and_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here (the repository's holds the local stack's key)
    monkeypatch.setenv("LOOM_DISPATCHER_URL", "http://from-env:1")
    monkeypatch.setenv("LOOM_CLIENT_TIMEOUT_S", "3.5")
    for name in ("LOOM_API_KEY", "LOOM_QUERY_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = ClientSettings(_env_file=None)
    assert settings.dispatcher_url == "http://from-env:1" and settings.client_timeout_s == 3.5
    assert settings.query_url == "http://127.0.0.1:8004" and settings.headers() == {}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=TASK)

    with LoomClient(transport=httpx.MockTransport(handler)) as loom:
        assert loom.timeout == 3.5
        loom.get("t1")
    assert str(seen[0].url) == "http://from-env:1/api/tasks/t1" and "authorization" not in seen[0].headers


def test_errors_map_to_their_classes_with_code_message_and_details() -> None:
    answers = {
        "/api/tasks/a": error(404, "unknown_agent", "no agent 'calc'", suggestions=["calculator"]),
        "/api/tasks/b": error(409, "task_id_conflict", differingFields=["parameters"]),
        "/api/tasks/c": error(
            422, "invalid_request", "bad", fields=[{"field": "body.targetAgent", "reason": "pattern"}]
        ),
        "/api/tasks/d": error(503, "service_unavailable"),
        "/api/tasks/e": httpx.Response(500, text="<html>boom</html>"),
        "/api/tasks/f": httpx.Response(200, text="not json"),
        "/api/tasks/g": error(413, "content_too_large"),
    }
    with client(lambda request: answers[request.url.path]) as loom:
        with pytest.raises(NotFound) as not_found:
            loom.get("a")
        assert not_found.value.suggestions == ["calculator"] and not_found.value.message == "no agent 'calc'"
        with pytest.raises(Conflict) as conflict:
            loom.get("b")
        assert conflict.value.details == {"differingFields": ["parameters"]} and conflict.value.status == 409
        with pytest.raises(InvalidRequest) as invalid:
            loom.get("c")
        assert [(f.field, f.reason) for f in invalid.value.fields] == [("body.targetAgent", "pattern")]
        with pytest.raises(Unavailable) as unavailable:
            loom.get("d")
        assert unavailable.value.code == "service_unavailable"
        with pytest.raises(Unavailable) as html:
            loom.get("e")
        assert html.value.code == "internal_server_error" and "boom" in html.value.message
        with pytest.raises(LoomError) as bad:
            loom.get("f")
        assert bad.value.code == "bad_answer" and type(bad.value) is LoomError
        with pytest.raises(InvalidRequest) as too_large:
            loom.get("g")
        assert too_large.value.status == 413


def test_a_connection_error_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with client(refuse) as loom, pytest.raises(Unavailable) as exc:
        loom.get("t1")
    assert exc.value.status is None and "connection refused" in exc.value.message


async def test_the_async_client_sends_the_same_calls() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/tasks":
            return httpx.Response(
                200, json={"tasks": [{"taskId": "x", "status": "completed"}], "nextCursor": None}
            )
        return error(404, "not_found")

    async with AsyncLoomClient(
        "http://dispatcher", query_url="http://query", transport=httpx.MockTransport(handler)
    ) as loom:
        page = await loom.tasks(status=["completed", "failed"], agent="echo", limit=5)
        assert [t.task_id for t in page.tasks] == ["x"] and page.total is None and page.counts == {}
        with pytest.raises(NotFound):
            await loom.approve("nope", by="ann")
    assert seen[0].url.host == "query"
    assert seen[0].url.params.get_list("status") == ["completed", "failed"]
    assert seen[0].url.params["limit"] == "5" and "cursor" not in seen[0].url.params
    assert seen[1].url.path == "/api/tasks/nope/approve" and json.loads(seen[1].content) == {"by": "ann"}


def test_a_submission_object_is_sent_as_is_with_the_arguments_on_top() -> None:
    submission = TaskSubmission(target_agent="calc", parameters={"a": 1}, task_id="given")
    body = submission_body(submission, {"b": 2}, session_id="s")
    assert body["targetAgent"] == "calc" and body["taskId"] == "given"
    assert body["parameters"] == {"b": 2} and body["sessionId"] == "s"


def test_join_answer_drops_discarded_steps_and_restarts_on_a_new_attempt() -> None:
    def chunk(index: int, delta: str = "", **kw: Any) -> TaskStreamChunk:
        return TaskStreamChunk(task_id="t", index=index, delta=delta, **kw)

    chunks = [
        chunk(0, "thinking ", step=1),
        chunk(1, step=1, discard=True),
        chunk(2, "The ", step=2),
        chunk(3, "answer", step=2),
        chunk(4, step=2, done=True),
    ]
    assert join_answer(chunks) == "The answer"
    retried = [chunk(0, "lost", attempt=1), chunk(0, "new", attempt=2), chunk(1, " one", attempt=2)]
    assert join_answer(retried) == "new one"


def test_live_filters_and_matching() -> None:
    filters = live_filters(task_id="t1", event_type=["tool.*", "task.stream"], agent="agent:calc")
    assert filters == {"task_id": ["t1"], "event_type": ["tool.*", "task.stream"], "node_id": ["agent:calc"]}
    assert live_url("https://q.example/") == "wss://q.example/ws/events"
    assert live_url("http://127.0.0.1:8004") == "ws://127.0.0.1:8004/ws/events"
    event = new_event("tool.call", "/w", task_id="t1", agent_id="calc")
    assert matches(event, filters)
    assert not matches(event.model_copy(update={"type": "llm.usage"}), filters)
    assert not matches(new_event("tool.call", "/w", task_id="t2", agent_id="calc"), filters)
    assert not matches(TaskStreamChunk(task_id="t1", index=0), {"event_type": ["tool.*"]})
    assert matches(TaskStreamChunk(task_id="t1", index=0), {"task_id": ["t1"]})


def test_read_batch_fills_defaults_and_reports_bad_lines() -> None:
    text = "\n".join(
        [
            '{"parameters": {"n": 1}}',
            "# comment",
            "",
            '{"targetAgent": "calc", "parameters": {"x": 2}, "metadata": {"a": 1}}',
            '{"targetAgent": "bad agent"}',
            "[1]",
            "{broken",
        ]
    )
    subs, problems = read_batch(text, agent="echo", parameters={"d": 0}, session="s", metadata={"m": 1})
    assert [(s.target_agent, s.parameters, s.session_id, s.metadata) for s in subs] == [
        ("echo", {"d": 0, "n": 1}, "s", {"m": 1}),
        ("calc", {"d": 0, "x": 2}, "s", {"m": 1, "a": 1}),
    ]
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7"]
    assert "targetAgent" in problems[0]


def test_param_values_are_json_when_they_parse() -> None:
    assert parse_params(["n=5", "f=1.5", "b=true", "l=[1,2]", "s=what is 6*7?", 'q="5"', "e=", "k=a=b"]) == {
        "n": 5,
        "f": 1.5,
        "b": True,
        "l": [1, 2],
        "s": "what is 6*7?",
        "q": "5",
        "e": "",
        "k": "a=b",
    }
    for bad in ("novalue", "=x"):
        with pytest.raises(typer.BadParameter):
            parse_params([bad])


def test_trace_steps_pair_tool_calls_with_their_results() -> None:
    def ev(kind: str, **data: Any) -> CloudEvent:
        return new_event(kind, "/w", task_id="t", data=data)

    events = [
        ev("llm.request", step=1),
        ev("llm.usage", step=1, model="m", input_tokens=10, output_tokens=2, cost_usd=0.5, latency_s=0.2),
        ev("tool.call", call_id="c1", name="calc", arguments={"expression": "6*7"}),
        ev("tool.result", call_id="c1", name="calc", content="42", duration_ms=12.0),
        ev("tool.result", call_id="c9", name="other", content="boom", is_error=True),
        ev("agent.answer", answer="42"),
    ]
    steps = steps_of(events)
    assert [s.kind for s in steps] == ["llm", "tool", "tool", "answer"]
    assert steps[0].input_tokens == 10 and steps[0].cost_usd == 0.5 and steps[0].duration_s == 0.2
    assert steps[1].label == "tool calc(expression=6*7) → 42" and steps[1].duration_s == 0.012
    assert steps[2].is_error and "error: boom" in steps[2].label
    detail = TaskDetail.model_validate(
        {"taskId": "t", "events": [e.to_wire() for e in events] + [{"bad": 1}]}
    )
    assert len(detail.events) == len(events)
