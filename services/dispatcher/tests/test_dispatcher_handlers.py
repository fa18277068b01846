"""The membership and cancel-request handlers without a server (their dead letters go through
FastStream's in-memory broker), and the picker's reading of the registry's error answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from loom_dispatcher.bus import NatsOutbox, RegistryPicker
from loom_dispatcher.consumer import Handler
from loom_dispatcher.errors import RegistryUnavailable
from loom_dispatcher.handlers import build_consumers
from loom_dispatcher.state import State
from loom_protocol import (
    REGISTRY_STREAM,
    MemberChanged,
    MembershipChange,
    PickReply,
    RejectedMessage,
    TaskCancelRequested,
    subjects,
)
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

DeadLetters = Callable[[NatsBroker, str], list[RejectedMessage]]  # the dead_letters fixture


class FakeDispatcher:
    def __init__(self) -> None:
        self.down: list[str] = []
        self.cancelled: list[tuple[str, str]] = []

    async def on_member_down(self, instance_id: str) -> None:
        self.down.append(instance_id)

    async def cancel(self, task_id: str, reason: str = "cancelled by user") -> None:
        self.cancelled.append((task_id, reason))


def _app(
    dead_letters: DeadLetters,
) -> tuple[NatsBroker, FakeDispatcher, dict[str, Handler], list[RejectedMessage]]:
    broker = NatsBroker()
    dispatcher = FakeDispatcher()
    state = State(
        settings=cast(Any, None),
        broker=broker,
        redis=cast(Any, None),
        store=cast(Any, None),
        dispatcher=cast(Any, dispatcher),
        outbox=NatsOutbox(broker),
    )
    consumers = build_consumers(state, "test", traced=False)
    handlers = {c.subject: c.handler for c in consumers}
    members = next(c for c in consumers if c.subject == subjects.REGISTRY_MEMBER_DOWN)
    assert (members.stream, members.durable) == (REGISTRY_STREAM.name, "test-members")
    return broker, dispatcher, handlers, dead_letters(broker, "dispatcher")


async def test_an_instance_down_redispatches_its_tasks(dead_letters: DeadLetters) -> None:
    broker, dispatcher, handlers, rejected = _app(dead_letters)
    down = MemberChanged(instance_id="w1", change=MembershipChange.DOWN, reason="missed heartbeats")
    async with TestNatsBroker(broker):
        await handlers[subjects.REGISTRY_MEMBER_DOWN](subjects.REGISTRY_MEMBER_DOWN, down.to_json())
    assert dispatcher.down == ["w1"] and rejected == []


async def test_a_malformed_membership_change_becomes_a_dead_letter(dead_letters: DeadLetters) -> None:
    broker, dispatcher, handlers, rejected = _app(dead_letters)
    async with TestNatsBroker(broker):
        await handlers[subjects.REGISTRY_MEMBER_DOWN](subjects.REGISTRY_MEMBER_DOWN, b'{"instanceId": 3}')
    assert dispatcher.down == []
    assert len(rejected) == 1
    assert rejected[0].subject == subjects.REGISTRY_MEMBER_DOWN
    assert rejected[0].raw == '{"instanceId": 3}'
    assert "field 'instanceId'" in rejected[0].reason


async def test_a_cancel_request_cancels_the_task_and_a_malformed_one_is_dead_lettered(
    dead_letters: DeadLetters,
) -> None:
    broker, dispatcher, handlers, rejected = _app(dead_letters)
    on_request = handlers[subjects.TASK_CANCEL_REQUEST_ALL]
    request = TaskCancelRequested(task_id="child-1", reason="parent p1 gave up waiting")
    async with TestNatsBroker(broker):
        await on_request(subjects.task_cancel_request("child-1"), request.to_json())
        await on_request(subjects.task_cancel_request("child-2"), b'{"reason": "no id"}')
    assert dispatcher.cancelled == [("child-1", "parent p1 gave up waiting")]
    [record] = rejected
    assert record.subject == subjects.task_cancel_request("child-2") and "taskId" in record.reason


class Reply:
    def __init__(self, data: bytes, headers: dict[str, str] | None) -> None:
        self.data, self.headers = data, headers


class Connection:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    async def request(self, subject: str, payload: bytes, **_: Any) -> Reply:
        return self.reply


class Broker:
    def __init__(self, reply: Reply) -> None:
        self.connection = Connection(reply)


async def test_the_picker_reads_a_reply_and_raises_on_an_error_answer(dead_letters: DeadLetters) -> None:
    ok = Reply(PickReply(agent_id="echo", instance_id="w1", candidates=1).to_json(), None)
    reply = await RegistryPicker(cast(Any, Broker(ok)), 1.0).pick("echo", "t1")
    assert reply.instance_id == "w1"
    error = Reply(b"", {ERROR_CODE_HEADER: "500", ERROR_HEADER: "pick failed: redis down"})
    with pytest.raises(RegistryUnavailable, match="500 pick failed: redis down"):
        await RegistryPicker(cast(Any, Broker(error)), 1.0).pick("echo", "t1")
