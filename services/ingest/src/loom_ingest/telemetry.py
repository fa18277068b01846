"""Ingest's consumer spans. ``__main__`` sets OpenTelemetry up from the ``OTEL_*`` environment when
it is configured (docs/adr/0002-logging-and-tracing.md); otherwise nothing here runs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from loom_protocol.logconfig import tracing_enabled
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("loom.ingest")
TRACING = tracing_enabled(os.environ)


def trace_committed(msgs: Sequence[Msg], read_ns: int) -> None:
    """One consumer span per traced message, from its read to the commit that stored it, as a
    child of the span that published it (the ``traceparent`` header)."""
    if not TRACING:
        return
    for msg in msgs:
        traceparent = (msg.headers or {}).get("traceparent")
        if not traceparent:
            continue
        parent = propagate.extract({"traceparent": traceparent})
        span = tracer.start_span(
            f"ingest {msg.subject}", context=parent, kind=SpanKind.CONSUMER, start_time=read_ns
        )
        span.set_attribute("messaging.destination.name", msg.subject)
        span.end()
