"""Requests waiting for tasks' final statuses (``POST /api/tasks?wait=``).

One core subscription on ``loom.task.status.*`` serves every waiter of the process, open while
any request waits (and ``linger_s`` after the last one, so that a client submitting one task
after another does not open and close it each time); a subscription per request cost a SUB and
an UNSUB on the server and a subscription task in the client for every task. A status of a task
nobody here waits for is dropped on its subject alone, unparsed.

A final status this process announces itself answers its waiters directly, with the task as
stored, as soon as the announcement is sent (:meth:`FinalWaiters.announcing`; its copy on the
subscription is passed over): the request needs neither the message nor a read of the task
afterwards. One announced by another replica arrives on the subscription and resolves the
waiter with ``None``: the request then reads the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from loom_protocol import Task, TaskStatusChanged, subjects
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

log = logging.getLogger(__name__)


class FinalWatch:
    """One request's wait for one task's final status."""

    def __init__(self, waiters: FinalWaiters, task_id: str) -> None:
        self.task_id = task_id
        # the task as stored when this process announced it; None when heard from another
        self.finished: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._waiters = waiters

    def close(self) -> None:
        self._waiters.release(self)


class FinalWaiters:
    def __init__(self, connection: Callable[[], NATS], linger_s: float = 2.0) -> None:
        self._connection = connection
        self._linger_s = linger_s
        self._waiting: dict[str, list[FinalWatch]] = {}
        self._announcing: Counter[str] = Counter()  # finals this process is publishing now
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()
        self._closer: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def subscribed(self) -> bool:
        """Whether the subscription is open."""
        return self._sub is not None

    async def watch(self, task_id: str) -> FinalWatch:
        """Start waiting for ``task_id``'s final status; the caller closes the watch when done.

        Returns once the subscription is open on the connection the dispatcher publishes on,
        so a status announced after this returns reaches the watch."""
        watch = FinalWatch(self, task_id)
        self._waiting.setdefault(task_id, []).append(watch)
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if self._sub is None:
            try:
                async with self._lock:
                    if self._sub is None:
                        self._sub = await self._connection().subscribe(
                            subjects.TASK_STATUS_ALL, cb=self._on_status
                        )
            except BaseException:
                watch.close()
                raise
        return watch

    def release(self, watch: FinalWatch) -> None:
        watches = self._waiting.get(watch.task_id)
        if watches is None or watch not in watches:
            return
        watches.remove(watch)
        if not watches:
            del self._waiting[watch.task_id]
        if not self._waiting and self._sub is not None and self._closer is None:
            self._closer = asyncio.get_running_loop().call_later(self._linger_s, self._close_idle)

    @contextlib.contextmanager
    def announcing(self, task: Task) -> Iterator[Callable[[], None]]:
        """Around the publication of ``task``'s final status by this process; gives the function
        to call once it is sent, which answers the task's waiters here with the task. The task is
        final in the store before it is announced, and the store is what a waiter answers from:
        it need not wait for the stream's ack of the announcement (the announcement's own copy
        on the subscription, which a waiter used to wake on, comes no later than that ack). If
        nothing was sent, they are told to read the task (``None``)."""
        task_id = task.task_id
        self._announcing[task_id] += 1

        def sent() -> None:
            self._answer(task_id, task)

        try:
            yield sent
        finally:
            self._announcing[task_id] -= 1
            if self._announcing[task_id] <= 0:
                del self._announcing[task_id]
            self._answer(task_id, None)

    def _answer(self, task_id: str, ended: Task | None) -> None:
        for watch in self._waiting.get(task_id, ()):
            if not watch.finished.done():
                watch.finished.set_result(ended)

    async def _on_status(self, msg: Msg) -> None:
        task_id = msg.subject.rpartition(".")[2]
        watches = self._waiting.get(task_id)
        if not watches or task_id in self._announcing:
            return
        try:
            change = TaskStatusChanged.from_json(msg.data)
        except ValidationError:
            log.warning("unreadable status on %s ignored", msg.subject)
            return
        if change.final:
            self._answer(task_id, None)

    def _close_idle(self) -> None:
        self._closer = None
        if not self._waiting and self._sub is not None:
            task = asyncio.ensure_future(self._unsubscribe())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _unsubscribe(self) -> None:
        async with self._lock:
            if self._waiting or self._sub is None:
                return
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # a closed connection took it with it
                await sub.unsubscribe()

    async def close(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        for task_id in list(self._waiting):
            self._answer(task_id, None)  # they read the task and answer with what it is
        self._waiting.clear()
        await self._unsubscribe()
