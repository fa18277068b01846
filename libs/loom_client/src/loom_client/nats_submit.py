"""Submitting tasks over NATS: a task published on JetStream, as agents and services do.

The task goes to ``loom.task.submitted.<agent>`` (stream ``LOOM_TASKS``) with the
``Nats-Msg-Id`` of :func:`~loom_protocol.submitted_msg_id`, so publishing the same task again
is one message. The dispatcher routes it like a REST submission; a task for an agent no
instance ever named ends ``dead`` at once unless its metadata has ``waitForAgent: true``.

:class:`TaskPublisher` keeps one connection, opened on first use. :class:`BackgroundLoop` runs
it for the blocking client, on an event loop of its own in a daemon thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
from loom_protocol import MSG_ID_HEADER, Task, subjects, submitted_msg_id
from loom_protocol.settings import NatsConnection
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NoStreamResponseError

from .errors import Unavailable

__all__ = ["BackgroundLoop", "TaskPublisher"]

T = TypeVar("T")


class TaskPublisher:
    """Publishes tasks on JetStream from one connection, opened on first use.

    Args:
        connection: The NATS servers and how to connect to them (credentials included, if any).
        timeout_s: How long connecting, and JetStream's acknowledgement, may take.
    """

    def __init__(self, connection: NatsConnection, timeout_s: float) -> None:
        self.connection = connection
        # what errors name: the servers without their credentials
        self.url = ",".join(urlsplit(server).netloc.rpartition("@")[2] for server in connection.servers)
        self.timeout_s = timeout_s
        self._nc: Client | None = None
        self._lock = asyncio.Lock()
        self._last_error: Exception | None = None

    async def _on_error(self, exc: Exception) -> None:
        """nats-py's error callback: kept for the :class:`Unavailable` a failed connect raises
        (an authorization violation says more than nats-py's final NoServersError, or the
        connection reset by the server that refused the credentials)."""
        if self._last_error is None or "authorization" not in str(self._last_error).lower():
            self._last_error = exc

    async def _connection(self) -> Client:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._last_error = None
                try:
                    self._nc = await asyncio.wait_for(
                        nats.connect(
                            self.connection.servers,
                            connect_timeout=self.timeout_s,
                            max_reconnect_attempts=1,
                            reconnect_time_wait=0.1,
                            error_cb=self._on_error,
                            **self.connection.options,
                        ),
                        self.timeout_s,
                    )
                except (OSError, TimeoutError, NatsError) as exc:
                    # nats-py ends with NoServersError; the server's own refusal came before it
                    cause = self._last_error if self._last_error is not None else exc
                    raise Unavailable(
                        f"{self.url}: cannot connect to NATS ({cause})", code="unavailable"
                    ) from exc
            return self._nc

    async def publish(self, task: Task) -> None:
        """Publish ``task`` and wait for JetStream's acknowledgement.

        Raises:
            Unavailable: NATS could not be reached, no stream takes the subject (Loom is not
                running there), or no acknowledgement came in time.
        """
        nc = await self._connection()
        js = nc.jetstream(timeout=self.timeout_s)
        subject = subjects.task_submitted(task.target_agent)
        try:
            await js.publish(subject, task.to_json(), headers={MSG_ID_HEADER: submitted_msg_id(task.task_id)})
        except NoStreamResponseError as exc:
            raise Unavailable(f"{self.url}: no JetStream stream takes {subject}", code="no_stream") from exc
        except (OSError, TimeoutError, NatsError) as exc:
            raise Unavailable(f"{self.url}: task {task.task_id!r} not acknowledged ({exc!r})") from exc

    async def close(self) -> None:
        """Close the connection, if open (safe to call twice)."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except (OSError, NatsError):
                pass


class BackgroundLoop:
    """An event loop in a daemon thread, started on first use: how the blocking client runs
    the asynchronous NATS client."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="loom-client-nats", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` on the loop and return its result.

        Raises:
            Unavailable: It did not finish in ``timeout_s`` (it is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self._running())
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise Unavailable(f"no answer from NATS in {timeout_s:g} s", code="unavailable") from None

    def close(self) -> None:
        """Stop the loop and its thread (safe to call twice)."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
