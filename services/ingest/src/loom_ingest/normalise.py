"""OTLP spans to Loom events: the same types and ``data`` fields Loom's own workers emit.

* An LLM span gives ``llm.request`` (at its start: model, provider, messages) and ``llm.usage``
  (at its end: tokens, cost, latency, completion, tool calls).
* A tool span gives ``tool.call`` (arguments) and ``tool.result`` (content, error, duration).
* An agent span gives ``agent.answer`` at its end; when it runs inside another agent's span
  that the same export holds, also the parent's ``agent.action`` delegating to it (a topology edge).
* Any other span gives one ``otel.span`` event, so a trace is never shown with holes.
* A span whose status is ERROR also gives an ``error`` event.

Identity: an event's id is ``<trace id>-<span id>-<part>`` and its time is the span's start or
end, both fixed by the span, so the same span exported twice is the same event (JetStream's
``Nats-Msg-Id`` window and the ``(time, id)`` key both drop the copy). Every event carries
``traceparent`` = the span's own context (the trace id is the span's), ``spanid`` and, when
there is one, ``parentspanid``; ``taskid`` is the trace id, so a trace reads as a task.
The agent is the span's ``gen_ai.agent.name`` (or its dialect's alias), else that of the nearest
enclosing agent span in the same export, else the resource's ``service.name``; the instance is
``service.instance.id``, else ``service.name``. A span whose parent is in a later export is
normalised at once with what it says itself: nothing is held back.

The raw attributes, resource and scope are kept under ``data.otel`` of the span's closing event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from loom_protocol import (
    AgentAction,
    AgentAnswer,
    CloudEvent,
    ErrorReported,
    LlmRequest,
    LlmUsage,
    McpToolCall,
    ToolCalled,
    ToolReturned,
    new_event,
)

from .genai_attrs import SpanFacts, read
from .otlp_wire import SpanRecord

SPAN_EVENT_TYPE = "otel.span"
"""The type of the event made from a span that is neither an LLM, a tool nor an agent."""

Pricer = Callable[[str, int, int], float | None]
"""``(model, input tokens, output tokens) -> USD`` (None: no price known)."""

_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
_SOURCE_RE = re.compile(r"\s+")
_MAX_ID = 128


def _ident(value: Any) -> str | None:
    """``value`` as an agent or instance id (letters, digits, ``_``, ``-``), or None when nothing is left."""
    if not isinstance(value, str):
        return None
    cleaned = _NAME_RE.sub("-", value.strip()).strip("-")[:_MAX_ID]
    return cleaned or None


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC) if ns > 0 else datetime.fromtimestamp(0, tz=UTC)


class Normaliser:
    """Turns the spans of one export into events (see the module docstring)."""

    def __init__(self, price: Pricer | None = None) -> None:
        self._price = price

    def events_of(self, spans: Sequence[SpanRecord]) -> list[list[CloudEvent] | str]:
        """For each span, its events, or the reason it cannot be stored."""
        facts = {(s.trace_id, s.span_id): read(s.attributes, s.events) for s in spans}
        by_id = {(s.trace_id, s.span_id): s for s in spans}
        out: list[list[CloudEvent] | str] = []
        for span in spans:
            try:
                out.append(self._events(span, facts, by_id))
            except ValueError as exc:  # pydantic's ValidationError included
                out.append(f"span {span.span_id}: cannot be made an event: {exc}")
        return out

    def _enclosing_agent(
        self,
        span: SpanRecord,
        facts: dict[tuple[str, str], SpanFacts],
        by_id: dict[tuple[str, str], SpanRecord],
    ) -> str | None:
        """The agent name of the nearest agent span above ``span`` in this export."""
        seen: set[str] = set()
        parent = span.parent_span_id
        while parent is not None and parent not in seen:
            seen.add(parent)
            key = (span.trace_id, parent)
            above = facts.get(key)
            if above is None:
                return None
            if above.role == "agent" and above.agent_name:
                return above.agent_name
            parent = by_id[key].parent_span_id
        return None

    def _events(
        self,
        span: SpanRecord,
        facts: dict[tuple[str, str], SpanFacts],
        by_id: dict[tuple[str, str], SpanRecord],
    ) -> list[CloudEvent]:
        f = facts[(span.trace_id, span.span_id)]
        service = span.resource.get("service.name")
        enclosing = self._enclosing_agent(span, facts, by_id)
        agent = _ident(f.agent_name) or _ident(enclosing) or _ident(service) or "otlp"
        instance = _ident(span.resource.get("service.instance.id")) or _ident(service) or "otlp"
        source = "otlp://" + _SOURCE_RE.sub("-", str(service or "unknown"))[:200]
        start, end = _time(span.start_ns), _time(span.end_ns)
        extensions: dict[str, str | int | bool] = {"spanid": span.span_id, "otelkind": span.kind.lower()}
        if span.parent_span_id:
            extensions["parentspanid"] = span.parent_span_id
        traceparent = f"00-{span.trace_id}-{span.span_id}-01"
        raw = {
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "dialect": f.dialect,
            "status": {"code": span.status_code, "message": span.status_message},
            "attributes": span.attributes,
            "resource": span.resource,
            "scope": {"name": span.scope, "version": span.scope_version},
        }
        ident = {"trace_id": span.trace_id, "span_id": span.span_id}

        def make(
            part: str, type_: str, data: dict[str, Any], at: datetime, subject: str | None, agent_id: str
        ) -> CloudEvent:
            return new_event(
                type_,
                source,
                id=f"{span.trace_id}-{span.span_id}-{part}",
                time=at,
                data=data,
                subject=subject,
                task_id=span.trace_id,
                session_id=f.session_id,
                traceparent=traceparent,
                instance_id=instance,
                agent_id=agent_id,
                extensions=extensions,
            )

        events: list[CloudEvent] = []
        latency_s = max(span.end_ns - span.start_ns, 0) / 1e9
        if f.role == "llm":
            model = f.request_model or f.model
            subject = f"llm:{f.provider or 'unknown'}/{model or 'unknown'}"
            request = LlmRequest(
                step=1,
                message_count=len(f.messages or ()),
                provider=f.provider,
                model=model,
                messages=f.messages,
            ).to_data()
            cost = f.cost_usd
            if cost is None and self._price is not None and (f.model or model):
                cost = self._price(f.model or model, f.input_tokens, f.output_tokens)
            usage = LlmUsage(
                step=1,
                input_tokens=f.input_tokens,
                output_tokens=f.output_tokens,
                cost_usd=cost,
                latency_s=latency_s,
                model=f.model or model,
                provider=f.provider,
                completion=f.completion,
                tool_calls=[McpToolCall.model_validate(_call(c, i)) for i, c in enumerate(f.tool_calls)],
                content_captured=f.messages is not None or f.completion is not None,
            ).to_data()
            events.append(make("request", LlmRequest.TYPE, {**request, "otel": ident}, start, subject, agent))
            events.append(make("usage", LlmUsage.TYPE, {**usage, "otel": raw}, end, subject, agent))
        elif f.role == "tool":
            name = f.tool_name or span.name.removeprefix("execute_tool").strip() or span.name
            subject = f"tool:{name}"
            call_id = f.tool_call_id or span.span_id
            called = ToolCalled(call_id=call_id, name=name, arguments=f.tool_arguments).to_data()
            returned = ToolReturned(
                call_id=call_id,
                name=name,
                content=f.tool_result,
                is_error=span.status_code == "ERROR",
                duration_ms=latency_s * 1000.0,
            ).to_data()
            events.append(make("call", ToolCalled.TYPE, {**called, "otel": ident}, start, subject, agent))
            events.append(make("result", ToolReturned.TYPE, {**returned, "otel": raw}, end, subject, agent))
        elif f.role == "agent":
            parent_agent = _ident(enclosing)
            if parent_agent is not None and parent_agent != agent:
                delegation = AgentAction(agent=agent).to_data()
                events.append(
                    make(
                        "delegation",
                        AgentAction.TYPE,
                        {**delegation, "otel": ident},
                        start,
                        f"agent:{agent}",
                        parent_agent,
                    )
                )
            answer = AgentAnswer(answer=f.answer).to_data()
            events.append(make("answer", AgentAnswer.TYPE, {**answer, "otel": raw}, end, None, agent))
        else:
            data = {"name": span.name, "duration_ms": latency_s * 1000.0, "otel": raw}
            events.append(make("span", SPAN_EVENT_TYPE, data, start, None, agent))
        if span.status_code == "ERROR":
            error = ErrorReported(error=span.status_message or f"span {span.name!r} failed").to_data()
            events.append(make("error", ErrorReported.TYPE, {**error, "otel": ident}, end, None, agent))
        return events


def _call(call: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "call_id": call.get("call_id") or f"call-{index}",
        "name": call.get("name") or "unknown",
        "arguments": call.get("arguments") or {},
    }
