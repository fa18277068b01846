"""The dispatcher's tracer and its task trace context. ``__main__`` sets OpenTelemetry up from the
``OTEL_*`` environment when it is configured (docs/adr/0002-logging-and-tracing.md); when it is
not, nothing here reads or writes trace headers (the task carries its own trace context)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager

from loom_protocol import TraceContext
from loom_protocol.logconfig import tracing_enabled
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("loom.dispatcher")
TRACING = tracing_enabled(os.environ)
_NO_SPAN: AbstractContextManager[object] = contextlib.nullcontext()


def span(
    name: str,
    attributes: Mapping[str, str] | None = None,
    *,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> AbstractContextManager[object]:
    """A span of the dispatcher's tracer around a block when tracing is on; with tracing off, a
    shared null context: the no-op tracer still builds a span and swaps the current context on
    every call, a few per cent of the task path's CPU for nothing."""
    if not TRACING:
        return _NO_SPAN
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def current_trace() -> TraceContext | None:
    """The active span as a task's trace context, or None when no span is recording."""
    carrier: dict[str, str] = {}
    if TRACING:
        propagate.inject(carrier)
    return TraceContext.model_validate(carrier) if "traceparent" in carrier else None


def context_of(task_trace: TraceContext) -> Context | None:
    """An OpenTelemetry context whose parent is the task's recorded trace (None: tracing is off,
    the current context then, which spans of the no-op tracer ignore)."""
    return propagate.extract(task_trace.model_dump(exclude_none=True)) if TRACING else None


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    if TRACING:
        propagate.inject(headers)
    return headers
