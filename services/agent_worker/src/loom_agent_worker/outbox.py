"""NATS out of the worker: every publish goes through :class:`Outbox`, one way per kind.

- ``stored``: a JetStream publish that waits for the stream's ack, at most ``ack_timeout_s``
  (status reports that decide a task's outcome, child task submissions); raises when not stored;
- ``unacked``: a plain publish on a stream's subject: JetStream stores it all the same, without
  an ack to wait for (the ``running`` report, which decides nothing);
- ``pipelined``: ``publish_async`` for a batch, the acks awaited together, at most
  ``ack_timeout_s`` after the last publish (observation events: measured useful, ``tests/load``
  ceilings); an ack not in by then is given up (its future cancelled, so the client's
  pending-ack slot is freed) and reported as a timeout, so a lost ack never blocks the sender;
- ``core``: core NATS, nothing stored (heartbeats, dead-letter records).

Every JetStream publish carries ``Nats-Msg-Id`` so the stream deduplicates retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from faststream.nats import NatsBroker
from loom_nats import flushed
from loom_protocol import MSG_ID_HEADER, TASKS_STREAM
from nats.js import JetStreamContext
from nats.js.api import PubAck

JSON = {"content-type": "application/json"}


class Outbox:
    def __init__(self, broker: NatsBroker, ack_timeout_s: float = 5.0) -> None:
        self.broker = broker
        self._ack_timeout_s = ack_timeout_s
        self._js: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        # one context: each new one opens its own reply subscription on its first publish_async
        if self._js is None:
            self._js = self.broker.connection.jetstream()
        return self._js

    async def stored(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        await self.broker.publish(
            body,
            subject,
            headers={**JSON, **(headers or {}), MSG_ID_HEADER: msg_id},
            stream=TASKS_STREAM.name,
            timeout=self._ack_timeout_s,
        )

    async def unacked(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> None:
        await self.broker.connection.publish(
            subject, body, headers={**JSON, **(headers or {}), MSG_ID_HEADER: msg_id}
        )

    async def pipelined(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[BaseException | None]:
        """Publish ``(subject, body, headers)`` messages; per message, None or why it was not stored.

        Bounded: each publish waits at most ``ack_timeout_s`` for a free pending-ack slot, and the
        acks at most ``ack_timeout_s`` after the last publish. Every future still open then is
        cancelled (the client frees its slot), whatever happened before, so none leaks.
        """
        results: list[BaseException | None] = [None] * len(messages)
        acks: dict[int, asyncio.Future[PubAck]] = {}
        try:
            for i, (subject, body, headers) in enumerate(messages):
                try:
                    # bounded by a timeout scope, not by wait_for or wait_stall: on Python 3.11 each
                    # of those runs the publish as a task of its own, an event-loop turn per
                    # message, which under load held a batch of events for hundreds of ms
                    async with asyncio.timeout(self._ack_timeout_s):
                        acks[i] = await self.js.publish_async(subject, body, headers=headers)
                except Exception as exc:  # not sent (stalled, disconnected, buffer full): that one only
                    results[i] = exc
            if acks:
                await asyncio.wait(acks.values(), timeout=self._ack_timeout_s)
        finally:
            for fut in acks.values():
                if not fut.done():
                    fut.cancel()
        for i, fut in acks.items():
            if fut.cancelled():
                results[i] = TimeoutError(f"no ack within {self._ack_timeout_s:g} s")
            else:
                results[i] = fut.exception()
        return results

    async def core(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        await self.broker.publish(body, subject, headers=headers)

    async def flush(self, timeout_s: int = 5) -> None:
        """Push out what the client still buffers and wait until the server has it (at shutdown)."""
        with contextlib.suppress(Exception):
            await flushed(self.broker.connection, timeout_s)
