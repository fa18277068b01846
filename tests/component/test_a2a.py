"""The dispatcher's A2A server end to end (registry, dispatchers and a worker in process on real
NATS and Redis), driven by the unmodified a2a-sdk client: agent cards, a blocking message, a
stream that ends COMPLETED, get / list / cancel, a stream resumed from a second client on
another replica, the JSON-RPC error codes, and a task waiting for approval answered by a message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import (
    A2ACardResolver,
    AgentCardResolutionError,
    Client,
    ClientCallContext,
    ClientConfig,
    ClientFactory,
)
from a2a.helpers.proto_helpers import new_data_part, new_text_part
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)
from google.protobuf import json_format, struct_pb2

from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.component

SLEEP = {"script": [{"tool": "sleep", "arguments": {"seconds": 10}}, {"answer": "x"}]}


async def start(stack: Stack, dispatchers: int = 1) -> None:
    await stack.registry()
    for _ in range(dispatchers):
        await stack.dispatcher()
    await stack.worker("w0", agents="calculator,echo")
    await stack.wait_instances("calculator", 1)


@pytest.fixture
async def web() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def client_of(web: httpx.AsyncClient, url: str, **config: Any) -> Client:
    """An a2a-sdk client of the agent at ``url``, from its resolved card."""
    card = await A2ACardResolver(web, url).get_agent_card()
    return ClientFactory(ClientConfig(httpx_client=web, **config)).create(card)


def message(*parts: Part, metadata: dict[str, Any] | None = None, **ids: str) -> SendMessageRequest:
    msg = Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=list(parts), **ids)
    if metadata:
        msg.metadata.CopyFrom(json_format.ParseDict(metadata, struct_pb2.Struct()))
    return SendMessageRequest(message=msg)


async def responses(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [r async for r in client.send_message(request)]


async def sent(client: Client, request: SendMessageRequest) -> Task:
    """The task a non-streaming client gets back."""
    (response,) = await responses(client, request)
    return response.task


def answer_text(task: Task) -> str:
    return "".join(part.text for artifact in task.artifacts for part in artifact.parts)


async def test_cards_and_a_blocking_message(stack: Stack, web: httpx.AsyncClient) -> None:
    await start(stack)
    url = f"{stack.api}/a2a/calculator"
    card = await A2ACardResolver(web, url).get_agent_card()
    assert card.name and card.capabilities.streaming and not card.capabilities.push_notifications
    (interface,) = card.supported_interfaces
    assert (interface.url, interface.protocol_binding, interface.protocol_version) == (url, "JSONRPC", "1.0")
    assert {"calculator", "sleep"} <= {skill.id for skill in card.skills}
    assert "approve" in card.description
    deployment = await A2ACardResolver(web, stack.api).get_agent_card()
    assert deployment.supported_interfaces[0].url == f"{stack.api}/a2a"
    assert {"calculator", "echo"} <= {skill.id for skill in deployment.skills}
    with pytest.raises(AgentCardResolutionError) as unknown:
        await A2ACardResolver(web, f"{stack.api}/a2a/calculater").get_agent_card()
    assert unknown.value.status_code == 404

    client = ClientFactory(ClientConfig(httpx_client=web, streaming=False)).create(card)
    task = await sent(client, message(new_text_part("what is 6*7?")))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, task
    assert answer_text(task) == "42"
    assert task.context_id
    again = await client.get_task(GetTaskRequest(id=task.id))
    assert again.status.state == TaskState.TASK_STATE_COMPLETED and answer_text(again) == "42"
    same_context = await sent(client, message(new_text_part("what is 2+2?"), context_id=task.context_id))
    assert same_context.context_id == task.context_id and answer_text(same_context) == "4"

    refused = await sent(
        await client_of(web, f"{stack.api}/a2a", streaming=False),
        message(new_text_part("hi"), metadata={"targetAgent": "nobody"}),
    )
    assert refused.status.state == TaskState.TASK_STATE_REJECTED, refused
    assert "unknown agent 'nobody'" in refused.status.message.parts[0].text


async def test_a_stream_shows_work_before_it_completes(stack: Stack, web: httpx.AsyncClient) -> None:
    await start(stack)
    client = await client_of(web, f"{stack.api}/a2a/calculator")
    events = await responses(client, message(new_text_part("what is 6*7?")))
    assert events[0].HasField("task")
    assert events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    kinds = [e.WhichOneof("payload") for e in events]
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert TaskState.TASK_STATE_WORKING in states
    assert states[-1] == TaskState.TASK_STATE_COMPLETED and kinds[-1] == "status_update"
    artifact = next(e.artifact_update.artifact for e in events if e.HasField("artifact_update"))
    assert artifact.parts[0].text == "42"
    assert states.index(TaskState.TASK_STATE_WORKING) < len(states) - 1
    assert kinds.index("artifact_update") > kinds.index("status_update")
    steps = [e.status_update.status.message for e in events if e.status_update.status.message.parts]
    assert any("calculator" in m.parts[0].text for m in steps), steps  # the tool call step


async def test_get_list_and_cancel_a_sleeping_task(stack: Stack, web: httpx.AsyncClient) -> None:
    await start(stack)
    client = await client_of(web, f"{stack.api}/a2a/calculator", streaming=False, polling=True)
    task = await sent(client, message(new_data_part(SLEEP)))
    assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)

    async def working() -> bool:
        current = await client.get_task(GetTaskRequest(id=task.id))
        return current.status.state == TaskState.TASK_STATE_WORKING

    await wait_for(working, 10, "the task to work")
    listed = await client.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_WORKING))
    assert [t.id for t in listed.tasks] == [task.id] and listed.total_size == 1
    by_context = await client.list_tasks(ListTasksRequest(context_id=task.context_id))
    assert [t.id for t in by_context.tasks] == [task.id]
    assert (await client.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_COMPLETED))).tasks == []

    cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED, cancelled
    with pytest.raises(TaskNotCancelableError):
        await client.cancel_task(CancelTaskRequest(id=task.id))
    streaming = await client_of(web, f"{stack.api}/a2a/calculator")
    with pytest.raises(UnsupportedOperationError):  # it has ended
        async for _ in streaming.subscribe(SubscribeToTaskRequest(id=task.id)):
            pass
    with pytest.raises(TaskNotFoundError):
        await client.get_task(GetTaskRequest(id="no-such-task"))
    echo = await client_of(web, f"{stack.api}/a2a/echo", streaming=False)
    with pytest.raises(TaskNotFoundError):  # another agent's endpoint does not see it
        await echo.get_task(GetTaskRequest(id=task.id))


async def test_a_second_client_on_another_replica_follows_a_running_task(
    stack: Stack, web: httpx.AsyncClient
) -> None:
    await start(stack, dispatchers=2)
    first = await client_of(web, f"{stack.dispatchers[0].url}/a2a/calculator")
    second = await client_of(web, f"{stack.dispatchers[1].url}/a2a/calculator")
    nap = {"script": [{"tool": "sleep", "arguments": {"seconds": 2}}, {"answer": "rested"}]}
    seen: list[StreamResponse] = []

    async def follow() -> None:
        async for event in first.send_message(message(new_data_part(nap))):
            seen.append(event)

    streaming = asyncio.create_task(follow())
    try:
        await wait_for(
            lambda: any(e.status_update.status.state == TaskState.TASK_STATE_WORKING for e in seen),
            10,
            "the first stream to show WORKING",
        )
        task_id = seen[0].task.id
        resumed = [e async for e in second.subscribe(SubscribeToTaskRequest(id=task_id))]
        await asyncio.wait_for(streaming, 20)
    finally:
        streaming.cancel()
    assert resumed[0].task.id == task_id
    assert resumed[0].task.status.state == TaskState.TASK_STATE_WORKING
    for events in (seen, resumed):
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert any(
            e.artifact_update.artifact.parts[0].text == "rested"
            for e in events
            if e.HasField("artifact_update")
        )


async def test_bad_methods_versions_and_bodies_answer_their_codes(
    stack: Stack, web: httpx.AsyncClient
) -> None:
    await start(stack)
    url = f"{stack.api}/a2a/calculator"
    v1 = {"A2A-Version": "1.0"}

    async def rpc(body: Any, headers: dict[str, str] = v1) -> dict[str, Any]:
        resp = await web.post(
            url,
            content=body if isinstance(body, bytes) else None,
            json=None if isinstance(body, bytes) else body,
            headers=headers,
        )
        assert resp.status_code == 200, resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    get = {"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": {"id": "x"}}
    assert (await rpc({**get, "method": "GetTasks"}))["error"]["code"] == -32601
    assert (await rpc(get, {"A2A-Version": "0.9"}))["error"]["code"] == -32009
    assert (await rpc(get, {}))["error"]["code"] == -32009  # no header: 0.3
    assert (await rpc(b'{"jsonrpc": "2.0", "id": 1,'))["error"]["code"] == -32700
    assert (await rpc({"jsonrpc": "2.0", "method": "GetTask", "id": {"x": 1}}))["error"]["code"] == -32600
    assert (await rpc({**get, "params": {"id": 5}}))["error"]["code"] == -32602
    wrong = await rpc(
        {**get, "method": "SendMessage", "params": {"message": {"role": "ROLE_USER", "parts": "x"}}}
    )
    assert wrong["id"] == 7 and wrong["error"]["code"] == -32602
    assert (await rpc({**get, "method": "CreateTaskPushNotificationConfig"}))["error"]["code"] == -32003
    assert (await rpc({**get, "method": "GetExtendedAgentCard"}))["error"]["code"] == -32004
    file = {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"url": "http://x/a.png"}]}}
    assert (await rpc({**get, "method": "SendMessage", "params": file}))["error"]["code"] == -32005
    missing = await rpc(get)
    assert missing["error"]["code"] == -32001 and missing["error"]["data"][0]["metadata"] == {"taskId": "x"}

    client = await client_of(web, url, streaming=False)
    with pytest.raises(VersionNotSupportedError):
        await client.get_task(
            GetTaskRequest(id="x"), context=ClientCallContext(service_parameters={"A2A-Version": "0.9"})
        )


async def test_a_task_waiting_for_approval_is_answered_by_a_message(
    stack: Stack, web: httpx.AsyncClient
) -> None:
    await start(stack)
    client = await client_of(web, f"{stack.api}/a2a/calculator", streaming=False)
    guarded = {"approvalTools": ["calculator"]}
    waiting = await sent(client, message(new_text_part("what is 6*7?"), metadata=guarded))
    assert waiting.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, waiting
    question = waiting.status.message
    asked = json_format.MessageToDict(question.parts[1].data)
    assert (asked["tool"], asked["arguments"]) == ("calculator", {"expression": "6*7"})
    approve = new_data_part({"approve": True, "arguments": {"expression": "6*8"}, "by": "ann"})
    done = await sent(client, message(approve, task_id=waiting.id, context_id=waiting.context_id))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED, done
    assert answer_text(done) == "48"
    with pytest.raises(UnsupportedOperationError):
        await sent(client, message(new_text_part("yes"), task_id=waiting.id))

    streaming = await client_of(web, f"{stack.api}/a2a/calculator")
    events = await responses(streaming, message(new_text_part("what is 6*7?"), metadata=guarded))
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    task_id = events[0].task.id
    rejected = await responses(streaming, message(new_text_part("no: too risky"), task_id=task_id))
    assert rejected[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert rejected[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    final = await streaming.get_task(GetTaskRequest(id=task_id))
    assert "too risky" in answer_text(final)
