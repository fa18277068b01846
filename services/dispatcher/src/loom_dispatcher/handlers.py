"""NATS handlers: submissions, workers' reports, membership changes and cancel requests.

Each runs on a :class:`PullConsumer` (a plain nats-py pull loop, see consumer.py and
docs/adr/0001-nats-consumers.md): submissions and reports are the task path; membership
changes and requests to cancel a task (``loom.task.cancelrequest.<task_id>``: a parent giving
up on a child) are rare. A message its model refuses is dead-lettered on
``loom.rejected.dispatcher`` with the reason and acknowledged.

Not FastStream pull subscribers: with nats-py 2.16 an idle ``fetch`` can raise the builtin
``TimeoutError``, which FastStream 0.7's pull loop does not suppress, so its loop dies and is
restarted, logging an error each time (docs/adr/0001-nats-consumers.md, decision 1).
"""

from __future__ import annotations

import logging
from typing import TypeVar

from loom_protocol import (
    REGISTRY_STREAM,
    TASKS_STREAM,
    LoomModel,
    MemberChanged,
    MembershipChange,
    Task,
    TaskCancelRequested,
    TaskStatusChanged,
    subjects,
    validation_reason,
)
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from pydantic import ValidationError

from .admission import Admission
from .consumer import Handler, PullConsumer
from .metrics import CONFLICTS
from .state import State

log = logging.getLogger(__name__)
M = TypeVar("M", bound=LoomModel)


def _consumer() -> ConsumerConfig:
    """A durable consumer's configuration: a dispatcher killed mid-message has its messages
    redelivered to a live replica after ``ack_wait``."""
    return ConsumerConfig(ack_wait=10)


def build_consumers(state: State, durable_prefix: str, *, traced: bool) -> list[PullConsumer]:
    """The dispatcher's consumers (started and stopped by the app's lifespan)."""

    async def decoded(model: type[M], subject: str, body: bytes) -> M | None:
        """The message as ``model``, or None once a message the model refuses is dead-lettered."""
        try:
            return model.from_json(body)
        except ValidationError as exc:
            await state.outbox.rejected(subject, body, validation_reason(exc))
            return None

    async def on_submitted(subject: str, body: bytes) -> None:
        if (task := await decoded(Task, subject, body)) is None:
            return
        agent = subjects.token_of(subject, subjects.TASK_SUBMITTED_ALL)
        if task.target_agent != agent:
            reason = f"targetAgent {task.target_agent!r} does not match the subject's agent {agent!r}"
            await state.outbox.rejected(subject, body, reason)
            return
        if await state.dispatcher.delivered(task) is Admission.CONFLICT:
            CONFLICTS.labels("nats").inc()
            reason = f"task {task.task_id!r} already exists with a different submission; use a new taskId"
            await state.outbox.rejected(subject, body, reason)

    async def on_report(subject: str, body: bytes) -> None:
        if (change := await decoded(TaskStatusChanged, subject, body)) is None:
            return
        # loom.task.report.<instance>.<task>: a worker user bound to an instance may publish
        # under its own token only, so the subject is who sent the report
        instance_id, task_id = subject.split(".")[3:5]
        if (change.instance_id, change.task_id) != (instance_id, task_id):
            reason = (
                f"a report on {subject} must be about task {task_id!r} at instance {instance_id!r}, "
                f"not task {change.task_id!r} at instance {change.instance_id!r}"
            )
            await state.outbox.rejected(subject, body, reason)
            return
        await state.dispatcher.on_status(change)

    async def on_member_down(subject: str, body: bytes) -> None:
        if (change := await decoded(MemberChanged, subject, body)) is None:
            return
        if change.change is MembershipChange.DOWN:
            log.info("instance down, re-dispatching its tasks", extra={"instance_id": change.instance_id})
            await state.dispatcher.on_member_down(change.instance_id)

    async def on_cancel_request(subject: str, body: bytes) -> None:
        if (request := await decoded(TaskCancelRequested, subject, body)) is None:
            return
        # the task named in the body (the subject's token is the same by the protocol); an
        # unknown or ended task: nothing to do, the request is acknowledged
        task = await state.dispatcher.cancel(request.task_id, request.reason)
        log.info(
            "cancel requested over NATS",
            extra={"task_id": request.task_id, "status": task.status.value if task else "unknown"},
        )

    def connection() -> Client:
        return state.broker.connection

    def consumer(subject: str, name: str, handler: Handler, stream: str = TASKS_STREAM.name) -> PullConsumer:
        return PullConsumer(
            connection,
            stream=stream,
            subject=subject,
            durable=f"{durable_prefix}-{name}",
            config=_consumer(),
            handler=handler,
            traced=traced,
        )

    return [
        consumer(subjects.TASK_SUBMITTED_ALL, "submitted", on_submitted),
        consumer(subjects.TASK_REPORT_ALL, "reports", on_report),
        consumer(subjects.REGISTRY_MEMBER_DOWN, "members", on_member_down, REGISTRY_STREAM.name),
        consumer(subjects.TASK_CANCEL_REQUEST_ALL, "cancelrequests", on_cancel_request),
    ]
