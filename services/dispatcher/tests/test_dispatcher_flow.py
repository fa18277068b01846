"""The Dispatcher's decisions on a real Redis (`make test` needs Redis reachable at
LOOM_REDIS_URL), with the registry and NATS replaced by recording fakes: first placement at
submission, no instance, no registry, duplicates, status reports and superseded attempts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from loom_dispatcher.admission import Admission, AgentDirectory
from loom_dispatcher.dispatching import Dispatcher, Policy
from loom_dispatcher.errors import RegistryUnavailable
from loom_dispatcher.store import Scores, TaskStore
from loom_protocol import UNKNOWN_AGENT_LABEL, PickReply, Task, TaskStatus, TaskStatusChanged
from redis.asyncio import Redis


class Picker:
    def __init__(self, *answers: str | None | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def pick(self, agent_id: str, task_id: str) -> PickReply:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return PickReply(agent_id=agent_id, instance_id=answer, reason=None if answer else "none")


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def assigned(self, task: Task) -> None:
        self.sent.append(("assigned", (task.instance_id, task.attempt)))

    async def status(self, task: Task) -> None:
        self.sent.append(("status", task.status))

    async def final(self, task: Task) -> None:
        self.sent.append(("final", task.status))

    async def dead(self, task: Task, reason: str) -> None:
        self.sent.append(("dead", reason))

    async def cancel(self, task: Task) -> None:
        self.sent.append(("cancel", task.task_id))

    async def superseded(self, task: Task) -> None:
        self.sent.append(("superseded", (task.instance_id, task.attempt)))

    async def event(self, event_type: str, task: Task, data: dict[str, object] | None = None) -> None:
        self.sent.append(("event", str(event_type)))

    def kinds(self) -> list[str]:
        return [k if k != "event" else f"event:{v}" for k, v in self.sent]


@pytest.fixture
def store(redis: tuple[Redis, str]) -> TaskStore:
    return TaskStore(*redis)


def policy(**changes: float) -> Policy:
    values: dict[str, Any] = {
        "max_attempts": 3,
        "task_timeout_s": 60.0,
        "no_instance_timeout_s": 10.0,
        "retry_backoff_s": 0.2,
    }
    values.update(changes)
    return Policy(**values)


async def test_a_submission_is_stored_dispatched_to_its_pick(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    task = Task(target_agent="echo")
    assert await dispatcher.submit(task)
    snap = await store.read(task.task_id)
    assert snap is not None
    assert snap.task.status is TaskStatus.DISPATCHED and snap.task.attempt == 1
    assert snap.task.instance_id == "w1"
    assert snap.scores.deadline is not None and snap.scores.retry_at is None
    assert await store.tasks_of_instance("w1") == [task.task_id]
    assert outbox.kinds() == ["event:task.submitted", "assigned", "event:task.assigned"]


async def test_a_duplicate_submission_changes_nothing(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1", "w2"), outbox, policy())
    task = Task(target_agent="echo")
    assert await dispatcher.submit(task) is Admission.ACCEPTED
    assert await dispatcher.submit(task) is Admission.DUPLICATE
    other = task.model_copy(update={"parameters": {"again": True}})
    assert await dispatcher.submit(other) is Admission.CONFLICT
    stored = await store.get(task.task_id)
    assert stored is not None and stored.instance_id == "w1" and stored.parameters == {}
    assert outbox.kinds().count("assigned") == 1


async def test_a_delivery_of_a_submission_the_api_is_routing_waits_for_it(store: TaskStore) -> None:
    """The API publishes a task and routes it; its delivery to the same process, here before
    the API's own routing starts, waits for that and then finds the task routed: one pick."""
    picker = Picker("w1", "w2")
    outbox = Outbox()
    dispatcher = Dispatcher(store, picker, outbox, policy())
    task = Task(target_agent="echo")
    with dispatcher.routing_here(task.task_id):
        delivery = asyncio.create_task(dispatcher.delivered(task))
        await asyncio.sleep(0)  # the delivery runs first, up to its wait
        assert await dispatcher.submit(task) is Admission.ACCEPTED
    assert await asyncio.wait_for(delivery, 5) is Admission.DUPLICATE
    stored = await store.get(task.task_id)
    assert stored is not None and stored.instance_id == "w1" and stored.attempt == 1
    assert outbox.kinds().count("assigned") == 1
    # without an API routing it, a delivery routes the task itself
    other = Task(target_agent="echo")
    assert await dispatcher.delivered(other) is Admission.ACCEPTED


async def test_no_instance_waits_then_dies(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker(None), outbox, policy(no_instance_timeout_s=0.3))
    task = Task(target_agent="nobody")
    assert await dispatcher.submit(task)
    snap = await store.read(task.task_id)
    assert snap is not None and snap.task.status is TaskStatus.PENDING
    assert snap.scores.retry_at is not None and snap.scores.retry_at <= time.time() + 1
    await asyncio.sleep(0.35)
    await dispatcher.try_dispatch(task.task_id)
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.DEAD
    assert stored.error == "no instance of agent nobody"
    assert ("final", TaskStatus.DEAD) in outbox.sent


async def test_without_a_registry_the_task_waits_for_the_sweeper(store: TaskStore) -> None:
    picker = Picker(RegistryUnavailable("down"), "w2")
    dispatcher = Dispatcher(store, picker, Outbox(), policy())
    task = Task(target_agent="echo")
    assert await dispatcher.submit(task)
    snap = await store.read(task.task_id)
    assert snap is not None and snap.task.status is TaskStatus.PENDING
    assert snap.scores.retry_at is not None and snap.scores.retry_at > time.time() + 1  # the grace
    await dispatcher.try_dispatch(task.task_id)  # what the sweeper does once it is due
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.DISPATCHED and stored.instance_id == "w2"


async def test_reports_end_a_task_once_and_superseded_attempts_are_ignored(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1", "w2"), outbox, policy(retry_backoff_s=0.0))
    task = Task(target_agent="echo")
    await dispatcher.submit(task)

    def report(status: TaskStatus, attempt: int, instance: str) -> TaskStatusChanged:
        return TaskStatusChanged(
            task_id=task.task_id, target_agent="echo", status=status, attempt=attempt, instance_id=instance
        )

    await dispatcher.on_status(report(TaskStatus.RUNNING, 1, "w1"))
    assert (await store.get(task.task_id)).status is TaskStatus.RUNNING  # type: ignore[union-attr]
    await dispatcher.on_member_down("w1")  # attempt 1 is superseded: back to pending
    await dispatcher.try_dispatch(task.task_id)  # attempt 2 on w2
    await dispatcher.on_status(report(TaskStatus.COMPLETED, 1, "w1"))  # the late, superseded one
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.DISPATCHED and stored.attempt == 2
    await dispatcher.on_status(report(TaskStatus.COMPLETED, 2, "w2"))
    await dispatcher.on_status(report(TaskStatus.COMPLETED, 2, "w2"))  # a redelivery
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED and stored.instance_id == "w2"
    # the redelivery announces the same final again (same Nats-Msg-Id: the stream keeps one)
    assert [k for k in outbox.kinds() if k == "final"] == ["final", "final"]
    assert await store.tasks_of_instance("w1") == [] and await store.tasks_of_instance("w2") == []


class Registry:
    """The registry's known agents, counting the requests."""

    def __init__(self, *agents: str) -> None:
        self.agents = list(agents)
        self.calls = 0

    async def known_agents(self) -> list[str]:
        self.calls += 1
        return list(self.agents)


async def test_a_task_for_an_agent_never_seen_ends_dead_at_once_with_the_closest_names(
    store: TaskStore,
) -> None:
    outbox, picker = Outbox(), Picker("w1")
    agents = AgentDirectory(Registry("calculator", "echo").known_agents)
    dispatcher = Dispatcher(store, picker, outbox, policy(), agents)
    task = Task(target_agent="calculater")
    assert await dispatcher.submit(task) is Admission.UNKNOWN_AGENT
    stored = await store.read(task.task_id)
    assert stored is not None and stored.task.status is TaskStatus.DEAD
    assert stored.scores == Scores(None, None)  # in no index: nothing will retry it
    assert stored.task.error is not None and "did you mean 'calculator'?" in stored.task.error
    assert outbox.kinds() == ["dead", "final"]  # no observation event, nothing picked
    assert picker.calls == 0
    assert await dispatcher._label("calculater") == UNKNOWN_AGENT_LABEL
    assert await dispatcher._label("echo") == "echo"
    # redelivered: the same submission, nothing more
    assert await dispatcher.submit(task) is Admission.DUPLICATE
    # a redelivery announces the final again (the stream keeps one: the same Nats-Msg-Id)
    assert outbox.kinds() == ["dead", "final", "final"]


async def test_waiting_for_an_agent_keeps_the_task_pending(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(
        store, Picker(None), outbox, policy(), AgentDirectory(Registry("echo").known_agents)
    )
    task = Task(target_agent="later", metadata={"waitForAgent": True})
    assert await dispatcher.submit(task) is Admission.ACCEPTED
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.PENDING


async def test_without_an_answer_about_agents_the_task_is_accepted_as_before(store: TaskStore) -> None:
    async def down() -> list[str]:
        raise RegistryUnavailable("no registry")

    dispatcher = Dispatcher(store, Picker("w1"), Outbox(), policy(), AgentDirectory(down))
    task = Task(target_agent="echo")
    assert await dispatcher.submit(task) is Admission.ACCEPTED


async def test_a_task_the_api_stored_is_routed_by_its_submission(store: TaskStore) -> None:
    outbox = Outbox()
    dispatcher = Dispatcher(store, Picker("w1"), outbox, policy())
    task = Task(target_agent="echo", parameters={"v": 1})
    assert await dispatcher.accept(task)
    assert not await dispatcher.accept(task)
    pending = await store.get(task.task_id)
    assert pending is not None and pending.status is TaskStatus.PENDING  # readable before routing
    # the consumer on another replica (no hint) and on this one (a hint) route it alike
    other = Dispatcher(TaskStore(store._redis, store._p), Picker("w2"), Outbox(), policy())
    assert await other.submit(task) is Admission.ACCEPTED
    await dispatcher.submit(task)  # its hint is stale: the compare-and-set finds it dispatched
    assert await dispatcher.submit(task) is Admission.DUPLICATE
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.DISPATCHED
    assert stored.instance_id == "w2" and stored.attempt == 1
    assert outbox.kinds() == ["event:task.submitted"]
