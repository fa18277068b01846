"""``ListTasks``: the tasks created over A2A, filtered, newest status first, a page at a time.

The task store has no listing, so the A2A server keeps its own index in the same Redis: sorted
sets of task ids (score: creation time in ms), one for all A2A tasks, one per agent and one per
context, each cut to the newest ``window`` ids. A listing reads the candidates of the narrowest
set, then the tasks themselves, and orders them by their status time (``updatedAt``) as the spec
asks; the page token is the position of the last task returned (its time and id), so paging is
stable while tasks change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from loom_protocol import Task
from redis.asyncio import Redis

from ..store import TaskStore
from . import errors
from .mapping import context_of, state_of, task_of
from .wire import ListTasksRequest, TaskState

DEFAULT_PAGE = 50
MAX_PAGE = 100
_READ_AT_ONCE = 64


class TaskIndex:
    """Which tasks were created over A2A, newest first, by agent and by context."""

    def __init__(self, redis: Redis, prefix: str, window: int) -> None:
        self._redis = redis
        self._p = f"{prefix}:a2a"
        self._window = window

    def _key(self, agent_id: str | None = None, context_id: str | None = None) -> str:
        if context_id:
            return f"{self._p}:context:{context_id}"
        return f"{self._p}:agent:{agent_id}" if agent_id else f"{self._p}:all"

    async def add(self, task: Task) -> None:
        score = task.created_at.timestamp() * 1000
        keys = (self._key(), self._key(task.target_agent), self._key(context_id=context_of(task)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zadd(key, {task.task_id: score})
                pipe.zremrangebyrank(key, 0, -(self._window + 1))
            await pipe.execute()

    async def candidates(self, agent_id: str | None, context_id: str | None) -> list[str]:
        ids = await self._redis.zrevrange(self._key(agent_id, context_id), 0, self._window - 1)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def _position(task: Task) -> tuple[str, str]:
    return task.updated_at.isoformat(), task.task_id


def _token(task: Task) -> str:
    return base64.urlsafe_b64encode(json.dumps(_position(task)).encode()).decode()


def _after(token: str) -> tuple[datetime, str] | None:
    """The position a page token names, or None for the first page."""
    if not token:
        return None
    try:
        at, task_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(task_id, str):
            raise ValueError("not a position")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise errors.invalid_params(
            "pageToken is not a token this server gave", [("pageToken", str(exc))]
        ) from exc
    return when, task_id


async def _read(store: TaskStore, ids: Sequence[str]) -> list[Task]:
    found: list[Task] = []
    for start in range(0, len(ids), _READ_AT_ONCE):
        tasks = await asyncio.gather(*(store.get(i) for i in ids[start : start + _READ_AT_ONCE]))
        found.extend(t for t in tasks if t is not None)
    return found


async def list_tasks(
    index: TaskIndex, store: TaskStore, agent_id: str | None, request: ListTasksRequest
) -> dict[str, Any]:
    """The ``ListTasksResponse`` of ``request`` on the endpoint of ``agent_id`` (None: all agents)."""
    after = _after(request.page_token)
    size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
    tasks = await _read(store, await index.candidates(agent_id, request.context_id or None))
    since = request.status_timestamp_after
    matching = [
        t
        for t in tasks
        if (agent_id is None or t.target_agent == agent_id)
        and (not request.context_id or context_of(t) == request.context_id)
        and (request.status is TaskState.UNSPECIFIED or state_of(t) is request.status)
        and (since is None or t.updated_at >= since)
    ]
    # newest status first; the later, the larger the (time, id) position
    matching.sort(key=lambda t: (t.updated_at, t.task_id), reverse=True)
    start = 0
    if after is not None:
        start = next((i for i, t in enumerate(matching) if (t.updated_at, t.task_id) < after), len(matching))
    page = matching[start : start + size]
    more = start + size < len(matching)
    return {
        "tasks": [task_of(t, artifacts=request.include_artifacts) for t in page],
        "nextPageToken": _token(page[-1]) if more and page else "",
        "pageSize": size,
        "totalSize": len(matching),
    }
