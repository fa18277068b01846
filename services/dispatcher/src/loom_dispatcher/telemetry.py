"""OpenTelemetry: on when the standard OTEL_EXPORTER_OTLP_*ENDPOINT variables say where to
export (sampling from OTEL_TRACES_SAMPLER / _ARG, read by the SDK), off and free otherwise."""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from loom_protocol import TraceContext
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
tracer = trace.get_tracer("loom.dispatcher")
# off: no span records anything, so there is no trace context to read or to propagate beyond
# the task's own (carried in the task); skipping the propagator saves its cost per message
_enabled = False


def setup_tracing(service_name: str) -> TracerProvider | None:
    """Install the SDK with an OTLP/HTTP exporter, or return None when tracing is not configured."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or not any(
        os.environ.get(v) for v in _ENDPOINT_VARS
    ):
        return None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _enabled
    _enabled = True
    return provider


def broker_middlewares(provider: TracerProvider | None) -> Sequence[NatsTelemetryMiddleware]:
    return [NatsTelemetryMiddleware(tracer_provider=provider)] if provider is not None else []


def instrument_app(app: FastAPI, provider: TracerProvider | None) -> None:
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics"
        )


def current_trace() -> TraceContext | None:
    """The active span as a task's trace context, or None when no span is recording."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return None
    return TraceContext(traceparent=carrier["traceparent"], tracestate=carrier.get("tracestate"))


def context_of(task_trace: TraceContext) -> Context:
    """An OpenTelemetry context whose parent is the task's recorded trace."""
    carrier = {"traceparent": task_trace.traceparent} if task_trace.traceparent else {}
    if task_trace.tracestate:
        carrier["tracestate"] = task_trace.tracestate
    return propagate.extract(carrier)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    if _enabled:
        propagate.inject(headers)
    return headers
