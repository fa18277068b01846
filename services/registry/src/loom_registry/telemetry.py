"""The registry's tracer. ``__main__`` sets OpenTelemetry up from the ``OTEL_*`` environment when
it is configured (docs/adr/0002-logging-and-tracing.md); otherwise spans cost nothing."""

from opentelemetry import trace

tracer = trace.get_tracer("loom.registry")
