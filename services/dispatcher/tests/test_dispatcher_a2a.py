"""The A2A server's pieces without a running stack: hostile JSON-RPC input (no backend reached),
Loom tasks and cards as the A2A proto has them (checked by the a2a-sdk's own protobuf types,
strictly), messages read as task inputs and approval decisions, the stream of a followed task
from scripted NATS items, and ListTasks paging on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from a2a.types import AgentCard as ProtoCard
from a2a.types import ListTasksResponse as ProtoList
from a2a.types import StreamResponse as ProtoStream
from a2a.types import Task as ProtoTask
from fastapi.testclient import TestClient
from google.protobuf import json_format
from loom_dispatcher.a2a import methods
from loom_dispatcher.a2a.cards import CardBook, agent_card, deployment_card
from loom_dispatcher.a2a.errors import A2AError
from loom_dispatcher.a2a.feed import StepEvent, TaskFeed
from loom_dispatcher.a2a.listing import TaskIndex, list_tasks
from loom_dispatcher.a2a.mapping import decision_of, state_of, task_inputs, task_of
from loom_dispatcher.a2a.progress import progress
from loom_dispatcher.a2a.wire import ListTasksRequest, Message, SendMessageRequest, TaskState
from loom_dispatcher.admission import unknown_agent_reason
from loom_dispatcher.app import create_app
from loom_dispatcher.store import TaskStore
from loom_protocol import (
    AgentCapability,
    AgentCard,
    ApprovalRequest,
    Heartbeat,
    InstanceLoad,
    Task,
    TaskStatus,
    TaskStatusChanged,
    subjects,
)
from redis.asyncio import Redis

V1 = {"A2A-Version": "1.0"}
S = TaskStatus


def strictly(body: dict[str, Any], proto: Any) -> Any:
    """``body`` parsed as the proto message, refusing any field the proto does not have."""
    return json_format.ParseDict(body, proto)


def call(client: TestClient, body: Any, headers: dict[str, str] = V1, path: str = "/a2a/calculator") -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = client.post(path, content=raw, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    return resp.json()


def code(answer: dict[str, Any]) -> int:
    assert "result" not in answer, answer
    return int(answer["error"]["code"])


# -- hostile input ------------------------------------------------------------------------------


def test_hostile_input_gets_json_rpc_errors_and_never_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    client = TestClient(create_app())  # no lifespan: none of these answers reaches NATS or Redis
    get = {"jsonrpc": "2.0", "id": "r1", "method": "GetTask", "params": {"id": "t"}}
    assert code(call(client, b"{'not': json}")) == -32700
    assert code(call(client, b"\xff\xfe\x00")) == -32700
    assert code(call(client, b"")) == -32700
    assert (
        code(call(client, b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": NaN}}'))
        == -32700
    )
    assert code(call(client, b"[" * 100_000 + b"]" * 100_000)) == -32700
    for body in (
        [get],
        "GetTask",
        42,
        None,
        {**get, "jsonrpc": "1.0"},
        {**get, "method": 7},
        {**get, "id": 1.5},
    ):
        answer = call(client, body)
        assert code(answer) == -32600, body
    assert call(client, {**get, "id": [1]})["id"] is None
    too_big = b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "x": "' + b"a" * 2_200_000 + b'"}'
    assert code(call(client, too_big)) == -32600
    unknown = call(client, {**get, "method": "tasks/get"})
    assert (code(unknown), unknown["id"]) == (-32601, "r1")
    assert unknown["error"]["data"][0]["reason"] == "METHOD_NOT_FOUND"

    for headers in ({}, {"A2A-Version": "0.3"}, {"A2A-Version": "2.0"}, {"A2A-Version": "one"}):
        refused = call(client, get, headers)
        assert code(refused) == -32009, headers
        assert refused["error"]["data"][0]["metadata"]["supportedVersions"] == "1.0"
    for version in ("1.0", "1.0.2", " 1.0 "):  # patch versions do not count; the method then answers
        assert (
            code(call(client, {**get, "method": "GetExtendedAgentCard"}, {"A2A-Version": version})) == -32004
        )
    assert (
        code(client.post("/a2a/x?A2A-Version=1.0", json={**get, "method": "GetExtendedAgentCard"}).json())
        == -32004
    )

    def params(method: str, value: Any) -> int:
        return code(call(client, {"jsonrpc": "2.0", "id": 1, "method": method, "params": value}))

    assert params("GetTask", []) == -32602
    assert params("GetTask", {"id": {"nested": True}}) == -32602
    assert params("ListTasks", {"pageSize": 0}) == -32602
    assert params("ListTasks", {"status": "TASK_STATE_SLEEPY"}) == -32602
    assert params("ListTasks", {"pageToken": "not-a-token!"}) == -32602
    part = {"messageId": "m", "role": "ROLE_USER"}
    assert params("SendMessage", {"message": {**part, "parts": []}}) == -32602
    assert params("SendMessage", {"message": {**part, "parts": [{"text": "a", "data": {}}]}}) == -32602
    assert params("SendMessage", {"message": {**part, "parts": [{"data": [1, 2]}]}}) == -32602
    assert params("SendMessage", {"message": {**part, "parts": [{"raw": "aGk="}]}}) == -32005
    bad_field = call(client, {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {}}})
    fields = {v["field"] for v in bad_field["error"]["data"][1]["fieldViolations"]}
    assert {"message.messageId", "message.role", "message.parts"} <= fields
    config = {"taskPushNotificationConfig": {"url": "http://x"}}
    push = {"message": {**part, "parts": [{"text": "hi"}]}, "configuration": config}
    assert params("SendMessage", push) == -32003
    assert params("CreateTaskPushNotificationConfig", {}) == -32003
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {**part, "parts": [{"text": "hi"}]}},
    }
    nobody = call(client, hello, path="/a2a")  # the deployment's endpoint: which agent?
    assert code(nobody) == -32602 and "targetAgent" in nobody["error"]["message"]
    assert code(call(client, hello, path="/a2a/not.an.agent")) == -32602

    async def boom(_call: methods.Call, _params: dict[str, Any]) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setitem(methods.METHODS, "GetTask", boom)
    assert code(call(client, get)) == -32603
    assert client.get("/a2a/not.an.agent/.well-known/agent-card.json").status_code == 404


# -- tasks and cards as the proto has them -------------------------------------------------------


def loom_task(status: TaskStatus, **fields: Any) -> Task:
    return Task(target_agent="calculator", session_id="ctx-1", status=status, **fields)


def test_loom_states_map_to_a2a_states_and_tasks_render_as_the_proto() -> None:
    expected = {
        S.PENDING: TaskState.SUBMITTED,
        S.DISPATCHED: TaskState.SUBMITTED,
        S.RUNNING: TaskState.WORKING,
        S.INPUT_REQUIRED: TaskState.INPUT_REQUIRED,
        S.COMPLETED: TaskState.COMPLETED,
        S.FAILED: TaskState.FAILED,
        S.CANCELLED: TaskState.CANCELED,
        S.DEAD: TaskState.FAILED,
    }
    call_ = ApprovalRequest(key="1.0", tool="calculator", arguments={"expression": "6*7"})
    for status, state in expected.items():
        task = loom_task(
            status,
            attempt=1,
            result={"answer": "42", "steps": 2} if status is S.COMPLETED else None,
            error="boom" if status in (S.FAILED, S.CANCELLED, S.DEAD) else None,
            pending_approval=call_ if status is S.INPUT_REQUIRED else None,
        )
        assert state_of(task) is state
        parsed = strictly(task_of(task), ProtoTask())
        assert (parsed.id, parsed.context_id) == (task.task_id, "ctx-1")
        assert TaskState(json_format.MessageToDict(parsed)["status"]["state"]) is state
    completed = strictly(task_of(loom_task(S.COMPLETED, result="plain text")), ProtoTask())
    assert [p.text for p in completed.artifacts[0].parts] == ["plain text"]
    numbers = strictly(task_of(loom_task(S.COMPLETED, result=[1, 2])), ProtoTask())
    assert json_format.MessageToDict(numbers.artifacts[0].parts[0])["data"] == [1, 2]
    waiting = task_of(loom_task(S.INPUT_REQUIRED, pending_approval=call_))
    assert "approve" in waiting["status"]["message"]["parts"][0]["text"]
    assert waiting["status"]["message"]["parts"][1]["data"]["tool"] == "calculator"
    assert task_of(loom_task(S.PENDING), artifacts=False).get("artifacts") is None

    reason, _ = unknown_agent_reason("nobody", ["calculator"])
    refused = loom_task(S.DEAD, error=reason)
    assert state_of(refused) is TaskState.REJECTED
    assert state_of(refused.model_copy(update={"attempt": 1})) is TaskState.FAILED  # it ran: failed
    assert strictly(task_of(refused), ProtoTask()).status.message.parts[0].text == reason


async def test_agent_cards_follow_heartbeats_and_render_as_the_proto() -> None:
    book = CardBook()
    card = AgentCard(
        agent_id="calculator",
        name="Calculator",
        description="Does sums.",
        capabilities=[AgentCapability.TOOL_USE],
        tools=["calculator", "sleep"],
    )
    beat = Heartbeat(
        instance_id="w1", agents=[card], host="h", pid=1, load=InstanceLoad(in_flight=0, capacity=1)
    )

    @dataclass
    class Msg:
        data: bytes
        subject: str = subjects.registry_heartbeat("w1")

    waiting = asyncio.ensure_future(book.wait("calculator", 5))
    await asyncio.sleep(0)
    await book._on_heartbeat(Msg(b"{not a heartbeat"))
    await book._on_heartbeat(Msg(beat.to_json(), subjects.registry_heartbeat("w2")))  # w2 speaking for w1
    assert book.all() == []
    await book._on_heartbeat(Msg(beat.to_json()))
    assert await waiting == card
    assert await book.wait("echo", 0.01) is None
    assert book.all() == [card]

    rendered = strictly(agent_card(card, "http://d/a2a/calculator"), ProtoCard())
    assert [s.id for s in rendered.skills] == ["calculator", "sleep"]
    assert rendered.capabilities.streaming and not rendered.capabilities.push_notifications
    interface = rendered.supported_interfaces[0]
    assert (interface.url, interface.protocol_binding, interface.protocol_version) == (
        "http://d/a2a/calculator",
        "JSONRPC",
        "1.0",
    )
    bare = strictly(agent_card(AgentCard(agent_id="echo", name="Echo"), "http://d/a2a/echo"), ProtoCard())
    assert [s.id for s in bare.skills] == ["echo"]  # a card has at least one skill
    deployment = strictly(deployment_card([card], "http://d"), ProtoCard())
    assert deployment.supported_interfaces[0].url == "http://d/a2a"
    assert [s.id for s in deployment.skills] == ["calculator"]
    assert len(strictly(deployment_card([], "http://d"), ProtoCard()).skills) == 1


# -- messages as task inputs and decisions ------------------------------------------------------


def request(*parts: dict[str, Any], metadata: dict[str, Any] | None = None) -> SendMessageRequest:
    message = {"messageId": "m", "role": "ROLE_USER", "parts": list(parts), "metadata": metadata}
    return SendMessageRequest.model_validate({"message": message, "metadata": {"a": 1, "b": 1}})


def error_code(fn: Any, *args: Any) -> int:
    with pytest.raises(A2AError) as raised:
        fn(*args)
    return raised.value.code


def test_message_parts_become_parameters_and_metadata() -> None:
    script = {
        "script": [{"tool": "sleep", "arguments": {"seconds": 10}}, {"answer": "x"}],
        "prompt": "data's",
    }
    parameters, metadata = task_inputs(
        request(
            {"text": "line 1"},
            {"data": script},
            {"text": "line 2"},
            metadata={"b": 2, "approvalTools": ["x"]},
        )
    )
    assert parameters == {"script": script["script"], "prompt": "line 1\nline 2"}  # the text wins
    assert metadata == {"a": 1, "b": 2, "approvalTools": ["x"]}  # the message's metadata wins
    assert task_inputs(request({"data": {"n": 1}})) == ({"n": 1}, {"a": 1, "b": 1})
    assert error_code(task_inputs, request({"data": "text as data"})) == -32602
    assert error_code(task_inputs, request({"url": "http://x/y.pdf"})) == -32005
    assert task_inputs(request({"text": "ok"}, {"text": ""}))[0]["prompt"] == "ok\n"
    numbered = Message.model_validate({"messageId": "m", "role": 1, "parts": [{"text": "x"}]})
    assert numbered.role.value == "ROLE_USER"  # ProtoJSON enums by number too


def answer(*parts: dict[str, Any], metadata: dict[str, Any] | None = None) -> Message:
    return Message.model_validate(
        {"messageId": "m", "role": "ROLE_USER", "parts": list(parts), "metadata": metadata}
    )


def test_a_message_to_a_waiting_task_is_a_decision() -> None:
    approved, given = decision_of(answer({"data": {"approve": True, "arguments": {"expression": "6*8"}}}))
    assert approved and given.arguments == {"expression": "6*8"} and given.by is None
    approved, given = decision_of(answer({"data": {"approve": False, "reason": "risky", "by": "ann"}}))
    assert not approved and (given.reason, given.by) == ("risky", "ann")
    approved, given = decision_of(answer({"text": "Yes"}, metadata={"by": "bob"}))
    assert approved and given.by == "bob" and given.reason is None
    approved, given = decision_of(answer({"text": "no: too risky"}))
    assert not approved and given.reason == "too risky"
    assert decision_of(answer({"text": " approve."}))[0]
    assert error_code(decision_of, answer({"text": "maybe later"})) == -32602
    assert error_code(decision_of, answer({"data": {"approve": "yes"}})) == -32602
    assert error_code(decision_of, answer({"data": {"approve": False, "arguments": {"a": 1}}})) == -32602
    assert error_code(decision_of, answer({"data": {"approve": True, "by": "x" * 300}})) == -32602


# -- the stream of a followed task ---------------------------------------------------------------


class Store:
    """The task store as progress() reads it."""

    def __init__(self, task: Task) -> None:
        self.task = task

    async def get(self, task_id: str) -> Task | None:
        return self.task if task_id == self.task.task_id else None


def report(task: Task, status: TaskStatus, attempt: int = 1, **fields: Any) -> TaskStatusChanged:
    return TaskStatusChanged.from_task(task, status=status, attempt=attempt, **fields)


async def collect(
    store: Store, feed: TaskFeed, first: Task, tick_s: float = 5.0
) -> list[dict[str, Any] | None]:
    seen: list[dict[str, Any] | None] = []
    async with asyncio.timeout(10):
        async for response in progress(store, feed, first, tick_s=tick_s, record_wait_s=2.0):  # type: ignore[arg-type]
            seen.append(response)
            if len(seen) > 50:
                break
    for response in seen:
        if response is not None:
            strictly(response, ProtoStream())
    return seen


def states(seen: list[dict[str, Any] | None]) -> list[str]:
    return [r["statusUpdate"]["status"]["state"] for r in seen if r is not None and "statusUpdate" in r]


async def test_a_followed_task_streams_its_reports_steps_and_end() -> None:
    task = loom_task(S.DISPATCHED, attempt=1, instance_id="w1")
    store = Store(task)
    feed = TaskFeed(task.task_id)
    done = task.with_status(S.RUNNING).with_status(S.COMPLETED, result={"answer": "42"})
    for item in (
        report(task, S.RUNNING),
        report(task, S.RUNNING),  # the same state again: nothing new
        report(task, S.PENDING, attempt=0),  # a superseded attempt
        StepEvent(
            "e1", "tool.call", "2026-01-01T00:00:00.123456+00:00", {"name": "calculator", "arguments": {}}
        ),
        StepEvent("e2", "agent.action", None, {"tool": "calculator"}),  # told by its tool.call
        StepEvent("e3", "llm.usage", None, {}),  # not a step
        report(task, S.COMPLETED),  # a worker's report: the dispatcher's final decides
        report(done, S.COMPLETED, final=True),
    ):
        feed.queue.put_nowait(item)
    store.task = done
    seen = await collect(store, feed, task)
    assert seen[0] is not None and seen[0]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
    assert states(seen) == ["TASK_STATE_WORKING", "TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]
    step = seen[2]["statusUpdate"]["status"] if seen[2] else {}
    assert step["message"]["parts"][0]["text"] == "calls calculator({})"
    assert step["timestamp"] == "2026-01-01T00:00:00.123Z"
    assert seen[3] is not None and seen[3]["artifactUpdate"]["artifact"]["parts"][0]["text"] == "42"


async def test_a_stream_ends_where_the_task_waits_for_input_once_it_is_recorded() -> None:
    task = loom_task(S.RUNNING, attempt=1, instance_id="w1")
    store = Store(task)
    feed = TaskFeed(task.task_id)
    call_ = ApprovalRequest(key="1.0", tool="calculator")
    feed.queue.put_nowait(report(task, S.INPUT_REQUIRED, approval=call_))

    async def record_later() -> None:
        await asyncio.sleep(0.1)  # the dispatcher's consumer records the worker's report
        store.task = task.with_status(S.INPUT_REQUIRED, instance_id=None, pending_approval=call_)

    recording = asyncio.ensure_future(record_later())
    seen = await collect(store, feed, task)
    await recording
    assert states(seen) == ["TASK_STATE_INPUT_REQUIRED"]
    assert (
        seen[-1] is not None
        and "approve" in seen[-1]["statusUpdate"]["status"]["message"]["parts"][0]["text"]
    )


async def test_a_quiet_stream_pings_and_still_sees_an_end_it_missed() -> None:
    task = loom_task(S.RUNNING, attempt=1, instance_id="w1")
    store = Store(task)

    async def end_later() -> None:
        await asyncio.sleep(0.1)  # a final status whose NATS message never arrives
        store.task = task.with_status(S.FAILED, error="boom")

    ending = asyncio.ensure_future(end_later())
    seen = await collect(store, TaskFeed(task.task_id), task, tick_s=0.02)
    await ending
    assert None in seen
    assert states(seen) == ["TASK_STATE_FAILED"]


# -- ListTasks ------------------------------------------------------------------------------------


async def test_list_tasks_filters_orders_by_status_time_and_pages(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = TaskStore(client, prefix)
    index = TaskIndex(client, prefix, window=100)
    base = datetime.now(UTC) - timedelta(hours=1)
    made: list[Task] = []
    for n in range(7):
        agent = "calculator" if n < 5 else "echo"
        status = S.COMPLETED if n % 2 else S.PENDING
        task = Task(
            target_agent=agent,
            session_id="ctx-a" if n < 3 else "ctx-b",
            status=status,
            result={"answer": str(n)} if status is S.COMPLETED else None,
            created_at=base + timedelta(seconds=n),
            updated_at=base + timedelta(seconds=100 - 10 * n if n != 2 else 500),  # n=2 changed last
        )
        await store.create(task, retry_at=None if status is S.COMPLETED else time.time() + 1000)
        await index.add(task)
        made.append(task)

    async def listed(agent: str | None, **params: Any) -> dict[str, Any]:
        answer = await list_tasks(index, store, agent, ListTasksRequest.model_validate(params))
        strictly(answer, ProtoList())
        return answer

    everything = await listed(None)
    order = [t["id"] for t in everything["tasks"]]
    assert order[0] == made[2].task_id and order[1:] == [made[n].task_id for n in (0, 1, 3, 4, 5, 6)]
    assert (everything["totalSize"], everything["pageSize"], everything["nextPageToken"]) == (7, 50, "")
    assert all("artifacts" not in t for t in everything["tasks"])

    pages: list[str] = []
    token = ""
    while True:
        page = await listed("calculator", pageSize=2, pageToken=token, includeArtifacts=True)
        assert page["totalSize"] == 5 and len(page["tasks"]) <= 2
        pages += [t["id"] for t in page["tasks"]]
        if not (token := page["nextPageToken"]):
            break
    assert pages == [made[n].task_id for n in (2, 0, 1, 3, 4)]
    assert [t["id"] for t in (await listed("echo"))["tasks"]] == [made[5].task_id, made[6].task_id]
    by_context = await listed("calculator", contextId="ctx-b", status="TASK_STATE_COMPLETED")
    assert [t["id"] for t in by_context["tasks"]] == [made[3].task_id]
    since = (base + timedelta(seconds=75)).isoformat()
    assert [t["id"] for t in (await listed(None, statusTimestampAfter=since))["tasks"]] == [
        made[2].task_id,
        made[0].task_id,
        made[1].task_id,
    ]
    small = TaskIndex(client, f"{prefix}-small", window=2)
    for task in made:
        await small.add(task)
    assert await small.candidates(None, None) == [made[6].task_id, made[5].task_id]  # the newest two
