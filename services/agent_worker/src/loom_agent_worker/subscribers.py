"""NATS into the worker: task assignments and cancel requests, typed FastStream handlers.

Each handler's parameter is its model and FastStream validates it; :class:`DeadLetters` turns
a message the model refuses into a dead-letter record.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware
from faststream.message import StreamMessage
from faststream.nats import NatsRouter
from loom_protocol import Task, TaskCancelRequested, subjects, validation_reason
from pydantic import ValidationError

from .execution import Executor
from .reporting import StatusReporter

log = logging.getLogger(__name__)


class DeadLetters(BaseMiddleware):
    """A message its handler's model refuses: a ``RejectedMessage`` on ``loom.rejected.agent-worker``."""

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            reporter: StatusReporter = self.context.get("reporter")
            await reporter.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return None


def build_router(executor: Executor, reporter: StatusReporter) -> NatsRouter:
    router = NatsRouter(middlewares=[DeadLetters])
    reporter.broker.context.set_global("reporter", reporter)

    # no_reply: an assignment is a JetStream publish whose reply subject is the dispatcher's
    # ack inbox; FastStream would answer the handler's None there, and an empty answer that
    # beats the stream's ack fails the dispatcher's publish (JSONDecodeError)
    @router.subscriber(subjects.task_assigned(executor.instance_id), no_reply=True)
    async def on_assigned(task: Task) -> None:
        await executor.accept(task)

    @router.subscriber(subjects.TASK_CANCEL_ALL, no_reply=True)
    async def on_cancel(request: TaskCancelRequested) -> None:
        if executor.cancel(request.task_id):
            log.info("cancelling task", extra={"task_id": request.task_id})

    return router
