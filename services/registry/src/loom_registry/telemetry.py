"""OpenTelemetry: on when the standard OTEL_EXPORTER_OTLP_*ENDPOINT variables say where to
export (sampling from OTEL_TRACES_SAMPLER / _ARG, read by the SDK), off and free otherwise."""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastapi import FastAPI
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
tracer = trace.get_tracer("loom.registry")


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
    return provider


def broker_middlewares(provider: TracerProvider | None) -> Sequence[NatsTelemetryMiddleware]:
    return [NatsTelemetryMiddleware(tracer_provider=provider)] if provider is not None else []


def instrument_app(app: FastAPI, provider: TracerProvider | None) -> None:
    if provider is not None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics"
        )
