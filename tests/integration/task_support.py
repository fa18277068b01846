"""What the task-path tests of both tiers share: watching final statuses, submitting over NATS."""

from __future__ import annotations

import collections
from typing import Any

from loom_nats import flushed
from loom_protocol import MSG_ID_HEADER, Task, TaskStatusChanged, subjects, submitted_msg_id


class Finals:
    """Every final status the dispatcher announces, by task id."""

    def __init__(self) -> None:
        self.by_task: dict[str, list[TaskStatusChanged]] = collections.defaultdict(list)

    async def attach(self, nc: Any) -> None:
        async def on_msg(msg: Any) -> None:
            change = TaskStatusChanged.from_json(msg.data)
            if change.final:
                self.by_task[change.task_id].append(change)

        await nc.subscribe(subjects.TASK_STATUS_ALL, cb=on_msg)
        await flushed(nc)

    def done(self, task_ids: list[str]) -> bool:
        return all(self.by_task.get(t) for t in task_ids)


async def submit_nats(nc: Any, task: Task) -> None:
    js = nc.jetstream()
    await js.publish(
        subjects.task_submitted(task.target_agent),
        task.to_json(),
        headers={MSG_ID_HEADER: submitted_msg_id(task.task_id)},
    )


def sleepy(seconds: float) -> dict[str, Any]:
    """Parameters that make the calculator agent run the sleep tool, then answer."""
    return {
        "script": [
            {"thought": "wait", "tool": "sleep", "arguments": {"seconds": seconds}},
            {"thought": "done", "answer": "slept"},
        ]
    }
