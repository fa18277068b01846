"""Streaming answers through the stack: a task with ``action: "stream"`` publishes its answer in
chunks on ``loom.stream.<task_id>`` (core NATS) while it runs, and the dispatcher re-serves them
as Server-Sent Events on ``GET /api/tasks/{taskId}/stream``: chunks in order, joined equal to the
final answer, then a ``done`` event with the result; a reader that comes late gets the same;
an unknown task is 404; a task that never starts ends the stream with ``timeout``. The live
WebSocket of query carries the same chunks to a client that filters on the task."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    start_pipeline,
    ws_url,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.component

ANSWER = "Six times seven is 42, the calculator says, and that is the whole answer."
SCRIPT = [
    {"thought": "I should use the calculator.", "tool": "calculator", "arguments": {"expression": "6*7"}},
    {"answer": ANSWER},
]


async def read_events(http: httpx.AsyncClient, url: str, **params: Any) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of ``url`` as (event name, data), read until the server ends the stream."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("GET", url, params=params, timeout=20) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        name, data = "message", ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
            elif line == "" and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""
    return events


async def start(stack: Stack) -> None:
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("s1", agents="calculator")
    await stack.wait_instances("calculator", 1)


def check_answer(events: list[tuple[str, dict[str, Any]]], task_id: str) -> str:
    """The chunks are in order, end with the worker's done chunk and the done event; returns the
    joined text."""
    chunks = [data for name, data in events if name == "message"]
    assert [name for name, _ in events][-1] == "done"
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert {c["taskId"] for c in chunks} == {task_id}
    assert chunks[-1]["done"] is True and not any(c["done"] for c in chunks[:-1])
    assert not any(c["discard"] for c in chunks)  # the tool step streamed nothing
    texts = [c["delta"] for c in chunks if c["delta"]]
    assert len(texts) > 3  # word by word, not the answer at once
    assert {c["step"] for c in chunks if c["delta"]} == {2}
    return "".join(texts)


async def test_a_stream_task_streams_its_answer_as_sse(stack: Stack, http: httpx.AsyncClient) -> None:
    await start(stack)
    resp = await http.post(
        f"{stack.api}/api/tasks",
        json={"targetAgent": "calculator", "action": "stream", "parameters": {"script": SCRIPT}},
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["taskId"]
    events = await read_events(http, f"{stack.api}/api/tasks/{task_id}/stream", timeout=15)
    assert check_answer(events, task_id) == ANSWER
    done = events[-1][1]
    assert done["taskId"] == task_id and done["status"] == "completed"
    assert done["result"]["answer"] == ANSWER
    stored = (await http.get(f"{stack.api}/api/tasks/{task_id}")).json()
    assert stored["status"] == "completed" and stored["result"]["answer"] == ANSWER

    # a reader that comes after the end gets the same chunks (kept by the dispatcher) and done
    late = await read_events(http, f"{stack.api}/api/tasks/{task_id}/stream", timeout=15)
    assert late == events


async def test_a_task_that_does_not_stream_ends_with_done_only(stack: Stack, http: httpx.AsyncClient) -> None:
    await start(stack)
    resp = await http.post(
        f"{stack.api}/api/tasks",
        params={"wait": 10},
        json={"targetAgent": "calculator", "action": "execute", "parameters": {"prompt": "what is 6*7?"}},
    )
    assert resp.status_code == 200, resp.text
    task_id = resp.json()["taskId"]
    events = await read_events(http, f"{stack.api}/api/tasks/{task_id}/stream", timeout=15)
    assert events == [
        ("done", {"taskId": task_id, "status": "completed", "result": resp.json()["result"], "error": None})
    ]


async def test_unknown_task_is_404_and_a_task_that_never_starts_times_out(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    await start(stack)
    missing = await http.get(f"{stack.api}/api/tasks/no-such-task/stream")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "no-such-task" in missing.json()["error"]["message"]
    bad = await http.get(f"{stack.api}/api/tasks/no-such-task/stream", params={"timeout": 0})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"

    resp = await http.post(  # an agent nobody runs: accepted, waits for an instance
        f"{stack.api}/api/tasks",
        params={"waitForAgent": "true"},
        json={"targetAgent": "ghost-writer", "action": "stream", "parameters": {"prompt": "hello"}},
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["taskId"]
    events = await read_events(http, f"{stack.api}/api/tasks/{task_id}/stream", timeout=0.5)
    assert events == [("timeout", {"taskId": task_id, "waitedS": 0.5})]


async def test_the_live_websocket_carries_the_chunks_of_a_task(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    await start(stack)
    _, query = await start_pipeline(stack, database_url)
    task_id = f"stream-{uuid.uuid4().hex[:12]}"
    async with connect(ws_url(query, "/ws/events")) as ws:
        await ws.send(json.dumps({"filters": {"task_id": task_id, "event_type": "task.stream"}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["type"] == "subscribed", reply
        resp = await http.post(
            f"{stack.api}/api/tasks",
            json={
                "taskId": task_id,
                "targetAgent": "calculator",
                "action": "stream",
                "parameters": {"script": SCRIPT},
            },
        )
        assert resp.status_code == 202, resp.text
        chunks: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not (chunks and chunks[-1]["done"]):
                frame = json.loads(await ws.recv())
                assert frame["type"] == "chunk", frame
                chunks.append(frame["data"])
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["delta"] for c in chunks) == ANSWER
