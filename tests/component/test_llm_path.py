"""The LLM path through the stack: a calculator task on a worker whose provider is ``openai``,
pointed at a scripted OpenAI-compatible server on 127.0.0.1 (the official SDK over a real
socket). The server rate-limits the first two calls; the task completes with the retries
visible, its events (stored by ingest, read back through query) carry the prompt, the
completion text, tokens and a numeric cost, and ``/api/metrics`` reports the cost per task,
agent, session and model. With ``LOOM_CAPTURE_CONTENT=false`` no event carries either text."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    start_pipeline,
    wait_count,
)
from tests.integration.harness import Stack, serve_asgi

pytestmark = pytest.mark.component

MODEL = "gpt-4o-mini"  # default price: $0.15 / $0.60 per million input / output tokens
PROMPT = "what is 6*7? (llm path)"
THOUGHT = "Using the calculator for 6*7, says the fake model."
ANSWER = "The fake model says the answer is 42."
SYSTEM_MARK = "You are Calculator."
TOKENS = [(40, 12), (60, 9)]  # (prompt, completion) tokens of the two calls


class FakeModel:
    """An OpenAI-compatible chat endpoint: 429 (Retry-After: 0.01) ``rate_limited`` times, then a
    calculator tool call, then (after the tool's result) a final answer."""

    def __init__(self, rate_limited: int) -> None:
        self.rate_limited = rate_limited
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""

    async def complete(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        self.requests.append(body)
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return JSONResponse({"error": {"message": "slow down"}}, 429, {"Retry-After": "0.01"})
        last = body["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": ANSWER}
            prompt_tokens, completion_tokens = TOKENS[1]
        else:
            arguments = json.dumps({"expression": "6*7"})
            message = {
                "role": "assistant",
                "content": THOUGHT,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": arguments},
                    }
                ],
            }
            prompt_tokens, completion_tokens = TOKENS[0]
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeModel]:
        app = Starlette(routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])])
        async with serve_asgi(app, "the fake model server") as url:
            self.base_url = f"{url}/v1"
            yield self


def expected_cost() -> float:
    return sum(i * 0.15 + o * 0.60 for i, o in TOKENS) / 1_000_000


async def run_calculator(
    stack: Stack, http: httpx.AsyncClient, database_url: str, *, capture: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], Any, FakeModel]:
    """Start the stack on the fake model, run one calculator task, return it, its stored
    observation events (read through query), the query service and the fake."""
    fake = FakeModel(rate_limited=2)
    async with fake.serving():
        _, query = await start_pipeline(stack, database_url)
        await stack.registry()
        await stack.dispatcher()
        await stack.worker(
            "llm0",
            "calculator",
            LOOM_LLM_PROVIDER="openai",
            LOOM_LLM_BASE_URL=fake.base_url,
            LOOM_LLM_MODEL=MODEL,
            LOOM_LLM_API_KEY="sk-test",
            LOOM_LLM_MAX_RETRIES="3",
            LOOM_LLM_TIMEOUT_S="10",
            LOOM_CAPTURE_CONTENT="true" if capture else "false",
        )
        await stack.wait_instances("calculator", 1)
        session = f"s-llm-{uuid.uuid4().hex[:8]}"
        resp = await http.post(
            f"{stack.api}/api/tasks",
            params={"wait": 30},
            json={"targetAgent": "calculator", "sessionId": session, "parameters": {"prompt": PROMPT}},
        )
        assert resp.status_code == 200, resp.text
        task = resp.json()
        assert task["status"] == "completed", task
        # the worker's last event of the task is memory.consolidate, the dispatcher's is
        # task.completed (published once the outcome is stored): wait until ingest stored both
        await wait_count(
            database_url,
            "SELECT count(*) FROM events WHERE task_id = $1"
            " AND type IN ('memory.consolidate', 'task.completed')",
            2,
            20,
            task["taskId"],
        )
        page = await http.get(
            f"{query.url}/api/events", params={"task_id": task["taskId"], "kind": "event", "limit": 1000}
        )
        assert page.status_code == 200, page.text
        return task, page.json()["events"], query, fake


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The data of the events of ``event_type``, by ReAct step."""
    found = [e["data"] for e in events if e["type"] == event_type]
    return sorted(found, key=lambda data: data.get("step") or 0)


async def test_the_events_carry_prompt_completion_tokens_cost_and_retries(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    task, events, query, fake = await run_calculator(stack, http, database_url, capture=True)

    assert task["result"]["answer"] == ANSWER
    assert task["result"]["usage"]["retries"] == 2  # two 429s, then 200
    assert len(fake.requests) == 4  # 2 rate-limited + 2 answered
    assert fake.requests[-1]["model"] == MODEL

    requests = of_type(events, "llm.request")
    usages = of_type(events, "llm.usage")
    assert len(requests) == len(usages) == 2
    first = requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0]["content"].startswith(SYSTEM_MARK)
    assert first[1]["content"] == PROMPT
    assert "calculator" in requests[0]["tools"]
    assert [m["role"] for m in requests[1]["messages"]] == ["system", "user", "assistant", "tool"]
    assert requests[1]["messages"][3]["content"] == "42"

    assert [u["completion"] for u in usages] == [THOUGHT, ANSWER]
    assert usages[0]["tool_calls"][0]["name"] == "calculator"
    assert [u["retries"] for u in usages] == [2, 0]
    assert [(u["input_tokens"], u["output_tokens"]) for u in usages] == TOKENS
    assert all(isinstance(u["cost_usd"], float) for u in usages)
    assert sum(u["cost_usd"] for u in usages) == pytest.approx(expected_cost())
    assert {u["model"] for u in usages} == {MODEL}
    assert of_type(events, "agent.thought")[0]["content"] == THOUGHT
    assert of_type(events, "agent.answer")[0]["answer"] == ANSWER

    # the cost per task, agent, session and model
    metrics = await http.get(f"{query.url}/api/metrics", params={"bucket": "1h"})
    assert metrics.status_code == 200, metrics.text
    cost = metrics.json()["cost"]
    assert cost["total"]["costUsd"] == pytest.approx(expected_cost())
    assert cost["total"]["llmCalls"] == 2 and cost["total"]["unpricedCalls"] == 0
    keys = {
        "byTask": task["taskId"],
        "bySession": task["sessionId"],
        "byAgent": "calculator",
        "byModel": MODEL,
    }
    for grouping, key in keys.items():
        (row,) = cost[grouping]
        assert row["key"] == key, grouping
        assert row["costUsd"] == pytest.approx(expected_cost()), grouping
        assert (row["inputTokens"], row["outputTokens"]) == (100, 21), grouping
    only = await http.get(f"{query.url}/api/metrics", params={"task_id": "no-such-task"})
    assert only.json()["cost"]["byTask"] == [] and only.json()["cost"]["total"]["costUsd"] == 0


async def test_without_content_capture_no_event_carries_prompt_or_completion(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    task, events, _, fake = await run_calculator(stack, http, database_url, capture=False)

    assert task["result"]["usage"]["retries"] == 2
    assert fake.requests[-1]["messages"][1]["content"] == PROMPT  # the model did get the prompt
    assert events
    for event in events:
        text = json.dumps(event)
        for secret in (PROMPT, THOUGHT, ANSWER, SYSTEM_MARK):
            assert secret not in text, (event["type"], secret)
    requests = of_type(events, "llm.request")
    usages = of_type(events, "llm.usage")
    assert [r["messages"] for r in requests] == [None, None]
    assert all(r["message_digests"] and r["system_digest"] for r in requests)
    assert [(u["completion"], u["content_captured"]) for u in usages] == [(None, False), (None, False)]
    assert [(u["input_tokens"], u["output_tokens"]) for u in usages] == TOKENS
    assert sum(u["cost_usd"] for u in usages) == pytest.approx(expected_cost())
    assert of_type(events, "agent.answer")[0]["answer"] is None
