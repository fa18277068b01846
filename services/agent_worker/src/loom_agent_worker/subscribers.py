"""NATS into the worker: task assignments and cancel requests.

Assignments (one per task) come off a plain core NATS subscription (:class:`Assignments`);
cancel requests (rare) are a typed FastStream handler. Either way a message its model refuses
becomes a dead-letter record on ``loom.rejected.agent-worker`` (the message is then handled,
never crashed on). Why assignments skip FastStream: docs/adr/0001-nats-consumers.md (measured).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from faststream import ExceptionMiddleware
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage
from loom_nats import flushed
from loom_protocol import (
    SUPERSEDED_ATTEMPT_HEADER,
    SUPERSEDED_INSTANCE_HEADER,
    Task,
    TaskCancelRequested,
    subjects,
    validation_reason,
)
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from .execution import Executor
from .reporting import StatusReporter
from .telemetry import tracer

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


class Assignments:
    """The tasks the dispatcher assigns to this instance (``loom.task.assigned.<instance>``),
    handed to the executor straight from a core NATS subscription.

    A message the :class:`~loom_protocol.Task` model refuses is dead-lettered with the reason.
    Nothing is ever answered on the message's reply subject: an assignment is a JetStream
    publish whose reply subject is the dispatcher's ack inbox, where an answer that beat the
    stream's ack would fail the dispatcher's publish. An assignment this instance never hears
    (not subscribed yet, a reconnect) is re-dispatched by the dispatcher's deadline sweep.
    When tracing is on, each message gets a consumer span continuing the trace in its headers.
    """

    def __init__(self, executor: Executor, reporter: StatusReporter, *, traced: bool = False) -> None:
        self._executor = executor
        self._reporter = reporter
        self._traced = traced
        self.subject = subjects.task_assigned(executor.instance_id)
        self._sub: Subscription | None = None

    async def start(self, nc: Client, timeout_s: float = 10.0) -> None:
        """Subscribe; returns once the server has the subscription (a flush round trip)."""
        self._sub = await nc.subscribe(self.subject, cb=self._on_message)
        await flushed(nc, timeout_s)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        try:
            task = Task.from_json(msg.data)
        except ValidationError as exc:
            await self._dead_letter(msg, validation_reason(exc))
            return
        try:
            if self._traced:
                parent = propagate.extract(msg.headers or {})
                with tracer.start_as_current_span(
                    f"{msg.subject} process", context=parent, kind=SpanKind.CONSUMER
                ):
                    await self._executor.accept(task)
            else:
                await self._executor.accept(task)
        except Exception:  # the deadline sweep gives the task out again
            log.exception("an assignment was not taken", extra={"task_id": task.task_id})

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        log.warning("assignment refused: %s", reason, extra={"subject": msg.subject})
        try:
            await self._reporter.rejected(msg.subject, msg.data, reason)
        except Exception:
            log.exception("dead-lettering a refused assignment failed")
