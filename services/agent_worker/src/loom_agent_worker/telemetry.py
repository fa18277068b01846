"""The worker's tracer and how spans become task trace contexts. ``__main__`` sets OpenTelemetry
up from the ``OTEL_*`` environment when it is configured (docs/adr/0002-logging-and-tracing.md);
when it is not, events carry their task's trace context without asking OpenTelemetry."""

from __future__ import annotations

import os

from loom_protocol import TraceContext
from loom_protocol.logconfig import tracing_enabled
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

tracer = trace.get_tracer("loom.agent-worker")
TRACING = tracing_enabled(os.environ)


def current_trace(span: Span | None = None) -> TraceContext | None:
    """The given (else the active) span as a task's trace context; None when none is recording."""
    carrier: dict[str, str] = {}
    if TRACING:
        propagate.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    return TraceContext.model_validate(carrier) if "traceparent" in carrier else None


def context_of(task_trace: TraceContext) -> Context:
    """An OpenTelemetry context whose parent is the task's recorded trace."""
    return propagate.extract(task_trace.model_dump(exclude_none=True))


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus the active span's trace context (a status report: a few per task)."""
    propagate.inject(headers)
    return headers
