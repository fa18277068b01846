"""NATS into the worker: task assignments and cancel requests, typed FastStream handlers.

Each handler's parameter is its model and FastStream validates it; the router's exception
middleware turns a message the model refuses into a dead-letter record on
``loom.rejected.agent-worker`` (the message is then handled, never redelivered or crashed on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from faststream import ExceptionMiddleware
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage
from loom_protocol import (
    SUPERSEDED_ATTEMPT_HEADER,
    SUPERSEDED_INSTANCE_HEADER,
    Task,
    TaskCancelRequested,
    subjects,
    validation_reason,
)
from pydantic import ValidationError

from .execution import Executor
from .reporting import StatusReporter

log = logging.getLogger(__name__)


def superseded_attempt(headers: Mapping[str, str] | None) -> tuple[int, str] | None:
    """``(attempt, instance id)`` of a superseded notice, None for a plain cancel."""
    value = (headers or {}).get(SUPERSEDED_ATTEMPT_HEADER)
    if value is None or not value.isdigit():
        return None
    return int(value), (headers or {}).get(SUPERSEDED_INSTANCE_HEADER, "")


def build_router(executor: Executor, reporter: StatusReporter) -> NatsRouter:
    dead_letters = ExceptionMiddleware()

    @dead_letters.add_handler(ValidationError)
    async def dead_letter(exc: ValidationError, message: NatsMessage) -> None:
        await reporter.rejected(message.raw_message.subject, message.body, validation_reason(exc))

    router = NatsRouter(middlewares=[dead_letters])

    # no_reply: an assignment is a JetStream publish whose reply subject is the dispatcher's
    # ack inbox; FastStream would answer the handler's None there, and an empty answer that
    # beats the stream's ack fails the dispatcher's publish (JSONDecodeError)
    @router.subscriber(subjects.task_assigned(executor.instance_id), no_reply=True)
    async def on_assigned(task: Task) -> None:
        await executor.accept(task)

    @router.subscriber(subjects.TASK_CANCEL_ALL, no_reply=True)
    async def on_cancel(request: TaskCancelRequested, message: NatsMessage) -> None:
        superseded = superseded_attempt(message.headers)
        if superseded is not None:
            attempt, instance_id = superseded
            if instance_id in ("", executor.instance_id) and executor.supersede(request.task_id, attempt):
                log.info(
                    "stopping a superseded attempt", extra={"task_id": request.task_id, "attempt": attempt}
                )
            return
        if executor.cancel(request.task_id):
            log.info("cancelling task", extra={"task_id": request.task_id})

    return router
