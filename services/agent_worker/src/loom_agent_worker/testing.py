"""Run an agent on one task without NATS or a worker: for an agent package's own unit tests.

from loom_agent_worker.testing import run_agent

run = await run_agent(my_agent, {"prompt": "convert 3 km to miles"})
assert run.task.status == "completed"
assert "tool.call" in run.event_types
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import EventPayload, Task, TaskStatus

from .runtime import Agent, MemoryStore, TaskContext, run_with_interceptors


@dataclass(frozen=True)
class RecordedEvent:
    """One event an agent emitted: its type (``tool.call``, ...), data and subject."""

    type: str
    data: dict[str, Any]
    subject: str | None


@dataclass
class LocalRun:
    """The outcome of :func:`run_agent`: the finished task and the events, in order."""

    task: Task
    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def event_types(self) -> list[str]:
        """The types of the emitted events, in order."""
        return [event.type for event in self.events]


class _Collect:
    def __init__(self, events: list[RecordedEvent]) -> None:
        self.events = events

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None:
        self.events.append(RecordedEvent(payload.TYPE, payload.to_data(), subject))


class _NoChildren:
    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        return Task(
            target_agent=target_agent,
            parameters=parameters,
            status=TaskStatus.FAILED,
            error="run_agent runs one agent: child tasks need a worker and a dispatcher",
        )


async def run_agent(
    agent: Agent,
    parameters: dict[str, Any],
    *,
    session_id: str | None = None,
    memory: MemoryStore | None = None,
) -> LocalRun:
    """Run ``agent`` on a task with ``parameters`` as a worker would (minus NATS and delegation).

    Args:
        agent: The agent; give it an explicit provider (e.g. ``ScriptedProvider()``).
        parameters: The task's parameters.
        session_id: The task's session (default: a new one).
        memory: Session memories to share between runs (default: new ones).
    """
    task = Task(
        task_id=uuid.uuid4().hex,
        target_agent=agent.agent_card.agent_id,
        parameters=parameters,
        session_id=session_id or uuid.uuid4().hex,
        status=TaskStatus.RUNNING,
    )
    events: list[RecordedEvent] = []
    store = memory if memory is not None else MemoryStore()
    ctx = TaskContext(
        task=task,
        events=_Collect(events),
        children=_NoChildren(),
        memory=store.for_task(task),
        instance_id="local",
    )
    done = await run_with_interceptors(agent, task, ctx, [])
    return LocalRun(done, events)
