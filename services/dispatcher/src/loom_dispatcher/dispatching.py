"""Task routing: pending → dispatched → terminal, with retries, deadlines and dead letters;
approvals (``input_required`` → decided → pending again) and cancellation down a task's children.

Everything here works on the shared :class:`TaskStore`, so any dispatcher replica can carry on
where another stopped. Nothing reads settings: :class:`Policy` carries the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from loom_protocol import (
    UNKNOWN_AGENT_LABEL,
    ApprovalDecision,
    ApprovalInput,
    ApprovalRequest,
    ApprovalTimeoutAction,
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
from .approvals import (
    TIMEOUT_BY,
    approval_timeout_of,
    decided_event,
    decision_on,
    failed_attempts,
    resumed,
    timed_out_reason,
    timeout_action_of,
)
from .errors import RegistryUnavailable
from .picking import reply_of
from .store import Change, Placed, Scores, Snapshot, TaskStore
from .telemetry import context_of, current_trace, span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    task_timeout_s: float
    no_instance_timeout_s: float
    retry_backoff_s: float
    no_instance_retry_s: float = 0.25
    sweep_grace_s: float = 5.0
    approval_timeout_s: float = 86_400.0
    approval_timeout_action: ApprovalTimeoutAction = ApprovalTimeoutAction.REJECT
    max_cascade: int = 1000  # tasks visited at most when a cancellation goes down the children


class Picker(Protocol):
    async def pick(self, agent_id: str, task_id: str) -> PickReply: ...


@runtime_checkable
class ScriptPicker(Picker, Protocol):
    """A picker whose pick is a Redis script the store can run while it stores a new task."""

    async def place(
        self, store: TaskStore, task: Task, *, retry_at: float, deadline: float
    ) -> Placed | None: ...


@functools.cache
def _places(kind: type) -> bool:
    """Whether pickers of this class store a new task at their pick (:class:`ScriptPicker`).

    Asked once per class: an isinstance of a runtime-checkable Protocol walks its members (3% of
    the dispatcher's CPU when asked per submission)."""
    return issubclass(kind, ScriptPicker)


class Strikes(Protocol):
    """Where an instance's timed-out and failed attempts are counted (picking.py)."""

    async def strike(self, instance_id: str) -> int: ...


class Outbox(Protocol):
    """What the dispatcher tells the world (NATS); implemented in bus.py."""

    async def assigned(self, task: Task) -> None: ...
    async def status(self, task: Task) -> None: ...
    async def final(self, task: Task) -> None: ...
    async def dead(self, task: Task, reason: str) -> None: ...
    async def cancel(self, task: Task) -> None: ...
    async def superseded(self, task: Task) -> None: ...
    async def event(self, event_type: str, task: Task, data: dict[str, object] | None = None) -> None: ...


_CASCADING: dict[TaskStatus, str] = {
    TaskStatus.CANCELLED: "was cancelled",
    TaskStatus.FAILED: "failed",
    TaskStatus.DEAD: "ended dead",
}
"""The terminal states that cancel a task's children, and how a child's reason words them."""


API_ROUTE_WAIT_S = 30.0
"""How long a delivered submission waits for this process's API to route the same task: longer
than the API's own bounded work (the submission's publish retries, then one pick and write)."""


def _span_attributes(task: Task) -> dict[str, str]:
    return {"loom.task_id": task.task_id, "loom.agent": task.target_agent}


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
        strikes: Strikes | None = None,
    ) -> None:
        self._store = store
        self._picker = picker
        self._outbox = outbox
        self._policy = policy
        self.agents = agents  # None: every agent counts as known (no refusals)
        self._strikes = strikes  # None: attempts that time out or fail are not counted
        # task ids this process's API is publishing and routing right now (routing_here)
        self._routing_here: dict[str, asyncio.Future[None]] = {}

    async def _strike(self, instance_id: str | None, why: str) -> None:
        """Count a timed-out or failed attempt against its instance (never fails the caller)."""
        if self._strikes is None or not instance_id:
            return
        try:
            count = await self._strikes.strike(instance_id)
        except Exception as exc:  # picks work without it
            log.warning("strike of %s not counted: %r", instance_id, exc)
            return
        metrics.STRIKES.inc()
        log.info("attempt %s", why, extra={"instance_id": instance_id, "strikes": count})

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
        """Store a task just published, pending, so it can be read at once (the A2A endpoint's;
        the REST API routes its submissions itself with :meth:`submit`).

        The consumer routes it when its submission arrives (:meth:`submit` finds it stored,
        pending and never dispatched); if that never happens, the sweeper does after the
        grace. False when the task id was already stored (nothing written).
        """
        created = await self._store.create(task, retry_at=time.time() + self._policy.sweep_grace_s)
        if created:
            metrics.child(metrics.TASKS_SUBMITTED, await self._label(task.target_agent)).inc()
            await self._outbox.event(EventType.TASK_SUBMITTED, task)
            if (orphaned := await self._gone_parent(task)) is not None:
                await self._cancel_one(task.task_id, orphaned, again=True)
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
        with span("dispatch", _span_attributes(task), context=context_of(task.trace)):
            return await self._submit(task)

    @contextlib.contextmanager
    def routing_here(self, task_id: str) -> Iterator[None]:
        """While the API publishes a new task and routes it, the delivery of that submission to
        this process waits (:meth:`delivered`) instead of racing the API to store and pick it:
        one pick and one write per task instead of two, the loser's read of the winner's record
        saved. Another replica's delivery does not wait: the store still settles that race."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._routing_here[task_id] = done
        try:
            yield
        finally:
            if self._routing_here.get(task_id) is done:
                del self._routing_here[task_id]
            done.set_result(None)

    async def delivered(self, task: Task) -> Admission:
        """A submission JetStream delivered: :meth:`submit`, once this process's API is done
        routing the same task (if it is); it then finds the task stored and routed. Bounded: a
        wait past ``API_ROUTE_WAIT_S`` routes anyway (the store settles who picks)."""
        if (routing := self._routing_here.get(task.task_id)) is not None:
            await asyncio.wait((routing,), timeout=API_ROUTE_WAIT_S)
        return await self.submit(task)

    async def _submit(self, task: Task) -> Admission:
        hint = self._store.hint(task.task_id)
        if hint is not None:  # stored by this replica (its API, or an earlier delivery)
            return await self._route_stored(task, hint)
        if not wants_to_wait(task) and await self.is_known(task.target_agent) is False:
            return await self._refuse(task)
        reply: PickReply | None = None
        # a child whose parent is gone is created (listed under it) and cancelled, not picked for
        orphaned = await self._gone_parent(task)
        picking = not task.metadata.get("cancelRequested") and orphaned is None
        now = time.time()
        first: Task | None = None
        if picking and _places(type(self._picker)):
            # dispatched to the pick, else pending: due for the sweeper after the grace only if
            # nothing below moves it (a crash)
            placed = await cast(ScriptPicker, self._picker).place(
                self._store,
                task,
                retry_at=now + self._policy.sweep_grace_s,
                deadline=now + self._timeout_of(task),
            )
            created = placed is not None
            if placed is not None:
                first = placed.task if placed.instance_id is not None else None
                reply = reply_of(task.target_agent, placed.instance_id, placed.candidates)
        else:
            if picking:
                try:
                    reply = await self._picker.pick(task.target_agent, task.task_id)
                except RegistryUnavailable as exc:
                    log.warning("%s; the sweeper retries", exc, extra={"task_id": task.task_id})
            if reply is not None and reply.instance_id is not None:
                first = task.with_status(TaskStatus.DISPATCHED, attempt=1, instance_id=reply.instance_id)
                created = await self._store.create(first, retry_at=now, deadline=now + self._timeout_of(task))
            else:
                # due for the sweeper only if nothing below moves it (a crash, or no registry)
                created = await self._store.create(task, retry_at=now + self._policy.sweep_grace_s)
        if not created:
            stored = self._store.hint(task.task_id) or await self._store.read(task.task_id)
            return await self._route_stored(task, stored)
        metrics.child(metrics.TASKS_SUBMITTED, await self._label(task.target_agent)).inc()
        await self._outbox.event(EventType.TASK_SUBMITTED, task)
        if first is not None:
            await self._assigned(first)
        if task.parent_task_id is not None and orphaned is None:
            # asked again now that it is listed: a cascade that read the children before that
            # has not seen it, but then this sees its parent cancelled
            orphaned = await self._gone_parent(task)
        if orphaned is not None:
            await self._cancel_one(task.task_id, orphaned, again=True)
        elif first is None and (reply is not None or task.metadata.get("cancelRequested")):
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
        if snap.task.status is TaskStatus.DEAD and snap.task.attempt == 0:
            # refused, or died waiting for an instance: its final again (one copy: the same id),
            # in case the delivery that ended it could not store it
            await self._outbox.final(snap.task)
        # the API's own submissions arrive here once it has routed them: not worth a line each
        log.debug("duplicate submission ignored", extra={"task_id": task.task_id})
        return Admission.DUPLICATE

    async def _refuse(self, task: Task) -> Admission:
        """A task for an agent nobody ever ran: stored dead, dead-lettered, its waiters told."""
        if (stored := await self._store.read(task.task_id)) is not None:
            return await self._route_stored(task, stored)
        reason, _ = self.unknown_reason(task.target_agent)
        dead = task.with_status(TaskStatus.DEAD, error=reason)
        # the dead letter before the record: a publish that fails is redelivered and done again
        # (it carries a Nats-Msg-Id), never skipped because the record already says dead
        await self._outbox.dead(dead, reason)
        if not await self._store.create(dead, retry_at=None):
            return Admission.DUPLICATE
        metrics.UNKNOWN_AGENT.labels("nats").inc()
        log.info("task for an unknown agent dead-lettered", extra={"task_id": task.task_id})
        # after the record, so whoever hears it finds the task dead; one not stored fails the
        # submission, whose redelivery announces it again (_route_stored)
        await self._outbox.final(dead)
        return Admission.UNKNOWN_AGENT

    async def try_dispatch(self, task_id: str) -> None:
        await self._try_dispatch(await self._store.read(task_id))

    async def _try_dispatch(self, snap: Snapshot | None) -> None:
        if snap is None or snap.task.status is not TaskStatus.PENDING:
            return
        task = snap.task
        with span("dispatch", _span_attributes(task), context=context_of(task.trace)):
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
        """Apply a worker's report if it comes from the task's current attempt (the fence).

        The current attempt is the task's ``attempt`` at its ``instance_id``, the pair every
        report carries; a task put back to pending (deadline, instance down) keeps the pair
        until it is given out again, so the put-back attempt may still deliver its result: a
        ``completed`` of it ends the task (a result is never thrown away while no other attempt
        runs); its other reports no longer apply. A report that does not apply is acknowledged
        (never raised on, so never redelivered) and recorded as superseded (:meth:`_superseded`);
        a repeat of the report that decided the task is just acknowledged.
        """
        if change.final:
            return  # a dispatcher's word, not a worker's: nothing a report may claim
        refused: list[Task] = []  # the task as the refusing transition saw it

        def apply(cur: Task, scores: Scores) -> Change | None:
            refused[:] = [cur]
            if cur.attempt != change.attempt or cur.instance_id != change.instance_id:
                return None  # another attempt, or no instance holds it (input_required, handed back)
            if is_terminal(cur.status):
                return None  # decided already (a repeat of that report, or a late contradiction)
            if cur.status is TaskStatus.PENDING:
                if change.status is not TaskStatus.COMPLETED:
                    return None  # put back: only its result still counts
                done = cur.with_status(TaskStatus.DISPATCHED).with_status(
                    TaskStatus.COMPLETED, result=change.result, error=change.error
                )
                return Change(done)
            if change.status is TaskStatus.RUNNING:
                if cur.status is not TaskStatus.DISPATCHED:
                    refused.clear()  # a late "running" of a task that runs: nothing to record
                    return None
                return Change(cur.with_status(TaskStatus.RUNNING), deadline=scores.deadline)
            if change.status is TaskStatus.INPUT_REQUIRED:
                return self._waits_for_approval(cur, change.approval)
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
            if refused:
                await self._superseded(change, refused[0])
            return
        if is_terminal(new.status):
            if new.status is TaskStatus.FAILED:
                await self._strike(change.instance_id, "failed")
            # a final not stored fails the report: redelivered, it announces the final again
            await self._announce(new, required=True)
            return
        try:  # the report, as accepted, for whoever follows the task
            await self._outbox.status(new)
        except Exception as exc:  # stored in Redis all the same; GET and the next status tell
            log.error("%s status not announced: %r", new.status.value, exc, extra={"task_id": new.task_id})
        if new.status is TaskStatus.INPUT_REQUIRED:  # the worker emits approval.requested
            log.info("task waits for approval", extra={"task_id": new.task_id})
        elif new.status is TaskStatus.PENDING:
            metrics.TASKS_RETRIED.labels(await self._label(new.target_agent)).inc()
            await self._outbox.event(EventType.TASK_RETRIED, new, {"reason": "handed back by its worker"})
            await self.try_dispatch(new.task_id)

    async def _superseded(self, change: TaskStatusChanged, cur: Task) -> None:
        """Record a report that did not apply to ``cur``: a counter, a log line and an ``error``
        event (``reason: "superseded report"``) on the task; nothing else happens to the task.

        The repeat of the report that decided the task (same attempt, same status: a redelivery)
        is not recorded; its final status is published again (the same ``Nats-Msg-Id``: the
        stream keeps one), since a dispatcher that stopped between storing the outcome and
        announcing it is redelivered exactly this report.
        """
        same_attempt = cur.attempt == change.attempt and cur.instance_id == change.instance_id
        if same_attempt and is_terminal(cur.status) and cur.status is change.status:
            await self._outbox.final(cur)
            return
        status = change.status.value
        metrics.REPORTS_SUPERSEDED.labels(status).inc()
        text = (
            f"{status} report of attempt {change.attempt} from {change.instance_id} ignored: "
            f"the task is {cur.status.value} at attempt {cur.attempt}"
            + (f" on {cur.instance_id}" if cur.instance_id else "")
        )
        extra = {"task_id": cur.task_id, "attempt": change.attempt, "instance_id": change.instance_id}
        log.info("superseded report acknowledged: %s", text, extra=extra)
        await self._outbox.event(
            EventType.ERROR,
            cur,
            {
                "reason": "superseded report",
                "error": text,
                "reported_status": status,
                "reported_attempt": change.attempt,
                "reported_instance_id": change.instance_id,
            },
        )

    # -- approvals ----------------------------------------------------------------------------
    def _waits_for_approval(self, cur: Task, request: ApprovalRequest | None) -> Change | None:
        """The worker stopped ``cur`` on a call needing approval: no instance holds it until a
        decision (or the timeout, its score in ``inflight``)."""
        if cur.status not in (TaskStatus.DISPATCHED, TaskStatus.RUNNING) or request is None:
            return None
        if cur.metadata.get("cancelRequested"):  # cancelled while it ran: it ends here
            reason = "cancelled (it stopped for approval after a cancel request)"
            return Change(cur.with_status(TaskStatus.CANCELLED, error=reason))
        new = cur.with_status(TaskStatus.INPUT_REQUIRED, instance_id=None, pending_approval=request)
        return Change(new, deadline=time.time() + approval_timeout_of(cur, self._policy.approval_timeout_s))

    async def decide(self, task_id: str, approved: bool, given: ApprovalInput) -> Task | None:
        """Approve or reject the call ``task_id`` waits on, and dispatch the task again.

        A compare-and-set: of two concurrent decisions exactly one is recorded. Returns the task
        as the decision left it (pending, or already dispatched again), or None when the task
        does not wait for a decision (unknown, another status, or decided already).
        """
        asked: list[tuple[ApprovalRequest, ApprovalDecision]] = []

        def record(cur: Task, _: Scores) -> Change | None:
            if cur.status is not TaskStatus.INPUT_REQUIRED or cur.pending_approval is None:
                return None
            decision = decision_on(cur.pending_approval, approved, given)
            asked[:] = [(cur.pending_approval, decision)]
            return Change(resumed(cur, decision), retry_at=time.time())

        new = await self._store.update(task_id, record)
        if new is None:
            return None
        request, decision = asked[0]
        return await self._resume(new, request, decision)

    async def _resume(self, task: Task, request: ApprovalRequest, decision: ApprovalDecision) -> Task:
        """Tell the world about a decision and dispatch the task it resumed at once."""
        extra = {"task_id": task.task_id, "approved": decision.approved, "decided_by": decision.by}
        log.info("approval decided", extra=extra)
        kind, data = decided_event(request, decision)
        await self._outbox.event(kind, task, data)
        await self.try_dispatch(task.task_id)
        return await self._store.get(task.task_id) or task

    async def _approval_timed_out(self, task_id: str, due_before: float) -> int:
        """A task whose wait for approval ran out: rejected by the timeout, or dead (its
        ``approvalTimeoutAction``, else the policy's). 1 when it moved, else 0."""
        asked: list[tuple[ApprovalRequest, ApprovalDecision]] = []
        policy = self._policy

        def expire(cur: Task, scores: Scores) -> Change | None:
            if cur.status is not TaskStatus.INPUT_REQUIRED or cur.pending_approval is None:
                return None
            if scores.deadline is None or scores.deadline > due_before:
                return None
            reason = timed_out_reason(cur, policy.approval_timeout_s)
            if timeout_action_of(cur, policy.approval_timeout_action) is ApprovalTimeoutAction.DEAD:
                asked.clear()
                return Change(cur.with_status(TaskStatus.DEAD, error=reason, pending_approval=None))
            given = ApprovalInput(by=TIMEOUT_BY, reason=reason)
            decision = decision_on(cur.pending_approval, False, given)
            asked[:] = [(cur.pending_approval, decision)]
            return Change(resumed(cur, decision), retry_at=time.time())

        new = await self._store.update(task_id, expire)
        if new is None:
            return 0
        if new.status is TaskStatus.DEAD:
            log.info("approval timed out: task dead", extra={"task_id": task_id})
            await self._outbox.dead(new, new.error or "approval timed out")
            await self._announce(new)
        else:
            request, decision = asked[0]
            await self._resume(new, request, decision)
        return 1

    # -- failures -----------------------------------------------------------------------------
    async def on_member_down(self, instance_id: str) -> None:
        for task_id in await self._store.tasks_of_instance(instance_id):
            await self._redispatch(task_id, f"instance {instance_id} down", only_instance=instance_id)

    async def sweep(self) -> int:
        """Re-dispatch tasks past their deadline and retry waiting ones; returns how many moved."""
        now = time.time()
        moved = 0
        for task_id in await self._store.due_inflight(now):
            redispatched = await self._redispatch(task_id, "deadline exceeded", due_before=now)
            # not at a worker: it may be a wait for approval that ran out
            moved += redispatched or await self._approval_timed_out(task_id, now)
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
            failed = failed_attempts(cur)  # resumes after a decision are not failures
            if failed >= self._policy.max_attempts:
                text = f"{reason}; gave up after {failed} attempts"
                dead_reason.append(text)
                return Change(cur.with_status(TaskStatus.DEAD, error=text))
            backoff = self._policy.retry_backoff_s * (2 ** max(0, failed - 1))
            new = cur.with_status(TaskStatus.PENDING, error=reason)
            return Change(new, retry_at=now + backoff)

        new = await self._store.update(task_id, back_to_pending)
        if new is None:
            return 0
        if new.instance_id is not None and new.status is not TaskStatus.CANCELLED:
            # its instance may still run it (a partition, a false eviction, a late task): told
            # to stop without a report; if it cannot be told, its report is refused (on_status)
            await self._outbox.superseded(new)
            if due_before is not None:  # it ran out of time there
                await self._strike(new.instance_id, "timed out")
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

    async def _announce(self, task: Task, *, cascade: bool = True, required: bool = False) -> None:
        """Publish a task's terminal state; one that did not complete takes its children along
        (unless ``cascade`` is False: the cascade that ended it goes on by itself).

        A final status the stream did not store (after the outbox's retries) is logged, and
        raised once the rest is done when ``required`` (the report that decided the task is then
        redelivered, and its repeat announces the final again: :meth:`_superseded`).
        """
        metrics.observe_terminal(task, await self._label(task.target_agent))
        unannounced: Exception | None = None
        try:
            await self._outbox.final(task)
        except Exception as exc:
            unannounced = exc
            log.error("final status not stored: %r", exc, extra={"task_id": task.task_id})
        await self._outbox.event(
            _terminal_event(task.status), task, {"error": task.error} if task.error else None
        )
        if cascade and task.status in _CASCADING:
            await self._cascade(task.task_id, _CASCADING[task.status])
        if required and unannounced is not None:
            raise unannounced

    # -- cancellation -------------------------------------------------------------------------
    async def cancel(self, task_id: str, reason: str = "cancelled by user") -> Task | None:
        """Cancel a task and its non-terminal descendants; returns the task as it stands, None
        if unknown.

        A pending or input_required task ends cancelled at once; one at a worker is marked and its
        worker told (it ends when the worker reports, or at its deadline). Its children are
        cancelled the same way straight away (:meth:`_cascade`), not when it ends.
        """
        new = await self._cancel_one(task_id, reason, again=True)
        if new is None:
            return await self._store.get(task_id)
        await self._cascade(task_id, _CASCADING[TaskStatus.CANCELLED])
        return new

    async def _cancel_one(self, task_id: str, reason: str, *, again: bool) -> Task | None:
        """Cancel one task (no cascade). With ``again`` False, a task already asked to cancel is
        left as it is (its worker was told); otherwise its worker is told again. None when
        nothing changed."""

        def request(cur: Task, _: Scores) -> Change | None:
            if is_terminal(cur.status) or (not again and cur.metadata.get("cancelRequested")):
                return None
            meta = {**cur.metadata, "cancelRequested": True}
            if cur.status in (TaskStatus.PENDING, TaskStatus.INPUT_REQUIRED):  # no worker holds it
                return Change(
                    cur.with_status(TaskStatus.CANCELLED, metadata=meta, error=reason, pending_approval=None)
                )
            return Change(cur.model_copy(update={"metadata": meta}))

        new = await self._store.update(task_id, request)
        if new is None:
            return None
        if new.status is TaskStatus.CANCELLED:
            await self._announce(new, cascade=False)
        else:
            await self._outbox.cancel(new)
        return new

    async def _cascade(self, root_id: str, ended: str) -> None:
        """Cancel what runs under ``root_id``: its children, breadth first, and theirs.

        Every child not completed is cancelled (if not terminal yet) with the reason ``parent
        task <its parent> <ended>`` and gone down into; a completed child's own children are its
        business and left alone. Bounded: each task is visited once (so parent ids that form a
        cycle end too), and at most ``Policy.max_cascade`` of them; the rest is logged.
        """
        seen = {root_id}
        parents: deque[tuple[str, str]] = deque([(root_id, ended)])
        while parents:
            parent_id, how = parents.popleft()
            for child_id in sorted(await self._store.children(parent_id)):
                if child_id in seen:
                    continue
                if len(seen) > self._policy.max_cascade:
                    log.warning(
                        "cancellation stopped after %d tasks under %s", self._policy.max_cascade, root_id
                    )
                    return
                seen.add(child_id)
                if await self._cancel_child(child_id, f"parent task {parent_id} {how}"):
                    parents.append((child_id, _CASCADING[TaskStatus.CANCELLED]))

    async def _cancel_child(self, task_id: str, reason: str) -> bool:
        """Cancel one child of a cascade; True unless it had completed (its children stay)."""
        if await self._cancel_one(task_id, reason, again=False) is not None:
            return True
        child = await self._store.get(task_id)  # terminal already, or asked to cancel before
        return child is not None and child.status is not TaskStatus.COMPLETED

    async def _gone_parent(self, task: Task) -> str | None:
        """Why ``task`` must not run because of its parent (asked to cancel, or ended without
        completing), or None. Asked of a child as it is created, so a child created while its
        parent's cascade runs is cancelled all the same."""
        if task.parent_task_id is None:
            return None
        parent = await self._store.get(task.parent_task_id)
        if parent is None:
            return None
        if parent.status in _CASCADING:
            return f"parent task {parent.task_id} {_CASCADING[parent.status]}"
        if parent.metadata.get("cancelRequested") and not is_terminal(parent.status):
            return f"parent task {parent.task_id} {_CASCADING[TaskStatus.CANCELLED]}"
        return None


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
