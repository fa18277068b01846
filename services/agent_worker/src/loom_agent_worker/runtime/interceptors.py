"""Lifecycle interceptors around ``Agent.execute_task`` (an interceptor chain).

``run_with_interceptors`` runs the ``before`` hooks in order, the agent, then the
``after`` hooks in reverse order (like nested context managers: only interceptors whose
``before`` completed get an ``after``). An exception from the agent or from a ``before``
hook becomes a failed task and an ``error`` event; ``asyncio.CancelledError`` and
:class:`~loom_agent_worker.runtime.durable.AwaitingApproval` (the task stops until a person
decides) are re-raised once the ``after`` hooks have run. An ``after`` hook that raises is logged and
ignored: observation never changes a task's outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from loom_protocol import ErrorReported, Task, TaskStatus

from loom_agent_worker.runtime.agent import Agent, failed
from loom_agent_worker.runtime.context import TaskContext
from loom_agent_worker.runtime.durable import AwaitingApproval

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ended:
    """How one task execution ended, as ``after`` hooks see it.

    ``result`` is the task the agent returned (or the failed task an exception was turned
    into), ``error`` the exception if there was one, ``duration_s`` the wall time. On
    cancellation ``result`` is None and ``error`` the ``CancelledError``; on a stop for approval
    ``result`` is None and ``error`` the ``AwaitingApproval``.
    """

    result: Task | None
    error: BaseException | None
    duration_s: float

    @property
    def status(self) -> str:
        """The status to report: the task's, or ``cancelled``."""
        if self.result is not None:
            return self.result.status.value
        if isinstance(self.error, asyncio.CancelledError):
            return TaskStatus.CANCELLED.value
        if isinstance(self.error, AwaitingApproval):
            return TaskStatus.INPUT_REQUIRED.value
        return TaskStatus.FAILED.value


class Interceptor(Protocol):
    """Hooks around one task execution."""

    async def before(self, task: Task, ctx: TaskContext) -> None: ...

    async def after(self, task: Task, ctx: TaskContext, ended: Ended) -> None: ...


async def run_with_interceptors(
    agent: Agent, task: Task, ctx: TaskContext, interceptors: Sequence[Interceptor]
) -> Task:
    """Execute ``task`` on ``agent`` inside the interceptors; see the module docstring."""
    entered: list[Interceptor] = []
    started = time.perf_counter()
    result: Task | None = None
    error: BaseException | None = None
    try:
        for interceptor in interceptors:
            await interceptor.before(task, ctx)
            entered.append(interceptor)
        result = await agent.execute_task(task, ctx)
        if result.status not in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            raise RuntimeError(
                f"agent {agent.node_id!r} returned task {result.task_id} in status {result.status.value!r}"
            )
    except (asyncio.CancelledError, AwaitingApproval) as exc:
        error = exc
        await _run_after(entered, task, ctx, Ended(None, exc, time.perf_counter() - started))
        raise
    except Exception as exc:
        error = exc
        message = f"{type(exc).__name__}: {exc}"
        logger.warning("task %s on agent %s raised %s", task.task_id, agent.node_id, message)
        ctx.events.emit(ErrorReported(error=message, exception=type(exc).__name__))
        result = failed(task, message)
    await _run_after(entered, task, ctx, Ended(result, error, time.perf_counter() - started))
    return result


async def _run_after(entered: list[Interceptor], task: Task, ctx: TaskContext, ended: Ended) -> None:
    for interceptor in reversed(entered):
        try:
            await interceptor.after(task, ctx, ended)
        except Exception:
            logger.exception("after hook of %s failed for task %s", type(interceptor).__name__, task.task_id)


class LoggingInterceptor:
    """Logs the start and the end (status, duration) of every task."""

    def __init__(self, log: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._log = log or logger
        self._level = level

    async def before(self, task: Task, ctx: TaskContext) -> None:
        self._log.log(self._level, "task %s started on agent %s", task.task_id, task.target_agent)

    async def after(self, task: Task, ctx: TaskContext, ended: Ended) -> None:
        self._log.log(
            self._level,
            "task %s on agent %s ended %s in %.3fs",
            task.task_id,
            task.target_agent,
            ended.status,
            ended.duration_s,
        )


@dataclass
class TimingStats:
    """Durations of one agent's tasks."""

    count: int = 0
    total_s: float = 0.0
    last_s: float = 0.0
    max_s: float = 0.0

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0


class TimingInterceptor:
    """Records execution durations per agent id in ``stats`` and passes each to ``callback``."""

    def __init__(self, callback: Callable[[str, float], None] | None = None) -> None:
        self.stats: dict[str, TimingStats] = {}
        self._callback = callback

    async def before(self, task: Task, ctx: TaskContext) -> None:
        return None

    async def after(self, task: Task, ctx: TaskContext, ended: Ended) -> None:
        stats = self.stats.setdefault(task.target_agent, TimingStats())
        stats.count += 1
        stats.total_s += ended.duration_s
        stats.last_s = ended.duration_s
        stats.max_s = max(stats.max_s, ended.duration_s)
        if self._callback is not None:
            self._callback(task.target_agent, ended.duration_s)


class MetricsInterceptor:
    """Calls ``observe(agent_id, status, duration_s)`` once per task (e.g. Prometheus)."""

    def __init__(self, observe: Callable[[str, str, float], None]) -> None:
        self._observe = observe

    async def before(self, task: Task, ctx: TaskContext) -> None:
        return None

    async def after(self, task: Task, ctx: TaskContext, ended: Ended) -> None:
        self._observe(task.target_agent, ended.status, ended.duration_s)
