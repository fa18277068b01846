"""The worker's intake: assignments off a core subscription on a real nats-server (``nats_url``:
services/conftest.py), cancel requests through FastStream's in-memory broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from loom_agent_worker.execution import Executor
from loom_agent_worker.reporting import StatusReporter
from loom_agent_worker.subscribers import Assignments, build_router
from loom_nats import flushed
from loom_protocol import RejectedMessage, Task, TaskCancelRequested, subjects
from nats.aio.client import Client
from nats.aio.msg import Msg

DeadLetters = Callable[[NatsBroker, str], list[RejectedMessage]]  # the dead_letters fixture
WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture


class FakeExecutor:
    instance_id = "w1"

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.accepted: list[Task] = []
        self.cancelled: list[str] = []
        self._refuse = refuse or set()

    async def accept(self, task: Task) -> None:
        if task.task_id in self._refuse:
            raise RuntimeError(f"cannot take {task.task_id}")
        self.accepted.append(task)

    def cancel(self, task_id: str) -> bool:
        self.cancelled.append(task_id)
        return True


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(nats_url)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def intake(broker: NatsBroker, executor: FakeExecutor) -> Assignments:
    assignments = Assignments(cast(Executor, executor), StatusReporter(broker, "w1"))
    await assignments.start(broker.connection)
    return assignments


async def collected(nc: Client, subject: str) -> list[Msg]:
    msgs: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        msgs.append(msg)

    await nc.subscribe(subject, cb=on_msg)
    await flushed(nc)
    return msgs


async def test_an_assignment_reaches_the_executor_and_nothing_answers_its_reply_subject(
    broker: NatsBroker, nc: Client, wait_for: WaitFor
) -> None:
    executor = FakeExecutor()
    assignments = await intake(broker, executor)
    try:
        answers = await collected(nc, "_INBOX.test-ack")
        task = Task(task_id="t1", source_agent="cli", target_agent="echo", attempt=2, instance_id="w1")
        await nc.publish(subjects.task_assigned("w1"), task.to_json(), reply="_INBOX.test-ack")
        await wait_for(lambda: len(executor.accepted) == 1)
        assert [(t.task_id, t.attempt) for t in executor.accepted] == [("t1", 2)]
        await flushed(broker.connection)  # anything the worker had sent is at the server now
        await flushed(nc)
        assert answers == []
    finally:
        await assignments.stop()


async def test_a_malformed_assignment_becomes_a_dead_letter_and_the_next_one_is_taken(
    broker: NatsBroker, nc: Client, wait_for: WaitFor
) -> None:
    executor = FakeExecutor()
    assignments = await intake(broker, executor)
    try:
        rejected = await collected(nc, subjects.rejected("agent-worker"))
        await nc.publish(subjects.task_assigned("w1"), b'{"taskId": "t1"}')
        await nc.publish(subjects.task_assigned("w1"), b"\x00not json")
        await nc.publish(subjects.task_assigned("w1"), Task(task_id="t2", target_agent="echo").to_json())
        await wait_for(lambda: len(rejected) == 2 and len(executor.accepted) == 1)
        records = [RejectedMessage.from_json(m.data) for m in rejected]
        assert {r.subject for r in records} == {subjects.task_assigned("w1")}
        assert "field 'targetAgent': Field required" in records[0].reason
        assert records[1].raw == "\x00not json" and "JSON" in records[1].reason
        assert [t.task_id for t in executor.accepted] == ["t2"]
    finally:
        await assignments.stop()


async def test_an_assignment_the_executor_fails_on_does_not_stop_the_intake(
    broker: NatsBroker, nc: Client, wait_for: WaitFor
) -> None:
    executor = FakeExecutor(refuse={"t1"})
    assignments = await intake(broker, executor)
    try:
        for task_id in ("t1", "t2"):
            await nc.publish(
                subjects.task_assigned("w1"), Task(task_id=task_id, target_agent="echo").to_json()
            )
        await flushed(nc)  # sent, not left in the test client's buffer
        await wait_for(lambda: [t.task_id for t in executor.accepted] == ["t2"])
    finally:
        await assignments.stop()


async def test_stopped_intake_takes_nothing_more(broker: NatsBroker, nc: Client, wait_for: WaitFor) -> None:
    executor = FakeExecutor()
    assignments = await intake(broker, executor)
    await nc.publish(subjects.task_assigned("w1"), Task(task_id="t1", target_agent="echo").to_json())
    await flushed(nc)  # sent, not left in the test client's buffer
    await wait_for(lambda: len(executor.accepted) == 1)
    await assignments.stop()
    await nc.publish(subjects.task_assigned("w1"), Task(task_id="t2", target_agent="echo").to_json())
    await flushed(nc)
    await flushed(broker.connection)
    assert [t.task_id for t in executor.accepted] == ["t1"]


def _app(dead_letters: DeadLetters) -> tuple[NatsBroker, FakeExecutor, list[RejectedMessage]]:
    broker = NatsBroker()
    executor = FakeExecutor()
    broker.include_router(build_router(cast(Executor, executor), StatusReporter(broker, "w1")))
    return broker, executor, dead_letters(broker, "agent-worker")


async def test_a_cancel_reaches_the_executor(dead_letters: DeadLetters) -> None:
    broker, executor, rejected = _app(dead_letters)
    async with TestNatsBroker(broker) as br:
        await br.publish(TaskCancelRequested(task_id="t1").to_json(), subjects.task_cancel("t1"))
    assert executor.cancelled == ["t1"] and rejected == []


async def test_a_malformed_cancel_becomes_a_dead_letter(dead_letters: DeadLetters) -> None:
    broker, executor, rejected = _app(dead_letters)
    async with TestNatsBroker(broker) as br:
        await br.publish(b"\x00not json", subjects.task_cancel("t2"))
    assert executor.cancelled == []
    by_subject: dict[str, Any] = {r.subject: r for r in rejected}
    assert set(by_subject) == {subjects.task_cancel("t2")}
    assert by_subject[subjects.task_cancel("t2")].raw == "\x00not json"
