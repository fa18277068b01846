"""CloudEvents out of the worker without ever blocking or failing a task.

``emit`` puts the event in a bounded queue and returns; one flusher task drains the queue with
JetStream ``publish_async`` (pipelined, acks awaited in bulk, every wait bounded: outbox.py).
An event not stored is published again, with its own id as ``Nats-Msg-Id`` (the stream keeps
one copy), up to ``retries`` more times with a doubling backoff; then it is given up: counted,
logged, and reported. A full queue drops the event and counts it the same way. What was lost
is reported once per flush as an ``error`` event (``reason``, ``dropped``), so the loss is seen
in the event store too, not only in the metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from faststream.nats import NatsBroker
from loom_protocol import (
    MSG_ID_HEADER,
    CloudEvent,
    ErrorReported,
    EventPayload,
    LlmRequest,
    LlmUsage,
    Task,
    ToolCalled,
    ToolReturned,
    new_event,
    subjects,
)
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter

from .outbox import Outbox
from .telemetry import (
    agent_attributes,
    agent_span_name,
    current_trace,
    llm_request_attributes,
    llm_span_name,
    llm_usage_attributes,
    tool_attributes,
    tool_span_name,
    tracer,
)

log = logging.getLogger(__name__)

EVENTS_EMITTED = Counter("loom_worker_events_emitted_total", "CloudEvents published", ["type"])
EVENTS_DROPPED = Counter(
    "loom_worker_events_dropped_total", "CloudEvents dropped: buffer full or publish failed"
)
_HEADERS = {"content-type": "application/cloudevents+json"}


def _headers(event: CloudEvent) -> dict[str, str]:
    headers = {**_HEADERS, MSG_ID_HEADER: event.id}
    if event.traceparent:  # so a consumer's span continues the trace the event belongs to
        headers["traceparent"] = event.traceparent
    return headers


class EventEmitter:
    def __init__(
        self,
        broker: NatsBroker,
        source: str,
        capacity: int,
        batch: int = 256,
        *,
        instance_id: str,
        retries: int = 6,
        retry_backoff_s: float = 0.25,
        outbox: Outbox | None = None,
    ) -> None:
        self._outbox = outbox or Outbox(broker)
        self._source = source
        self._instance_id = instance_id
        self._queue: asyncio.Queue[CloudEvent] = asyncio.Queue(maxsize=capacity)
        self._batch = batch
        self._retries = retries
        self._retry_backoff_s = retry_backoff_s
        self._dropped = 0  # the buffer was full
        self._unpublished = 0  # not stored after every retry
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued (for at most ``timeout_s``; what is left then is counted lost), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            lost = self._queue.qsize()
            EVENTS_DROPPED.inc(lost)
            log.error("stopping with %d events not published after %g s", lost, timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def put(self, event: CloudEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1
            EVENTS_DROPPED.inc()

    def for_task(
        self, task: Task, agent_id: str, instance_id: str, on_first: Callable[[], None] | None = None
    ) -> TaskEvents:
        """The task's event sink; the active span (the task's) gets the GenAI agent name and attributes.
        ``on_first`` is called once, before the first event is queued."""
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name(agent_span_name(agent_id))
            span.set_attributes(agent_attributes(agent_id, task.session_id))
        return TaskEvents(self, task, f"{self._source}/agents/{agent_id}", agent_id, instance_id, on_first)

    async def _flush_forever(self) -> None:
        while True:
            taken = [await self._queue.get()]
            while len(taken) < self._batch and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            events = list(taken)
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                events.append(self._lost("event buffer full", dropped))
            if self._unpublished:
                unpublished, self._unpublished = self._unpublished, 0
                events.append(self._lost("events not published", unpublished))
            try:
                await self._publish(events)
            finally:
                for _ in taken:
                    self._queue.task_done()

    def _lost(self, reason: str, count: int) -> CloudEvent:
        return new_event(
            ErrorReported.TYPE,
            self._source,
            data=ErrorReported(reason=reason, dropped=count).to_data(),
            instance_id=self._instance_id,
        )

    async def _publish(self, events: list[CloudEvent]) -> None:
        """Publish ``events``, again for those not stored (bounded); count and report the rest."""
        left = events
        last: BaseException | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._retry_backoff_s * 2 ** (attempt - 1))
            try:
                results: list[BaseException | None] = await self._outbox.pipelined(
                    [
                        (subjects.instance_event(self._instance_id, e.type), e.to_json(), _headers(e))
                        for e in left
                    ]
                )
            except Exception as exc:
                results = [exc] * len(left)
            failed: list[CloudEvent] = []
            for event, result in zip(left, results, strict=True):
                if result is None:
                    EVENTS_EMITTED.labels(event.type).inc()
                else:
                    failed.append(event)
                    last = result
            if not failed:
                return
            left = failed
        EVENTS_DROPPED.inc(len(left))
        self._unpublished += len(left)
        log.error(
            "%d events not published after %d tries (last error: %r); reported as an error event",
            len(left),
            self._retries + 1,
            last,
        )


@dataclass(eq=False)
class TaskEvents:
    """The runtime's EventSink for one task: every event carries the task's ids and trace.

    It also turns the event stream into spans: ``llm.request`` … ``llm.usage`` is an LLM span,
    ``tool.call`` … ``tool.result`` a tool span, and the events in between carry that span's
    traceparent, so the trace id stored with each event is the trace id of its span.
    """

    emitter: EventEmitter
    task: Task
    source: str
    agent_id: str
    instance_id: str
    on_first: Callable[[], None] | None = None
    _seq: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _llm_span: Span | None = field(default=None, init=False)
    _tool_spans: dict[str, Span] = field(default_factory=dict, init=False)

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None:
        task = self.task
        event_type = payload.TYPE
        try:
            span = self._span_for(payload, subject)
            trace = current_trace(span) or task.trace
            event = new_event(
                event_type,
                self.source,
                data=payload.to_data(),
                subject=subject,
                task_id=task.task_id,
                session_id=task.session_id,
                parent_task_id=task.parent_task_id,
                traceparent=trace.traceparent,
                tracestate=trace.tracestate,
                instance_id=self.instance_id,
                agent_id=self.agent_id,
                extensions={"seq": next(self._seq)},
            )
            self._end_span(payload)
        except Exception:
            log.exception("could not build a %s event", event_type, extra={"task_id": task.task_id})
            return
        if self.on_first is not None:
            first, self.on_first = self.on_first, None
            first()
        self.emitter.put(event)

    def _span_for(self, payload: EventPayload, subject: str | None) -> Span | None:
        if isinstance(payload, LlmRequest):
            self._llm_span = tracer.start_span(
                llm_span_name(payload),
                kind=SpanKind.CLIENT,
                attributes=llm_request_attributes(payload, self.agent_id, self.task.session_id),
            )
            self._llm_span.set_attribute("loom.task_id", self.task.task_id)
            return self._llm_span
        if isinstance(payload, LlmUsage):
            return self._llm_span
        if isinstance(payload, ToolCalled):
            span = tracer.start_span(
                tool_span_name(payload),
                kind=SpanKind.INTERNAL,
                attributes=tool_attributes(payload, self.agent_id),
            )
            span.set_attribute("loom.task_id", self.task.task_id)
            self._tool_spans[payload.call_id or ""] = span
            return span
        if isinstance(payload, ToolReturned):
            return self._tool_spans.get(payload.call_id or "")
        return None

    def _end_span(self, payload: EventPayload) -> None:
        if isinstance(payload, LlmUsage) and self._llm_span is not None:
            self._llm_span.set_attributes(llm_usage_attributes(payload))
            self._llm_span.end()
            self._llm_span = None
        elif isinstance(payload, ToolReturned):
            span = self._tool_spans.pop(payload.call_id or "", None)
            if span is not None:
                if payload.is_error:
                    span.set_status(StatusCode.ERROR, "the tool returned an error")
                span.end()

    def close(self) -> None:
        """End spans whose closing event never came (the call raised or the task was cancelled)."""
        for span in [self._llm_span, *self._tool_spans.values()]:
            if span is not None:
                span.end()
        self._llm_span = None
        self._tool_spans.clear()
