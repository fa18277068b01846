"""NATS handlers: submissions, worker status reports and membership changes.

Submissions and status reports are the task path: each runs on a :class:`PullConsumer` (a
plain nats-py pull loop, see consumer.py and docs/adr/0001-nats-consumers.md). Membership
changes are rare: a typed FastStream subscriber, with :class:`DeadLetters` for what its model
refuses.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsRouter, PullSub
from loom_protocol import (
    REGISTRY_STREAM,
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

from .bus import NatsOutbox
from .consumer import PullConsumer
from .state import State

log = logging.getLogger(__name__)
# a dispatcher killed mid-message has its messages redelivered to a live replica after this long
_CONSUMER = ConsumerConfig(ack_wait=10)


class DeadLetters(BaseMiddleware):
    """A message its handler's model refuses: a ``RejectedMessage`` on ``loom.rejected.dispatcher``.

    The message is then handled (acked), never redelivered or crashed on.
    """

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            outbox: NatsOutbox = self.context.get("outbox")
            await outbox.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return None


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
    router = NatsRouter(middlewares=[DeadLetters])
    state.broker.context.set_global("outbox", state.outbox)

    @router.subscriber(
        subjects.REGISTRY_MEMBER_DOWN,
        stream=JStream(REGISTRY_STREAM.name, declare=False),
        durable=f"{durable_prefix}-members",
        pull_sub=PullSub(batch_size=16, timeout=0.5),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_CONSUMER,
    )
    async def on_member_down(change: MemberChanged) -> None:
        if change.change is MembershipChange.DOWN:
            log.info("instance down, re-dispatching its tasks", extra={"instance_id": change.instance_id})
            await state.dispatcher.on_member_down(change.instance_id)

    return router
