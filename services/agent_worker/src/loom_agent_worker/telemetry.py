"""The worker's tracer and how spans become task trace contexts. ``__main__`` sets OpenTelemetry
up from the ``OTEL_*`` environment when it is configured (docs/adr/0002-logging-and-tracing.md);
when it is not, events carry their task's trace context without asking OpenTelemetry."""

from __future__ import annotations

import json
import os
from typing import Any

from loom_protocol import LlmRequest, LlmUsage, ToolCalled, TraceContext
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
    if TRACING:
        propagate.inject(headers)
    return headers


# -- OpenTelemetry GenAI semantic conventions on the worker's spans -----------------------------
# so Loom's traces read as agent, chat and tool spans in Jaeger, Langfuse or Phoenix. Message
# content is set only when the worker captures content (the events then carry it too).


def agent_span_name(agent_id: str) -> str:
    """The name of a task's span: ``invoke_agent <agent>``."""
    return f"invoke_agent {agent_id}"


def llm_span_name(request: LlmRequest) -> str:
    """The name of an LLM call's span: ``chat <model>`` (``chat`` when the model is not known)."""
    return f"chat {request.model}".strip()


def tool_span_name(call: ToolCalled) -> str:
    """The name of a tool call's span: ``execute_tool <tool>``."""
    return f"execute_tool {call.name or ''}".strip()


def agent_attributes(agent_id: str, session_id: str | None) -> dict[str, Any]:
    """The attributes of the span of a task run by an agent (an ``invoke_agent`` span)."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_id}
    if session_id:
        attributes["gen_ai.conversation.id"] = session_id
    return attributes


def _parts(message: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or []:
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("call_id"),
                "name": call.get("name"),
                "arguments": call.get("arguments"),
            }
        )
    if message.get("tool_call_id"):
        parts = [
            {"type": "tool_call_response", "id": message["tool_call_id"], "response": message.get("content")}
        ]
    return {"role": message.get("role", "user"), "parts": parts}


def llm_request_attributes(request: LlmRequest, agent_id: str, session_id: str | None) -> dict[str, Any]:
    """The attributes of a ``chat`` span when the request is sent."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": request.provider,
        "gen_ai.request.model": request.model,
        "gen_ai.agent.name": agent_id,
    }
    if session_id:
        attributes["gen_ai.conversation.id"] = session_id
    if request.messages is not None:  # content capture is on
        attributes["gen_ai.input.messages"] = json.dumps([_parts(m) for m in request.messages])
    return attributes


def llm_usage_attributes(usage: LlmUsage) -> dict[str, Any]:
    """The attributes a ``chat`` span gets when the answer came."""
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if usage.model:
        attributes["gen_ai.response.model"] = usage.model
    if usage.content_captured and (usage.completion is not None or usage.tool_calls):
        message = {
            "content": usage.completion,
            "tool_calls": [call.model_dump(mode="json") for call in usage.tool_calls],
        }
        attributes["gen_ai.output.messages"] = json.dumps([_parts({"role": "assistant", **message})])
    return attributes


def tool_attributes(call: ToolCalled, agent_id: str) -> dict[str, Any]:
    """The attributes of an ``execute_tool`` span."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name or "",
        "gen_ai.tool.type": "function",
        "gen_ai.agent.name": agent_id,
    }
    if call.call_id:
        attributes["gen_ai.tool.call.id"] = call.call_id
    return attributes
