"""Bounded publishing at the worker: status reports retried with their message id and never
turned into ``failed``, event batches retried then reported, acks that never come given up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from faststream.nats import NatsBroker
from loom_agent_worker.emitter import EventEmitter
from loom_agent_worker.execution import Executor
from loom_agent_worker.loading import load_agents
from loom_agent_worker.outbox import Outbox
from loom_agent_worker.reporting import ReportNotSent, StatusReporter
from loom_agent_worker.runtime.providers import ScriptedProvider
from loom_protocol import (
    MSG_ID_HEADER,
    TASKS_STREAM,
    CloudEvent,
    Task,
    TaskStatus,
    TaskStatusChanged,
    new_event,
)
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

WaitFor = Any  # the conftest's wait_for fixture


class FlakyOutbox(Outbox):
    """An outbox whose JetStream publishes fail ``failures`` times (all: -1) before they work."""

    def __init__(self, failures: int = -1, *, fail_status: str | None = None) -> None:
        super().__init__(NatsBroker(), ack_timeout_s=0.1)
        self.failures = failures
        self.fail_status = fail_status  # only reports of this status fail (None: every one)
        self.calls: list[tuple[str, str]] = []  # (status, msg id) per try
        self.batches: list[list[str]] = []  # event types per pipelined call

    async def stored(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        status = TaskStatusChanged.from_json(body).status.value
        self.calls.append((status, msg_id))
        if self.fail_status is not None and status != self.fail_status:
            return
        if self.failures != 0:
            self.failures -= 1
            raise TimeoutError("no ack (simulated)")

    async def unacked(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        return None

    async def pipelined(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[BaseException | None]:
        self.batches.append([CloudEvent.model_validate_json(body).type for _, body, _ in messages])
        if self.failures != 0:
            self.failures -= 1
            return [TimeoutError("no ack (simulated)") for _ in messages]
        return [None for _ in messages]


def _task() -> Task:
    return Task(task_id="t1", source_agent="cli", target_agent="echo", attempt=2, instance_id="w1")


async def test_a_report_without_an_ack_is_sent_again_with_the_same_message_id() -> None:
    outbox = FlakyOutbox(failures=2)
    reporter = StatusReporter(NatsBroker(), "w1", retries=3, retry_backoff_s=0.0, outbox=outbox)
    await reporter.report(_task(), TaskStatus.COMPLETED, result={"ok": True})
    assert [status for status, _ in outbox.calls] == ["completed"] * 3
    assert len({msg_id for _, msg_id in outbox.calls}) == 1


async def test_a_report_never_acknowledged_raises_report_not_sent_after_the_retries() -> None:
    outbox = FlakyOutbox()
    reporter = StatusReporter(NatsBroker(), "w1", retries=2, retry_backoff_s=0.0, outbox=outbox)
    with pytest.raises(ReportNotSent) as caught:
        await reporter.report(_task(), TaskStatus.COMPLETED)
    assert caught.value.status is TaskStatus.COMPLETED
    assert len(outbox.calls) == 3


async def test_a_completed_task_whose_report_times_out_is_never_reported_failed() -> None:
    outbox = FlakyOutbox(fail_status="completed")
    reporter = StatusReporter(NatsBroker(), "w1", retries=2, retry_backoff_s=0.0, outbox=outbox)
    emitter = EventEmitter(
        NatsBroker(), "/workers/w1", 1000, instance_id="w1", outbox=FlakyOutbox(failures=0)
    )
    executor = Executor(
        "w1",
        load_agents(["echo"], ScriptedProvider("m")),
        reporter,
        emitter,
        lambda *_: None,  # type: ignore[arg-type, return-value]
        [],
        1,
    )
    task = _task().model_copy(update={"status": TaskStatus.DISPATCHED, "parameters": {"text": "hi"}})
    await executor.accept(task)
    job = executor._running["t1"].job
    await asyncio.wait_for(job, 10)
    statuses = [status for status, _ in outbox.calls]
    assert statuses == ["completed"] * 3  # tried three times, never anything else
    assert "failed" not in statuses


async def test_an_event_batch_not_stored_is_retried_then_counted_and_reported() -> None:
    outbox = FlakyOutbox(failures=3)  # the batch and its two retries fail
    emitter = EventEmitter(
        NatsBroker(), "/workers/w1", 100, instance_id="w1", retries=2, retry_backoff_s=0.0, outbox=outbox
    )
    emitter.start()
    try:
        emitter.put(new_event("agent.thought", "/workers/w1", data={"text": "a"}))
        await asyncio.wait_for(emitter._queue.join(), 5)
        assert outbox.batches == [["agent.thought"]] * 3
        emitter.put(new_event("agent.thought", "/workers/w1", data={"text": "b"}))  # stored at once
        await asyncio.wait_for(emitter._queue.join(), 5)
        assert outbox.batches[3] == ["agent.thought", "error"]
    finally:
        await emitter.stop(timeout_s=1)


async def test_an_event_batch_stored_on_a_retry_is_not_reported_lost() -> None:
    outbox = FlakyOutbox(failures=1)
    emitter = EventEmitter(
        NatsBroker(), "/workers/w1", 100, instance_id="w1", retries=2, retry_backoff_s=0.0, outbox=outbox
    )
    emitter.start()
    try:
        emitter.put(new_event("agent.thought", "/workers/w1", data={"text": "a"}))
        emitter.put(new_event("agent.thought", "/workers/w1", data={"text": "b"}))
        await asyncio.wait_for(emitter._queue.join(), 5)
    finally:
        await emitter.stop(timeout_s=1)
    assert all("error" not in batch for batch in outbox.batches)
    assert emitter._unpublished == 0


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.stop()


async def test_an_ack_that_never_comes_is_given_up_and_its_slot_freed(broker: NatsBroker) -> None:
    # a core subscriber swallows the messages and never answers: the acks are lost. It subscribes
    # on the publishing connection, so the server has its interest before the first publish (from
    # another connection, even after a flush, a loaded machine saw "no responders" in 6 of 40 runs)
    swallowed: list[Msg] = []

    async def swallow(msg: Msg) -> None:
        swallowed.append(msg)

    await broker.connection.subscribe("lost.>", cb=swallow)
    outbox = Outbox(broker, ack_timeout_s=0.3)
    results = await asyncio.wait_for(
        outbox.pipelined([("lost.a", b"{}", {MSG_ID_HEADER: "a"}), ("lost.b", b"{}", {MSG_ID_HEADER: "b"})]),
        5,
    )
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert outbox.js.publish_async_pending() == 0  # no future left behind


async def test_a_report_retried_while_the_stream_is_missing_is_stored_once_it_is_back(
    broker: NatsBroker, wait_for: WaitFor
) -> None:
    tried = asyncio.Event()

    class Watching(Outbox):
        async def stored(
            self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
        ) -> None:
            try:
                await super().stored(subject, body, msg_id, headers)
            finally:
                tried.set()

    reporter = StatusReporter(
        broker, "w1", retries=50, retry_backoff_s=0.05, max_backoff_s=0.1, outbox=Watching(broker, 0.5)
    )
    sending = asyncio.create_task(reporter.report(_task(), TaskStatus.COMPLETED, result="done"))
    await asyncio.wait_for(tried.wait(), 5)  # the first try failed: no stream stores the subject
    assert not sending.done()
    js = broker.connection.jetstream()
    await js.add_stream(StreamConfig(name=TASKS_STREAM.name, subjects=["loom.task.>"]))
    await asyncio.wait_for(sending, 10)
    info = await js.stream_info(TASKS_STREAM.name)
    assert info.state.messages == 1


class RecordingOutbox(FlakyOutbox):
    """Every status report and event in the order it was published, acked or not."""

    def __init__(self, order: list[str]) -> None:
        super().__init__(failures=0)
        self.order = order

    async def stored(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self.order.append(TaskStatusChanged.from_json(body).status.value)
        await super().stored(subject, body, msg_id, headers)

    async def unacked(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self.order.append(TaskStatusChanged.from_json(body).status.value)

    async def pipelined(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[BaseException | None]:
        self.order.extend(CloudEvent.model_validate_json(body).type for _, body, _ in messages)
        return [None for _ in messages]


async def _statuses_of(
    parameters: dict[str, Any], running_report_after_s: float, agent: str = "echo"
) -> list[str]:
    """What the worker published for one task, in order: status values and event types."""
    order: list[str] = []
    reporter = StatusReporter(NatsBroker(), "w1", outbox=RecordingOutbox(order))
    emitter = EventEmitter(NatsBroker(), "/workers/w1", 1000, instance_id="w1", outbox=RecordingOutbox(order))
    emitter.start()
    executor = Executor(
        "w1",
        load_agents([agent], ScriptedProvider("m")),
        reporter,
        emitter,
        lambda *_: None,  # type: ignore[arg-type, return-value]
        [],
        1,
        running_report_after_s=running_report_after_s,
    )
    task = _task().model_copy(
        update={"status": TaskStatus.DISPATCHED, "target_agent": agent, "parameters": parameters}
    )
    try:
        await executor.accept(task)
        await asyncio.wait_for(executor._running["t1"].job, 10)
        await asyncio.wait_for(emitter._queue.join(), 5)
    finally:
        await emitter.stop(timeout_s=1)
    assert reporter._later == {}  # nothing left due
    return order


async def test_running_is_reported_once_a_task_runs_for_a_while_and_before_its_outcome() -> None:
    assert await _statuses_of({"delayS": 0.3}, running_report_after_s=0.05) == ["running", "completed"]


async def test_a_task_done_before_the_running_report_is_due_reports_only_its_outcome() -> None:
    assert await _statuses_of({"text": "hi"}, running_report_after_s=5.0) == ["completed"]


async def test_a_task_that_shows_progress_reports_running_before_its_first_event() -> None:
    order = await _statuses_of({"prompt": "what is 6*7?"}, running_report_after_s=5.0, agent="calculator")
    assert order[0] == "running" and order[-1] == "completed"
    assert order.count("running") == 1 and len(order) > 3  # the calculator's events in between


async def test_running_at_once_when_no_delay_is_set() -> None:
    assert await _statuses_of({"text": "hi"}, running_report_after_s=0.0) == ["running", "completed"]
