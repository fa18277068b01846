"""Status reports to the dispatcher (JetStream, deduplicated by the Nats-Msg-Id rule)."""

from __future__ import annotations

import contextlib
import logging
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
from prometheus_client import Counter

from .telemetry import inject_headers

log = logging.getLogger(__name__)

REPORTS_UNSENT = Counter(
    "loom_worker_reports_unsent_total", "Status reports that could not be sent", ["status"]
)
_JSON = {"content-type": "application/json"}


class StatusReporter:
    def __init__(self, broker: NatsBroker, instance_id: str) -> None:
        self._broker = broker
        self._instance_id = instance_id

    def _change(
        self, task: Task, status: TaskStatus, result: Any, error: str | None
    ) -> tuple[bytes, dict[str, str]]:
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
        headers = {**_JSON, MSG_ID_HEADER: status_msg_id(task.task_id, task.attempt, status)}
        return change.to_json(), headers

    async def report(
        self, task: Task, status: TaskStatus, *, result: Any = None, error: str | None = None
    ) -> None:
        """Publish a status change and wait for JetStream's ack (raises when it is not stored)."""
        body, headers = self._change(task, status, result, error)
        await self._broker.publish(
            body, subjects.task_status(task.task_id), headers=headers, stream=TASKS_STREAM.name
        )

    async def report_running(self, task: Task) -> None:
        """Publish ``running`` without asking for an ack: the task starts at once.

        A plain publish on the stream's subject: JetStream stores it as any other report
        (deduplicated by its Nats-Msg-Id), it just sends no ack back. Nothing depends on this
        report arriving: the dispatcher takes an outcome straight from ``dispatched`` too, and
        the deadline covers a worker that never reports.
        """
        body, headers = self._change(task, TaskStatus.RUNNING, None, None)
        try:
            await self._broker.connection.publish(
                subjects.task_status(task.task_id), body, headers=inject_headers(headers)
            )
        except Exception as exc:  # the task runs all the same
            REPORTS_UNSENT.labels(TaskStatus.RUNNING.value).inc()
            log.warning("running report not sent: %r", exc, extra={"task_id": task.task_id})

    async def flush(self, timeout_s: int = 5) -> None:
        """Push out what is still buffered (at shutdown)."""
        with contextlib.suppress(Exception):
            await self._broker.connection.flush(timeout=timeout_s)

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        record = RejectedMessage(subject=subject, reason=reason, raw=raw.decode("utf-8", errors="replace"))
        await self._broker.publish(record.to_json(), subjects.rejected("agent-worker"), headers=_JSON)
