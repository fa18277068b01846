"""The client side of the two "one durable hop + core reply" peers: FastStream and the nats-py floor.

Per run the harness creates a stream and a durable pull consumer of their own (deleted in
``finally``), starts the peer's worker processes (each in its own process group), and measures
the Celery baseline's two workloads. A task is one ``js.publish`` (awaiting the stream's ack) of
the echo payload with a header naming the client's reply subject; the worker's handler publishes
the payload back there over core NATS and acks the message. The client has one wildcard
subscription for the replies and resolves each task's future from the subject's last token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from . import subproc
from .loom import echo_params
from .peer_loop import Progress, both_workloads, wait_ready

REPLY_HEADER = "Loom-Load-Reply"
STREAM_MAX_AGE_S = 600
ENV_KEYS = (
    "LOOM_LOAD_PEER_NATS",
    "LOOM_LOAD_PEER_STREAM",
    "LOOM_LOAD_PEER_SUBJECT",
    "LOOM_LOAD_PEER_DURABLE",
)


def names(kind: str, token: str) -> dict[str, str]:
    """The stream, subject, durable consumer and reply prefix of one run of one peer."""
    return {
        "stream": f"LOOMLOAD_{kind.upper()}_{token}",
        "subject": f"loomload.{kind}.{token}",
        "durable": f"loomload-{kind}-{token}",
        "inbox": f"_INBOX.loomload.{kind}.{token}",
    }


def worker_env(nats_servers: Sequence[str], named: dict[str, str]) -> dict[str, str]:
    """What a worker process reads (see :func:`from_env`)."""
    values = (",".join(nats_servers), named["stream"], named["subject"], named["durable"])
    return {**os.environ, **dict(zip(ENV_KEYS, values, strict=True))}


def from_env() -> tuple[list[str], str, str, str]:
    """(NATS servers, stream, subject, durable) in a worker process."""
    servers, stream, subject, durable = (os.environ[k] for k in ENV_KEYS)
    return [u for u in servers.split(",") if u], stream, subject, durable


class ReplyClient:
    """Publishes tasks to the stream and matches the workers' replies to them."""

    def __init__(self, nc: Any, subject: str, inbox: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subject = subject
        self.inbox = inbox
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._sub: Any = None
        self.stray_replies = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            f"{self.inbox}.*", cb=self._on_reply, pending_msgs_limit=1_000_000
        )
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_reply(self, msg: Any) -> None:
        key = msg.subject.rsplit(".", 1)[1]
        fut = self._waiting.pop(key, None)
        if fut is None:
            self.stray_replies += 1  # a readiness probe answered after it gave up
            return
        if not fut.done():
            fut.set_result(msg.data)

    async def submit(self, payload: bytes) -> tuple[str, asyncio.Future[bytes]]:
        key = str(next(self._ids))
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            await self.js.publish(
                self.subject, payload, timeout=10.0, headers={REPLY_HEADER: f"{self.inbox}.{key}"}
            )
        except BaseException:
            self._waiting.pop(key, None)
            raise
        return key, fut

    async def wait(self, handle: tuple[str, asyncio.Future[bytes]], timeout: float) -> None:
        key, fut = handle
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(key, None)


async def run_reply_peer(
    kind: str,
    title: str,
    commands: Callable[[int], list[list[str]]],
    nats_servers: list[str],
    concurrency: int,
    workers: int,
    count: int,
    sequential_count: int,
    timeout_s: float,
    log_dir: Path,
    progress: Callable[[str, int], Progress | None],
    packages: Sequence[str] = ("nats-py",),
) -> dict[str, Any]:
    """Create the run's stream, start ``commands(workers)`` (one process each), run both
    workloads, stop the workers and delete the stream."""
    token = uuid.uuid4().hex[:8]
    named = names(kind, token)
    out: dict[str, Any] = {
        "stream": named["stream"],
        "durable": named["durable"],
        "workers": workers,
        "versions": {p: version(p) for p in packages},
        "cpu": {},
    }
    nc = await nats.connect(nats_servers, name=f"loom-load-{kind}-{token}", connect_timeout=3)
    js = nc.jetstream()
    client = ReplyClient(nc, named["subject"], named["inbox"])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await js.add_stream(
            StreamConfig(
                name=named["stream"],
                subjects=[named["subject"]],
                storage=StorageType.FILE,
                max_age=STREAM_MAX_AGE_S,
            )
        )
        await js.add_consumer(
            named["stream"],
            ConsumerConfig(
                durable_name=named["durable"], ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000
            ),
        )
        await client.start()
        env = worker_env(nats_servers, named)
        for n, command in enumerate(commands(workers)):
            procs.append(subproc.start(command, env, log_dir / f"{kind}-worker-{n}.log"))
        roots = {p.pid: kind for p in procs}
        out["worker_pids"] = [p.pid for p in procs]

        async def submit(i: int) -> tuple[str, asyncio.Future[bytes]]:
            return await client.submit(json.dumps(echo_params(i)).encode())

        async def probe() -> None:
            await client.wait(await client.submit(b'{"ping": true}'), 2.0)

        out["ready_s"] = round(await wait_ready(probe, lambda: all(p.poll() is None for p in procs)), 2)
        out |= await both_workloads(
            submit,
            client.wait,
            system=kind,
            title=title,
            roots=roots,
            count=count,
            sequential_count=sequential_count,
            concurrency=concurrency,
            timeout_s=timeout_s,
            progress=progress,
        )
        out["stray_replies"] = client.stray_replies
    finally:
        out["worker_exit"] = list(await asyncio.gather(*(asyncio.to_thread(subproc.stop, p) for p in procs)))
        await client.stop()
        with contextlib.suppress(Exception):
            await js.delete_stream(named["stream"])
        await nc.close()
    return out
