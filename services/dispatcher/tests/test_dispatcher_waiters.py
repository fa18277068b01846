"""Requests waiting for a task's final status, on a real nats-server: answered with the stored
task when this process announced it, told to read the task when another replica did, not
answered by a status on the way or another task's final, and one subscription for them all,
closed once nobody waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from faststream.nats import NatsBroker
from loom_dispatcher.bus import NatsOutbox
from loom_dispatcher.waiters import FinalWaiters
from loom_nats import flushed
from loom_protocol import TASKS_STREAM, Task, TaskStatus, TaskStatusChanged, stream_create_request, subjects
from nats.aio.client import Client


@pytest.fixture
async def connect(nats_url: str) -> AsyncIterator[Callable[[], Awaitable[NatsBroker]]]:
    """Connects a broker of its own (a dispatcher's connection) per call; all stopped after."""
    brokers: list[NatsBroker] = []

    async def connected() -> NatsBroker:
        broker = NatsBroker(nats_url)
        await broker.connect()
        brokers.append(broker)
        return broker

    try:
        yield connected
    finally:
        for broker in brokers:
            await broker.stop()


@pytest.fixture
async def broker(connect: Callable[[], Awaitable[NatsBroker]], nc: Client) -> NatsBroker:
    """A dispatcher's connection, with the task stream in place."""
    await nc.request(*stream_create_request(TASKS_STREAM), timeout=5)
    return await connect()


def _running(task_id: str = "t-1") -> Task:
    task = Task(task_id=task_id, target_agent="echo").with_status(
        TaskStatus.DISPATCHED, attempt=1, instance_id="w1"
    )
    return task.with_status(TaskStatus.RUNNING)


async def test_a_final_this_process_announces_answers_with_the_stored_task(broker: NatsBroker) -> None:
    outbox = NatsOutbox(broker)
    done = _running().with_status(TaskStatus.COMPLETED, result={"answer": 42})
    watch = await outbox.watch_final(done.task_id)
    try:
        await outbox.final(done)
        assert await asyncio.wait_for(watch.finished, 5) == done
    finally:
        watch.close()


async def test_a_waiter_is_answered_once_the_final_is_sent_not_once_the_stream_acks(
    connect: Callable[[], Awaitable[NatsBroker]], nc: Client
) -> None:
    """The task is final in the store before its announcement: a waiter answers from it while
    the announcement still waits for a stream (none yet here) to store it."""
    outbox = NatsOutbox(await connect(), submit_retry_s=10)
    done = _running().with_status(TaskStatus.COMPLETED)
    watch = await outbox.watch_final(done.task_id)
    announcing = asyncio.create_task(outbox.final(done))
    assert await asyncio.wait_for(watch.finished, 5) == done
    assert not announcing.done()  # no stream has stored it yet
    await nc.request(*stream_create_request(TASKS_STREAM), timeout=5)
    await asyncio.wait_for(announcing, 10)
    watch.close()


async def test_a_final_another_replica_announces_answers_without_the_task(
    broker: NatsBroker, connect: Callable[[], Awaitable[NatsBroker]]
) -> None:
    outbox = NatsOutbox(broker)
    watch = await outbox.watch_final("t-1")
    await flushed(broker.connection)  # the server has the subscription (ADR 0009)
    await NatsOutbox(await connect()).final(_running().with_status(TaskStatus.FAILED, error="boom"))
    assert await asyncio.wait_for(watch.finished, 5) is None  # the request reads the task
    watch.close()


async def test_a_status_on_the_way_or_another_tasks_final_answers_nothing(
    broker: NatsBroker, nc: Client
) -> None:
    outbox = NatsOutbox(broker)
    mine, theirs = await outbox.watch_final("t-1"), await outbox.watch_final("t-2")
    try:
        # the server has the subscription before another connection publishes (a status comes
        # after the submission the watching connection published, in the dispatcher)
        await flushed(broker.connection)
        running = TaskStatusChanged.from_task(_running("t-1"))
        await nc.publish(subjects.task_status("t-1"), running.to_json())
        done = TaskStatusChanged.from_task(_running("t-2").with_status(TaskStatus.COMPLETED), final=True)
        await nc.publish(subjects.task_status("t-2"), done.to_json())
        await nc.publish(subjects.task_status("t-1"), b"not a status")
        # one publisher's messages arrive in order: t-1's running status came before t-2's end
        assert await asyncio.wait_for(theirs.finished, 5) is None
        assert not mine.finished.done()
    finally:
        mine.close()
        theirs.close()


async def test_one_subscription_serves_every_waiter_and_closes_when_nobody_waits(nc: Client) -> None:
    waiters = FinalWaiters(lambda: nc, linger_s=0.05)
    first, second = await waiters.watch("t-1"), await waiters.watch("t-1")
    assert waiters.subscribed
    with waiters.announcing(_running().with_status(TaskStatus.COMPLETED)) as sent:
        sent()
    assert (await first.finished).status is TaskStatus.COMPLETED
    assert (await second.finished).status is TaskStatus.COMPLETED
    first.close()
    assert waiters.subscribed  # one still waits
    second.close()
    deadline = time.monotonic() + 5
    while waiters.subscribed and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not waiters.subscribed
    again = await waiters.watch("t-3")  # subscribed again
    await flushed(nc)
    done = TaskStatusChanged.from_task(_running("t-3").with_status(TaskStatus.CANCELLED), final=True)
    await nc.publish(subjects.task_status("t-3"), done.to_json())
    assert await asyncio.wait_for(again.finished, 5) is None
    again.close()
    await waiters.close()
    assert not waiters.subscribed
