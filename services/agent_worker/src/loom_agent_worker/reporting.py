"""Status reports to the dispatcher (JetStream, deduplicated by the Nats-Msg-Id rule)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker
from loom_protocol import (
    ApprovalRequest,
    RejectedMessage,
    Task,
    TaskStatus,
    TaskStatusChanged,
    status_msg_id,
    subjects,
)
from prometheus_client import Counter

from .outbox import JSON, Outbox
from .telemetry import inject_headers

log = logging.getLogger(__name__)

REPORTS_UNSENT = Counter(
    "loom_worker_reports_unsent_total", "Status reports that could not be sent", ["status"]
)


class StatusReporter:
    def __init__(self, broker: NatsBroker, instance_id: str) -> None:
        self.outbox = Outbox(broker)
        self._instance_id = instance_id

    @property
    def broker(self) -> NatsBroker:
        return self.outbox.broker

    def _change(
        self,
        task: Task,
        status: TaskStatus,
        result: Any,
        error: str | None,
        approval: ApprovalRequest | None = None,
    ) -> tuple[bytes, str]:
        change = TaskStatusChanged.from_task(
            task,
            at=datetime.now(UTC),
            status=status,
            instance_id=self._instance_id,
            result=result,
            error=error,
            approval=approval,
        )
        return change.to_json(), status_msg_id(task.task_id, task.attempt, status)

    async def report(
        self,
        task: Task,
        status: TaskStatus,
        *,
        result: Any = None,
        error: str | None = None,
        approval: ApprovalRequest | None = None,
    ) -> None:
        """Publish a status change and wait for JetStream's ack (raises when it is not stored)."""
        body, msg_id = self._change(task, status, result, error, approval)
        await self.outbox.stored(subjects.task_status(task.task_id), body, msg_id)

    async def report_running(self, task: Task) -> None:
        """Publish ``running`` without asking for an ack: the task starts at once.

        JetStream stores it as any other report (deduplicated by its Nats-Msg-Id), it just
        sends no ack back. Nothing depends on this report arriving: the dispatcher takes an
        outcome straight from ``dispatched`` too, and the deadline covers a worker that never
        reports.
        """
        body, msg_id = self._change(task, TaskStatus.RUNNING, None, None)
        try:
            await self.outbox.unacked(subjects.task_status(task.task_id), body, msg_id, inject_headers({}))
        except Exception as exc:  # the task runs all the same
            REPORTS_UNSENT.labels(TaskStatus.RUNNING.value).inc()
            log.warning("running report not sent: %r", exc, extra={"task_id": task.task_id})

    async def flush(self, timeout_s: int = 5) -> None:
        """Push out what is still buffered (at shutdown)."""
        await self.outbox.flush(timeout_s)

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        record = RejectedMessage(subject=subject, reason=reason, raw=raw)
        await self.outbox.core(subjects.rejected("agent-worker"), record.to_json(), JSON)
