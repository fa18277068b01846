"""Streaming answers: the chunks of ``action: "stream"`` tasks, re-served as Server-Sent Events.

Workers publish ``TaskStreamChunk`` messages on ``loom.stream.<task_id>`` (core NATS, not
stored). Every dispatcher replica subscribes to all of them (no queue group: an SSE reader may
be on any replica) and keeps the chunks of the latest tasks in memory — at most ``max_tasks``
tasks and ``max_bytes`` of chunk text in all, the oldest task dropped first — so a reader that
connects right after its ``202`` still gets the answer from its first chunk.
A reader that comes after the chunks were evicted gets the final result in the ``done`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import Task, TaskStatusChanged, TaskStreamChunk, is_terminal, subjects
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter
from pydantic import ValidationError

log = logging.getLogger(__name__)

CHUNKS_SEEN = Counter("loom_dispatcher_stream_chunks_total", "Answer chunks received from workers")
CHUNKS_BAD = Counter(
    "loom_dispatcher_stream_chunks_rejected_total", "Malformed answer chunks (dead-lettered)"
)

MAX_TASKS = 1000  # tasks whose chunks are kept
MAX_CHUNKS = 20_000  # chunks kept per task; past it the rest is only forwarded live
MAX_BYTES = 32 * 1024 * 1024  # chunk text kept over all tasks (UTF-8 bytes of the deltas)
DONE_GRACE_S = 2.0  # after the final status: how long to wait for chunks still on their way
PING_S = 15.0  # an SSE comment line this often, so idle connections stay open through proxies

Item = TaskStreamChunk | TaskStatusChanged
Rejecter = Callable[[str, bytes, str], Awaitable[None]]


@dataclass(eq=False)
class Reader:
    """One SSE reader of one task: the chunks kept so far, then what arrives in ``queue``."""

    task_id: str
    backlog: list[TaskStreamChunk]
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)


class AnswerTail:
    """The chunks of recent streaming tasks, kept per task and fanned out to readers."""

    def __init__(
        self, max_tasks: int = MAX_TASKS, max_chunks: int = MAX_CHUNKS, max_bytes: int = MAX_BYTES
    ) -> None:
        self._max_tasks = max_tasks
        self._max_chunks = max_chunks
        self._max_bytes = max_bytes
        self._chunks: OrderedDict[str, list[TaskStreamChunk]] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self.kept_bytes = 0
        self._readers: dict[str, set[Reader]] = {}
        self._sub: Subscription | None = None
        self._reject: Rejecter | None = None

    async def start(self, nc: Client, reject: Rejecter | None = None) -> None:
        """Subscribe to every task's chunks; malformed ones go to ``reject(subject, raw, reason)``."""
        self._reject = reject
        self._sub = await nc.subscribe(subjects.TASK_STREAM_ALL, cb=self._on_chunk)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def follow(self, task_id: str) -> Reader:
        """Start reading ``task_id``: its chunks so far, and from now on every new one."""
        reader = Reader(task_id, list(self._chunks.get(task_id, ())))
        self._readers.setdefault(task_id, set()).add(reader)
        return reader

    def leave(self, reader: Reader) -> None:
        readers = self._readers.get(reader.task_id)
        if readers is not None:
            readers.discard(reader)
            if not readers:
                del self._readers[reader.task_id]

    async def _on_chunk(self, msg: Msg) -> None:
        try:
            chunk = TaskStreamChunk.from_json(msg.data)
            if subjects.task_stream(chunk.task_id) != msg.subject:
                raise ValueError(f"chunk of task {chunk.task_id!r} on {msg.subject}")
        except (ValidationError, ValueError) as exc:
            CHUNKS_BAD.inc()
            log.warning("malformed stream chunk on %s: %s", msg.subject, exc)
            if self._reject is not None:
                with contextlib.suppress(Exception):
                    await self._reject(msg.subject, msg.data, f"malformed stream chunk: {exc}")
            return
        CHUNKS_SEEN.inc()
        self.add(chunk)

    def add(self, chunk: TaskStreamChunk) -> None:
        """Keep ``chunk`` and pass it to the task's readers."""
        kept = self._chunks.get(chunk.task_id)
        if kept is None:
            kept = self._chunks[chunk.task_id] = []
            self._bytes[chunk.task_id] = 0
        size = len(chunk.delta.encode())
        if len(kept) < self._max_chunks and size <= self._max_bytes:
            kept.append(chunk)
            self._bytes[chunk.task_id] += size
            self.kept_bytes += size
        while len(self._chunks) > 1 and (
            len(self._chunks) > self._max_tasks or self.kept_bytes > self._max_bytes
        ):
            self._drop_oldest()
        for reader in self._readers.get(chunk.task_id, ()):
            reader.queue.put_nowait(chunk)

    def _drop_oldest(self) -> None:
        task_id, _ = self._chunks.popitem(last=False)
        self.kept_bytes -= self._bytes.pop(task_id, 0)


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One Server-Sent Event: an optional ``event:`` line and one ``data:`` line of JSON."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def answer_events(
    reader: Reader,
    current: Callable[[], Awaitable[Task | None]],
    *,
    timeout_s: float,
    grace_s: float = DONE_GRACE_S,
    ping_s: float = PING_S,
) -> AsyncIterator[bytes]:
    """The SSE body of one task's stream.

    Every chunk is one ``data:`` event (the ``TaskStreamChunk`` in its wire form, in order);
    the stream ends with ``event: done`` (the task's status, result and error) once the task is
    terminal and its last chunk is in, or with ``event: timeout`` when neither a chunk nor the
    end came for ``timeout_s`` (a task that never starts). ``current`` reads the stored task.
    """
    streamed = done_chunk = False
    task = await current()  # after following: a task that ended before is seen here
    final = task is not None and is_terminal(task.status)
    for chunk in reader.backlog:
        streamed, done_chunk = True, done_chunk or chunk.done
        yield sse(chunk.to_wire())
    quiet_s = 0.0
    while not (final and (done_chunk or not streamed)):
        wait_s = grace_s if final else min(ping_s, timeout_s - quiet_s)
        try:
            async with asyncio.timeout(wait_s):  # not wait_for: no task per chunk (3.11)
                item = await reader.queue.get()
        except TimeoutError:
            if final:
                break  # the last chunks never came (the worker stopped mid-answer): end anyway
            quiet_s += wait_s
            if quiet_s >= timeout_s:
                yield sse({"taskId": reader.task_id, "waitedS": timeout_s}, "timeout")
                return
            yield b": ping\n\n"
            continue
        quiet_s = 0.0
        if isinstance(item, TaskStatusChanged):
            final = True
            continue
        streamed, done_chunk = True, done_chunk or item.done
        yield sse(item.to_wire())
    task = await current()
    body: dict[str, Any] = {"taskId": reader.task_id}
    if task is not None:
        wire = task.to_wire()
        body |= {key: wire.get(key) for key in ("status", "result", "error")}
    yield sse(body, "done")
