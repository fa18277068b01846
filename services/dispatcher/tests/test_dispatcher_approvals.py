"""Approvals on a real Redis (`make test` needs Redis reachable at LOOM_REDIS_URL), the registry
and NATS replaced by recording fakes: a worker's input_required report, decisions (one wins),
the approval timeout (reject or dead), attempts that do not count, cancelling a waiting task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from dispatcher_fakes import Outbox, Picker, policy
from loom_dispatcher.approvals import approval_timeout_of, failed_attempts, timeout_action_of
from loom_dispatcher.dispatching import Dispatcher
from loom_dispatcher.store import TaskStore
from loom_protocol import (
    ApprovalDecision,
    ApprovalInput,
    ApprovalRequest,
    ApprovalTimeoutAction,
    Task,
    TaskStatus,
    TaskStatusChanged,
)
from redis.asyncio import Redis


@pytest.fixture
def store(redis: tuple[Redis, str]) -> TaskStore:
    return TaskStore(*redis)


REQUEST = ApprovalRequest(key="2.0", tool="delete_file", arguments={"path": "/tmp/x"}, step=2, attempt=1)


def report(task: Task, status: TaskStatus, **changes: Any) -> TaskStatusChanged:
    fields: dict[str, Any] = {
        "task_id": task.task_id,
        "target_agent": task.target_agent,
        "status": status,
        "attempt": 1,
        "instance_id": "w1",
        **changes,
    }
    return TaskStatusChanged(**fields)


async def sweep_until(
    dispatcher: Dispatcher,
    store: TaskStore,
    task_id: str,
    done: Callable[[Task], bool],
    timeout_s: float = 5.0,
) -> Task:
    """Sweep until the task is as ``done`` wants it (a wait running out is what is tested)."""
    deadline = time.monotonic() + timeout_s
    while True:
        await dispatcher.sweep()
        task = await store.get(task_id)
        if task is not None and done(task):
            return task
        assert time.monotonic() < deadline, f"task not as wanted in time: {task!r}"
        await asyncio.sleep(0.01)


async def waiting_task(
    dispatcher: Dispatcher, store: TaskStore, *, running: bool = True, **metadata: Any
) -> Task:
    """A task dispatched to w1 (attempt 1) that its worker stopped on ``REQUEST``."""
    task = Task(target_agent="agent", metadata=metadata)
    await dispatcher.submit(task)
    if running:
        await dispatcher.on_status(report(task, TaskStatus.RUNNING))
    await dispatcher.on_status(report(task, TaskStatus.INPUT_REQUIRED, approval=REQUEST))
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.INPUT_REQUIRED
    return stored


@pytest.mark.parametrize("running", [True, False], ids=["from-running", "from-dispatched"])
async def test_input_required_leaves_the_instance_and_waits_until_its_timeout(
    store: TaskStore, redis: tuple[Redis, str], running: bool
) -> None:
    client, prefix = redis
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(approval_timeout_s=500.0))
    before = time.time()
    task = await waiting_task(dispatcher, store, running=running)
    assert task.pending_approval == REQUEST and task.instance_id is None and task.attempt == 1
    snap = await store.read(task.task_id)
    assert snap is not None and snap.scores.retry_at is None
    assert snap.scores.deadline is not None and before + 500 <= snap.scores.deadline <= time.time() + 500
    assert await store.tasks_of_instance("w1") == []
    # the dispatcher announces the status as it accepted it, approval included
    kind, announced, _ = outbox.sent[-1]
    assert kind == "status" and announced.status is TaskStatus.INPUT_REQUIRED
    assert announced.pending_approval == REQUEST and announced.instance_id is None
    # w1 going away, or reporting late for the attempt it gave up, changes nothing
    await dispatcher.on_member_down("w1")
    await dispatcher.on_status(report(task, TaskStatus.RUNNING))
    await dispatcher.on_status(report(task, TaskStatus.COMPLETED, result="late"))
    assert (await store.read(task.task_id)) == snap
    assert await dispatcher.sweep() == 0  # not due
    assert await client.zscore(f"{prefix}:inflight", task.task_id) == pytest.approx(snap.scores.deadline)


async def test_a_report_without_the_call_or_from_another_attempt_is_ignored(store: TaskStore) -> None:
    dispatcher = Dispatcher(store, Picker("w1"), Outbox(), policy())
    task = Task(target_agent="agent")
    await dispatcher.submit(task)
    await dispatcher.on_status(report(task, TaskStatus.INPUT_REQUIRED))  # no approval in it
    await dispatcher.on_status(report(task, TaskStatus.INPUT_REQUIRED, approval=REQUEST, attempt=2))
    await dispatcher.on_status(report(task, TaskStatus.INPUT_REQUIRED, approval=REQUEST, instance_id="w9"))
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.DISPATCHED and stored.pending_approval is None


async def test_approve_records_the_decision_and_dispatches_a_new_attempt(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1", "w2"), outbox, policy())
    task = await waiting_task(dispatcher, store)
    given = ApprovalInput(arguments={"path": "/tmp/y"}, by="alice", reason="fine")
    new = await dispatcher.decide(task.task_id, True, given)
    assert new is not None and new.status is TaskStatus.DISPATCHED
    assert new.attempt == 2 and new.instance_id == "w2" and new.pending_approval is None
    [decision] = new.approvals
    assert (decision.key, decision.tool, decision.approved) == ("2.0", "delete_file", True)
    assert (decision.arguments, decision.by, decision.reason) == ({"path": "/tmp/y"}, "alice", "fine")
    assigned = outbox.assignments()[-1]  # what the worker gets carries the decision
    assert assigned.attempt == 2 and assigned.decision_for("2.0") == decision
    [data] = outbox.events("approval.granted")
    assert data is not None
    assert {k: data[k] for k in ("key", "tool", "approved", "by", "reason", "edited")} == {
        "key": "2.0",
        "tool": "delete_file",
        "approved": True,
        "by": "alice",
        "reason": "fine",
        "edited": True,
    }
    assert await store.tasks_of_instance("w2") == [task.task_id]
    # decided: a second decision finds nothing to decide
    assert await dispatcher.decide(task.task_id, True, ApprovalInput()) is None
    assert await dispatcher.decide(task.task_id, False, ApprovalInput()) is None
    assert len(outbox.events("approval.granted")) == 1 and outbox.events("approval.denied") == []


async def test_reject_records_a_rejection_without_arguments(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    task = await waiting_task(dispatcher, store)
    new = await dispatcher.decide(task.task_id, False, ApprovalInput(arguments={"x": 1}, reason="no"))
    assert new is not None and new.status is TaskStatus.DISPATCHED and new.attempt == 2
    decision = new.decision_for("2.0")
    assert decision is not None and not decision.approved and decision.arguments is None
    assert decision.reason == "no"
    [data] = outbox.events("approval.denied")
    assert data is not None and data["approved"] is False and data["edited"] is False


async def test_a_decision_with_no_instance_leaves_the_task_pending(store: TaskStore) -> None:
    dispatcher = Dispatcher(store, Picker("w1", None), Outbox(), policy())
    task = await waiting_task(dispatcher, store)
    new = await dispatcher.decide(task.task_id, True, ApprovalInput())
    assert new is not None and new.status is TaskStatus.PENDING and len(new.approvals) == 1
    snap = await store.read(task.task_id)
    assert snap is not None and snap.scores.deadline is None and snap.scores.retry_at is not None


async def test_of_two_concurrent_decisions_exactly_one_wins(redis: tuple[Redis, str]) -> None:
    replicas = [Dispatcher(TaskStore(*redis), Picker("w1"), Outbox(), policy()) for _ in range(2)]
    for _ in range(10):
        task = await waiting_task(replicas[0], replicas[0]._store)
        results = await asyncio.gather(
            replicas[0].decide(task.task_id, True, ApprovalInput(by="a")),
            replicas[1].decide(task.task_id, False, ApprovalInput(by="b")),
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await replicas[0]._store.get(task.task_id)
        assert stored is not None and len(stored.approvals) == 1
        assert stored.approvals[0].by == winners[0].approvals[0].by


async def test_a_timed_out_approval_is_rejected_by_the_timeout_and_dispatched_again(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1", "w2"), outbox, policy())
    task = await waiting_task(dispatcher, store, approvalTimeoutS=0.05)
    stored = await sweep_until(
        dispatcher, store, task.task_id, lambda t: t.status is not TaskStatus.INPUT_REQUIRED
    )
    assert stored.status is TaskStatus.DISPATCHED and stored.attempt == 2 and stored.instance_id == "w2"
    decision = stored.decision_for("2.0")
    assert decision is not None and not decision.approved and decision.by == "timeout"
    assert decision.reason == "approval timed out after 0.05 s"
    [data] = outbox.events("approval.denied")
    assert data is not None and data["by"] == "timeout"
    assert await dispatcher.sweep() == 0  # once


async def test_a_timed_out_approval_ends_dead_when_the_task_says_so(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(approval_timeout_s=0.05))
    task = await waiting_task(dispatcher, store, approvalTimeoutAction="dead")
    await sweep_until(dispatcher, store, task.task_id, lambda t: t.is_terminal)
    snap = await store.read(task.task_id)
    assert snap is not None and snap.task.status is TaskStatus.DEAD
    assert snap.task.error == "approval timed out after 0.05 s" and snap.task.pending_approval is None
    assert snap.scores.deadline is None and snap.scores.retry_at is None
    assert ("dead", "approval timed out after 0.05 s", None) in outbox.sent
    assert [t.status for kind, t, _ in outbox.sent if kind == "final"] == [TaskStatus.DEAD]
    assert len(outbox.events("task.dead")) == 1 and outbox.events("approval.denied") == []


async def test_the_policy_decides_the_timeout_action_when_the_task_does_not(store: TaskStore) -> None:
    dead = policy(approval_timeout_s=0.05, approval_timeout_action=ApprovalTimeoutAction.DEAD)
    dispatcher = Dispatcher(store, Picker("w1"), Outbox(), dead)
    task = await waiting_task(dispatcher, store, approvalTimeoutAction="bogus")
    stored = await sweep_until(dispatcher, store, task.task_id, lambda t: t.is_terminal)
    assert stored.status is TaskStatus.DEAD


async def test_resumes_after_decisions_do_not_count_as_failed_attempts(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1", "w2", "w3"), outbox, policy(max_attempts=2))
    task = await waiting_task(dispatcher, store, timeoutS=0.05)
    await dispatcher.decide(task.task_id, True, ApprovalInput())  # attempt 2 on w2
    # attempt 2 is late: the first failure of two allowed, so a third attempt (the retry)
    stored = await sweep_until(dispatcher, store, task.task_id, lambda t: t.attempt == 3 or t.is_terminal)
    assert stored.status is TaskStatus.DISPATCHED and failed_attempts(stored) == 2
    stored = await sweep_until(dispatcher, store, task.task_id, lambda t: t.is_terminal)  # the second: dead
    assert stored.status is TaskStatus.DEAD and stored.attempt == 3
    assert stored.error == "deadline exceeded; gave up after 2 attempts"


async def test_a_waiting_task_is_cancelled_at_once(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    task = await waiting_task(dispatcher, store)
    new = await dispatcher.cancel(task.task_id)
    assert new is not None and new.status is TaskStatus.CANCELLED and new.error == "cancelled by user"
    assert new.pending_approval is None
    snap = await store.read(task.task_id)
    assert snap is not None and snap.scores.deadline is None  # the sweeper will not time it out
    assert "cancel" not in outbox.kinds()  # no worker to tell
    assert await dispatcher.decide(task.task_id, True, ApprovalInput()) is None


async def test_a_task_cancelled_while_it_ran_ends_when_it_stops_for_approval(store: TaskStore) -> None:
    dispatcher = Dispatcher(store, Picker("w1"), Outbox(), policy())
    task = Task(target_agent="agent")
    await dispatcher.submit(task)
    await dispatcher.on_status(report(task, TaskStatus.RUNNING))
    marked = await dispatcher.cancel(task.task_id)
    assert marked is not None and marked.status is TaskStatus.RUNNING  # its worker is told
    await dispatcher.on_status(report(task, TaskStatus.INPUT_REQUIRED, approval=REQUEST))
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.CANCELLED


def test_task_metadata_sets_the_timeout_and_its_action_within_bounds() -> None:
    def of(**metadata: Any) -> Task:
        return Task(target_agent="a", metadata=metadata)

    assert approval_timeout_of(of(approvalTimeoutS=30), 9.0) == 30.0
    assert approval_timeout_of(of(approvalTimeoutS=7 * 86_400), 9.0) == 7 * 86_400
    for bad in (0, -1, 7 * 86_400 + 1, "30", True, None):
        assert approval_timeout_of(of(approvalTimeoutS=bad), 9.0) == 9.0, bad
    reject, dead = ApprovalTimeoutAction.REJECT, ApprovalTimeoutAction.DEAD
    assert timeout_action_of(of(approvalTimeoutAction="dead"), reject) is dead
    assert timeout_action_of(of(approvalTimeoutAction="reject"), dead) is reject
    assert timeout_action_of(of(approvalTimeoutAction="later"), dead) is dead
    assert timeout_action_of(of(), reject) is reject
    decided = of().model_copy(
        update={"attempt": 4, "approvals": [ApprovalDecision(key="1.0", tool="t", approved=True)]}
    )
    assert failed_attempts(decided) == 3
