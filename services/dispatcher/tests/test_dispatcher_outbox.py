"""The submission and the final status ride out a stream that answers nothing for a while (what
a stream does while its replicas elect a new leader), on a real nats-server: the stream appears
only after the first tries, each is stored once, and a stream that never answers gives the error
after the retry budget."""

from __future__ import annotations

import asyncio
import time

import pytest
from faststream.nats import NatsBroker
from loom_dispatcher.bus import NatsOutbox
from loom_protocol import TASKS_STREAM, Task, TaskStatus, TaskStatusChanged, stream_create_request
from nats.aio.client import Client
from nats.js.errors import NoStreamResponseError


async def _stream_after_an_outage(nc: Client) -> None:
    await asyncio.sleep(0.5)  # the outage: no stream answers for half a second
    await nc.request(*stream_create_request(TASKS_STREAM), timeout=5)


async def test_a_submission_is_published_again_until_the_stream_answers(nats_url: str, nc: Client) -> None:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        outbox = NatsOutbox(broker, submit_retry_s=10)
        task = Task(target_agent="echo", parameters={"n": 1})
        appearing = asyncio.create_task(_stream_after_an_outage(nc))
        assert await outbox.submitted(task) is True
        await appearing
        assert (await nc.jetstream().stream_info(TASKS_STREAM.name)).state.messages == 1
        assert await outbox.submitted(task) is False  # the same submission again: stored once
    finally:
        await broker.stop()


async def test_a_stream_that_never_answers_fails_the_submission_after_the_budget(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        outbox = NatsOutbox(broker, submit_retry_s=0.5)
        started = time.monotonic()
        with pytest.raises(NoStreamResponseError):
            await outbox.submitted(Task(target_agent="echo", parameters={}))
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        await broker.stop()


async def test_a_final_status_is_published_again_until_the_stream_stores_it(
    nats_url: str, nc: Client
) -> None:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        outbox = NatsOutbox(broker, submit_retry_s=10)
        task = Task(target_agent="echo").with_status(TaskStatus.DISPATCHED, attempt=1, instance_id="w1")
        done = task.with_status(TaskStatus.COMPLETED, result={"answer": "42"})
        appearing = asyncio.create_task(_stream_after_an_outage(nc))
        await outbox.final(done)
        await appearing
        await outbox.final(done)  # again (a redelivered report): stored once
        js = nc.jetstream()
        assert (await js.stream_info(TASKS_STREAM.name)).state.messages == 1
        stored = await js.get_last_msg(TASKS_STREAM.name, f"loom.task.status.{task.task_id}")
        change = TaskStatusChanged.from_json(stored.data)
        assert change.final and change.status is TaskStatus.COMPLETED and change.result == {"answer": "42"}
    finally:
        await broker.stop()


async def test_a_final_status_the_stream_never_stores_is_an_error_after_the_budget(nats_url: str) -> None:
    broker = NatsBroker(nats_url)
    await broker.connect()
    try:
        outbox = NatsOutbox(broker, submit_retry_s=0.5)
        task = Task(target_agent="echo").with_status(TaskStatus.DISPATCHED, attempt=1, instance_id="w1")
        started = time.monotonic()
        with pytest.raises(NoStreamResponseError):
            await outbox.final(task.with_status(TaskStatus.FAILED, error="boom"))
        assert 0.3 <= time.monotonic() - started < 3
    finally:
        await broker.stop()
