"""Ingest's hand-written JetStream consumer against a real nats-server (``nats_url``:
services/conftest.py), the database replaced by a fake writer: batches by size, the server's
408 on an expired pull, a no_wait pull of what is ready, a deleted consumer (409), the group
commit (a batch is what arrived during the previous commit), a trickle read a linger's worth at
a time, acks only after a commit, a failing commit retried without acks, and the messages in
hand nak'd on stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import pytest
from loom_ingest.consumer import ConsumerOptions, StreamConsumer
from loom_ingest.health import DatabaseHealth
from loom_ingest.store import EventWriter, Item, WriteResult
from loom_nats import ConsumerGone, Puller, flushed
from loom_protocol import new_event, subjects
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

STREAM = "TESTINGEST"
SUBJECT = "test.ingest.>"
WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture (services/conftest.py)


@pytest.fixture(autouse=True)
async def stream(nc: Client) -> None:
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))


async def publish(nc: Client, n: int) -> None:
    js = nc.jetstream()
    for i in range(n):
        event = new_event("agent.thought", "/tests", data={"i": i})
        await js.publish(
            subjects.instance_event("w1", "agent.thought").replace("loom.", "test.ingest.", 1),
            event.to_json(),
        )


def config(durable: str = "d") -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable, filter_subject=SUBJECT, ack_policy=AckPolicy.EXPLICIT, ack_wait=30
    )


async def test_the_puller_takes_batches_by_size_and_answers_an_expired_pull(nc: Client) -> None:
    puller = Puller(nc, nc.jetstream(), STREAM, config(), batch=4)
    await puller.start()
    try:
        assert await puller.take(4, wait_s=0.3, linger_s=0.05) == []  # the server's 408, nothing lost
        await publish(nc, 10)
        sizes: list[int] = []
        while sum(sizes) < 10:
            msgs = await puller.take(4, wait_s=2.0, linger_s=0.2)
            for msg in msgs:
                await msg.ack()
            sizes.append(len(msgs))
        assert sizes == [4, 4, 2]
    finally:
        await puller.stop()


async def test_the_puller_takes_what_is_ready_in_one_no_wait_pull(nc: Client) -> None:
    puller = Puller(nc, nc.jetstream(), STREAM, config(), batch=100)
    await puller.start()
    try:
        started = time.monotonic()
        assert await puller.take_ready(10) == []  # the server's 404 at once: nothing is ready
        await publish(nc, 12)
        first = await puller.take_ready(10)
        second = await puller.take_ready(10)
        assert (len(first), len(second)) == (10, 2)  # what was asked for, then the rest and a 408
        assert await puller.take_ready(10) == []
        # each pull ended with the server's answer, never with a wait for an expiry
        assert time.monotonic() - started < 2.0
        # and an empty answer is no reason to hold back the next pull
        await publish(nc, 1)
        assert len(await puller.take(10, wait_s=2.0, linger_s=0.0)) == 1
        for msg in [*first, *second]:
            await msg.ack()
    finally:
        await puller.stop()


async def test_the_puller_says_when_its_consumer_was_deleted(nc: Client, wait_for: WaitFor) -> None:
    js = nc.jetstream()
    puller = Puller(nc, js, STREAM, config(), batch=4)
    await puller.start()
    try:
        taking = asyncio.create_task(puller.take(4, wait_s=5.0, linger_s=0.05))
        await wait_for(lambda: puller._open_until > 0)
        await flushed(nc)  # the pull request is with the server before the deletion
        await js.delete_consumer(STREAM, "d")
        with pytest.raises(ConsumerGone):
            await asyncio.wait_for(taking, 10)
    finally:
        await puller.stop()


class Writer:
    """A fake database: fails ``failures`` times, then commits; or blocks while ``stuck``."""

    def __init__(self, failures: int = 0, stuck: bool = False) -> None:
        self.failures = failures
        self.stuck = stuck
        self.committed: list[int] = []
        self.attempts = 0
        self.gate: asyncio.Event | None = None  # when set to an Event: each write waits for it

    async def write(self, items: Sequence[Item]) -> WriteResult:
        self.attempts += 1
        if self.stuck:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database down")
        self.committed.append(len(items))
        return WriteResult(events=len(items))


def stream_consumer(nc: Client, writer: Writer, linger_s: float = 0.05) -> StreamConsumer:
    options = ConsumerOptions(
        batch_size=100,
        linger_s=linger_s,
        fetch_wait_s=0.3,
        ack_wait_s=30,
        max_ack_pending=1000,
        max_event_bytes=64_000,
        retry_min_s=0.01,
        retry_max_s=0.05,
        drain_s=0.1,
    )
    return StreamConsumer(
        nc,
        nc.jetstream(),
        cast(EventWriter, writer),
        DatabaseHealth(),
        stream=STREAM,
        subject=SUBJECT,
        durable="d",
        options=options,
    )


async def counts(nc: Client) -> tuple[int, int]:
    info = await nc.jetstream().consumer_info(STREAM, "d")
    return info.num_pending, info.num_ack_pending


async def all_acked(nc: Client, timeout_s: float = 10.0) -> None:
    """Wait until the consumer holds nothing pending or unacknowledged; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while await counts(nc) != (0, 0):
        assert time.monotonic() < deadline, await counts(nc)
        await asyncio.sleep(0.05)


async def test_a_batch_is_what_arrived_during_the_previous_commit(nc: Client, wait_for: WaitFor) -> None:
    writer = Writer()
    consumer = stream_consumer(nc, writer)
    running = asyncio.create_task(consumer.run())
    try:
        await publish(nc, 1)
        await wait_for(lambda: writer.committed == [1])  # alone on a quiet stream: written by itself
        writer.gate = asyncio.Event()
        await publish(nc, 1)
        await wait_for(lambda: writer.attempts == 2)  # that one is being committed...
        await publish(nc, 40)
        await wait_for(lambda: consumer.read_ahead == 40)  # ...while 40 more are read and decoded
        writer.gate.set()
        await wait_for(lambda: writer.committed == [1, 1, 40])  # then taken together, at once
        await all_acked(nc)  # each after its commit
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_quiet_stream_commits_a_lone_message_at_once_and_a_trickle_once_per_linger(
    nc: Client, wait_for: WaitFor
) -> None:
    writer = Writer()
    running = asyncio.create_task(stream_consumer(nc, writer, linger_s=5.0).run())
    try:
        await publish(nc, 1)
        await wait_for(lambda: writer.committed == [1], timeout_s=2.5)  # at once, not after 5 s
        await publish(nc, 3)  # within 5 s of that commit: they wait for it to be 5 s old
        await wait_for(lambda: writer.committed == [1, 3], timeout_s=15)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_trickle_is_read_a_linger_at_a_time_not_a_message_at_a_time(
    nc: Client, wait_for: WaitFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []  # the messages each of the reader's takes brought

    def counted(take: Callable[..., Awaitable[list[object]]]) -> Callable[..., Awaitable[list[object]]]:
        async def wrapper(*args: object, **kwargs: object) -> list[object]:
            msgs = await take(*args, **kwargs)
            if msgs:
                reads.append(len(msgs))
            return msgs

        return wrapper

    monkeypatch.setattr(Puller, "take", counted(Puller.take))
    monkeypatch.setattr(Puller, "take_ready", counted(Puller.take_ready))
    writer = Writer()
    running = asyncio.create_task(stream_consumer(nc, writer, linger_s=0.2).run())
    try:
        js = nc.jetstream()
        for i in range(60):  # one every ~10 ms for ~0.6 s, each acknowledged by the stream
            event = new_event("agent.thought", "/tests", data={"i": i})
            await js.publish("test.ingest.worker.w1.agent.thought", event.to_json())
            await asyncio.sleep(0.01)  # the trickle's pace (not a synchronisation)
        await wait_for(lambda: sum(writer.committed) == 60)
        await all_acked(nc)
        # the first message at once, then what came during each linger in one pull: a handful
        # of reads, not one wake-up per message
        assert reads[0] == 1 and sum(reads) == 60
        assert len(reads) <= 10, reads
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_acks_follow_the_commit_and_a_failing_commit_is_retried(nc: Client, wait_for: WaitFor) -> None:
    await publish(nc, 30)
    writer = Writer(failures=3)
    running = asyncio.create_task(stream_consumer(nc, writer).run())
    try:
        await wait_for(lambda: sum(writer.committed) == 30)
        assert writer.attempts >= 4
        await all_acked(nc)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_stop_naks_what_was_read_and_not_committed(nc: Client, wait_for: WaitFor) -> None:
    await publish(nc, 5)
    writer = Writer(stuck=True)
    running = asyncio.create_task(stream_consumer(nc, writer).run())
    await wait_for(lambda: writer.attempts == 1)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    # nak'd, not left to ack_wait (30 s): the next reader has them at once
    again = Writer()
    second = asyncio.create_task(stream_consumer(nc, again).run())
    try:
        await wait_for(lambda: sum(again.committed) == 5, timeout_s=5)
    finally:
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
