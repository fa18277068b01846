"""The fence on worker reports: only the task's current attempt decides it; every other report
is acknowledged (never raised on, so never redelivered), recorded as superseded, and changes
nothing. Against the real Redis (``redis``: services/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest
from dispatcher_fakes import Outbox, Picker, policy
from loom_dispatcher import metrics
from loom_dispatcher.admission import AgentDirectory
from loom_dispatcher.dispatching import Dispatcher
from loom_dispatcher.store import TaskStore
from loom_protocol import EventType, Task, TaskStatus, TaskStatusChanged
from redis.asyncio import Redis

S = TaskStatus


@pytest.fixture
def store(redis: tuple[Redis, str]) -> TaskStore:
    return TaskStore(*redis)


def report(
    task: Task, status: TaskStatus, attempt: int, instance: str, result: Any = None
) -> TaskStatusChanged:
    return TaskStatusChanged(
        task_id=task.task_id,
        target_agent=task.target_agent,
        status=status,
        attempt=attempt,
        instance_id=instance,
        result=result,
    )


def superseded_records(outbox: Outbox) -> list[dict[str, object]]:
    return [
        data
        for data in outbox.events(EventType.ERROR)
        if data is not None and data.get("reason") == "superseded report"
    ]


def counted(status: str) -> float:
    return metrics.REPORTS_SUPERSEDED.labels(status)._value.get()


async def _dispatched_to_w1(store: TaskStore, outbox: Outbox) -> tuple[Dispatcher, Task]:
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    task = Task(target_agent="echo")
    await dispatcher.submit(task)
    return dispatcher, task


async def _at_w2_after_w1_went_down(store: TaskStore, outbox: Outbox) -> tuple[Dispatcher, Task]:
    dispatcher = Dispatcher(store, Picker("w1", "w2"), outbox, policy())
    task = Task(target_agent="echo")
    await dispatcher.submit(task)
    await dispatcher.on_status(report(task, S.RUNNING, 1, "w1"))
    await dispatcher.on_member_down("w1")
    await dispatcher.try_dispatch(task.task_id)
    stored = await store.get(task.task_id)
    assert stored is not None and (stored.status, stored.attempt, stored.instance_id) == (
        S.DISPATCHED,
        2,
        "w2",
    )
    return dispatcher, task


async def test_a_late_completed_of_a_superseded_attempt_is_recorded_and_the_task_ends_once_with_w2s_result(
    store: TaskStore,
) -> None:
    outbox = Outbox()
    dispatcher, task = await _at_w2_after_w1_went_down(store, outbox)
    before = counted("completed")
    await dispatcher.on_status(report(task, S.COMPLETED, 1, "w1", result="from w1"))  # no exception
    stored = await store.get(task.task_id)
    assert stored is not None and (stored.status, stored.attempt) == (S.DISPATCHED, 2)
    records = superseded_records(outbox)
    assert len(records) == 1 and records[0]["reported_attempt"] == 1
    assert records[0]["reported_instance_id"] == "w1" and records[0]["reported_status"] == "completed"
    assert counted("completed") == before + 1

    await dispatcher.on_status(report(task, S.COMPLETED, 2, "w2", result="from w2"))
    await dispatcher.on_status(report(task, S.COMPLETED, 2, "w2", result="from w2"))  # a redelivery
    await dispatcher.on_status(report(task, S.COMPLETED, 1, "w1", result="from w1"))  # once more, late
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.COMPLETED and stored.result == "from w2"
    # one final status, announced again for the redelivery under the same Nats-Msg-Id (the
    # stream keeps one: a dispatcher that stopped before announcing gets this very report again)
    finals = [(t.status, t.attempt, t.instance_id) for kind, t, _ in outbox.sent if kind == "final"]
    assert set(finals) == {(S.COMPLETED, 2, "w2")} and len(finals) == 2
    assert len(superseded_records(outbox)) == 2  # the redelivery of w2's own report is not one


async def test_the_old_instance_is_told_it_is_superseded_when_its_task_is_put_back(store: TaskStore) -> None:
    outbox = Outbox()
    await _at_w2_after_w1_went_down(store, outbox)
    told = [t for kind, t, _ in outbox.sent if kind == "superseded"]
    assert [(t.instance_id, t.attempt) for t in told] == [("w1", 1)]
    kinds = outbox.kinds()
    second_assignment = kinds.index("assigned", kinds.index("assigned") + 1)
    assert kinds.index("superseded") < second_assignment


async def test_the_completed_of_a_put_back_attempt_not_given_out_again_ends_the_task(
    store: TaskStore,
) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(retry_backoff_s=60.0))
    task = Task(target_agent="echo")
    await dispatcher.submit(task)
    await dispatcher.on_member_down("w1")  # a false eviction: w1 runs on
    stored = await store.get(task.task_id)
    assert stored is not None and (stored.status, stored.attempt) == (S.PENDING, 1)
    await dispatcher.on_status(report(task, S.COMPLETED, 1, "w1", result="kept"))
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.COMPLETED and stored.result == "kept"
    snap = await store.read(task.task_id)
    assert snap is not None and snap.scores.retry_at is None and snap.scores.deadline is None
    assert await dispatcher.sweep() == 0  # nothing left to dispatch
    assert len(outbox.assignments()) == 1


@pytest.mark.parametrize("status", [S.RUNNING, S.FAILED, S.CANCELLED, S.PENDING])
async def test_other_reports_of_a_put_back_attempt_are_recorded_and_change_nothing(
    store: TaskStore, status: TaskStatus
) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(retry_backoff_s=60.0))
    task = Task(target_agent="echo")
    await dispatcher.submit(task)
    await dispatcher.on_member_down("w1")
    await dispatcher.on_status(report(task, status, 1, "w1"))  # never InvalidTransition
    stored = await store.get(task.task_id)
    assert stored is not None and (stored.status, stored.attempt) == (S.PENDING, 1)
    assert len(superseded_records(outbox)) == 1


async def test_a_late_failed_after_the_same_attempt_completed_is_recorded_not_applied(
    store: TaskStore,
) -> None:
    outbox = Outbox()
    dispatcher, task = await _dispatched_to_w1(store, outbox)
    await dispatcher.on_status(report(task, S.COMPLETED, 1, "w1", result=1))
    await dispatcher.on_status(report(task, S.FAILED, 1, "w1"))
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.COMPLETED
    assert [r["reported_status"] for r in superseded_records(outbox)] == ["failed"]


async def test_a_task_given_up_at_its_deadline_tells_its_instance(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(max_attempts=1, task_timeout_s=0.0))
    task = Task(target_agent="echo")
    await dispatcher.submit(task)
    assert await dispatcher.sweep() == 1
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.DEAD
    assert [(t.instance_id, t.attempt) for kind, t, _ in outbox.sent if kind == "superseded"] == [("w1", 1)]
    await dispatcher.on_status(report(task, S.COMPLETED, 1, "w1"))  # too late: recorded, no change
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.DEAD
    assert len(superseded_records(outbox)) == 1


class Strikes:
    def __init__(self) -> None:
        self.struck: list[str] = []

    async def strike(self, instance_id: str) -> int:
        self.struck.append(instance_id)
        return self.struck.count(instance_id)


async def test_an_attempt_that_times_out_or_fails_is_a_strike_against_its_instance(store: TaskStore) -> None:
    strikes = Strikes()
    timing_out = Dispatcher(store, Picker("w1"), Outbox(), policy(task_timeout_s=0.0), strikes=strikes)
    task = Task(target_agent="echo")
    await timing_out.submit(task)
    assert await timing_out.sweep() == 1  # put back at its deadline
    assert strikes.struck == ["w1"]
    dispatcher = Dispatcher(store, Picker("w2"), Outbox(), policy(), strikes=strikes)
    failing = Task(target_agent="echo")
    await dispatcher.submit(failing)
    await dispatcher.on_status(report(failing, S.FAILED, 1, "w2"))
    completing = Task(target_agent="echo")
    await dispatcher.submit(completing)
    await dispatcher.on_status(report(completing, S.COMPLETED, 1, "w2"))
    assert strikes.struck == ["w1", "w2"]  # a completed attempt is no strike


async def test_a_report_whose_final_was_not_stored_fails_and_its_redelivery_announces_it(
    store: TaskStore,
) -> None:
    outbox = Outbox()
    dispatcher, task = await _dispatched_to_w1(store, outbox)
    outbox.finals_refused = 1
    done = report(task, S.COMPLETED, 1, "w1", result="42")
    with pytest.raises(TimeoutError):  # the consumer naks the report: it comes back
        await dispatcher.on_status(done)
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is S.COMPLETED and stored.result == "42"
    assert outbox.events(EventType.TASK_COMPLETED) and "final" not in outbox.kinds()
    await dispatcher.on_status(done)  # the redelivery
    (final,) = [t for kind, t, _ in outbox.sent if kind == "final"]
    assert (final.status, final.result) == (S.COMPLETED, "42")
    assert len(outbox.events(EventType.TASK_COMPLETED)) == 1 and not superseded_records(outbox)


async def test_a_refused_task_is_stored_dead_before_its_final_and_a_redelivery_announces_it(
    store: TaskStore,
) -> None:
    async def known() -> list[str]:
        return ["echo"]

    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy(), AgentDirectory(known))
    task = Task(target_agent="nobody")
    outbox.finals_refused = 1
    with pytest.raises(TimeoutError):  # the consumer naks the submission: it comes back
        await dispatcher.submit(task)
    stored = await store.get(task.task_id)  # whoever hears the final finds the task dead
    assert stored is not None and stored.status is S.DEAD and "unknown agent 'nobody'" in (stored.error or "")
    await dispatcher.submit(task)  # the redelivery
    (final,) = [t for kind, t, _ in outbox.sent if kind == "final"]
    assert final.status is S.DEAD and final.task_id == task.task_id
