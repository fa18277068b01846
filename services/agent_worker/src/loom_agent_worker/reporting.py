"""Status reports to the dispatcher (JetStream, deduplicated by the Nats-Msg-Id rule).

A report that decides a task's outcome waits for the stream's ack; one not acknowledged (a
timeout, no stream, no connection) is published again with the same ``Nats-Msg-Id`` -- the
stream keeps one copy if the first did arrive -- up to ``retries`` more times with a doubling
backoff. Then :class:`ReportNotSent` is raised: the caller must not turn it into another
report (a completed task is never reported ``failed`` because its report was slow); the
dispatcher's deadline re-dispatches the task, and the next attempt restores its recorded steps.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
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


REPORTS_RETRIED = Counter(
    "loom_worker_reports_retried_total", "Status reports published again after no ack", ["status"]
)


class ReportNotSent(Exception):
    """A status report was not acknowledged after every retry (the reason is in the message)."""

    def __init__(self, task: Task, status: TaskStatus, cause: BaseException) -> None:
        super().__init__(f"{status.value} report of task {task.task_id} not stored: {cause!r}")
        self.status = status


@dataclass(eq=False)
class _Later:
    timer: asyncio.TimerHandle | None = None
    sending: asyncio.Task[None] | None = None


class StatusReporter:
    def __init__(
        self,
        broker: NatsBroker,
        instance_id: str,
        *,
        retries: int = 5,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        outbox: Outbox | None = None,
    ) -> None:
        self.outbox = outbox or Outbox(broker)
        self._instance_id = instance_id
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._later: dict[tuple[str, int], _Later] = {}  # running reports not sent yet, by attempt
        self._sending: set[asyncio.Task[None]] = set()

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
        """Publish a status change and wait for JetStream's ack, again with the same message id
        when there is none (bounded); raises :class:`ReportNotSent` when it was never stored."""
        await self._running_first(task)
        body, msg_id = self._change(task, status, result, error, approval)
        subject = subjects.task_report(self._instance_id, task.task_id)
        for attempt in range(self._retries + 1):
            try:
                await self.outbox.stored(subject, body, msg_id)
                return
            except Exception as exc:
                if attempt == self._retries:
                    REPORTS_UNSENT.labels(status.value).inc()
                    log.error(
                        "%s report not stored after %d tries: %r; the dispatcher's deadline re-dispatches it",
                        status.value,
                        attempt + 1,
                        exc,
                        extra={"task_id": task.task_id, "attempt": task.attempt},
                    )
                    raise ReportNotSent(task, status, exc) from exc
                REPORTS_RETRIED.labels(status.value).inc()
                log.warning(
                    "%s report not acknowledged (%r); publishing it again",
                    status.value,
                    exc,
                    extra={"task_id": task.task_id, "attempt": task.attempt},
                )
            await asyncio.sleep(min(self._max_backoff_s, self._retry_backoff_s * 2**attempt))

    async def report_running(self, task: Task) -> None:
        """Publish ``running`` without asking for an ack: the task starts at once.

        JetStream stores it as any other report (deduplicated by its Nats-Msg-Id), it just
        sends no ack back. Nothing depends on this report arriving: the dispatcher takes an
        outcome straight from ``dispatched`` too, and the deadline covers a worker that never
        reports.
        """
        body, msg_id = self._change(task, TaskStatus.RUNNING, None, None)
        try:
            await self.outbox.unacked(
                subjects.task_report(self._instance_id, task.task_id), body, msg_id, inject_headers({})
            )
        except Exception as exc:  # the task runs all the same
            REPORTS_UNSENT.labels(TaskStatus.RUNNING.value).inc()
            log.warning("running report not sent: %r", exc, extra={"task_id": task.task_id})

    def report_running_after(self, task: Task, after_s: float) -> None:
        """Report ``running`` once ``task`` has run for ``after_s`` seconds or shows progress
        (:meth:`report_running_now`, before its first event), not at all if it ends sooner: a task
        that ends at once goes from ``dispatched`` straight to its outcome, one status message
        fewer through the broker, the dispatcher and the database (Celery does not track STARTED
        by default either). A report of the outcome waits for a running report already on its
        way, so the two arrive in order; :meth:`running_ended` drops what is still due."""
        later = _Later()
        later.timer = asyncio.get_running_loop().call_later(after_s, self._send_running, task, later)
        self._later[(task.task_id, task.attempt)] = later

    def _send_running(self, task: Task, later: _Later) -> None:
        if later.sending is not None:
            return
        if later.timer is not None:
            later.timer.cancel()
        # its publish is queued on the connection before anything the caller does next (an event)
        later.sending = asyncio.ensure_future(self.report_running(task))
        self._sending.add(later.sending)
        later.sending.add_done_callback(self._sending.discard)

    def report_running_now(self, task: Task) -> None:
        """Send a running report still due for ``task`` now (the task shows progress)."""
        later = self._later.get((task.task_id, task.attempt))
        if later is not None:
            self._send_running(task, later)

    def running_ended(self, task: Task) -> None:
        """``task``'s attempt ended (reported or not): its running report is no longer due."""
        later = self._later.pop((task.task_id, task.attempt), None)
        if later is not None and later.timer is not None:
            later.timer.cancel()

    async def _running_first(self, task: Task) -> None:
        later = self._later.pop((task.task_id, task.attempt), None)
        if later is None:
            return
        if later.timer is not None:
            later.timer.cancel()
        if later.sending is not None:
            await asyncio.shield(later.sending)  # never raises: report_running logs its failure

    async def flush(self, timeout_s: int = 5) -> None:
        """Push out what is still buffered (at shutdown)."""
        await self.outbox.flush(timeout_s)

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        record = RejectedMessage(subject=subject, reason=reason, raw=raw)
        await self.outbox.core(subjects.rejected("agent-worker"), record.to_json(), JSON)
