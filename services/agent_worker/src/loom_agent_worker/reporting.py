"""Status reports to the dispatcher (JetStream, deduplicated by the Nats-Msg-Id rule)."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker
from loom_protocol import (
    MSG_ID_HEADER,
    TASKS_STREAM,
    RejectedMessage,
    Task,
    TaskStatus,
    TaskStatusChanged,
    status_msg_id,
    subjects,
)

_JSON = {"content-type": "application/json"}


class StatusReporter:
    def __init__(self, broker: NatsBroker, instance_id: str) -> None:
        self._broker = broker
        self._instance_id = instance_id

    async def report(
        self, task: Task, status: TaskStatus, *, result: Any = None, error: str | None = None
    ) -> None:
        change = TaskStatusChanged(
            task_id=task.task_id,
            target_agent=task.target_agent,
            status=status,
            attempt=task.attempt,
            instance_id=self._instance_id,
            result=result,
            error=error,
            parent_task_id=task.parent_task_id,
            session_id=task.session_id,
            trace=task.trace,
        )
        await self._broker.publish(
            change.to_json(),
            subjects.task_status(task.task_id),
            headers={**_JSON, MSG_ID_HEADER: status_msg_id(task.task_id, task.attempt, status)},
            stream=TASKS_STREAM.name,
        )

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        record = RejectedMessage(subject=subject, reason=reason, raw=raw.decode("utf-8", errors="replace"))
        await self._broker.publish(record.to_json(), subjects.rejected("agent-worker"), headers=_JSON)
