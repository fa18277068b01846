"""Fencing on the full task path (registry, dispatcher and a worker in process): a late
``completed`` of an attempt that is not the task's current one is acknowledged and recorded (an
``error`` event with ``reason: "superseded report"``), never applied; the task ends once, with the
result of the attempt that counts."""

from __future__ import annotations

import pytest
from loom_protocol import MSG_ID_HEADER, Task, TaskStatus, TaskStatusChanged, status_msg_id, subjects

from tests.integration.durable_support import Published
from tests.integration.events_support import metric_value
from tests.integration.harness import Stack, wait_for
from tests.integration.task_support import Finals, sleepy, submit_nats

pytestmark = pytest.mark.component


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

    superseded = ("loom_dispatcher_reports_superseded_total", '{status="completed"}')
    before = await metric_value(dispatcher, *superseded)  # process-wide: other tests count too
    late = TaskStatusChanged(
        task_id=task.task_id,
        target_agent="calculator",
        status=TaskStatus.COMPLETED,
        attempt=7,
        instance_id="gone",
        result={"answer": "from a superseded attempt"},
    )
    await nc.jetstream().publish(
        subjects.task_status(task.task_id),
        late.to_json(),
        headers={MSG_ID_HEADER: status_msg_id(task.task_id, 7, TaskStatus.COMPLETED)},
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
