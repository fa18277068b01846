"""The hot path: durable JetStream pull consumers, batched writes, acks after commit.

The JetStream pull protocol is used directly (:mod:`.puller`) rather than a FastStream
subscriber: ingest needs a batch to stay unacknowledged for as long as the database is down
(retrying with backoff, extending the ack deadline with ``in_progress``), and to be acked only
after its transaction committed; FastStream's batch subscriber decides acks per handler call
and decodes/logs every message, and nats-py's ``fetch`` costs ~150 µs per message.

Each stream has one :class:`StreamConsumer` with two stages joined by a small queue: the
reader fetches and decodes a batch (by size, or by time once the first message arrived)
while the writer commits the previous one, so Python's decoding overlaps the database's
work. Redelivered messages (after a crash or an expired ack deadline) are absorbed by the
idempotent insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from . import metrics
from .health import DatabaseHealth
from .puller import ConsumerGone, Puller
from .rows import Incoming, decode, msg_id_of
from .store import EventWriter, Item
from .telemetry import trace_committed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerOptions:
    batch_size: int
    linger_s: float
    fetch_wait_s: float
    ack_wait_s: float
    max_ack_pending: int
    max_event_bytes: int
    retry_min_s: float
    retry_max_s: float
    drain_s: float = 5.0  # on shutdown, how long the writer may keep committing what was read


@dataclass(frozen=True)
class Batch:
    msgs: list[Msg]
    items: list[Item]
    read_ns: int = field(default_factory=time.time_ns)


def incoming(msg: Msg) -> Incoming:
    meta = msg.metadata
    return Incoming(
        stream=meta.stream,
        subject=msg.subject,
        data=msg.data,
        stream_seq=meta.sequence.stream,
        timestamp=meta.timestamp,
        msg_id=msg_id_of(msg.headers),
    )


@dataclass(eq=False)
class StreamConsumer:
    nc: NATS
    js: JetStreamContext
    store: EventWriter
    health: DatabaseHealth
    _: KW_ONLY
    stream: str
    subject: str
    durable: str
    options: ConsumerOptions
    _queue: asyncio.Queue[Batch] = field(default_factory=lambda: asyncio.Queue(maxsize=2), init=False)
    _current: Batch | None = field(default=None, init=False)
    _puller: Puller | None = field(default=None, init=False)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.options.ack_wait_s,
            max_ack_pending=self.options.max_ack_pending,
            max_deliver=-1,  # never give up on a message: a database outage must not lose events
        )

    async def run(self) -> None:
        self._puller = await self._start_puller()
        reader = asyncio.create_task(self._read_forever(), name=f"ingest-read-{self.stream}")
        writer = asyncio.create_task(self._write_forever(), name=f"ingest-write-{self.stream}")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # surface a crash
        finally:
            await self._stop(reader, writer)

    async def _stop(self, reader: asyncio.Task[None], writer: asyncio.Task[None]) -> None:
        """Stop reading, let the writer commit what was read (briefly), hand the rest back."""
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if not writer.done():
            joined = asyncio.create_task(self._queue.join())
            await asyncio.wait(
                {joined, writer}, timeout=self.options.drain_s, return_when=asyncio.FIRST_COMPLETED
            )
            joined.cancel()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        held = [self._current.msgs] if self._current is not None else []
        while not self._queue.empty():
            held.append(self._queue.get_nowait().msgs)
        self._current = None
        if self._puller is not None:
            await self._puller.stop()
            held.append(self._puller.take_buffered())
            self._puller = None
        for msgs in held:  # redelivered at once instead of after ack_wait
            await self._each(msgs, lambda m: m.nak())

    # -- reading ------------------------------------------------------------------------------
    async def _start_puller(self) -> Puller:
        delay = self.options.retry_min_s
        while True:
            puller = Puller(self.nc, self.js, self.stream, self.config(), self.options.batch_size)
            try:
                await puller.start()
                return puller
            except Exception as exc:
                await puller.stop()
                log.warning("cannot create consumer %s on %s: %r; retrying", self.durable, self.stream, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.retry_max_s)

    async def _read_forever(self) -> None:
        opt = self.options
        while True:
            puller = self._puller
            assert puller is not None
            try:
                msgs = await puller.take(opt.batch_size, opt.fetch_wait_s, opt.linger_s)
            except ConsumerGone as exc:
                log.warning("consumer %s on %s went away (%s); recreating it", self.durable, self.stream, exc)
                await puller.stop()
                self._puller = await self._start_puller()
                continue
            if not msgs:
                metrics.LAG_SECONDS.labels(self.stream).set(0)
                continue
            items: list[Item] = []
            for msg in msgs:
                inc = incoming(msg)
                items.append((inc, decode(inc, opt.max_event_bytes)))
            await self._queue.put(Batch(msgs, items))

    # -- writing ------------------------------------------------------------------------------
    async def _write_forever(self) -> None:
        while True:
            batch = self._current = await self._queue.get()
            await self._commit(batch)
            trace_committed(batch.msgs, batch.read_ns)
            self._current = None
            for msg in batch.msgs:
                with contextlib.suppress(Exception):  # a lost ack means a harmless redelivery
                    await msg.ack()
            self._queue.task_done()
            self._observe(batch)

    async def _commit(self, batch: Batch) -> None:
        """Write until it sticks: a database outage keeps the batch unacked and retries."""
        delay = self.options.retry_min_s
        touched = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                result = await self.store.write(batch.items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.DB_ERRORS.labels(self.stream).inc()
                if self.health.failed(self.stream, exc):
                    log.warning("database write failed on %s, retrying until it works: %r", self.stream, exc)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 (jitter)
                delay = min(delay * 2, self.options.retry_max_s)
                if time.monotonic() - touched > self.options.ack_wait_s / 3:
                    touched = time.monotonic()
                    await self._each(batch.msgs, lambda m: m.in_progress())
                continue
            if self.health.ok(self.stream):
                log.info("database writes on %s succeed again", self.stream)
            metrics.WRITE_SECONDS.labels(self.stream).observe(time.monotonic() - started)
            metrics.ROWS_WRITTEN.labels("events").inc(result.events)
            metrics.ROWS_WRITTEN.labels("tasks").inc(result.tasks)
            metrics.ROWS_WRITTEN.labels("dead_letters").inc(len(result.dead_letters))
            metrics.DUPLICATES.inc(result.duplicates)
            for rejected_by, reason in result.dead_letters:
                metrics.DEAD_LETTERS.labels(rejected_by).inc()
                if rejected_by == "ingest":
                    log.info("dead-lettered a message from %s: %s", self.stream, reason)
            return

    @staticmethod
    async def _each(msgs: list[Msg], action: Callable[[Msg], object]) -> None:
        for msg in msgs:
            with contextlib.suppress(Exception):
                await action(msg)  # type: ignore[misc]

    def _observe(self, batch: Batch) -> None:
        metrics.BATCH_SIZE.labels(self.stream).observe(len(batch.msgs))
        newest = max(inc.timestamp for inc, _ in batch.items)
        metrics.LAG_SECONDS.labels(self.stream).set(max((datetime.now(UTC) - newest).total_seconds(), 0.0))
        metrics.PENDING.labels(self.stream).set(batch.msgs[-1].metadata.num_pending)
