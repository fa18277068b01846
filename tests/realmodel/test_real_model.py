"""The LLM path on a real model: a calculator task through the stack (registry, dispatcher, a
worker whose provider is ``openai``, in the test's process) against llama-cpp-python's server
running SmolLM2-135M-Instruct on 127.0.0.1 (``serve_model.py`` says how little it adapts in the
requests for a 135M model).

What is checked is the protocol and the event flow, not the model's arithmetic (a 135M model
writes a poor expression and a poorer answer): the task ends ``completed``; every
``llm.request`` has its ``llm.usage`` with the token counts the server reported; the model
called ``calculator`` with JSON arguments the provider parsed into an object, the tool's result
is an event of the task and went back to the model in the next request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from loom_protocol import EventType, is_terminal

from tests.integration.events_support import EventListener
from tests.integration.harness import Stack, wait_for
from tests.realmodel.model_server import ModelServer

pytestmark = [pytest.mark.realmodel, pytest.mark.timeout(600)]

PROMPT = "what is 6*7?"
TASK_DEADLINE_S = 300.0  # 2 cores; each step is a few short greedy completions of a 135M model


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The data of the events of ``event_type``, in the order they were published."""
    return [e["data"] for e in events if e["type"] == event_type]


async def test_a_calculator_task_runs_on_a_real_small_model(
    stack: Stack, http: httpx.AsyncClient, model_server: ModelServer
) -> None:
    listener = EventListener()
    await listener.attach(await stack.nats())
    await stack.registry()
    await stack.dispatcher(LOOM_TASK_TIMEOUT_S=str(TASK_DEADLINE_S))
    await stack.worker(
        "real0",
        "calculator",
        LOOM_LLM_PROVIDER="openai",
        LOOM_LLM_BASE_URL=model_server.base_url,
        LOOM_LLM_MODEL=model_server.model,
        LOOM_LLM_TIMEOUT_S="120",
        LOOM_LLM_TEMPERATURE="0",  # greedy: a run is repeatable
        LOOM_LLM_TOOL_CHOICE="auto",  # llama-cpp-python hides the tools without it
        LOOM_LLM_MAX_RETRIES="0",  # a failed call fails the task at once, with the server's answer
    )
    await stack.wait_instances("calculator", 1)

    resp = await http.post(
        f"{stack.api}/api/tasks", json={"targetAgent": "calculator", "parameters": {"prompt": PROMPT}}
    )
    assert resp.status_code in (200, 202), resp.text
    task_id = resp.json()["taskId"]

    async def terminal() -> dict[str, Any] | None:
        task: dict[str, Any] = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
        return task if is_terminal(task["status"]) else None

    task = await wait_for(terminal, TASK_DEADLINE_S, f"task {task_id} to end", 0.5)

    def events() -> list[dict[str, Any]]:
        return [e for e in map(listener.by_id.get, listener.ids) if e and e.get("taskid") == task_id]

    assert task["status"] == "completed", (task, [(e["type"], e["data"]) for e in events()])
    # the worker's last event of a completed task (heard on loom.event.>: no ingest, no database)
    consolidated = EventType.MEMORY_CONSOLIDATE
    await wait_for(lambda: of_type(events(), consolidated), 30, f"the task's {consolidated} event")
    flow = events()

    requests = of_type(flow, EventType.LLM_REQUEST)
    usages = of_type(flow, EventType.LLM_USAGE)
    assert requests and len(requests) == len(usages) == task["result"]["steps"]
    assert [r["step"] for r in requests] == [u["step"] for u in usages] == list(range(1, len(requests) + 1))
    for request in requests:
        assert (request["provider"], request["model"]) == ("openai", model_server.model)
        assert "calculator" in request["tools"]
    assert requests[0]["messages"][-1] == {"role": "user", "content": PROMPT}
    for usage in usages:  # counted by llama.cpp, reported in the answer's usage
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, usage
        assert usage["provider"] == "openai" and usage["retries"] == 0
    totals = task["result"]["usage"]
    assert totals["llm_calls"] == len(usages)
    assert totals["input_tokens"] == sum(u["input_tokens"] for u in usages)
    assert totals["output_tokens"] == sum(u["output_tokens"] for u in usages)

    # the model asked for the calculator; the provider parsed its arguments into an object
    asked = [call for usage in usages for call in usage["tool_calls"]]
    assert any(call["name"] == "calculator" for call in asked), usages
    calls = of_type(flow, EventType.TOOL_CALL)
    results = of_type(flow, EventType.TOOL_RESULT)
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        (c["call_id"], c["name"], c["arguments"]) for c in asked
    ]
    calculator = [c for c in calls if c["name"] == "calculator"]
    assert all(isinstance(c["arguments"].get("expression"), str) for c in calculator), calculator
    assert [r["call_id"] for r in results] == [c["call_id"] for c in calls]
    assert all(r["name"] == c["name"] for r, c in zip(results, calls, strict=True))
    assert all(r["duration_ms"] is not None for r in results)
    # the result went back to the model as the tool message of the next request
    first = next(i for i, usage in enumerate(usages) if usage["tool_calls"])
    tool_messages = [m for m in requests[first + 1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [c["call_id"] for c in usages[first]["tool_calls"]]

    answers = of_type(flow, EventType.AGENT_ANSWER)
    assert len(answers) == 1 and answers[0]["steps"] == len(requests)
    assert answers[0]["answer"] == task["result"]["answer"]
