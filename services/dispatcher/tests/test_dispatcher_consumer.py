"""The dispatcher's PullConsumer against a real nats-server (``nats_url``: services/conftest.py):
ack, redelivery on error, nak on stop, a consumer deleted under it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from loom_dispatcher.consumer import PullConsumer
from loom_nats import flushed
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, StreamConfig

STREAM = "TESTCONSUMER"
SUBJECT = "test.consumer.x"
WaitFor = Callable[..., Awaitable[None]]  # the wait_for fixture (services/conftest.py)


@pytest.fixture(autouse=True)
async def stream(nc: Client) -> None:
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["test.consumer.>"]))


def consumer(nc: Client, handler: Callable[[str, bytes], object], durable: str = "d") -> PullConsumer:
    return PullConsumer(
        lambda: nc,
        stream=STREAM,
        subject=SUBJECT,
        durable=durable,
        config=ConsumerConfig(ack_wait=30),
        handler=handler,  # type: ignore[arg-type]
        fetch_timeout_s=0.2,
    )


def collecting(nc: Client) -> tuple[PullConsumer, list[bytes]]:
    """A consumer that keeps the body of every message it is handed."""
    seen: list[bytes] = []

    async def handler(subject: str, body: bytes) -> None:
        seen.append(body)

    return consumer(nc, handler), seen


async def pending(nc: Client, durable: str = "d") -> tuple[int, int]:
    info = await nc.jetstream().consumer_info(STREAM, durable)
    return info.num_pending, info.num_ack_pending


async def test_acks_after_the_handler_and_redelivers_when_it_raises(nc: Client, wait_for: WaitFor) -> None:
    seen: list[bytes] = []

    async def handler(subject: str, body: bytes) -> None:
        seen.append(body)
        if body == b"bad" and seen.count(b"bad") == 1:
            raise RuntimeError("first attempt fails")

    c = consumer(nc, handler)
    await c.start()
    try:
        js = nc.jetstream()
        await js.publish(SUBJECT, b"good")
        await js.publish(SUBJECT, b"bad")
        await wait_for(lambda: seen.count(b"bad") == 2)
        assert seen.count(b"good") == 1
        for _ in range(50):
            if await pending(nc) == (0, 0):
                break
            await asyncio.sleep(0.05)
        assert await pending(nc) == (0, 0)
    finally:
        await c.stop()


async def test_stop_naks_what_is_still_in_hand(nc: Client, wait_for: WaitFor) -> None:
    started = asyncio.Event()

    async def stuck(subject: str, body: bytes) -> None:
        started.set()
        await asyncio.Event().wait()

    c = consumer(nc, stuck)
    await c.start()
    await nc.jetstream().publish(SUBJECT, uuid.uuid4().bytes)
    await asyncio.wait_for(started.wait(), 10)
    await c.stop(timeout_s=0.1)
    # nak'd, not left to ack_wait (30 s): another consumer on the durable gets it at once
    again, seen = collecting(nc)
    await again.start()
    try:
        await wait_for(lambda: len(seen) == 1, timeout_s=5)
    finally:
        await again.stop()


async def test_stop_naks_what_was_pulled_and_not_yet_handed_out(nc: Client, wait_for: WaitFor) -> None:
    started = asyncio.Event()

    async def stuck(subject: str, body: bytes) -> None:
        started.set()
        await asyncio.Event().wait()

    async with pull_requests(nc) as requests:
        c = consumer(nc, stuck)
        c.max_in_flight, c.fetch_timeout_s = 2, 1.0
        await c.start()
        js = nc.jetstream()
        await js.publish(SUBJECT, b"0")
        await asyncio.wait_for(started.wait(), 10)
        # the first request (2 messages) expired with one delivered; the next asks for 2 again
        await wait_for(lambda: len(requests) >= 2)
        await js.publish(SUBJECT, b"1")
        await js.publish(SUBJECT, b"2")  # delivered, but both slots are taken: it waits in the buffer
        deadline = time.monotonic() + 10
        while (await pending(nc))[1] < 3:
            assert time.monotonic() < deadline, "the third message was not pulled"
            await asyncio.sleep(0.02)
    await c.stop(timeout_s=0.1)
    again, seen = collecting(nc)  # all three at once, not after ack_wait (30 s)
    await again.start()
    try:
        await wait_for(lambda: sorted(seen) == [b"0", b"1", b"2"], timeout_s=5)
    finally:
        await again.stop()


@contextlib.asynccontextmanager
async def pull_requests(nc: Client) -> AsyncIterator[list[bytes]]:
    """The bodies of the pull requests sent for consumer ``d``, seen by a second connection."""
    requests: list[bytes] = []

    async def on_request(msg: Msg) -> None:
        requests.append(msg.data)

    watcher = await nats.connect(nc.connected_url.geturl())  # type: ignore[union-attr]
    try:
        await watcher.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.d", cb=on_request)
        await flushed(watcher)
        yield requests
    finally:
        await watcher.close()


async def test_a_trickle_of_messages_is_served_by_open_pull_requests_not_one_per_message(
    nc: Client, wait_for: WaitFor
) -> None:
    async with pull_requests(nc) as requests:
        c, seen = collecting(nc)
        c.fetch_timeout_s = 5.0
        await c.start()
        try:
            js = nc.jetstream()
            for i in range(100):  # one at a time: each is handled before the next is sent
                await js.publish(SUBJECT, b"%d" % i)
                await wait_for(lambda n=i + 1: len(seen) == n)
            # one request per max_in_flight (64) messages, or per expiry: not one or two per message
            assert len(requests) <= 5, requests
        finally:
            await c.stop()


async def test_a_deleted_consumer_is_created_again(nc: Client, wait_for: WaitFor) -> None:
    c, seen = collecting(nc)
    await c.start()
    try:
        js = nc.jetstream()
        await js.publish(SUBJECT, b"one")
        await wait_for(lambda: seen == [b"one"])
        await js.delete_consumer(STREAM, "d")  # the open pull request ends with 409, the next gets 503
        await js.publish(SUBJECT, b"two")
        await wait_for(lambda: b"two" in seen)
    finally:
        await c.stop()


async def test_a_message_too_large_to_forward_is_dead_lettered_not_handled(
    nc: Client, wait_for: WaitFor
) -> None:
    from loom_protocol import RejectedMessage, subjects
    from loom_protocol.limits import MAX_TASK_BYTES

    rejected: list[RejectedMessage] = []

    async def on_rejected(msg: object) -> None:
        rejected.append(RejectedMessage.from_json(msg.data))  # type: ignore[attr-defined]

    await nc.subscribe(subjects.rejected("dispatcher"), cb=on_rejected)
    c, seen = collecting(nc)
    await c.start()
    try:
        js = nc.jetstream()
        await js.publish(SUBJECT, b"x" * (MAX_TASK_BYTES + 1))
        await js.publish(SUBJECT, b"after")
        await wait_for(lambda: seen == [b"after"] and len(rejected) == 1)
        assert f"at most {MAX_TASK_BYTES} bytes" in rejected[0].reason
        assert rejected[0].truncated and rejected[0].subject == SUBJECT
        for _ in range(50):
            if await pending(nc) == (0, 0):
                break
            await asyncio.sleep(0.05)
        assert await pending(nc) == (0, 0)
    finally:
        await c.stop()


async def test_a_connection_closed_for_good_by_the_server_ends_the_loop_instead_of_spinning(
    nc: Client, nats_url: str, wait_for: WaitFor
) -> None:
    import nats

    # no reconnection: whether nats-py reads the server's -ERR (then it closes for good) or only
    # sees the socket closed (then it would reconnect), the connection ends closed
    own = await nats.connect(nats_url, allow_reconnect=False, error_cb=_quiet)
    closed: list[str] = []

    async def handler(subject: str, body: bytes) -> None:
        pass

    c = PullConsumer(
        lambda: own,
        stream=STREAM,
        subject=SUBJECT,
        durable="closing",
        config=ConsumerConfig(ack_wait=30),
        handler=handler,
        fetch_timeout_s=0.2,
        on_closed=lambda durable, error: closed.append(durable),
    )
    await c.start()
    try:
        # a body under max_payload whose headers take it over: the server closes the connection
        # (nats-py checks the body alone), and nats-py gives up on it for good
        body = b"y" * (own.max_payload - 10)
        with contextlib.suppress(Exception):
            await own.publish("test.other", body, headers={"k": "v" * 64})
            await flushed(own, 2)
        await wait_for(lambda: own.is_closed)
        await wait_for(lambda: len(closed) >= 1)
        assert closed[0] == "closing"
    finally:
        await c.stop(timeout_s=2)


async def _quiet(_: Exception) -> None:
    return None
