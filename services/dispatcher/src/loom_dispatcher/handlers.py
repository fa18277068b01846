"""NATS handlers: submissions, worker status reports and membership changes."""

from __future__ import annotations

import logging

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
from nats.js.api import ConsumerConfig
from pydantic import ValidationError

from .state import State

log = logging.getLogger(__name__)
# a dispatcher killed mid-message has its messages redelivered to a live replica after this long
_CONSUMER = ConsumerConfig(ack_wait=10)


def build_router(state: State, durable_prefix: str) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(
        subjects.TASK_SUBMITTED_ALL,
        stream=TASKS_STREAM.name,
        durable=f"{durable_prefix}-submitted",
        pull_sub=PullSub(batch_size=64, timeout=0.5),
        max_workers=32,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_CONSUMER,
    )
    async def on_submitted(msg: NatsMessage) -> None:
        try:
            task = Task.from_json(msg.body)
        except ValidationError as exc:
            await state.outbox.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        agent = subjects.token_of(msg.raw_message.subject, subjects.TASK_SUBMITTED_ALL)
        if task.target_agent != agent:
            reason = f"targetAgent {task.target_agent!r} does not match the subject's agent {agent!r}"
            await state.outbox.rejected(msg.raw_message.subject, msg.body, reason)
            return
        await state.dispatcher.submit(task)

    @router.subscriber(
        subjects.TASK_STATUS_ALL,
        stream=TASKS_STREAM.name,
        durable=f"{durable_prefix}-status",
        pull_sub=PullSub(batch_size=64, timeout=0.5),
        max_workers=32,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_CONSUMER,
    )
    async def on_status(msg: NatsMessage) -> None:
        try:
            change = TaskStatusChanged.from_json(msg.body)
        except ValidationError as exc:
            await state.outbox.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        await state.dispatcher.on_status(change)

    @router.subscriber(
        subjects.REGISTRY_MEMBER_DOWN,
        stream="LOOM_REGISTRY",
        durable=f"{durable_prefix}-members",
        pull_sub=PullSub(batch_size=16, timeout=0.5),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        config=_CONSUMER,
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
