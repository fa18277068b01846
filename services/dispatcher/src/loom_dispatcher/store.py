"""Task state in Redis, shared by every dispatcher replica.

One JSON document per task plus three indexes that always change in the same MULTI as the
task itself (so a crash can never leave a dispatched task untracked):

- ``inflight``  (zset, score = deadline): tasks at a worker; the sweeper re-dispatches late ones.
- ``waiting``   (zset, score = next try): tasks waiting for an instance or a retry backoff.
- ``instance:<id>:tasks`` (set): what an instance holds, for re-dispatch on ``member.down``.

Replicas race on the same task only through :meth:`TaskStore.update`, an optimistic
WATCH/MULTI loop on the task key, so exactly one of them wins each transition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from loom_protocol import Task, TaskStatus, is_terminal
from redis.asyncio import Redis
from redis.exceptions import WatchError


@dataclass(frozen=True)
class Scores:
    """Where a task sits in the indexes right now (None: not there)."""

    deadline: float | None
    retry_at: float | None


@dataclass(frozen=True)
class Change:
    """The new state of a task and, for non-terminal states, its index score."""

    task: Task
    deadline: float | None = None  # DISPATCHED / RUNNING
    retry_at: float | None = None  # PENDING, waiting for an instance or a backoff


Transition = Callable[[Task, Scores], Change | None]


class TaskStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._p = prefix

    def _key(self, task_id: str) -> str:
        return f"{self._p}:task:{task_id}"

    @property
    def _inflight(self) -> str:
        return f"{self._p}:inflight"

    @property
    def _waiting(self) -> str:
        return f"{self._p}:waiting"

    @property
    def _no_instance(self) -> str:
        return f"{self._p}:no-instance-since"

    def _instance(self, instance_id: str) -> str:
        return f"{self._p}:instance:{instance_id}:tasks"

    async def create(self, task: Task, retry_at: float) -> bool:
        """Store a new pending task; False when the task id is already known (idempotency)."""
        key = self._key(task.task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    if await pipe.exists(key):
                        await pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.set(key, task.to_json())
                    pipe.zadd(self._waiting, {task.task_id: retry_at})
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def get(self, task_id: str) -> Task | None:
        raw = await self._redis.get(self._key(task_id))
        return Task.from_json(raw) if raw is not None else None

    async def update(self, task_id: str, transition: Transition) -> Task | None:
        """Apply ``transition`` atomically; None when the task is unknown or nothing changed."""
        key = self._key(task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        await pipe.unwatch()
                        return None
                    current = Task.from_json(raw)
                    scores = Scores(
                        deadline=await pipe.zscore(self._inflight, task_id),
                        retry_at=await pipe.zscore(self._waiting, task_id),
                    )
                    change = transition(current, scores)
                    if change is None:
                        await pipe.unwatch()
                        return None
                    new = change.task
                    pipe.multi()
                    pipe.set(key, new.to_json())
                    if current.instance_id and current.instance_id != new.instance_id:
                        pipe.srem(self._instance(current.instance_id), task_id)
                    if new.status is not TaskStatus.PENDING:
                        pipe.hdel(self._no_instance, task_id)
                    if is_terminal(new.status):
                        pipe.zrem(self._inflight, task_id)
                        pipe.zrem(self._waiting, task_id)
                        if new.instance_id:
                            pipe.srem(self._instance(new.instance_id), task_id)
                    elif new.status in (TaskStatus.DISPATCHED, TaskStatus.RUNNING):
                        pipe.zrem(self._waiting, task_id)
                        pipe.zadd(self._inflight, {task_id: change.deadline or scores.deadline or 0.0})
                        if new.instance_id:
                            pipe.sadd(self._instance(new.instance_id), task_id)
                    else:
                        pipe.zrem(self._inflight, task_id)
                        pipe.zadd(self._waiting, {task_id: change.retry_at or time.time()})
                        if new.instance_id:
                            pipe.srem(self._instance(new.instance_id), task_id)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def no_instance_since(self, task_id: str, now: float) -> float:
        """When the registry first said there is no instance for this task (set on first call)."""
        await self._redis.hsetnx(self._no_instance, task_id, now)
        return float(await self._redis.hget(self._no_instance, task_id) or now)

    async def due_inflight(self, now: float, limit: int = 500) -> list[str]:
        return await self._redis.zrangebyscore(self._inflight, 0, now, start=0, num=limit)

    async def due_waiting(self, now: float, limit: int = 500) -> list[str]:
        return await self._redis.zrangebyscore(self._waiting, 0, now, start=0, num=limit)

    async def tasks_of_instance(self, instance_id: str) -> list[str]:
        return list(await self._redis.smembers(self._instance(instance_id)))
