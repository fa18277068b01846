"""NATS handlers: submissions, workers' reports, membership changes and cancel requests.

Submissions and reports are the task path: each runs on a :class:`PullConsumer` (a
plain nats-py pull loop, see consumer.py and docs/adr/0001-nats-consumers.md). Membership
changes and requests to cancel a task (``loom.task.cancelrequest.<task_id>``: a parent giving
up on a child) are rare: typed FastStream subscribers, with an exception middleware that
dead-letters what their model refuses.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from faststream import ExceptionMiddleware
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
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
    redelivered to a live replica after ``ack_wait``. A new object for each consumer: FastStream
    and nats-py write the consumer's name and filter into the one they are given."""
    return ConsumerConfig(ack_wait=10)


def build_consumers(state: State, durable_prefix: str, *, traced: bool) -> list[PullConsumer]:
    """The task path's two consumers (started and stopped by the app's lifespan)."""

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
        if await state.dispatcher.submit(task) is Admission.CONFLICT:
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

    def connection() -> Client:
        return state.broker.connection

    def consumer(
        subject: str,
        name: str,
        handler: Handler,
    ) -> PullConsumer:
        return PullConsumer(
            connection,
            stream=TASKS_STREAM.name,
            subject=subject,
            durable=f"{durable_prefix}-{name}",
            config=_consumer(),
            handler=handler,
            traced=traced,
        )

    return [
        consumer(subjects.TASK_SUBMITTED_ALL, "submitted", on_submitted),
        consumer(subjects.TASK_REPORT_ALL, "reports", on_report),
    ]


def build_router(state: State, durable_prefix: str, inbox_prefix: bytes) -> NatsRouter:
    # a message its handler's model refuses: a RejectedMessage on loom.rejected.dispatcher; the
    # message is then handled (acked), never redelivered or crashed on
    dead_letters = ExceptionMiddleware()

    @dead_letters.add_handler(ValidationError)
    async def dead_letter(exc: ValidationError, message: NatsMessage) -> None:
        await state.outbox.rejected(message.raw_message.subject, message.body, validation_reason(exc))

    router = NatsRouter(middlewares=[dead_letters])

    @router.subscriber(
        subjects.REGISTRY_MEMBER_DOWN,
        stream=JStream(REGISTRY_STREAM.name, declare=False),
        durable=f"{durable_prefix}-members",
        pull_sub=PullSub(batch_size=16, timeout=0.5),
        inbox_prefix=inbox_prefix,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_consumer(),
    )
    async def on_member_down(change: MemberChanged) -> None:
        if change.change is MembershipChange.DOWN:
            log.info("instance down, re-dispatching its tasks", extra={"instance_id": change.instance_id})
            await state.dispatcher.on_member_down(change.instance_id)

    @router.subscriber(
        subjects.TASK_CANCEL_REQUEST_ALL,
        stream=JStream(TASKS_STREAM.name, declare=False),
        durable=f"{durable_prefix}-cancelrequests",
        pull_sub=PullSub(batch_size=16, timeout=0.5),
        inbox_prefix=inbox_prefix,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_consumer(),
    )
    async def on_cancel_request(request: TaskCancelRequested) -> None:
        # the task named in the body (the subject's token is the same by the protocol); an
        # unknown or ended task: nothing to do, the request is acknowledged
        task = await state.dispatcher.cancel(request.task_id, request.reason)
        log.info(
            "cancel requested over NATS",
            extra={"task_id": request.task_id, "status": task.status.value if task else "unknown"},
        )

    return router
