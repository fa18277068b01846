"""Task routing: pending → dispatched → terminal, with retries, deadlines and dead letters.

Everything here works on the shared :class:`TaskStore`, so any dispatcher replica can carry on
where another stopped. Nothing reads settings: :class:`Policy` carries the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loom_protocol import (
    UNKNOWN_AGENT_LABEL,
    EventType,
    PickReply,
    Task,
    TaskStatus,
    TaskStatusChanged,
    TraceContext,
    is_terminal,
)

from . import metrics
from .admission import (
    Admission,
    AgentDirectory,
    differing_fields,
    unknown_agent_reason,
    wants_to_wait,
)
from .errors import RegistryUnavailable
from .store import Change, Scores, Snapshot, TaskStore
from .telemetry import context_of, current_trace, tracer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    task_timeout_s: float
    no_instance_timeout_s: float
    retry_backoff_s: float
    no_instance_retry_s: float = 0.25
    sweep_grace_s: float = 5.0


class Picker(Protocol):
    async def pick(self, agent_id: str, task_id: str) -> PickReply: ...


class Outbox(Protocol):
    """What the dispatcher tells the world (NATS); implemented in bus.py."""

    async def assigned(self, task: Task) -> None: ...
    async def final(self, task: Task) -> None: ...
    async def dead(self, task: Task, reason: str) -> None: ...
    async def cancel(self, task: Task) -> None: ...
    async def event(self, event_type: str, task: Task, data: dict[str, object] | None = None) -> None: ...


def _terminal_event(status: TaskStatus) -> str:
    return {
        TaskStatus.COMPLETED: EventType.TASK_COMPLETED,
        TaskStatus.FAILED: EventType.TASK_FAILED,
        TaskStatus.CANCELLED: EventType.TASK_CANCELLED,
        TaskStatus.DEAD: EventType.TASK_DEAD,
    }[status]


class Dispatcher:
    def __init__(
        self,
        store: TaskStore,
        picker: Picker,
        outbox: Outbox,
        policy: Policy,
        agents: AgentDirectory | None = None,
    ) -> None:
        self._store = store
        self._picker = picker
        self._outbox = outbox
        self._policy = policy
        self.agents = agents  # None: every agent counts as known (no refusals)

    async def _label(self, agent_id: str) -> str:
        """The metric label of ``agent_id``: itself once the registry knows it (a cache hit)."""
        return agent_id if await self.is_known(agent_id) else UNKNOWN_AGENT_LABEL

    async def is_known(self, agent_id: str) -> bool | None:
        """Whether the registry knows ``agent_id``; None when it did not answer."""
        return True if self.agents is None else await self.agents.is_known(agent_id)

    def unknown_reason(self, agent_id: str) -> tuple[str, list[str]]:
        """Why a task for ``agent_id`` is refused, and the closest known agent ids."""
        return unknown_agent_reason(agent_id, self.agents.known if self.agents is not None else [])

    # -- the API's record of a task JetStream just accepted -------------------------------------
    async def accept(self, task: Task) -> bool:
        """Store a task the API just published, pending, so it can be read at once.

        The consumer routes it when its submission arrives (:meth:`submit` finds it stored,
        pending and never dispatched); if that never happens, the sweeper does after the
        grace. False when the task id was already stored (nothing written).
        """
        created = await self._store.create(task, retry_at=time.time() + self._policy.sweep_grace_s)
        if created:
            metrics.TASKS_SUBMITTED.labels(await self._label(task.target_agent)).inc()
            await self._outbox.event(EventType.TASK_SUBMITTED, task)
        return created

    # -- submission ---------------------------------------------------------------------------
    async def submit(self, task: Task) -> Admission:
        """Record a new task and dispatch it (see :class:`Admission` for the outcomes).

        A task id already stored is routed if it is the same submission, pending and never
        dispatched (the API stored it at submit time), and otherwise left as it is. A task for
        an agent the registry never saw, without ``metadata.waitForAgent``, ends dead at once
        with the reason (the dead-letter record and its final status), without an instance
        wait, an observation event or a metric label of its name.

        The pick comes first and the task is stored straight in its first place (dispatched to
        the picked instance, else waiting): one write instead of a create and an assignment.
        Nothing is lost by picking first: the submission stays unacknowledged on JetStream until
        the task is stored, so a crash in between redelivers it.
        """
        trace = task.trace if task.trace.traceparent else (current_trace() or TraceContext.new())
        task = task.model_copy(
            update={
                "trace": trace,
                "status": TaskStatus.PENDING,
                "attempt": 0,
                "instance_id": None,
                "result": None,
                "error": None,
            }
        )
        with tracer.start_as_current_span("dispatch", context=context_of(task.trace)) as span:
            span.set_attribute("loom.task_id", task.task_id)
            span.set_attribute("loom.agent", task.target_agent)
            return await self._submit(task)

    async def _submit(self, task: Task) -> Admission:
        hint = self._store.hint(task.task_id)
        if hint is not None:  # stored by this replica (its API, or an earlier delivery)
            return await self._route_stored(task, hint)
        if not wants_to_wait(task) and await self.is_known(task.target_agent) is False:
            return await self._refuse(task)
        reply: PickReply | None = None
        if not task.metadata.get("cancelRequested"):
            try:
                reply = await self._picker.pick(task.target_agent, task.task_id)
            except RegistryUnavailable as exc:
                log.warning("%s; the sweeper retries", exc, extra={"task_id": task.task_id})
        now = time.time()
        first: Task | None = None
        if reply is not None and reply.instance_id is not None:
            first = task.with_status(TaskStatus.DISPATCHED, attempt=1, instance_id=reply.instance_id)
            created = await self._store.create(first, retry_at=now, deadline=now + self._timeout_of(task))
        else:
            # due for the sweeper only if nothing below moves it (a crash, or no registry)
            created = await self._store.create(task, retry_at=now + self._policy.sweep_grace_s)
        if not created:
            stored = self._store.hint(task.task_id) or await self._store.read(task.task_id)
            return await self._route_stored(task, stored)
        metrics.TASKS_SUBMITTED.labels(await self._label(task.target_agent)).inc()
        await self._outbox.event(EventType.TASK_SUBMITTED, task)
        if first is not None:
            await self._assigned(first)
        elif reply is not None or task.metadata.get("cancelRequested"):
            # no instance (or cancelled already): what a later dispatch would do, decided now
            snap = self._store.hint(task.task_id) or await self._store.read(task.task_id)
            if snap is not None:
                await self._dispatch(snap, reply)
        return Admission.ACCEPTED

    async def _route_stored(self, task: Task, snap: Snapshot | None) -> Admission:
        """A submission of a task id already stored: route it if the API stored it, else nothing."""
        if snap is None:  # cannot be: nothing deletes tasks
            return Admission.DUPLICATE
        if differing_fields(snap.task, task):
            log.info("conflicting resubmission ignored", extra={"task_id": task.task_id})
            return Admission.CONFLICT
        if snap.task.status is TaskStatus.PENDING and snap.task.attempt == 0:
            await self._dispatch(snap)  # a compare-and-set: a sweeper or replica racing it is harmless
            return Admission.ACCEPTED
        log.info("duplicate submission ignored", extra={"task_id": task.task_id})
        return Admission.DUPLICATE

    async def _refuse(self, task: Task) -> Admission:
        """A task for an agent nobody ever ran: stored dead, dead-lettered, its waiters told."""
        if (stored := await self._store.read(task.task_id)) is not None:
            return await self._route_stored(task, stored)
        reason, _ = self.unknown_reason(task.target_agent)
        dead = task.with_status(TaskStatus.DEAD, error=reason)
        # published before it is stored: a publish that fails is redelivered and done again
        # (both carry a Nats-Msg-Id), never skipped because the record already says dead
        await self._outbox.dead(dead, reason)
        await self._outbox.final(dead)
        if not await self._store.create(dead, retry_at=None):
            return Admission.DUPLICATE
        metrics.UNKNOWN_AGENT.labels("nats").inc()
        log.info("task for an unknown agent dead-lettered", extra={"task_id": task.task_id})
        return Admission.UNKNOWN_AGENT

    async def try_dispatch(self, task_id: str) -> None:
        await self._try_dispatch(await self._store.read(task_id))

    async def _try_dispatch(self, snap: Snapshot | None) -> None:
        if snap is None or snap.task.status is not TaskStatus.PENDING:
            return
        task = snap.task
        with tracer.start_as_current_span("dispatch", context=context_of(task.trace)) as span:
            span.set_attribute("loom.task_id", task.task_id)
            span.set_attribute("loom.agent", task.target_agent)
            await self._dispatch(snap)

    async def _dispatch(self, snap: Snapshot, reply: PickReply | None = None) -> None:
        """Pick an instance for a pending task (unless ``reply`` is the pick) and assign it."""
        task = snap.task
        task_id = task.task_id
        if task.metadata.get("cancelRequested"):
            await self._finish(task_id, TaskStatus.CANCELLED, error="cancelled before dispatch")
            return
        if reply is None:
            try:
                reply = await self._picker.pick(task.target_agent, task.task_id)
            except RegistryUnavailable as exc:
                log.warning("%s; the sweeper retries", exc, extra={"task_id": task_id})
                return  # still in the waiting index
        now = time.time()
        if reply.instance_id is None:
            waited = now - await self._store.no_instance_since(task_id, now)
            if waited >= self._policy.no_instance_timeout_s:
                await self._dead(task_id, f"no instance of agent {task.target_agent}")
                return

            def wait_more(cur: Task, _: Scores) -> Change | None:
                if cur.status is not TaskStatus.PENDING:
                    return None
                return Change(cur, retry_at=now + self._policy.no_instance_retry_s)

            await self._store.update(task_id, wait_more, known=snap)
            return
        instance_id = reply.instance_id
        attempt = task.attempt

        def assign(cur: Task, _: Scores) -> Change | None:
            if cur.status is not TaskStatus.PENDING or cur.attempt != attempt:
                return None  # another replica got there first
            new = cur.with_status(TaskStatus.DISPATCHED, attempt=cur.attempt + 1, instance_id=instance_id)
            return Change(new, deadline=now + self._timeout_of(cur))

        new = await self._store.update(task_id, assign, known=snap)
        if new is not None:
            await self._assigned(new)

    async def _assigned(self, task: Task) -> None:
        metrics.observe_dispatched(task, await self._label(task.target_agent))
        await self._outbox.assigned(task)
        await self._outbox.event(EventType.TASK_ASSIGNED, task, {"instance_id": task.instance_id})

    def _timeout_of(self, task: Task) -> float:
        value = task.metadata.get("timeoutS")
        if isinstance(value, int | float) and 0 < value <= 24 * 3600:
            return float(value)
        return self._policy.task_timeout_s

    # -- reports from workers -----------------------------------------------------------------
    async def on_status(self, change: TaskStatusChanged) -> None:
        if change.final:
            return  # our own announcement of a terminal state

        def apply(cur: Task, scores: Scores) -> Change | None:
            if is_terminal(cur.status) or cur.attempt != change.attempt:
                return None  # a superseded attempt, or already decided
            if cur.instance_id != change.instance_id:
                return None
            if change.status is TaskStatus.RUNNING:
                if cur.status is not TaskStatus.DISPATCHED:
                    return None
                return Change(cur.with_status(TaskStatus.RUNNING), deadline=scores.deadline)
            if change.status is TaskStatus.PENDING:  # handed back by a draining worker
                return Change(
                    cur.with_status(TaskStatus.PENDING, instance_id=None),
                    retry_at=time.time() + self._policy.sweep_grace_s,
                )
            if is_terminal(change.status):
                return Change(cur.with_status(change.status, result=change.result, error=change.error))
            return None

        new = await self._store.update(change.task_id, apply)
        if new is None:
            return
        if is_terminal(new.status):
            await self._announce(new)
        elif new.status is TaskStatus.PENDING:
            metrics.TASKS_RETRIED.labels(await self._label(new.target_agent)).inc()
            await self._outbox.event(EventType.TASK_RETRIED, new, {"reason": "handed back by its worker"})
            await self.try_dispatch(new.task_id)

    # -- failures -----------------------------------------------------------------------------
    async def on_member_down(self, instance_id: str) -> None:
        for task_id in await self._store.tasks_of_instance(instance_id):
            await self._redispatch(task_id, f"instance {instance_id} down", only_instance=instance_id)

    async def sweep(self) -> int:
        """Re-dispatch tasks past their deadline and retry waiting ones; returns how many moved."""
        now = time.time()
        moved = 0
        for task_id in await self._store.due_inflight(now):
            moved += await self._redispatch(task_id, "deadline exceeded", due_before=now)
        for task_id in await self._store.due_waiting(now):
            await self.try_dispatch(task_id)
            moved += 1
        return moved

    async def _redispatch(
        self, task_id: str, reason: str, *, only_instance: str | None = None, due_before: float | None = None
    ) -> int:
        now = time.time()
        dead_reason: list[str] = []

        def back_to_pending(cur: Task, scores: Scores) -> Change | None:
            if cur.status not in (TaskStatus.DISPATCHED, TaskStatus.RUNNING):
                return None
            if only_instance is not None and cur.instance_id != only_instance:
                return None
            if due_before is not None and (scores.deadline is None or scores.deadline > due_before):
                return None
            if cur.metadata.get("cancelRequested"):
                return Change(cur.with_status(TaskStatus.CANCELLED, error=f"cancelled ({reason})"))
            if cur.attempt >= self._policy.max_attempts:
                text = f"{reason}; gave up after {cur.attempt} attempts"
                dead_reason.append(text)
                return Change(cur.with_status(TaskStatus.DEAD, error=text))
            backoff = self._policy.retry_backoff_s * (2 ** (cur.attempt - 1))
            new = cur.with_status(TaskStatus.PENDING, error=reason)
            return Change(new, retry_at=now + backoff)

        new = await self._store.update(task_id, back_to_pending)
        if new is None:
            return 0
        if new.status is TaskStatus.PENDING:
            log.info("re-dispatching task", extra={"task_id": task_id, "reason": reason})
            metrics.TASKS_RETRIED.labels(await self._label(new.target_agent)).inc()
            await self._outbox.event(EventType.TASK_RETRIED, new, {"reason": reason, "attempt": new.attempt})
        else:
            if dead_reason:
                await self._outbox.dead(new, dead_reason[0])
            await self._announce(new)
        return 1

    async def _dead(self, task_id: str, reason: str) -> None:
        def kill(cur: Task, _: Scores) -> Change | None:
            if is_terminal(cur.status):
                return None
            return Change(cur.with_status(TaskStatus.DEAD, error=reason))

        new = await self._store.update(task_id, kill)
        if new is not None:
            await self._outbox.dead(new, reason)
            await self._announce(new)

    async def _finish(self, task_id: str, status: TaskStatus, *, error: str | None = None) -> None:
        def finish(cur: Task, _: Scores) -> Change | None:
            if is_terminal(cur.status):
                return None
            return Change(cur.with_status(status, error=error))

        new = await self._store.update(task_id, finish)
        if new is not None:
            await self._announce(new)

    async def _announce(self, task: Task) -> None:
        metrics.observe_terminal(task, await self._label(task.target_agent))
        await self._outbox.final(task)
        await self._outbox.event(
            _terminal_event(task.status), task, {"error": task.error} if task.error else None
        )

    # -- cancellation -------------------------------------------------------------------------
    async def cancel(self, task_id: str) -> Task | None:
        """Request cancellation; returns the task as it stands, None if unknown."""

        def request(cur: Task, _: Scores) -> Change | None:
            if is_terminal(cur.status):
                return None
            meta = {**cur.metadata, "cancelRequested": True}
            if cur.status is TaskStatus.PENDING:
                return Change(cur.with_status(TaskStatus.CANCELLED, metadata=meta, error="cancelled by user"))
            return Change(cur.model_copy(update={"metadata": meta}))

        new = await self._store.update(task_id, request)
        if new is None:
            return await self._store.get(task_id)
        if new.status is TaskStatus.CANCELLED:
            await self._announce(new)
        else:
            await self._outbox.cancel(new)
        return new


async def sweep_forever(
    dispatcher: Dispatcher, interval_s: float, before: Callable[[], None], stop: asyncio.Event
) -> None:
    """Run ``before()`` and then :meth:`Dispatcher.sweep` every ``interval_s``, until ``stop`` is set.

    A stop event rather than cancellation: a library that swallows a ``CancelledError`` (a race
    in Python 3.11's ``asyncio.wait_for``) would otherwise leave the loop running for good.
    """
    while not stop.is_set():
        try:
            before()
            await dispatcher.sweep()
        except Exception:
            log.exception("sweep failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
