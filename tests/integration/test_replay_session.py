"""Replay sessions over a recorded orchestrator run (real workers, dispatcher, ingest, TimescaleDB,
Redis, replay): step through every event forward and back, jump, play over a WebSocket, and the
errors for bad sessions, indexes and filters."""

from __future__ import annotations

import collections
import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from .events_support import database_url_fixture  # noqa: F401 (fixture)
from .harness import Stack
from .replay_support import TERMINAL, full_stack, run_task, trace_events, trace_of, wait_trace_stored

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PROMPT = "what is (2+3)*4 and hello"


def expected_at(events: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """What events 0..k say, counted directly (independent of the service's fold)."""
    tool_results: dict[str | None, list[Any]] = collections.defaultdict(list)
    llm_calls: collections.Counter[str | None] = collections.Counter()
    notes: collections.Counter[str | None] = collections.Counter()
    terminal: set[str | None] = set()
    for event in events[: k + 1]:
        task, kind = event.get("taskid"), event["type"]
        if kind == "tool.result":
            tool_results[task].append(event["data"]["content"])
        elif kind == "llm.usage":
            llm_calls[task] += 1
        elif kind == "memory.add":
            notes[event.get("sessionid") or task] += 1
        elif kind in {f"task.{s}" for s in TERMINAL} or kind in {f"loom.task.status.{s}" for s in TERMINAL}:
            terminal.add(task)
    return {"tool_results": tool_results, "llm_calls": llm_calls, "notes": notes, "terminal": terminal}


def check_state(state: dict[str, Any], events: list[dict[str, Any]], k: int) -> None:
    want = expected_at(events, k)
    assert state["eventsApplied"] == k + 1
    for task_id, task in state["tasks"].items():
        assert [r["content"] for r in task["toolResults"]] == want["tool_results"][task_id], (k, task_id)
        roles = collections.Counter(m["role"] for m in task["messages"])
        assert roles["assistant"] == want["llm_calls"][task_id], (k, task_id)
        assert roles["tool"] == len(want["tool_results"][task_id]), (k, task_id)
        assert (task["status"] in TERMINAL) == (task_id in want["terminal"]), (k, task_id, task["status"])
    for key, memory in state["memory"].items():
        assert sum(len(memory[tier]) for tier in ("session", "working", "long_term")) == want["notes"][key], k


async def test_step_through_an_orchestrator_run_and_back_with_the_state_at_each_event(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    # two replay replicas as processes: a session is served by whichever one gets the request
    replay, other = await full_stack(stack, database_url, replicas=2, process_replays=True)
    session_key = f"s-replay-{stack.prefix}"
    task = await run_task(http, stack, "orchestrator", {"prompt": PROMPT}, sessionId=session_key)
    assert task["status"] == "completed" and task["result"]["answer"] == "20; hello", task
    trace = trace_of(task)
    await wait_trace_stored(database_url, trace)
    root = task["taskId"]
    calculator = next(c["task_id"] for c in task["result"]["children"] if c["agent"] == "calculator")

    created = await http.post(f"{replay.url}/api/replay/create", params={"trace_id": trace})
    assert created.status_code == 201, created.text
    session = created.json()
    events = await trace_events(database_url, trace, as_of=session["selection"]["as_of"])
    assert session["total"] == len(events) and session["index"] == -1
    sid = session["sessionId"]

    # forward through every event
    forward: list[dict[str, Any]] = []
    for k in range(len(events)):
        resp = await http.post(f"{replay.url}/api/replay/{sid}/step", params={"direction": "forward"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["index"], body["total"]) == (k, len(events))
        assert body["event"] == events[k]
        check_state(body["state"], events, k)
        forward.append(body["state"])
    at_end = await http.post(f"{replay.url}/api/replay/{sid}/step", params={"direction": "forward"})
    assert at_end.status_code == 409 and "last event" in at_end.json()["error"]["message"]

    # the final state is the run's outcome
    final = forward[-1]
    assert final["tasks"][root]["status"] == "completed"
    assert final["tasks"][root]["answer"] == task["result"]["answer"]
    assert final["tasks"][root]["result"] == task["result"]
    assert [d["agent"] for d in final["tasks"][root]["delegations"]] == ["calculator", "echo"]
    conversation = [
        (m["role"], m["content"], [(c["name"], c["arguments"]) for c in m.get("toolCalls", [])])
        for m in final["tasks"][calculator]["messages"]
    ]
    assert conversation == [
        ("user", "what is (2+3)*4", []),
        (
            "assistant",
            "I will evaluate (2+3)*4 with the calculator.",
            [("calculator", {"expression": "(2+3)*4"})],
        ),
        ("tool", "20", []),
        ("assistant", "20", []),
    ]
    assert final["tasks"][calculator]["usage"]["llmCalls"] == 2

    # memory by tier as it was: the child results sit in the session tier until the
    # orchestrator consolidates, then in long-term memory
    consolidate = next(
        k for k, e in enumerate(events) if e["type"] == "memory.consolidate" and e.get("taskid") == root
    )
    before, after = (
        forward[consolidate - 1]["memory"][session_key],
        forward[consolidate]["memory"][session_key],
    )
    assert [n["role"] for n in before["session"]] == ["child_result", "child_result"]
    assert before["long_term"] == []
    assert after["session"] == []
    assert sorted(n["content"] for n in after["long_term"]) == [
        "calculator answered: 20",
        "echo answered: hello",
    ]
    assert [n["role"] for n in after["working"]] == ["observation"]  # the calculator's tool observation

    # backward to the start: the same states, whichever replica serves the session
    for k in range(len(events) - 2, -1, -1):
        url = (replay, other)[k % 2].url
        resp = await http.post(f"{url}/api/replay/{sid}/step", params={"direction": "backward"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["index"] == k and body["event"] == events[k]
        assert body["state"] == forward[k], k
    at_start = await http.post(f"{replay.url}/api/replay/{sid}/step", params={"direction": "backward"})
    assert at_start.status_code == 409 and "first event" in at_start.json()["error"]["message"]

    # jumps
    for k in (len(events) - 1, 0, consolidate, len(events) // 2):
        resp = await http.post(f"{replay.url}/api/replay/{sid}/jump", params={"index": k})
        assert resp.status_code == 200, resp.text
        assert resp.json()["event"] == events[k] and resp.json()["state"] == forward[k]
    without_state = await http.post(
        f"{replay.url}/api/replay/{sid}/jump", params={"index": 3, "state": "false"}
    )
    assert "state" not in without_state.json() and without_state.json()["index"] == 3
    answer = next(
        k for k, e in enumerate(events) if e["type"] == "agent.answer" and e["taskid"] == calculator
    )
    scoped = (
        await http.post(f"{replay.url}/api/replay/{sid}/jump", params={"index": answer, "state": "task"})
    ).json()
    assert scoped["state"]["tasks"] == {calculator: forward[answer]["tasks"][calculator]}
    assert scoped["state"]["memory"] == {session_key: forward[answer]["memory"][session_key]}
    resp = await http.post(f"{replay.url}/api/replay/{sid}/jump", params={"index": 3})
    assert resp.json()["state"] == forward[3]
    described = (await http.get(f"{replay.url}/api/replay/{sid}")).json()
    assert (described["index"], described["total"]) == (3, len(events))

    # a session over one task (JSON body) and over a time window
    by_task = await http.post(f"{replay.url}/api/replay/create", json={"taskId": calculator})
    assert by_task.status_code == 201, by_task.text
    assert by_task.json()["total"] == sum(1 for e in events if e.get("taskid") == calculator)
    start, end = events[5]["time"], events[10]["time"]
    window = await http.post(
        f"{replay.url}/api/replay/create", params={"trace_id": trace, "start_time": start, "end_time": end}
    )
    assert window.status_code == 201, window.text
    in_window = [e for e in events if _when(start) <= _when(e["time"]) <= _when(end)]
    assert window.json()["total"] == len(in_window)
    first = await http.post(f"{replay.url}/api/replay/{window.json()['sessionId']}/step")
    assert first.json()["event"] == in_window[0]

    await _bad_requests(http, replay.url, sid, len(events), trace)
    await _play(replay.url, sid, events)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _bad_requests(http: httpx.AsyncClient, url: str, sid: str, total: int, trace: str) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("post", f"/api/replay/{sid}/jump", {"index": total}, 422, f"index {total} is out of range"),
        ("post", f"/api/replay/{sid}/jump", {"index": -1}, 422, "index -1 is out of range"),
        ("post", f"/api/replay/{sid}/jump", {"index": "x"}, 422, "integer"),
        ("post", f"/api/replay/{sid}/step", {"direction": "sideways"}, 422, "forward"),
        ("post", f"/api/replay/{sid}/jump", {"index": 0, "state": "some"}, 422, "full"),
        ("post", "/api/replay/nope/step", {}, 404, "no replay session 'nope'"),
        ("post", "/api/replay/nope/jump", {"index": 0}, 404, "no replay session 'nope'"),
        ("get", "/api/replay/nope", {}, 404, "no replay session 'nope'"),
        ("delete", "/api/replay/nope", {}, 404, "no replay session 'nope'"),
        ("post", "/api/replay/create", {}, 422, "give a trace_id, a task_id or a session_id"),
        ("post", "/api/replay/create", {"trace_id": "0" * 31 + "1"}, 404, "no events for trace_id"),
        (
            "post",
            "/api/replay/create",
            {"trace_id": trace, "start_time": "2030-01-01T00:00:00Z", "end_time": "2029-01-01T00:00:00Z"},
            422,
            "is after end_time",
        ),
        ("post", "/api/replay/create", {"trace_id": trace, "start_time": "yesterday"}, 422, "datetime"),
    ]
    for method, path, params, status, reason in cases:
        resp = await http.request(method.upper(), f"{url}{path}", params=params)
        assert resp.status_code == status, (path, params, resp.text)
        assert reason in json.dumps(resp.json()), (path, params, resp.text)


async def _play(url: str, sid: str, events: list[dict[str, Any]]) -> None:
    base = url.replace("http://", "ws://")
    # the whole trace, in order, at a high speed
    async with websockets.connect(f"{base}/api/replay/{sid}/play?speed=1000") as ws:
        started = json.loads(await ws.recv())
        assert started["type"] == "started" and started["total"] == len(events)
        played = []
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "end":
                break
            assert message["type"] == "event", message
            played.append(message)
        assert [m["index"] for m in played] == list(range(len(events)))
        assert [m["event"] for m in played] == events

    # the original spacing, scaled: at speed 0.5 the run takes about twice as long as it did
    span = (_when(events[-1]["time"]) - _when(events[0]["time"])).total_seconds()
    async with websockets.connect(f"{base}/api/replay/{sid}/play?speed=0.5") as ws:
        started_at = time.monotonic()
        while json.loads(await ws.recv())["type"] != "end":
            pass
        assert time.monotonic() - started_at >= 2 * span * 0.9, span

    # pause, resume and speed up over the socket
    async with websockets.connect(f"{base}/api/replay/{sid}/play?speed=0.001") as ws:
        assert json.loads(await ws.recv())["type"] == "started"
        assert (await _until(ws, "event"))["index"] == 0  # the first event goes out at once
        await ws.send(json.dumps({"action": "pause"}))
        assert await _until(ws, "paused") == {"type": "paused", "index": 0}
        await ws.send(json.dumps({"action": "speed", "speed": 1000}))
        assert json.loads(await ws.recv()) == {"type": "speed", "speed": 1000.0}
        await ws.send(json.dumps({"action": "resume"}))
        assert json.loads(await ws.recv()) == {"type": "resumed", "index": 0}
        rest = []
        while (message := json.loads(await ws.recv()))["type"] != "end":
            rest.append(message["index"])
        assert rest == list(range(1, len(events)))

    # a breakpoint from the query, then one sent over the socket; pause, seek, resume
    tool_result = next(k for k, e in enumerate(events) if e["type"] == "tool.result")
    answers = [k for k, e in enumerate(events) if e["type"] == "agent.answer"]
    async with websockets.connect(
        f"{base}/api/replay/{sid}/play?speed=1000&type=tool.*&node=calculator"
    ) as ws:
        assert json.loads(await ws.recv())["breakpoints"] == [{"type": "tool.*", "node": "calculator"}]
        first_tool = next(k for k, e in enumerate(events) if e["type"].startswith("tool."))
        message = await _until(ws, "breakpoint")
        assert message["index"] == first_tool and message["event"] == events[first_tool]
        assert message["state"]["eventsApplied"] == first_tool + 1
        await ws.send(json.dumps({"action": "breakpoint", "clear": True}))
        assert json.loads(await ws.recv()) == {"type": "breakpoints", "breakpoints": []}
        await ws.send(json.dumps({"action": "breakpoint", "type": "agent.answer"}))
        assert json.loads(await ws.recv())["breakpoints"] == [{"type": "agent.answer"}]
        await ws.send(json.dumps({"action": "seek", "index": tool_result}))
        assert json.loads(await ws.recv()) == {"type": "seeked", "index": tool_result}
        await ws.send(json.dumps({"action": "resume"}))
        assert json.loads(await ws.recv())["type"] == "resumed"
        message = await _until(ws, "event")
        assert message["index"] == tool_result
        message = await _until(ws, "breakpoint")
        assert message["index"] == answers[0]
        await ws.send(json.dumps({"action": "seek", "index": len(events)}))
        refused = json.loads(await ws.recv())
        assert refused["type"] == "error" and refused["status"] == 422 and "seek index" in refused["reason"]
        await ws.send(json.dumps({"action": "breakpoint", "error": "maybe"}))
        refused = json.loads(await ws.recv())
        assert refused["status"] == 422 and "error must be true or false" in refused["reason"]
        await ws.send(json.dumps({"action": "rewind"}))
        assert "unknown action 'rewind'" in json.loads(await ws.recv())["reason"]

    # bad sessions and filters are refused at the handshake, with a reason
    for path, status, reason in [
        ("/api/replay/nope/play", 404, "no replay session 'nope'"),
        (f"/api/replay/{sid}/play?error=maybe", 422, "error must be true or false"),
        (f"/api/replay/{sid}/play?speed=0", 422, "speed must be > 0"),
        (f"/api/replay/{sid}/play?from={len(events)}", 422, "from must be in"),
        (f"/api/replay/{sid}/play?colour=red", 422, "unknown query parameter"),
    ]:
        with pytest.raises(InvalidStatus) as refused_handshake:
            async with websockets.connect(f"{base}{path}"):
                pass
        response = refused_handshake.value.response
        assert response.status_code == status, path
        assert reason in response.body.decode(), (path, response.body)


async def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await ws.recv())
        if message["type"] == kind:
            return message
