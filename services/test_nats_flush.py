"""``loom_nats.flushed`` against a real nats-server: once it returns, the server has the
client's subscription, so a message another connection publishes right after reaches it."""

from __future__ import annotations

import asyncio

import nats
from loom_nats import flushed
from nats.aio.msg import Msg

ROUNDS = 300


async def test_a_flushed_subscription_hears_the_next_publish_from_another_connection(nats_url: str) -> None:
    subscriber, publisher = await nats.connect(nats_url), await nats.connect(nats_url)
    try:
        missed = []
        for i in range(ROUNDS):
            heard: asyncio.Queue[Msg] = asyncio.Queue()
            sub = await subscriber.subscribe(f"flush.test.{i}", cb=heard.put)
            await flushed(subscriber)
            await publisher.publish(f"flush.test.{i}", b"x")
            await flushed(publisher)
            try:
                await asyncio.wait_for(heard.get(), timeout=2)
            except TimeoutError:
                missed.append(i)
            await sub.unsubscribe()
        assert missed == []
    finally:
        await subscriber.close()
        await publisher.close()


async def test_a_closed_connection_is_an_error_not_a_wait(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    await nc.close()
    try:
        await flushed(nc, timeout_s=2)
    except nats.errors.ConnectionClosedError:
        return
    raise AssertionError("flushed returned on a closed connection")
