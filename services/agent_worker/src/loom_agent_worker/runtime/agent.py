"""The agent interface (a node protocol): what the worker runs a task on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from loom_protocol import AgentCard, Task, TaskStatus

from loom_agent_worker.runtime.context import TaskContext


class Agent(ABC):
    """A node that executes tasks addressed to its ``agent_card.agent_id``.

    Set ``agent_card`` (a class attribute or in ``__init__``) and implement ``execute_task``:
    it receives a task in status ``running`` and returns it ``completed`` (``result`` set,
    see :func:`completed`) or ``failed`` (``error`` set, see :func:`failed`). ``ctx`` carries
    the event sink, child tasks (delegation), the session memory and the instance id.
    Cancellation arrives as ``asyncio.CancelledError``; implementations let it propagate and
    clean up in ``finally``. An exception fails the task with its message.

    Example::

        class Greeter(Agent):
            agent_card = AgentCard(agent_id="greeter", name="Greeter")

            async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
                return completed(task, {"answer": f"hello {task.parameters.get('name', 'you')}"})
    """

    agent_card: AgentCard

    @property
    def node_id(self) -> str:
        """The agent's id (its ``agent_card.agent_id``), used as its node in events and topology."""
        return self.agent_card.agent_id

    def get_capabilities(self) -> AgentCard:
        """The card the worker announces in its heartbeats."""
        return self.agent_card

    @abstractmethod
    async def execute_task(self, task: Task, ctx: TaskContext) -> Task: ...


def completed(task: Task, result: Any) -> Task:
    """Return ``task`` moved to ``completed`` with ``result``."""
    return task.with_status(TaskStatus.COMPLETED, result=result)


def failed(task: Task, error: str) -> Task:
    """Return ``task`` moved to ``failed`` with ``error``."""
    return task.with_status(TaskStatus.FAILED, error=error)
