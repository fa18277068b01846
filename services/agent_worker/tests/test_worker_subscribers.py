"""The worker's assignment and cancel handlers without a server: FastStream's in-memory broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from faststream.nats import NatsBroker, TestNatsBroker
from loom_agent_worker.execution import Executor
from loom_agent_worker.reporting import StatusReporter
from loom_agent_worker.subscribers import build_router
from loom_protocol import RejectedMessage, Task, TaskCancelRequested, subjects

DeadLetters = Callable[[NatsBroker, str], list[RejectedMessage]]  # the dead_letters fixture


class FakeExecutor:
    instance_id = "w1"

    def __init__(self) -> None:
        self.accepted: list[Task] = []
        self.cancelled: list[str] = []

    async def accept(self, task: Task) -> None:
        self.accepted.append(task)

    def cancel(self, task_id: str) -> bool:
        self.cancelled.append(task_id)
        return True


def _app(dead_letters: DeadLetters) -> tuple[NatsBroker, FakeExecutor, list[RejectedMessage]]:
    broker = NatsBroker()
    executor = FakeExecutor()
    broker.include_router(build_router(cast(Executor, executor), StatusReporter(broker, "w1")))
    return broker, executor, dead_letters(broker, "agent-worker")


async def test_an_assignment_and_a_cancel_reach_the_executor(dead_letters: DeadLetters) -> None:
    broker, executor, rejected = _app(dead_letters)
    task = Task(task_id="t1", source_agent="cli", target_agent="echo", attempt=2, instance_id="w1")
    async with TestNatsBroker(broker) as br:
        await br.publish(task.to_json(), subjects.task_assigned("w1"))
        await br.publish(TaskCancelRequested(task_id="t1").to_json(), subjects.task_cancel("t1"))
    assert [(t.task_id, t.attempt) for t in executor.accepted] == [("t1", 2)]
    assert executor.cancelled == ["t1"] and rejected == []


async def test_malformed_assignments_and_cancels_become_dead_letters(dead_letters: DeadLetters) -> None:
    broker, executor, rejected = _app(dead_letters)
    async with TestNatsBroker(broker) as br:
        await br.publish(b'{"taskId": "t1"}', subjects.task_assigned("w1"))
        await br.publish(b"\x00not json", subjects.task_cancel("t2"))
    assert executor.accepted == [] and executor.cancelled == []
    by_subject: dict[str, Any] = {r.subject: r for r in rejected}
    assert set(by_subject) == {subjects.task_assigned("w1"), subjects.task_cancel("t2")}
    assert "task.targetAgent" in by_subject[subjects.task_assigned("w1")].reason
    assert by_subject[subjects.task_cancel("t2")].raw == "\x00not json"
