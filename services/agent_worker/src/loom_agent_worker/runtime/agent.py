"""The agent interface (a node protocol): what the worker runs a task on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from loom_protocol import AgentCard, Task, TaskStatus

from loom_agent_worker.runtime.context import TaskContext


class Agent(ABC):
    """A node that executes tasks addressed to its ``agent_card.agent_id``.

    ``execute_task`` receives a task in status ``running`` and returns it ``completed``
    (``result`` set) or ``failed`` (``error`` set). Cancellation arrives as
    ``asyncio.CancelledError``; implementations let it propagate and clean up in
    ``finally``.
    """

    agent_card: AgentCard

    @property
    def node_id(self) -> str:
        return self.agent_card.agent_id

    def get_capabilities(self) -> AgentCard:
        return self.agent_card

    @abstractmethod
    async def execute_task(self, task: Task, ctx: TaskContext) -> Task: ...


def completed(task: Task, result: Any) -> Task:
    """Return ``task`` moved to ``completed`` with ``result``."""
    return task.with_status(TaskStatus.COMPLETED, result=result)


def failed(task: Task, error: str) -> Task:
    """Return ``task`` moved to ``failed`` with ``error``."""
    return task.with_status(TaskStatus.FAILED, error=error)
