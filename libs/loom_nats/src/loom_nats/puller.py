"""A continuous JetStream pull: one outstanding pull request at a time, messages buffered as
they arrive, taken in batches by size or time.

nats-py's ``PullSubscription.fetch`` waits for each message with its own ``wait_for``, which
measured ~150 µs per message here, the largest cost of the whole ingest path. This speaks
the pull protocol directly (a request on ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``
answered on an inbox subscription) with public nats-py calls only, the way nats.go's
``Consume`` does: messages are never dropped on the client (a request's late messages still
land in the buffer), and at most one request's worth (``batch``) is buffered beyond what the
caller took, so a stalled writer stops the pulling.

An open request has the server send each message as it arrives, a wake-up of this process per
message. A consumer that writes in batches anyway asks with :meth:`Puller.take_ready` instead
(a ``no_wait`` request): the server sends what is ready in one go and ends the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

STATUS = "Status"


class ConsumerGone(Exception):
    """The server says the consumer was deleted; the caller recreates it."""


class Puller:
    def __init__(
        self, nc: NATS, js: JetStreamContext, stream: str, config: ConsumerConfig, batch: int
    ) -> None:
        assert config.durable_name
        self._nc = nc
        self._js = js
        self.stream = stream
        self._config = config
        self._batch = batch
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{config.durable_name}"
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._open_until = 0.0  # monotonic time the outstanding request expires (0: none open)
        self._remaining = 0
        self._gone: str | None = None
        self._pause = False
        self._no_wait = False  # the open request is a no_wait one: its 404 is an empty answer

    async def start(self) -> None:
        try:
            await self._js.consumer_info(self.stream, self._config.durable_name or "")
        except NotFoundError:
            await self._js.add_consumer(self.stream, config=self._config)
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def take_buffered(self) -> list[Msg]:
        """What arrived and was not taken (to hand back on shutdown)."""
        msgs = list(self._buffer)
        self._buffer.clear()
        return msgs

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(STATUS) if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            self._remaining -= 1
            if self._remaining <= 0:
                self._open_until = 0.0
        elif status == "100":  # idle heartbeat
            return
        else:  # 408 request expired; 404 no messages, 409 max waiting / consumer deleted, 503...
            self._open_until = 0.0
            description = (msg.headers or {}).get("Description", "")
            if status == "503" or (status == "409" and "deleted" in description.lower()):
                self._gone = f"{status} {description}".strip()
            elif status != "408" and not (status == "404" and self._no_wait):
                self._pause = True  # ended early without messages: do not spin on re-requests
        self._arrived.set()

    async def _request(self, expires_s: float, batch: int | None = None, *, no_wait: bool = False) -> None:
        if self._open_until > time.monotonic():
            return
        if self._pause:
            self._pause = False
            await asyncio.sleep(0.05)
        size = batch or self._batch
        self._remaining = size
        self._no_wait = no_wait
        self._open_until = time.monotonic() + expires_s + 1.0  # the server's 408 may be lost on a reconnect
        body: dict[str, object] = {"batch": size}
        if no_wait:  # what is ready, then a 408 (some) or 404 (none) at once: nothing to expire
            body["no_wait"] = True
        else:
            body["expires"] = int(expires_s * 1_000_000_000)
        await self._nc.publish(self._next_subject, json.dumps(body).encode(), reply=self._inbox)

    async def _wait(self, seconds: float) -> None:
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._arrived.wait()

    async def take(
        self, max_n: int, wait_s: float, linger_s: float, *, batch: int | None = None
    ) -> list[Msg]:
        """Up to ``max_n`` messages: wait up to ``wait_s`` for the first, then ``linger_s`` for more.

        A request this opens asks for ``batch`` messages (the puller's batch by default); the
        server keeps sending until it has sent that many or the request expires."""
        start = time.monotonic()
        first_by = start + wait_s
        while not self._buffer:
            self._raise_if_gone()
            await self._request(wait_s, batch)
            left = first_by - time.monotonic()
            if left <= 0:
                return []
            await self._wait(min(left, max(self._open_until - time.monotonic(), 0.01)))
        linger_until = time.monotonic() + linger_s
        while len(self._buffer) < max_n:
            self._raise_if_gone()
            left = linger_until - time.monotonic()
            if left <= 0:
                break
            await self._request(wait_s, batch)
            await self._wait(left)
        return [self._buffer.popleft() for _ in range(min(max_n, len(self._buffer)))]

    async def take_ready(self, max_n: int, timeout_s: float = 5.0) -> list[Msg]:
        """Up to ``max_n`` messages the consumer has ready now, asked for in one ``no_wait``
        request: the server sends them in one go and ends the request at once. [] when none is
        ready. While a request is still open (an earlier :meth:`take`'s), only what it brought
        is returned. Bounded by ``timeout_s`` should the request's end never come (a reconnect)."""
        self._raise_if_gone()
        missing = max_n - len(self._buffer)
        if missing > 0 and self._open_until <= time.monotonic():
            await self._request(timeout_s, missing, no_wait=True)
            until = time.monotonic() + timeout_s
            while self._open_until and (left := min(until, self._open_until) - time.monotonic()) > 0:
                await self._wait(left)
            self._raise_if_gone()
        return [self._buffer.popleft() for _ in range(min(max_n, len(self._buffer)))]

    def _raise_if_gone(self) -> None:
        if self._gone is not None:
            reason, self._gone = self._gone, None
            raise ConsumerGone(reason)
