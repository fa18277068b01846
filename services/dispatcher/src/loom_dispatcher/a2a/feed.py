"""What happens to a task, live from NATS, for whoever follows it on this replica.

A :class:`TaskFeed` subscribes to the task's status subject (``loom.task.status.<id>``: its
worker's reports and the dispatcher's final status) and, when asked, to its step events: those
come from ``loom.event.>`` through one :class:`EventTail` per replica, which is subscribed only
while someone follows a task and hands each event to the followers of its ``taskid``. Nothing
here is a record of the task: that is the shared Redis store, read when a follower starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from loom_protocol import TaskStatusChanged, subjects
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError


@dataclass(frozen=True)
class StepEvent:
    """One observation event of a followed task (its CloudEvent's id, type, time and data)."""

    id: str
    type: str
    time: str | None
    data: Any


Item = TaskStatusChanged | StepEvent


class EventTail:
    """The step events of the followed tasks, out of one ``loom.event.>`` subscription."""

    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[Item]]] = {}
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def follow(self, nc: Client, task_id: str, queue: asyncio.Queue[Item]) -> None:
        self._followers.setdefault(task_id, set()).add(queue)
        async with self._lock:  # one subscription, however many followers start at once
            if self._sub is None and self._followers:
                self._sub = await nc.subscribe(subjects.EVENT_ALL, cb=self._on_event)

    def leave(self, task_id: str, queue: asyncio.Queue[Item]) -> None:
        """Stop handing ``task_id``'s events to ``queue``; the last follower out unsubscribes.
        Synchronous, so that it completes in a ``finally`` of a cancelled stream."""
        queues = self._followers.get(task_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._followers[task_id]
        if not self._followers and self._sub is not None:
            sub, self._sub = self._sub, None
            closing = asyncio.ensure_future(_unsubscribe(sub))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _on_event(self, msg: Msg) -> None:
        if not self._followers:
            return
        try:
            event = json.loads(msg.data)
            task_id = event.get("taskid") if isinstance(event, dict) else None
            queues = self._followers.get(task_id) if isinstance(task_id, str) else None
        except (ValueError, TypeError):
            return  # not an event: ingest dead-letters it
        if not queues:
            return
        if subjects.event_sender_problem(msg.subject, event.get("type"), event.get("instanceid")) is not None:
            return  # not from whom its subject names: ingest dead-letters it
        step = StepEvent(
            str(event.get("id", "")), str(event.get("type", "")), event.get("time"), event.get("data")
        )
        for queue in queues:
            queue.put_nowait(step)


class TaskFeed:
    """The live changes of one task, in arrival order, in :attr:`queue`."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    async def _on_status(self, msg: Msg) -> None:
        try:
            self.queue.put_nowait(TaskStatusChanged.from_json(msg.data))
        except (ValidationError, ValueError):
            return  # the dispatcher's status consumer dead-letters it


@contextlib.asynccontextmanager
async def following(nc: Client, task_id: str, events: EventTail | None) -> AsyncIterator[TaskFeed]:
    """Follow ``task_id`` (its step events too when ``events`` is given) for the block's length.

    Subscribed on the connection the dispatcher publishes on, so anything this replica publishes
    about the task after entering (a submission, an assignment) comes after the subscription.
    """
    feed = TaskFeed(task_id)
    sub = await nc.subscribe(subjects.task_status(task_id), cb=feed._on_status)
    try:
        if events is not None:
            await events.follow(nc, task_id, feed.queue)
        yield feed
    finally:
        if events is not None:
            events.leave(task_id, feed.queue)
        await _unsubscribe(sub)


async def _unsubscribe(sub: Subscription) -> None:
    """Unsubscribe; the client forgets the subscription before its first await, so even a
    cancelled caller leaves nothing subscribed on this side."""
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
