"""Fakes for unit tests of the runtime's pure logic.

``FakeEventSink`` collects events in a list; ``FakeChildTasks`` runs a child agent
in-process instead of going through NATS and the dispatcher. Both stand in for the worker's
real wiring, which the service's integration tests exercise.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from loom_agent_worker.runtime import Agent, MemoryStore, TaskContext, run_with_interceptors
from loom_protocol import EventPayload, Task, TaskStatus


@dataclass
class RecordedEvent:
    type: str
    data: dict[str, Any]
    subject: str | None
    task_id: str


class FakeEventSink:
    """Collects emitted events; ``wait_for`` lets a test wait for one without sleeping."""

    def __init__(self, task_id: str = "", log: list[RecordedEvent] | None = None) -> None:
        self.task_id = task_id
        self.events: list[RecordedEvent] = log if log is not None else []
        self._seen: dict[str, asyncio.Event] = {}

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None:
        # kept as the event's data, as the worker's emitter publishes it
        self.events.append(RecordedEvent(payload.TYPE, payload.to_data(), subject, self.task_id))
        self._flag(payload.TYPE).set()

    def _flag(self, event_type: str) -> asyncio.Event:
        return self._seen.setdefault(event_type, asyncio.Event())

    async def wait_for(self, event_type: str, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._flag(event_type).wait()

    def types(self, *, task_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if task_id is None or e.task_id == task_id]

    def of_type(self, event_type: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.type == event_type]


def running_task(target_agent: str, parameters: dict[str, Any] | None = None, **fields: Any) -> Task:
    """A task as the worker hands it to an agent: status running."""
    return Task(target_agent=target_agent, parameters=parameters or {}, status=TaskStatus.RUNNING, **fields)


@dataclass
class FakeChildTasks:
    """Runs child tasks in-process on the given agents (a unit-test stand-in for NATS)."""

    parent: Task
    agents: Mapping[str, Agent]
    memory: MemoryStore
    log: list[RecordedEvent]
    submitted: list[Task] = field(default_factory=list)
    before_run: Callable[[Task], Any] | None = None

    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        child = running_task(
            target_agent,
            parameters,
            task_id=uuid.uuid4().hex,
            parent_task_id=self.parent.task_id,
            session_id=self.parent.session_id,
            source_agent=self.parent.target_agent,
        )
        self.submitted.append(child)
        if self.before_run is not None:
            await self.before_run(child)
        agent = self.agents.get(target_agent)
        if agent is None:
            return child.with_status(TaskStatus.DEAD, error=f"no instance of agent {target_agent!r}")
        ctx = make_context(child, agents=self.agents, memory=self.memory, log=self.log)
        async with asyncio.timeout(timeout_s):
            return await run_with_interceptors(agent, child, ctx, [])


def make_context(
    task: Task,
    *,
    agents: Mapping[str, Agent] | None = None,
    memory: MemoryStore | None = None,
    log: list[RecordedEvent] | None = None,
    capture_content: bool = True,
) -> TaskContext:
    memory = memory if memory is not None else MemoryStore()
    log = log if log is not None else []
    events = FakeEventSink(task.task_id, log)
    children = FakeChildTasks(task, agents or {}, memory, log)
    return TaskContext(
        task=task,
        events=events,
        children=children,
        memory=memory.for_task(task),
        instance_id="worker-test",
        capture_content=capture_content,
    )


@pytest.fixture
def new_task() -> Callable[..., Task]:
    return running_task


@pytest.fixture
def new_context() -> Callable[..., TaskContext]:
    return make_context
