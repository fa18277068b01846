"""The dispatcher's spans: recorded with their attributes when tracing is on, no span work at all
when it is off."""

from __future__ import annotations

import pytest
from loom_dispatcher import telemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A recording tracer in place of the dispatcher's (the global provider stays untouched)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("loom.dispatcher"))
    return exporter


def test_a_span_is_recorded_with_its_attributes_when_tracing_is_on(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "TRACING", True)
    with telemetry.span("registry.pick", {"loom.agent": "echo"}, kind=SpanKind.CLIENT):
        assert trace.get_current_span().get_span_context().is_valid
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind, dict(span.attributes or {})) == (
        "registry.pick",
        SpanKind.CLIENT,
        {"loom.agent": "echo"},
    )


def test_no_span_is_made_or_made_current_when_tracing_is_off(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "TRACING", False)
    with telemetry.span("dispatch", {"loom.task_id": "t-1"}):
        assert not trace.get_current_span().get_span_context().is_valid
    assert exporter.get_finished_spans() == ()
