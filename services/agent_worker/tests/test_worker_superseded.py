"""A worker told that its attempt is superseded stops it without a report and runs no further
step; a plain cancel still stops and reports ``cancelled``."""

from __future__ import annotations

import asyncio
from typing import cast

from faststream.nats import NatsBroker, TestNatsBroker
from loom_agent_worker.emitter import EventEmitter
from loom_agent_worker.execution import Executor
from loom_agent_worker.reporting import StatusReporter
from loom_agent_worker.runtime import Agent, TaskContext
from loom_agent_worker.runtime.agent import completed
from loom_agent_worker.subscribers import build_router, superseded_attempt
from loom_protocol import (
    SUPERSEDED_ATTEMPT_HEADER,
    SUPERSEDED_INSTANCE_HEADER,
    AgentCard,
    Task,
    TaskCancelRequested,
    TaskStatus,
    subjects,
)
from test_worker_publishing import FlakyOutbox


class Steps(Agent):
    """Runs one step, then waits to be let go before the next; counts the steps it ran."""

    agent_card = AgentCard(agent_id="steps", name="Steps")

    def __init__(self) -> None:
        self.steps = 0
        self.first_done = asyncio.Event()
        self.go_on = asyncio.Event()

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        self.steps += 1
        self.first_done.set()
        await self.go_on.wait()
        self.steps += 1
        return completed(task, self.steps)


def _executor(agent: Agent, outbox: FlakyOutbox) -> Executor:
    reporter = StatusReporter(NatsBroker(), "w1", retries=0, outbox=outbox)
    emitter = EventEmitter(NatsBroker(), "/workers/w1", 100, instance_id="w1", outbox=FlakyOutbox(failures=0))
    return Executor("w1", {"steps": agent}, reporter, emitter, lambda *_: None, [], 4)  # type: ignore[arg-type, return-value]


def _task(attempt: int = 1) -> Task:
    return Task(
        task_id="t1",
        source_agent="cli",
        target_agent="steps",
        attempt=attempt,
        instance_id="w1",
        status=TaskStatus.DISPATCHED,
    )


async def test_a_superseded_attempt_stops_without_a_report_and_runs_no_further_step() -> None:
    agent, outbox = Steps(), FlakyOutbox(failures=0)
    executor = _executor(agent, outbox)
    await executor.accept(_task())
    job = executor._running["t1"].job
    await asyncio.wait_for(agent.first_done.wait(), 5)
    assert executor.supersede("t1", 1)
    agent.go_on.set()
    await asyncio.wait_for(asyncio.gather(job, return_exceptions=True), 5)
    assert agent.steps == 1
    assert outbox.calls == []  # no completed, no cancelled: nothing of this attempt is reported
    assert "t1" not in executor._running


async def test_a_notice_about_an_older_attempt_leaves_a_newer_one_running() -> None:
    agent, outbox = Steps(), FlakyOutbox(failures=0)
    executor = _executor(agent, outbox)
    await executor.accept(_task(attempt=2))
    await asyncio.wait_for(agent.first_done.wait(), 5)
    assert not executor.supersede("t1", 1)
    agent.go_on.set()
    await asyncio.wait_for(executor._running["t1"].job, 5)
    assert [status for status, _ in outbox.calls] == ["completed"]


async def test_a_plain_cancel_still_reports_cancelled() -> None:
    agent, outbox = Steps(), FlakyOutbox(failures=0)
    executor = _executor(agent, outbox)
    await executor.accept(_task())
    job = executor._running["t1"].job
    await asyncio.wait_for(agent.first_done.wait(), 5)
    assert executor.cancel("t1")
    await asyncio.wait_for(asyncio.gather(job, return_exceptions=True), 5)
    assert [status for status, _ in outbox.calls] == ["cancelled"]


def test_superseded_attempt_reads_the_headers() -> None:
    assert superseded_attempt(None) is None
    assert superseded_attempt({"content-type": "application/json"}) is None
    assert superseded_attempt({SUPERSEDED_ATTEMPT_HEADER: "x"}) is None
    headers = {SUPERSEDED_ATTEMPT_HEADER: "3", SUPERSEDED_INSTANCE_HEADER: "w1"}
    assert superseded_attempt(headers) == (3, "w1")


class RecordingExecutor:
    instance_id = "w1"

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.superseded: list[tuple[str, int]] = []

    def cancel(self, task_id: str) -> bool:
        self.cancelled.append(task_id)
        return True

    def supersede(self, task_id: str, attempt: int) -> bool:
        self.superseded.append((task_id, attempt))
        return True


async def test_the_cancel_subject_tells_a_notice_for_this_instance_from_a_cancel() -> None:
    broker = NatsBroker()
    executor = RecordingExecutor()
    broker.include_router(build_router(cast(Executor, executor), StatusReporter(broker, "w1")))
    body = TaskCancelRequested(task_id="t1", reason="attempt 1 superseded").to_json()
    async with TestNatsBroker(broker) as br:
        notice = {SUPERSEDED_ATTEMPT_HEADER: "1", SUPERSEDED_INSTANCE_HEADER: "w1"}
        await br.publish(body, subjects.task_cancel("t1"), headers=notice)
        other = {SUPERSEDED_ATTEMPT_HEADER: "1", SUPERSEDED_INSTANCE_HEADER: "w9"}
        await br.publish(body, subjects.task_cancel("t1"), headers=other)
        await br.publish(TaskCancelRequested(task_id="t2").to_json(), subjects.task_cancel("t2"))
    assert executor.superseded == [("t1", 1)]
    assert executor.cancelled == ["t2"]
