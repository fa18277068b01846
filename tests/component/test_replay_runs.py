"""Deterministic replay and re-run forks of recorded tasks, through the real dispatcher and worker:
the replay runs the real agent code against the recording rebuilt from the events table, in a
trace of its own, and never touches the original's rows."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.events_support import database_url_fixture, fetchval  # noqa: F401 (fixture)
from tests.integration.harness import Stack
from tests.integration.replay_support import full_stack, run_task, trace_events, trace_of, wait_trace_stored

pytestmark = [pytest.mark.component, pytest.mark.timeout(300)]

ROWS_OF_TRACE = "SELECT count(*) FROM events WHERE trace_id = $1"
ROWS_OF_TASK = "SELECT count(*) FROM events WHERE task_id = $1"


async def recorded(
    http: httpx.AsyncClient, stack: Stack, database_url: str, agent: str, parameters: Any
) -> Any:
    task = await run_task(http, stack, agent, parameters)
    assert task["status"] == "completed", task
    await wait_trace_stored(database_url, trace_of(task))
    return task


async def test_deterministic_replay_finds_no_divergence_and_a_tampered_tool_result_at_its_step(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    (replay,) = await full_stack(stack, database_url)
    original = await recorded(http, stack, database_url, "calculator", {"prompt": "what is (2+3)*4?"})
    trace = trace_of(original)
    rows_before = await fetchval(database_url, ROWS_OF_TRACE, trace)

    resp = await http.post(f"{replay.url}/api/replay/deterministic", json={"taskId": original["taskId"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["diverged"] is False, body
    assert body["original"]["answer"] == body["replay"]["answer"] == "20"
    assert body["original"]["steps"] == body["replay"]["steps"] == 2
    assert body["replay"]["report"]["replayed"] == {"llmCalls": 2, "toolCalls": 1, "children": 0}
    replay_trace = body["replay"]["traceId"]
    assert replay_trace and replay_trace != trace

    # the replay ran in a trace of its own, answered from the recording: the LLM is the
    # recorded provider and the tool result carries the original's measured duration
    await wait_trace_stored(database_url, replay_trace)
    assert await fetchval(database_url, ROWS_OF_TRACE, trace) == rows_before
    replayed_events = await trace_events(database_url, replay_trace)
    original_events = await trace_events(database_url, trace)
    model = next(e["data"]["model"] for e in original_events if e["type"] == "llm.usage")
    subjects = {e["subject"] for e in replayed_events if e["type"] == "llm.request"}
    assert subjects == {f"llm:recorded/{model}"}

    def tool_results(events: list[dict[str, Any]]) -> list[Any]:
        return [
            (e["data"]["content"], e["data"]["duration_ms"]) for e in events if e["type"] == "tool.result"
        ]

    assert tool_results(replayed_events) == tool_results(original_events)

    # tamper with the recorded tool result: the real agent sends the LLM a different
    # conversation at the step that consumes it (step 2), which the recording does not match
    resp = await http.post(
        f"{replay.url}/api/replay/deterministic",
        json={"taskId": original["taskId"], "overrides": {"toolResults": {"0": "21"}}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["diverged"], body["step"], body["at"], body["tampered"]) == (True, 2, "llm", True), body
    assert (body["expected"]["role"], body["expected"]["content"]) == ("tool", "20")
    assert body["expected"]["toolCall"] == 0  # the tampered call
    assert (body["got"]["role"], body["got"]["content"]) == ("tool", "21")
    assert "LLM step 2" in body["reason"]

    # an orchestrator: its delegations are answered from the recorded child tasks
    orchestrated = await recorded(
        http, stack, database_url, "orchestrator", {"prompt": "what is 6*7 and hello"}
    )
    resp = await http.post(f"{replay.url}/api/replay/deterministic", json={"taskId": orchestrated["taskId"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["diverged"] is False, body
    assert body["replay"]["answer"] == orchestrated["result"]["answer"] == "42; hello"
    await wait_trace_stored(database_url, body["replay"]["traceId"])
    replay_tasks = await fetchval(
        database_url,
        "SELECT count(DISTINCT task_id) FROM events WHERE trace_id = $1",
        body["replay"]["traceId"],
    )
    assert replay_tasks == 1  # no child task ran

    resp = await http.post(
        f"{replay.url}/api/replay/deterministic",
        json={"taskId": orchestrated["taskId"], "overrides": {"childResults": {"0": {"answer": "41"}}}},
    )
    body = resp.json()
    assert (body["diverged"], body["at"], body["expected"], body["got"]) == (
        True,
        "answer",
        "42; hello",
        "41; hello",
    )

    # bad requests
    for payload, status, reason in [
        ({"taskId": "no-such-task"}, 404, "no events for task 'no-such-task'"),
        ({"taskId": original["taskId"], "overrides": {"toolResults": {"3": "x"}}}, 422, "has 1 tool calls"),
        (
            {"taskId": original["taskId"], "overrides": {"toolResults": {"first": "x"}}},
            422,
            "must be integers",
        ),
        ({"taskId": original["taskId"], "overrides": {"memory": {}}}, 422, "memory"),
        ({"task": original["taskId"]}, 422, "taskId"),
    ]:
        resp = await http.post(f"{replay.url}/api/replay/deterministic", json=payload)
        assert resp.status_code == status, (payload, resp.text)
        assert reason in resp.text, (payload, resp.text)


async def test_fork_from_step_n_with_a_new_plan_runs_live_and_leaves_the_original_untouched(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    (replay,) = await full_stack(stack, database_url)
    script = [
        {"thought": "add", "tool": "calculator", "arguments": {"expression": "2+3"}},
        {"answer": "5"},
    ]
    original = await recorded(
        http, stack, database_url, "calculator", {"prompt": "add 2 and 3", "script": script}
    )
    trace = trace_of(original)
    trace_rows, task_rows = (
        await fetchval(database_url, ROWS_OF_TRACE, trace),
        await fetchval(database_url, ROWS_OF_TASK, original["taskId"]),
    )
    new_plan = [
        {"thought": "double it", "tool": "calculator", "arguments": {"expression": "5*2"}},
        {"answer": "10"},
    ]

    resp = await http.post(
        f"{replay.url}/api/replay/fork",
        json={
            "taskId": original["taskId"],
            "fromStep": 2,
            "changes": {"script": new_plan, "model": "scripted-v2"},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    fork = body["fork"]
    assert fork["status"] == "completed", body
    assert (body["original"]["answer"], fork["answer"]) == ("5", "10")
    assert (body["original"]["steps"], fork["steps"]) == (2, 3)
    comparison = body["comparison"]
    assert comparison["sameAnswer"] is False
    assert comparison["answer"] == {"original": "5", "fork": "10", "delta": None}
    assert comparison["steps"] == {"original": 2, "fork": 3, "delta": 1}
    assert (
        comparison["tokens"]["original"] > 0
        and comparison["tokens"]["fork"] > comparison["tokens"]["original"]
    )
    assert comparison["latencyS"]["original"] > 0 and comparison["latencyS"]["fork"] > 0
    assert fork["traceId"] and fork["traceId"] != trace

    # the fork is a task of its own, linked to the original
    task = (await http.get(f"{stack.api}/api/tasks/{fork['taskId']}")).json()
    assert task["metadata"]["forkOf"] == original["taskId"]
    assert task["metadata"]["replay"]["fromStep"] == 2
    assert task["result"]["fork"] == {"originalTaskId": original["taskId"], "fromStep": 2, "replayed": 1}

    # step 1 came from the recording, steps 2 and 3 ran live with the new model and plan
    await wait_trace_stored(database_url, fork["traceId"])
    fork_events = await trace_events(database_url, fork["traceId"])
    models = [e["data"]["model"] for e in fork_events if e["type"] == "llm.usage"]
    original_model = next(
        e["data"]["model"] for e in await trace_events(database_url, trace) if e["type"] == "llm.usage"
    )
    assert original_model != "scripted-v2"
    assert models == [original_model, "scripted-v2", "scripted-v2"]
    calls = [e["data"]["arguments"] for e in fork_events if e["type"] == "tool.call"]
    assert calls == [{"expression": "2+3"}, {"expression": "5*2"}]

    # the original is untouched
    assert await fetchval(database_url, ROWS_OF_TRACE, trace) == trace_rows
    assert await fetchval(database_url, ROWS_OF_TASK, original["taskId"]) == task_rows

    # a fork that changes only the prompt, from step 1 (everything live)
    resp = await http.post(
        f"{replay.url}/api/replay/fork",
        json={
            "taskId": original["taskId"],
            "fromStep": 1,
            "changes": {"prompt": "what is 7*6?", "parameters": {"script": None}},
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["fork"]["answer"] == "42", resp.json()

    # a change the worker cannot make fails the fork task with the reason
    resp = await http.post(
        f"{replay.url}/api/replay/fork",
        json={"taskId": original["taskId"], "fromStep": 1, "changes": {"provider": "openai"}},
    )
    assert resp.json()["fork"]["status"] == "failed"
    assert "cannot switch to provider 'openai'" in resp.json()["fork"]["error"]

    for payload, status, reason in [
        ({"taskId": original["taskId"], "fromStep": 3}, 422, "from_step must be in 1..2"),
        ({"taskId": original["taskId"], "fromStep": 0}, 422, "greater than or equal to 1"),
        ({"taskId": original["taskId"], "fromStep": 1, "changes": {"temperature": 2}}, 422, "temperature"),
        ({"taskId": "no-such-task", "fromStep": 1}, 404, "no events for task 'no-such-task'"),
        (
            {
                "taskId": original["taskId"],
                "fromStep": 1,
                "changes": {"script": new_plan, "parameters": {"script": []}},
            },
            422,
            "not both",
        ),
    ]:
        resp = await http.post(f"{replay.url}/api/replay/fork", json=payload)
        assert resp.status_code == status, (payload, resp.text)
        assert reason in resp.text, (payload, resp.text)
