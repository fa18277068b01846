"""The live feed: the query service's ``WS /ws/events``, every event as it is published.

A client sends ``{"filters": {...}}`` and the service answers ``{"type": "subscribed"}``; from
then on it sends ``{"type": "event", "data": <CloudEvent>}``, ``{"type": "chunk", "data":
<TaskStreamChunk>}`` for the answer chunks of streaming tasks, and ``{"type": "dropped",
"count": n}`` when this client read too slowly and lost events. :class:`LiveFeed` (blocking)
and :class:`AsyncLiveFeed` open the socket and wait for the subscription on entry, so every
event published after ``with client.live(...) as feed:`` is received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from loom_protocol import CloudEvent, TaskStreamChunk
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from .errors import InvalidRequest, LoomError, NotFound, Timeout, Unavailable, error_from_status
from .models import Dropped, LiveMessage

__all__ = ["AsyncLiveFeed", "LiveFeed", "live_filters", "live_url", "matches", "parse_message"]

Filter = str | Sequence[str] | None


def live_filters(
    *,
    task_id: Filter = None,
    event_type: Filter = None,
    agent: Filter = None,
    trace_id: Filter = None,
    session_id: Filter = None,
) -> dict[str, Any]:
    """The feed's filters: each given one must match (a list: any of its values).

    Args:
        task_id: Events of these tasks (and their answer chunks).
        event_type: Exact types, or prefixes ending in ``.*`` (``task.*``); ``task.stream``
            is the answer chunks.
        agent: Events emitted by these agents (or sources).
        trace_id: Events of these traces.
        session_id: Events of these sessions.
    """
    given = {
        "task_id": task_id,
        "event_type": event_type,
        "node_id": agent,
        "trace_id": trace_id,
        "session_id": session_id,
    }
    return {
        name: [value] if isinstance(value, str) else list(value)
        for name, value in given.items()
        if value is not None
    }


def live_url(query_url: str) -> str:
    """The WebSocket URL of the feed of the query service at ``query_url``."""
    base = query_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/events"
    return "ws://" + base.removeprefix("http://") + "/ws/events"


def parse_message(text: str | bytes) -> LiveMessage | dict[str, Any] | None:
    """One frame of the feed: an event, a chunk or a drop notice; the control message itself
    (a dict) for ``subscribed`` and ``error``; None for anything else."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    kind = message.get("type")
    try:
        if kind == "event":
            return CloudEvent.model_validate(message.get("data"))
        if kind == "chunk":
            return TaskStreamChunk.model_validate(message.get("data"))
        if kind == "dropped":
            return Dropped.model_validate(message)
    except ValidationError:
        return None
    if kind in ("subscribed", "error"):
        return message
    return None


def _type_matches(pattern: str, value: str) -> bool:
    return value.startswith(pattern[:-1]) if pattern.endswith(".*") else value == pattern


def matches(message: LiveMessage, filters: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``message`` passes ``filters`` (:func:`live_filters`), as the service decides it.

    The service applies new filters to what it publishes from then on; events it queued for this
    client just before are checked here again, so a feed never yields what its filters exclude.
    """
    if isinstance(message, Dropped):
        return True
    kind: str
    task: str | None
    trace: str | None
    node: str | None
    session: str | None
    if isinstance(message, TaskStreamChunk):
        kind, task, trace, node, session = "task.stream", message.task_id, None, None, None
    else:
        kind, task, trace, session = message.type, message.taskid, message.traceid, message.sessionid
        node = message.agentid or message.source
    checks: list[tuple[str, str | None]] = [
        ("task_id", task),
        ("trace_id", trace),
        ("session_id", session),
    ]
    for name, value in checks:
        wanted = filters.get(name)
        if wanted is not None and value not in wanted:
            return False
    nodes = filters.get("node_id")
    if nodes is not None and node not in {n.removeprefix("agent:") for n in nodes}:
        return False
    types = filters.get("event_type")
    return types is None or any(_type_matches(t, kind) for t in types)


def _subscribe_message(filters: Mapping[str, Any]) -> str:
    return json.dumps({"filters": dict(filters)})


def _check_subscribed(reply: LiveMessage | dict[str, Any] | None) -> bool:
    """True once the service confirmed the filters; raises for a refusal."""
    if isinstance(reply, dict):
        if reply.get("type") == "error":
            raise InvalidRequest(str(reply.get("reason", "filters refused")), code="invalid_filters")
        return reply.get("type") == "subscribed"
    return False


def _open_error(exc: Exception, url: str) -> LoomError:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status == 404:
            return NotFound(f"{url}: no live feed here", code="not_found", status=404)
        if status in (401, 403):  # no API key, or one without the read scope
            body = bytes(exc.response.body or b"")
            return error_from_status(status, body, where=url, reason=exc.response.reason_phrase)
        return Unavailable(f"{url}: refused with HTTP {status}", code="unavailable", status=status)
    if isinstance(exc, InvalidURI):
        return InvalidRequest(f"{url}: not a WebSocket URL", code="invalid_url")
    return Unavailable(f"{url}: {type(exc).__name__} {exc}".rstrip(), code="unavailable")


_OPEN_ERRORS = (OSError, TimeoutError, InvalidHandshake, InvalidURI)


class LiveFeed:
    """The live feed, blocking: ``with client.live(task_id=...) as feed: for msg in feed: ...``.

    Iterating yields :class:`~loom_protocol.CloudEvent`, :class:`~loom_protocol.TaskStreamChunk`
    and :class:`~loom_client.models.Dropped` until the service closes the feed; :meth:`receive`
    takes one message with a timeout.
    """

    def __init__(
        self, url: str, filters: Mapping[str, Any], headers: Mapping[str, str], open_s: float
    ) -> None:
        self.url = url
        self.filters = dict(filters)
        self._headers = dict(headers)
        self._open_s = open_s
        self._ws: SyncConnection | None = None
        self._closing = contextlib.ExitStack()

    def open(self) -> Self:
        """Connect and subscribe; returns once the service applies the filters."""
        try:
            self._ws = self._closing.enter_context(
                sync_connect(
                    self.url, additional_headers=self._headers, open_timeout=self._open_s, proxy=None
                )
            )
            self._ws.send(_subscribe_message(self.filters))
            while not _check_subscribed(parse_message(self._ws.recv(timeout=self._open_s))):
                pass
        except _OPEN_ERRORS as exc:
            self.close()
            raise _open_error(exc, self.url) from exc
        except (ConnectionClosed, LoomError) as exc:
            self.close()
            if isinstance(exc, LoomError):
                raise
            raise Unavailable(f"{self.url}: closed while subscribing", code="unavailable") from exc
        return self

    def receive(self, timeout: float | None = None) -> LiveMessage:
        """The next event, chunk or drop notice.

        Args:
            timeout: Seconds to wait; None waits as long as it takes.

        Raises:
            Timeout: Nothing came in ``timeout`` seconds.
            Unavailable: The feed is closed.
        """
        if self._ws is None:
            raise Unavailable(f"{self.url}: the feed is not open", code="unavailable")
        while True:
            try:
                text = self._ws.recv(timeout=timeout)
            except TimeoutError:
                raise Timeout(f"no live message in {timeout:g} s") from None
            except ConnectionClosed as exc:
                raise Unavailable(f"{self.url}: the feed closed", code="unavailable") from exc
            message = parse_message(text)
            if message is not None and not isinstance(message, dict) and matches(message, self.filters):
                return message

    def __iter__(self) -> Iterator[LiveMessage]:
        while True:
            try:
                yield self.receive()
            except Unavailable:
                return

    def close(self) -> None:
        """Close the socket (safe to call twice)."""
        self._ws = None
        self._closing.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncLiveFeed:
    """The live feed, asynchronous: ``async with client.live(...) as feed: async for msg in feed``."""

    def __init__(
        self, url: str, filters: Mapping[str, Any], headers: Mapping[str, str], open_s: float
    ) -> None:
        self.url = url
        self.filters = dict(filters)
        self._headers = dict(headers)
        self._open_s = open_s
        self._ws: AsyncConnection | None = None

    async def open(self) -> Self:
        """Connect and subscribe; returns once the service applies the filters."""
        try:
            self._ws = await async_connect(
                self.url, additional_headers=self._headers, open_timeout=self._open_s, proxy=None
            )
            await self._ws.send(_subscribe_message(self.filters))
            while not _check_subscribed(parse_message(await asyncio.wait_for(self._ws.recv(), self._open_s))):
                pass
        except _OPEN_ERRORS as exc:
            await self.close()
            raise _open_error(exc, self.url) from exc
        except (ConnectionClosed, LoomError) as exc:
            await self.close()
            if isinstance(exc, LoomError):
                raise
            raise Unavailable(f"{self.url}: closed while subscribing", code="unavailable") from exc
        return self

    async def receive(self, timeout: float | None = None) -> LiveMessage:  # noqa: ASYNC109 (as LiveFeed)
        """The next event, chunk or drop notice (see :meth:`LiveFeed.receive`)."""
        if self._ws is None:
            raise Unavailable(f"{self.url}: the feed is not open", code="unavailable")
        while True:
            try:
                text = await asyncio.wait_for(self._ws.recv(), timeout)
            except TimeoutError:
                raise Timeout(f"no live message in {timeout:g} s") from None
            except ConnectionClosed as exc:
                raise Unavailable(f"{self.url}: the feed closed", code="unavailable") from exc
            message = parse_message(text)
            if message is not None and not isinstance(message, dict) and matches(message, self.filters):
                return message

    async def __aiter__(self) -> AsyncIterator[LiveMessage]:
        while True:
            try:
                yield await self.receive()
            except Unavailable:
                return

    async def close(self) -> None:
        """Close the socket (safe to call twice)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
