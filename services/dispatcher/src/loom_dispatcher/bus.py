"""The dispatcher's side of NATS: what it publishes and the registry it asks."""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsBroker
from loom_protocol import (
    MSG_ID_HEADER,
    TASKS_STREAM,
    PickReply,
    PickRequest,
    RejectedMessage,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatusChanged,
    TraceContext,
    assigned_msg_id,
    dead_msg_id,
    new_event,
    status_msg_id,
    subjects,
)
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import TooManyStalledMsgsError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from .errors import RegistryUnavailable
from .metrics import SUBMISSIONS_REJECTED
from .telemetry import current_trace, inject_headers, tracer

log = logging.getLogger(__name__)

EVENTS_DROPPED = Counter("loom_dispatcher_events_dropped_total", "Events dropped because the buffer was full")
SOURCE = "/services/dispatcher"
_JSON = {"content-type": "application/json"}


def _event_headers(event_id: str, trace: TraceContext) -> dict[str, str]:
    headers = {**_JSON, MSG_ID_HEADER: event_id}
    if trace.traceparent:  # so a consumer's span continues the trace the event belongs to
        headers["traceparent"] = trace.traceparent
    return headers


class NatsOutbox:
    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker

    async def _js_publish(self, subject: str, body: bytes, msg_id: str) -> None:
        await self._broker.publish(
            body, subject, headers={**_JSON, MSG_ID_HEADER: msg_id}, stream=TASKS_STREAM.name
        )

    async def assigned(self, task: Task) -> None:
        await self._js_publish(
            subjects.task_assigned(task.instance_id or ""),
            task.to_json(),
            assigned_msg_id(task.task_id, task.attempt),
        )

    async def final(self, task: Task) -> None:
        change = TaskStatusChanged(
            task_id=task.task_id,
            target_agent=task.target_agent,
            status=task.status,
            attempt=task.attempt,
            instance_id=task.instance_id,
            result=task.result,
            error=task.error,
            parent_task_id=task.parent_task_id,
            session_id=task.session_id,
            trace=task.trace,
            final=True,
        )
        await self._js_publish(
            subjects.task_status(task.task_id),
            change.to_json(),
            status_msg_id(task.task_id, task.attempt, task.status) + ":final",
        )

    async def dead(self, task: Task, reason: str) -> None:
        record = TaskDeadLettered(task=task, reason=reason)
        await self._js_publish(
            subjects.task_dead(task.target_agent), record.to_json(), dead_msg_id(task.task_id)
        )

    async def cancel(self, task: Task) -> None:
        # core NATS: the worker holding the task listens; the request itself is kept in the task record
        await self._broker.publish(
            TaskCancelRequested(task_id=task.task_id).to_json(),
            subjects.task_cancel(task.task_id),
            headers=_JSON,
        )

    async def event(self, event_type: str, task: Task, data: dict[str, Any] | None = None) -> None:
        trace = current_trace() or task.trace
        event = new_event(
            event_type,
            SOURCE,
            data={"status": task.status, "attempt": task.attempt, **(data or {})},
            subject=f"agent:{task.target_agent}",
            task_id=task.task_id,
            session_id=task.session_id,
            parent_task_id=task.parent_task_id,
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
            agent_id=task.target_agent,
        )
        try:
            await self._broker.connection.jetstream().publish_async(
                subjects.event(event_type),
                event.to_json(),
                wait_stall=0.005,
                headers=_event_headers(event.id, trace),
            )
        except TooManyStalledMsgsError:
            EVENTS_DROPPED.inc()

    async def rejected(self, subject: str, raw: bytes, reason: str) -> None:
        SUBMISSIONS_REJECTED.inc()
        record = RejectedMessage(subject=subject, reason=reason, raw=raw.decode("utf-8", errors="replace"))
        await self._broker.publish(record.to_json(), subjects.rejected("dispatcher"), headers=_JSON)


class RegistryPicker:
    def __init__(self, broker: NatsBroker, timeout_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def pick(self, agent_id: str, task_id: str) -> PickReply:
        request = PickRequest(agent_id=agent_id, task_id=task_id)
        with tracer.start_as_current_span("registry.pick", kind=SpanKind.CLIENT) as span:
            span.set_attribute("loom.agent", agent_id)
            try:
                msg = await self._broker.connection.request(
                    subjects.REGISTRY_PICK,
                    request.to_json(),
                    timeout=self._timeout_s,
                    headers=inject_headers({"content-type": "application/json"}),
                )
            except (NatsTimeoutError, NoRespondersError) as exc:
                raise RegistryUnavailable(f"registry did not answer a pick for {agent_id}: {exc!r}") from exc
        return PickReply.from_json(msg.data)
