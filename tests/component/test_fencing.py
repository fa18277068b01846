"""Fencing on the full task path (registry, dispatcher and a worker in process): a late
``completed`` of an attempt that is not the task's current one is acknowledged and recorded (an
``error`` event with ``reason: "superseded report"``), never applied; a report sent under another
instance's subject is dead-lettered; the task ends once, with the result of the attempt that
counts."""

from __future__ import annotations

from typing import Any

import pytest
from loom_nats import flushed
from loom_protocol import (
    MSG_ID_HEADER,
    SUPERSEDED_ATTEMPT_HEADER,
    SUPERSEDED_INSTANCE_HEADER,
    CloudEvent,
    MemberChanged,
    MembershipChange,
    RejectedMessage,
    Task,
    TaskStatus,
    TaskStatusChanged,
    member_msg_id,
    status_msg_id,
    subjects,
)

from tests.integration.durable_support import Published
from tests.integration.events_support import metric_value
from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals, sleepy, submit_nats

pytestmark = pytest.mark.component


async def _completed_report(
    nc: Any, task: Task, *, on: str, attempt: int, instance_id: str, answer: str, id_suffix: str = ""
) -> None:
    """Publish a ``completed`` report of ``task`` on instance ``on``'s report subject, as a worker
    would; its body names ``attempt`` at ``instance_id``."""
    change = TaskStatusChanged(
        task_id=task.task_id,
        target_agent=task.target_agent,
        status=TaskStatus.COMPLETED,
        attempt=attempt,
        instance_id=instance_id,
        result={"answer": answer},
    )
    await nc.jetstream().publish(
        subjects.task_report(on, task.task_id),
        change.to_json(),
        headers={MSG_ID_HEADER: status_msg_id(task.task_id, attempt, TaskStatus.COMPLETED) + id_suffix},
    )


async def test_a_late_completed_of_a_superseded_attempt_is_recorded_and_not_applied(stack: Stack) -> None:
    await stack.registry()
    dispatcher = await stack.dispatcher(LOOM_RETRY_BACKOFF_S="0.05")
    await stack.worker("f0", agents="calculator")
    await stack.wait_instances("calculator", 1)
    nc = await stack.nats()
    finals, published = Finals(), Published()
    await finals.attach(nc)
    await published.attach(nc)
    task = Task(target_agent="calculator", parameters=sleepy(1.5))
    await submit_nats(nc, task)
    await wait_for(lambda: published.of(task.task_id, "tool.call"), 30, "the task to run on f0")

    # a report on another instance's subject that names f0's current attempt (what any worker
    # could forge if a report's sender were not its subject): refused with the reason, not applied
    refusals: list[RejectedMessage] = []

    async def on_refusal(msg: Any) -> None:
        refusals.append(RejectedMessage.from_json(msg.data))

    await nc.subscribe(subjects.rejected("dispatcher"), cb=on_refusal)
    await _completed_report(
        nc, task, on="f9", attempt=1, instance_id="f0", answer="forged", id_suffix=":forged"
    )
    (refusal,) = await wait_for(lambda: refusals, 15, "the forged report's dead letter")
    assert refusal.subject == subjects.task_report("f9", task.task_id)
    assert "at instance 'f9'" in refusal.reason and "not task" in refusal.reason

    superseded = ("loom_dispatcher_reports_superseded_total", '{status="completed"}')
    before = await metric_value(dispatcher, *superseded)  # process-wide: other tests count too
    await _completed_report(
        nc, task, on="gone", attempt=7, instance_id="gone", answer="from a superseded attempt"
    )

    def recorded() -> list[dict[str, object]]:
        return [e for e in published.of(task.task_id, "error") if e.get("reason") == "superseded report"]

    (record,) = await wait_for(recorded, 15, "the superseded report to be recorded")
    assert record["reported_attempt"] == 7 and record["reported_instance_id"] == "gone"
    assert await metric_value(dispatcher, *superseded) == before + 1

    await wait_for(lambda: finals.done([task.task_id]), 30, "the task to end")
    (final,) = finals.by_task[task.task_id]
    assert final.status is TaskStatus.COMPLETED and final.instance_id == "f0" and final.attempt == 1
    assert final.result is not None and final.result["answer"] == "slept"
    assert len(published.of(task.task_id, "agent.answer")) == 1


async def test_a_superseded_worker_stops_its_copy(stack: Stack) -> None:
    """An instance declared down while it runs a slow tool is alive all the same: the task goes to
    a new attempt, and the old instance, told it was superseded, stops its copy - it calls no
    further tool and reports nothing - so the task ends once."""
    await stack.registry()
    await stack.dispatcher(LOOM_RETRY_BACKOFF_S="0.05")
    for instance_id in ("s0", "s1"):
        await stack.worker(instance_id, agents="calculator")
    await stack.wait_instances("calculator", 2)
    nc = await stack.nats()
    finals = Finals()
    await finals.attach(nc)
    # one subscriber on one connection for events, status reports and the notice: their order here
    # is the order the server delivered them in
    seen: list[tuple[str, Any]] = []

    async def on_event(msg: Any) -> None:
        seen.append(("event", CloudEvent.from_json(msg.data)))

    async def on_status(msg: Any) -> None:
        seen.append(("status", TaskStatusChanged.from_json(msg.data)))

    task = Task(
        target_agent="calculator",
        parameters={
            "script": [
                {"thought": "wait long", "tool": "sleep", "arguments": {"seconds": 3.0}},
                {"thought": "wait a bit", "tool": "sleep", "arguments": {"seconds": 0.1}},
                {"thought": "done", "answer": "slept"},
            ]
        },
    )

    async def on_cancel(msg: Any) -> None:
        seen.append(("notice", dict(msg.headers or {})))

    await nc.subscribe(subjects.EVENT_ALL, cb=on_event)
    await nc.subscribe(subjects.TASK_REPORT_ALL, cb=on_status)  # the workers' own reports
    await nc.subscribe(subjects.task_cancel(task.task_id), cb=on_cancel)
    await flushed(nc)

    def tool_calls() -> list[CloudEvent]:
        return [
            e for kind, e in seen if kind == "event" and e.taskid == task.task_id and e.type == "tool.call"
        ]

    await submit_nats(nc, task)
    (first,) = await wait_for(tool_calls, 30, "the slow tool to start")
    old = first.instanceid
    assert old in ("s0", "s1")

    down = MemberChanged(instance_id=old, change=MembershipChange.DOWN, reason="test: declared down")
    await nc.jetstream().publish(
        subjects.REGISTRY_MEMBER_DOWN,
        down.to_json(),
        headers={MSG_ID_HEADER: member_msg_id(down.instance_id, down.change, down.at)},
    )

    def notice_at() -> int | None:
        return next((i for i, (kind, _) in enumerate(seen) if kind == "notice"), None)

    at = await wait_for(notice_at, 15, "the superseded notice")
    notice = seen[at][1]
    assert notice[SUPERSEDED_ATTEMPT_HEADER] == "1" and notice[SUPERSEDED_INSTANCE_HEADER] == old

    await wait_for(lambda: finals.done([task.task_id]), 40, "the task to end")
    (final,) = finals.by_task[task.task_id]
    assert final.status is TaskStatus.COMPLETED and final.attempt == 2
    assert final.result is not None and final.result["answer"] == "slept"

    # the old attempt reported nothing after its start: no completion, no failure
    reports = [c for kind, c in seen if kind == "status" and c.task_id == task.task_id and not c.final]
    assert {r.status for r in reports if r.attempt == 1} <= {TaskStatus.RUNNING}
    assert {r.status for r in reports if r.attempt == 2} >= {TaskStatus.RUNNING, TaskStatus.COMPLETED}

    # after the notice the old instance called no tool of its copy: the tool calls seen after it
    # are the new attempt's two (on whichever instance the new attempt ran)
    after = [
        e for kind, e in seen[at:] if kind == "event" and e.taskid == task.task_id and e.type == "tool.call"
    ]
    assert len(after) == 2 and {e.instanceid for e in after} == {final.instance_id}, [
        (e.instanceid, e.data) for e in after
    ]
    if final.instance_id != old:
        assert all(e.instanceid != old for e in after)
    answers = [
        e for kind, e in seen if kind == "event" and e.taskid == task.task_id and e.type == "agent.answer"
    ]
    assert len(answers) == 1 and answers[0].instanceid == final.instance_id
