"""``WS /ws/events``: the live feed, one NATS subscription fanned out to every client (made
when the first client connects, removed when the last one leaves).

Each client has a bounded queue and its own sender task, so a client that does not read
only fills its own queue: the NATS callback never waits on a socket. When a client's queue
is full its events are dropped and counted; before the next frame it is sent
``{"type": "dropped", "count": n}``. Clients choose what they get by sending
``{"filters": {...}}`` at any time (answered with ``{"type": "subscribed", "filters": ...}``);
without filters they get every event.

The answer chunks of streaming tasks (``action: "stream"``, core NATS ``loom.stream.<task_id>``)
go out on the same feed as ``{"type": "chunk", "data": <TaskStreamChunk>}``; for the filters a
chunk is of event type ``task.stream`` with its task id (so ``{"task_id": "<id>"}`` gets a task's
events and its chunks, ``{"event_type": "task.stream"}`` every chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from loom_nats import flushed
from loom_protocol import subjects
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from . import metrics
from .store import node_id_of

log = logging.getLogger(__name__)

STREAM_CHUNK_TYPE = "task.stream"
"""The event type an answer chunk has for the live filters."""


class LiveFilters(BaseModel):
    """What a client wants; each given field must match (a list means any of its values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: tuple[str, ...] | None = None
    task_id: tuple[str, ...] | None = None
    trace_id: tuple[str, ...] | None = None
    node_id: tuple[str, ...] | None = None
    session_id: tuple[str, ...] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and not value:
            raise ValueError("an empty list matches nothing; leave the filter out instead")
        return value

    def matches(self, view: EventView) -> bool:
        if self.event_type is not None and not any(_type_matches(t, view.type) for t in self.event_type):
            return False
        if self.task_id is not None and view.task_id not in self.task_id:
            return False
        if self.trace_id is not None and view.trace_id not in self.trace_id:
            return False
        if self.node_id is not None and view.node_id not in {node_id_of(n) for n in self.node_id}:
            return False
        return self.session_id is None or view.session_id in self.session_id


def _type_matches(pattern: str, value: str | None) -> bool:
    if value is None:
        return False
    if pattern.endswith(".*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass(frozen=True, slots=True)
class EventView:
    type: str | None
    task_id: str | None
    trace_id: str | None
    node_id: str | None
    session_id: str | None

    @classmethod
    def of(cls, event: dict[str, Any]) -> EventView:
        def text(name: str) -> str | None:
            value = event.get(name)
            return value if isinstance(value, str) else None

        trace_id = text("traceid")
        traceparent = text("traceparent")
        if trace_id is None and traceparent is not None and len(traceparent) >= 35:
            trace_id = traceparent[3:35]
        return cls(
            text("type"), text("taskid"), trace_id, text("agentid") or text("source"), text("sessionid")
        )


class Client:
    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        self.filters = LiveFilters()
        self.queue: deque[str] = deque()
        self.queue_size = queue_size
        self.control: deque[str] = deque()
        self.dropped = 0
        self.wake = asyncio.Event()

    def offer(self, frame: str) -> None:
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
            metrics.WS_DROPPED.inc()
            return
        self.queue.append(frame)
        self.wake.set()

    def say(self, message: dict[str, Any]) -> None:
        self.control.append(json.dumps(message))
        self.wake.set()

    async def send_forever(self) -> None:
        while True:
            if self.control:
                await self.ws.send_text(self.control.popleft())
            elif self.dropped:
                count, self.dropped = self.dropped, 0
                await self.ws.send_text(json.dumps({"type": "dropped", "count": count}))
            elif self.queue:
                await self.ws.send_text(self.queue.popleft())
                metrics.WS_SENT.inc()
            else:
                self.wake.clear()
                await self.wake.wait()


class LiveFeed:
    """The fan-out. Its NATS subscriptions exist while at least one client is connected: made
    (and at the server) before the first client's handshake completes, removed when the last
    one leaves, so a stack nobody watches does not wake this process for every event."""

    def __init__(self, queue_size: int, subscribe_timeout_s: float = 5.0) -> None:
        self.queue_size = queue_size
        self.subscribe_timeout_s = subscribe_timeout_s
        self.clients: set[Client] = set()
        self._subs: list[Subscription] = []
        self._lock = asyncio.Lock()  # joins and leaves decide on the subscriptions one at a time

    async def _subscribe(self, nc: NATS) -> None:
        """Every event (room for bursts) and every answer chunk, at the server when this returns."""
        try:
            self._subs.append(
                await nc.subscribe(
                    subjects.EVENT_ALL,
                    cb=self._on_msg,
                    pending_msgs_limit=200_000,
                    pending_bytes_limit=256 * 1024 * 1024,
                )
            )
            self._subs.append(await nc.subscribe(subjects.TASK_STREAM_ALL, cb=self._on_chunk))
            await flushed(nc, self.subscribe_timeout_s)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _join(self, client: Client, nc: NATS) -> None:
        async with self._lock:
            if not self._subs:
                await self._subscribe(nc)
            self.clients.add(client)

    async def _leave(self, client: Client) -> None:
        async with self._lock:
            self.clients.discard(client)
            if not self.clients:
                await self.close()

    async def _on_chunk(self, msg: Msg) -> None:
        self.publish_chunk(msg.data)

    def publish_chunk(self, raw: bytes) -> None:
        """Fan one answer chunk out to the clients whose filters take ``task.stream`` of its task."""
        if not self.clients:
            return
        try:
            text = raw.decode("utf-8")
            chunk = json.loads(text)
        except ValueError:
            return  # the dispatcher dead-letters malformed chunks
        task_id = chunk.get("taskId") if isinstance(chunk, dict) else None
        if not isinstance(task_id, str):
            return
        view = EventView(STREAM_CHUNK_TYPE, task_id, None, None, None)
        frame: str | None = None
        for client in self.clients:
            if client.filters.matches(view):
                if frame is None:
                    frame = '{"type":"chunk","data":' + text + "}"
                client.offer(frame)

    async def _on_msg(self, msg: Msg) -> None:
        self.publish(msg.subject, msg.data)

    def publish(self, subject: str, raw: bytes) -> None:
        """Fan one NATS message out; called from the NATS callback, never blocks."""
        metrics.LIVE_EVENTS.inc()
        if not self.clients:
            return
        try:
            text = raw.decode("utf-8")
            event = json.loads(text)
        except ValueError:
            return  # ingest dead-letters it; the live feed only carries events
        if not isinstance(event, dict):
            return
        if subjects.event_sender_problem(subject, event.get("type"), event.get("instanceid")) is not None:
            return  # not from whom its subject names: ingest dead-letters it
        view = EventView.of(event)
        frame: str | None = None
        for client in self.clients:
            if client.filters.matches(view):
                if frame is None:
                    frame = '{"type":"event","data":' + text + "}"
                client.offer(frame)

    async def serve(self, ws: WebSocket, nc: NATS) -> None:
        client = Client(ws, self.queue_size)
        try:
            await self._join(client, nc)
        except Exception as exc:
            log.warning("live feed unavailable: %r", exc)
            await ws.accept()
            await ws.close(1013, "live feed unavailable: NATS did not take the subscription; try again")
            return
        metrics.WS_CLIENTS.inc()
        sender: asyncio.Task[None] | None = None
        try:
            await ws.accept()
            sender = asyncio.create_task(client.send_forever())
            receiving = asyncio.create_task(self._receive_forever(client))
            done, _ = await asyncio.wait({sender, receiving}, return_when=asyncio.FIRST_COMPLETED)
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await receiving
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            await self._leave(client)
            metrics.WS_CLIENTS.dec()

    async def _receive_forever(self, client: Client) -> None:
        while True:
            message = await client.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            client.say(self._apply(client, text))

    @staticmethod
    def _apply(client: Client, text: str) -> dict[str, Any]:
        try:
            message = json.loads(text)
        except ValueError as exc:
            return {"type": "error", "reason": f"message is not valid JSON: {exc}"}
        if not isinstance(message, dict) or set(message) != {"filters"}:
            return {"type": "error", "reason": 'expected {"filters": {...}}'}
        raw = message["filters"]
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            return {"type": "error", "reason": "'filters' must be an object"}
        try:
            filters = LiveFilters.model_validate(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'filters'}: {e['msg']}" for e in exc.errors()
            )
            return {"type": "error", "reason": f"invalid filters: {reasons}"}
        client.filters = filters
        return {"type": "subscribed", "filters": filters.model_dump(exclude_none=True, mode="json")}


async def count_nats_error(exc: Exception) -> None:
    """The NATS client's error callback: count errors such as a slow consumer."""
    kind = "slow_consumer" if isinstance(exc, SlowConsumerError) else type(exc).__name__
    metrics.NATS_ERRORS.labels(kind).inc()
