"""Cancellation down a task's children on a real Redis (`make test` needs Redis reachable at
LOOM_REDIS_URL), the registry and NATS replaced by recording fakes: the children index written
with the child, cancel and a parent's unsuccessful end reaching every non-terminal descendant,
completed subtrees left alone, cycles and the bound, children created after their parent ended."""

from __future__ import annotations

import pytest
from dispatcher_fakes import Outbox, Picker, policy
from loom_dispatcher.dispatching import Dispatcher
from loom_dispatcher.store import TaskStore
from loom_protocol import ApprovalRequest, Task, TaskStatus, TaskStatusChanged
from redis.asyncio import Redis


@pytest.fixture
def store(redis: tuple[Redis, str]) -> TaskStore:
    return TaskStore(*redis)


def report(task: Task, status: TaskStatus, instance_id: str, **changes: object) -> TaskStatusChanged:
    return TaskStatusChanged(
        task_id=task.task_id,
        target_agent=task.target_agent,
        status=status,
        attempt=1,
        instance_id=instance_id,
        **changes,  # type: ignore[arg-type]
    )


async def status_of(store: TaskStore, task: Task) -> tuple[TaskStatus, str | None]:
    stored = await store.get(task.task_id)
    assert stored is not None
    return stored.status, stored.error


async def test_a_child_is_listed_under_its_parent_when_it_is_created(
    store: TaskStore, redis: tuple[Redis, str]
) -> None:
    client, prefix = redis
    parent = Task(target_agent="a")
    children = [Task(target_agent="b", parent_task_id=parent.task_id) for _ in range(3)]
    for child in children:
        assert await store.create(child, retry_at=1.0)
    assert not await store.create(children[0], retry_at=1.0)  # known: nothing written twice
    assert sorted(await store.children(parent.task_id)) == sorted(c.task_id for c in children)
    assert await store.children(children[0].task_id) == []
    assert await client.exists(f"{prefix}:children:{parent.task_id}") == 1


async def test_cancel_reaches_every_descendant_but_leaves_completed_subtrees(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker(None), outbox, policy())

    async def submitted(parent: Task | None, *, instance: str | None = None) -> Task:
        task = Task(target_agent="a", parent_task_id=parent.task_id if parent else None)
        dispatcher._picker = Picker(instance)  # type: ignore[assignment]
        await dispatcher.submit(task)
        return task

    root = await submitted(None, instance="w0")
    waiting = await submitted(root)  # pending: no instance
    running = await submitted(root, instance="w1")
    asking = await submitted(root, instance="w2")
    done = await submitted(root, instance="w3")
    grandchild = await submitted(waiting)  # under the pending child
    left = await submitted(done, instance="w4")  # under the completed child
    await dispatcher.on_status(report(running, TaskStatus.RUNNING, "w1"))
    request = ApprovalRequest(key="1.0", tool="t")
    await dispatcher.on_status(report(asking, TaskStatus.INPUT_REQUIRED, "w2", approval=request))
    await dispatcher.on_status(report(done, TaskStatus.COMPLETED, "w3", result="ok"))
    outbox.sent.clear()

    new = await dispatcher.cancel(root.task_id)
    assert new is not None and new.status is TaskStatus.DISPATCHED  # at w0: its worker is told
    named = f"parent task {root.task_id} was cancelled"
    assert await status_of(store, waiting) == (TaskStatus.CANCELLED, named)
    assert await status_of(store, asking) == (TaskStatus.CANCELLED, named)
    assert await status_of(store, grandchild) == (
        TaskStatus.CANCELLED,
        f"parent task {waiting.task_id} was cancelled",
    )
    assert await status_of(store, running) == (TaskStatus.RUNNING, None)  # its worker is told
    assert await status_of(store, done) == (TaskStatus.COMPLETED, None)
    assert await status_of(store, left) == (TaskStatus.DISPATCHED, None)  # a completed child's own
    told = sorted(t.task_id for kind, t, _ in outbox.sent if kind == "cancel")
    assert told == sorted([root.task_id, running.task_id])
    finals = sorted(t.task_id for kind, t, _ in outbox.sent if kind == "final")
    assert finals == sorted([waiting.task_id, asking.task_id, grandchild.task_id])
    # the running child's worker stops it: nothing is cancelled twice
    outbox.sent.clear()
    await dispatcher.on_status(report(running, TaskStatus.CANCELLED, "w1", error="stopped"))
    assert [kind for kind, _, _ in outbox.sent] == ["final", "event:task.cancelled"]


@pytest.mark.parametrize(
    ("ending", "worded"),
    [(TaskStatus.FAILED, "failed"), (TaskStatus.CANCELLED, "was cancelled")],
)
async def test_a_parent_that_ends_without_completing_takes_its_children_along(
    store: TaskStore, ending: TaskStatus, worded: str
) -> None:
    dispatcher = Dispatcher(store, Picker("w1"), Outbox(), policy())
    parent = Task(target_agent="a")
    await dispatcher.submit(parent)
    child = Task(target_agent="b", parent_task_id=parent.task_id)
    dispatcher._picker = Picker(None)  # type: ignore[assignment]
    await dispatcher.submit(child)
    await dispatcher.on_status(report(parent, ending, "w1", error="gave up"))
    assert await status_of(store, child) == (TaskStatus.CANCELLED, f"parent task {parent.task_id} {worded}")


async def test_a_parent_dead_after_its_last_attempt_takes_its_children_along(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(max_attempts=1))
    parent = Task(target_agent="a")
    await dispatcher.submit(parent)
    child = Task(target_agent="b", parent_task_id=parent.task_id)
    dispatcher._picker = Picker("w2")  # type: ignore[assignment]
    await dispatcher.submit(child)
    await dispatcher.on_member_down("w1")  # attempt 1 of 1 lost: the parent ends dead
    assert (await status_of(store, parent))[0] is TaskStatus.DEAD
    marked = await store.get(child.task_id)  # at w2: marked, and its worker told
    assert marked is not None and marked.status is TaskStatus.DISPATCHED
    assert marked.metadata["cancelRequested"] is True
    assert [t.task_id for kind, t, _ in outbox.sent if kind == "cancel"] == [child.task_id]
    other = Task(target_agent="b", parent_task_id=parent.task_id)
    dispatcher._picker = Picker(None)  # type: ignore[assignment]
    await dispatcher.submit(other)  # created after its parent ended: cancelled at once
    named = f"parent task {parent.task_id} ended dead"
    assert await status_of(store, other) == (TaskStatus.CANCELLED, named)


async def test_children_of_a_parent_asked_to_cancel_are_cancelled_as_they_come(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    parent = Task(target_agent="a")
    await dispatcher.submit(parent)
    await dispatcher.cancel(parent.task_id)  # at w1: not ended yet
    late = Task(target_agent="b", parent_task_id=parent.task_id)
    await dispatcher.submit(late)  # over NATS: never picked for
    named = f"parent task {parent.task_id} was cancelled"
    assert await status_of(store, late) == (TaskStatus.CANCELLED, named)
    stored = Task(target_agent="b", parent_task_id=parent.task_id)
    assert await dispatcher.accept(stored)  # the API's record of a submission
    assert (await status_of(store, stored))[0] is TaskStatus.CANCELLED
    assert [t.task_id for kind, t, _ in outbox.sent if kind == "assigned"] == [parent.task_id]


async def test_parent_ids_in_a_cycle_end_the_cascade(store: TaskStore) -> None:
    dispatcher = Dispatcher(store, Picker(None), Outbox(), policy())
    a = Task(task_id="cycle-a", target_agent="x", parent_task_id="cycle-b")
    b = Task(task_id="cycle-b", target_agent="x", parent_task_id="cycle-a")
    await dispatcher.submit(a)
    await dispatcher.submit(b)
    await dispatcher.cancel("cycle-a")
    assert (await status_of(store, a))[0] is TaskStatus.CANCELLED
    assert (await status_of(store, b))[0] is TaskStatus.CANCELLED


async def test_the_cascade_is_bounded(store: TaskStore) -> None:
    dispatcher = Dispatcher(store, Picker(None), Outbox(), policy(max_cascade=3))
    root = Task(target_agent="a")
    await dispatcher.submit(root)
    children = [Task(target_agent="a", parent_task_id=root.task_id) for _ in range(5)]
    for child in children:
        await dispatcher.submit(child)
    await dispatcher.cancel(root.task_id)
    ended = [(await status_of(store, c))[0] for c in children]
    assert ended.count(TaskStatus.CANCELLED) == 3 and ended.count(TaskStatus.PENDING) == 2
