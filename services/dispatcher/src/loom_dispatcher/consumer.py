"""The dispatcher's hot JetStream consumers: a continuous pull (:class:`loom_nats.Puller`) per
durable consumer, each message handled in its own task.

FastStream's per-message machinery (message object, middlewares, log context, ack scope, and
with ``max_workers`` an anyio memory stream and two semaphores per message) cost more CPU
than the handlers it wraps; on the task path that was the largest share of the dispatcher's
CPU after Redis. This loop keeps what the handlers need from it:

- at most ``max_in_flight`` messages handled at once, each in its own task; the next message
  is taken as soon as a slot is free, so a slow message never holds back the others. The pull
  request stays open across messages (nats-py's ``fetch`` waited for each message with its own
  ``wait_for``, a task and an event-loop turn per message);
- ack after the handler returns, nak (redelivery) when it raises, as ``AckPolicy.NACK_ON_ERROR``,
  and nak what is still in hand (or pulled and not yet handed out) when :meth:`PullConsumer.stop`
  gives up waiting for it;
- a consumer deleted under it (the server answers 409, then 503) is created again;
- a consumer span per message continuing the trace in its headers, when tracing is on;
- a message larger than a task may be (:data:`~loom_protocol.limits.MAX_TASK_BYTES`: forwarding
  it could exceed NATS's ``max_payload``), or one the ``screen`` refuses, is dead-lettered on
  ``loom.rejected.dispatcher`` with the reason and acknowledged, never handed to the handler;
- a connection closed for good (nats-py gives up on it, e.g. after a protocol error) ends the
  process with a non-zero status so that its supervisor starts it again: nothing can fetch on
  it any more, and a loop retrying on it would only spin.

The consumers are the same durable consumers FastStream declared (same names and config), so
replicas share them and unacknowledged messages go to a live replica after ``ack_wait``.
Why this is not a FastStream subscriber: docs/adr/0001-nats-consumers.md (measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field, replace

from loom_nats import ConsumerGone, Puller
from loom_protocol import RejectedMessage, subjects
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js.api import ConsumerConfig
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from .admission import screen_message
from .telemetry import tracer

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]
Screen = Callable[[str, bytes], str | None]
"""Looks at a message before its handler: the reason to dead-letter it, or None to handle it."""

EXIT_CONNECTION_CLOSED = 75
"""The exit status when the broker connection is closed for good (EX_TEMPFAIL: start me again)."""


def exit_on_closed(durable: str, error: BaseException | None) -> None:
    """End the process: its NATS connection is closed for good and nothing here reopens it."""
    log.critical(
        "the NATS connection is closed for good (%r); consumer %s exits the process with status %d "
        "so that its supervisor restarts it",
        error,
        durable,
        EXIT_CONNECTION_CLOSED,
    )
    logging.shutdown()
    os._exit(EXIT_CONNECTION_CLOSED)


@dataclass(eq=False)
class PullConsumer:
    connection: Callable[[], Client]  # the broker's client, known once it has connected
    _: KW_ONLY
    stream: str
    subject: str
    durable: str
    config: ConsumerConfig
    handler: Handler
    max_in_flight: int = 64
    fetch_timeout_s: float = 0.5
    traced: bool = False
    screen: Screen = screen_message
    on_closed: Callable[[str, BaseException | None], None] = exit_on_closed
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _slot_free: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _loop_task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)
    _puller: Puller | None = field(default=None, init=False)

    async def start(self) -> None:
        self._puller = await self._start_puller()
        self._loop_task = asyncio.create_task(self._fetch_forever(), name=f"consume-{self.durable}")

    async def _start_puller(self) -> Puller:
        nc = self.connection()
        config = replace(self.config, durable_name=self.durable, filter_subject=self.subject)
        puller = Puller(nc, nc.jetstream(), self.stream, config, batch=self.max_in_flight)
        await puller.start()
        return puller

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop pulling, give the messages in hand ``timeout_s`` to finish, nak the rest."""
        self._stopping = True  # the loop also checks it: a cancellation can be swallowed in a take
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.wait({self._loop_task}, timeout=timeout_s)
        if self._puller is not None:
            # closes this client's inbox only (the durable consumer stays); what the server had
            # already sent to it is unacknowledged and comes back after ack_wait. Left open,
            # the connection's drain would wait for those messages to be read, in vain.
            await self._puller.stop()
            for msg in self._puller.take_buffered():  # pulled, never handed out: redelivered at once
                with contextlib.suppress(Exception):
                    await msg.nak()
        if self._in_flight:
            _, late = await asyncio.wait(list(self._in_flight), timeout=timeout_s)
            for task in late:
                task.cancel()  # _one naks its message: redelivered at once, not after ack_wait
            if late:
                await asyncio.wait(late, timeout=5.0)

    async def _fetch_forever(self) -> None:
        while not self._stopping:
            nc = self.connection()
            if nc.is_closed:
                self.on_closed(self.durable, nc.last_error)
                await asyncio.sleep(0.5)  # on_closed returned (a test's): wait, do not spin
                continue
            free = self.max_in_flight - len(self._in_flight)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            assert self._puller is not None
            try:
                msgs = await self._puller.take(free, self.fetch_timeout_s, 0.0)
            except ConsumerGone as exc:
                await self._resubscribe(exc)
                continue
            except ConnectionClosedError:
                await asyncio.sleep(0.5)  # closed for good: the loop's next turn ends the process
                continue
            except Exception:
                log.exception("fetch from %s failed; trying again", self.durable)
                await asyncio.sleep(0.5)
                continue
            self._hand_out(msgs)

    def _hand_out(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            task = asyncio.create_task(self._one(msg))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    async def _resubscribe(self, reason: ConsumerGone) -> None:
        """The consumer is gone (deleted, or the stream was recreated): create it again."""
        log.warning("consumer %s on %s is gone (%s); creating it again", self.durable, self.stream, reason)
        assert self._puller is not None
        await self._puller.stop()
        # what it pulled and had not handed out was delivered by the consumer that is gone: its
        # acks would go nowhere, and the new consumer delivers again what its policy says
        self._puller.take_buffered()
        while True:
            try:
                self._puller = await self._start_puller()
                break
            except Exception as exc:
                log.warning("cannot create consumer %s: %r; trying again", self.durable, exc)
                await asyncio.sleep(0.5)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_free.set()

    async def _refuse(self, msg: Msg, reason: str) -> None:
        """Dead-letter a message with ``reason`` (its first 64 KiB kept) and acknowledge it."""
        log.warning("message on %s refused: %s", msg.subject, reason)
        record = RejectedMessage(subject=msg.subject, reason=reason, raw=msg.data)
        headers = {"content-type": "application/json"}
        await self.connection().publish(subjects.rejected("dispatcher"), record.to_json(), headers=headers)
        with contextlib.suppress(Exception):
            await msg.ack()

    async def _one(self, msg: Msg) -> None:
        if (reason := self.screen(msg.subject, msg.data)) is not None:
            try:
                await self._refuse(msg, reason)
            except Exception:
                log.exception("dead-lettering a refused message from %s failed", self.durable)
                with contextlib.suppress(Exception):
                    await msg.nak()
            return
        try:
            if self.traced:
                parent = propagate.extract(msg.headers or {})
                with tracer.start_as_current_span(
                    f"{msg.subject} process", context=parent, kind=SpanKind.CONSUMER
                ):
                    await self.handler(msg.subject, msg.data)
            else:
                await self.handler(msg.subject, msg.data)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("handling a message from %s failed; it will be redelivered", self.durable)
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        with contextlib.suppress(Exception):  # unacknowledged: redelivered after ack_wait, handled again
            await msg.ack()
