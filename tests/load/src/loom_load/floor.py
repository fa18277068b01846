"""The nats-py floor: what one durable hop plus a core-NATS reply costs with nothing else on top.

A worker process (``python -m loom_load.floor``, started by the harness, one per core) binds to
the run's durable pull consumer, fetches batches, publishes each payload back to the reply
subject its header names over core NATS, and acks it. The client side is
:mod:`loom_load.reply_bench`, the same as the FastStream peer's: the ceiling any JetStream
design could reach on this machine with Python clients.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats

from .reply_bench import REPLY_HEADER, from_env

FETCH_BATCH = 64


def worker_commands(workers: int) -> list[list[str]]:
    """One process per worker."""
    return [[sys.executable, "-m", "loom_load.floor"] for _ in range(workers)]


async def serve() -> None:
    servers, stream, subject, durable = from_env()
    nc = await nats.connect(servers, name=f"loom-load-floor-{durable}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sub = await nc.jetstream().pull_subscribe(subject, durable=durable, stream=stream)
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=1.0)
            except TimeoutError:  # nothing to fetch (nats-py raises its own subclass, or asyncio's)
                continue
            for msg in msgs:
                reply = (msg.headers or {}).get(REPLY_HEADER)
                if reply:
                    await nc.publish(reply, msg.data)
                await msg.ack()
    finally:
        await nc.flush()
        await nc.close()


if __name__ == "__main__":
    asyncio.run(serve())
