"""The worker's Outbox against a real nats-server (``nats_url``: services/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from faststream.nats import NatsBroker
from loom_agent_worker.outbox import Outbox
from loom_protocol import MSG_ID_HEADER, TASKS_STREAM
from nats.js import JetStreamContext
from nats.js.api import StreamConfig


@pytest.fixture
async def outbox(nats_url: str) -> AsyncIterator[Outbox]:
    broker = NatsBroker(nats_url)
    await broker.connect()
    js = broker.connection.jetstream()
    await js.add_stream(StreamConfig(name="EVENTSTEST", subjects=["events.>"]))
    await js.add_stream(StreamConfig(name=TASKS_STREAM.name, subjects=["loom.task.>"]))
    try:
        yield Outbox(broker, ack_timeout_s=2.0)
    finally:
        await broker.stop()


async def test_pipelined_reports_each_message_stored_or_not(outbox: Outbox) -> None:
    headers = {MSG_ID_HEADER: "e1"}
    results = await outbox.pipelined(
        [("events.a", b"{}", headers), ("events.b", b"{}", {MSG_ID_HEADER: "e2"}), ("nostream.c", b"{}", {})]
    )
    assert results[:2] == [None, None]
    assert results[2] is not None  # no stream listens: refused, not waited on forever
    info = await outbox.js.stream_info("EVENTSTEST")
    assert info.state.messages == 2


async def test_stored_waits_for_the_ack_and_deduplicates_by_message_id(outbox: Outbox) -> None:
    for _ in range(2):
        await outbox.stored("loom.task.status.t1", b'{"taskId": "t1"}', "t1:1:running")
    info = await outbox.js.stream_info(TASKS_STREAM.name)
    assert info.state.messages == 1


async def test_a_batch_is_handed_to_the_client_without_an_event_loop_turn_per_message() -> None:
    """Under load every turn of a busy event loop is long: a turn per message held a batch of
    events for hundreds of milliseconds before the last of them was even sent."""

    class Client:
        async def publish_async(self, subject: str, payload: bytes, **kw: object) -> asyncio.Future[None]:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    turns = 0

    def tick() -> None:
        nonlocal turns
        turns += 1
        ticker[0] = asyncio.get_running_loop().call_soon(tick)

    outbox = Outbox(cast(NatsBroker, None), ack_timeout_s=2.0)
    outbox._js = cast(JetStreamContext, Client())
    ticker = [asyncio.get_running_loop().call_soon(tick)]
    try:
        results = await outbox.pipelined([(f"events.{i}", b"{}", {}) for i in range(200)])
    finally:
        ticker[0].cancel()
    assert results == [None] * 200
    assert turns < 10
