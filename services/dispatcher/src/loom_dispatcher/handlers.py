"""NATS handlers: submissions, worker status reports and membership changes.

Submissions and status reports are the task path: each runs on a :class:`PullConsumer` (a
plain nats-py pull loop, see consumer.py). Membership changes are rare and stay a FastStream
subscriber.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from loom_protocol import (
    TASKS_STREAM,
    MemberChanged,
    MembershipChange,
    Task,
    TaskStatusChanged,
    subjects,
    validation_reason,
)
from nats.aio.client import Client
from nats.js.api import ConsumerConfig
from pydantic import ValidationError

from .consumer import PullConsumer
from .state import State

log = logging.getLogger(__name__)
# a dispatcher killed mid-message has its messages redelivered to a live replica after this long
_CONSUMER = ConsumerConfig(ack_wait=10)


async def as_message(msg: StreamMessage[Any]) -> StreamMessage[Any]:
    """The decoder of the FastStream subscriber here: hand the handler the message itself.

    The broker runs without FastDepends (``apply_types=False``, see app.py): with it, every
    message resolved the handler's ``NatsMessage`` parameter through an anyio task group and a
    worker-thread hop (FastStream's ``Context.use`` is synchronous, so fast_depends runs it with
    ``anyio.to_thread.run_sync``). Without it FastStream calls the handler with the decoded
    body, which this decoder makes the message. With FastDepends on, the handler still works.
    """
    return msg


def build_consumers(state: State, durable_prefix: str, *, traced: bool) -> list[PullConsumer]:
    """The task path's two consumers (started and stopped by the app's lifespan)."""

    async def on_submitted(subject: str, body: bytes) -> None:
        try:
            task = Task.from_json(body)
        except ValidationError as exc:
            await state.outbox.rejected(subject, body, validation_reason(exc))
            return
        agent = subjects.token_of(subject, subjects.TASK_SUBMITTED_ALL)
        if task.target_agent != agent:
            reason = f"targetAgent {task.target_agent!r} does not match the subject's agent {agent!r}"
            await state.outbox.rejected(subject, body, reason)
            return
        await state.dispatcher.submit(task)

    async def on_status(subject: str, body: bytes) -> None:
        try:
            change = TaskStatusChanged.from_json(body)
        except ValidationError as exc:
            await state.outbox.rejected(subject, body, validation_reason(exc))
            return
        await state.dispatcher.on_status(change)

    def connection() -> Client:
        return state.broker.connection

    return [
        PullConsumer(
            connection,
            stream=TASKS_STREAM.name,
            subject=subjects.TASK_SUBMITTED_ALL,
            durable=f"{durable_prefix}-submitted",
            config=_CONSUMER,
            handler=on_submitted,
            traced=traced,
        ),
        PullConsumer(
            connection,
            stream=TASKS_STREAM.name,
            subject=subjects.TASK_STATUS_ALL,
            durable=f"{durable_prefix}-status",
            config=_CONSUMER,
            handler=on_status,
            traced=traced,
        ),
    ]


def build_router(state: State, durable_prefix: str) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(
        subjects.REGISTRY_MEMBER_DOWN,
        stream="LOOM_REGISTRY",
        durable=f"{durable_prefix}-members",
        pull_sub=PullSub(batch_size=16, timeout=0.5),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_CONSUMER,
        decoder=as_message,
    )
    async def on_member_down(msg: NatsMessage) -> None:
        try:
            change = MemberChanged.from_json(msg.body)
        except ValidationError as exc:
            await state.outbox.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        if change.change is MembershipChange.DOWN:
            log.info("instance down, re-dispatching its tasks", extra={"instance_id": change.instance_id})
            await state.dispatcher.on_member_down(change.instance_id)

    return router
