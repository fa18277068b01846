"""What an LLM, tool or agent span says, read from any of the three attribute dialects in use.

* OpenTelemetry GenAI semantic conventions: ``gen_ai.operation.name`` (``chat``, ``execute_tool``,
  ``invoke_agent``...), ``gen_ai.request.model``, ``gen_ai.provider.name`` (deprecated alias
  ``gen_ai.system``), ``gen_ai.usage.input_tokens`` / ``output_tokens`` (deprecated
  ``prompt_tokens`` / ``completion_tokens``), ``gen_ai.input.messages`` / ``output.messages`` and
  ``gen_ai.system_instructions`` (as attributes or on the ``gen_ai.client.inference.operation.details``
  span event; deprecated ``gen_ai.prompt`` / ``gen_ai.completion`` and their span events),
  ``gen_ai.tool.name`` / ``call.id`` / ``call.arguments`` / ``call.result``, ``gen_ai.agent.name``,
  ``gen_ai.conversation.id``.
* OpenInference (Arize Phoenix): ``openinference.span.kind`` (``LLM``, ``TOOL``, ``AGENT``...),
  ``llm.model_name``, ``llm.provider`` / ``llm.system``, ``llm.token_count.prompt`` /
  ``completion``, indexed ``llm.input_messages.{i}.message.*`` / ``llm.output_messages.{i}.*``,
  ``input.value`` / ``output.value``, ``tool.name`` / ``tool.parameters``, ``agent.name``,
  ``session.id``, ``llm.cost.total``.
* Traceloop / OpenLLMetry: ``traceloop.span.kind`` (``workflow``, ``task``, ``agent``, ``tool``),
  ``llm.request.type``, indexed ``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``,
  ``traceloop.entity.name`` / ``input`` / ``output``, ``traceloop.association.properties.session_id``.

Pure functions: a span's attribute map (and its span events) in, a :class:`SpanFacts` out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["llm", "tool", "agent", "other"]
Dialect = Literal["gen_ai", "openinference", "traceloop", "otel"]

LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "completion", "embeddings", "embedding", "responses"}
)
TOOL_OPERATIONS = frozenset({"execute_tool"})
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})
_OPENINFERENCE_ROLES: dict[str, Role] = {
    "LLM": "llm",
    "EMBEDDING": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
}
_TRACELOOP_ROLES: dict[str, Role] = {"tool": "tool", "agent": "agent"}
_INDEX_RE = re.compile(r"^(\d+)\.(.+)$")

# name lists: the current name first, then the newer or older aliases accepted for it
MODEL = (
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.model_name",
    "llm.response.model",
    "llm.request.model",
)
REQUEST_MODEL = ("gen_ai.request.model", "llm.model_name", "llm.request.model", "gen_ai.response.model")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
COST = ("gen_ai.usage.cost", "llm.cost.total", "gen_ai.usage.cost_usd")
TOOL_NAME = ("gen_ai.tool.name", "tool.name", "traceloop.entity.name")
TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool_call.id", "tool.call.id")
TOOL_ARGUMENTS = ("gen_ai.tool.call.arguments", "tool.parameters", "input.value", "traceloop.entity.input")
TOOL_RESULT = ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
AGENT_NAME = ("gen_ai.agent.name", "agent.name", "traceloop.entity.name", "gen_ai.agent.id")
SESSION = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "gen_ai.session.id",
)
AGENT_OUTPUT = ("output.value", "traceloop.entity.output")
# span events that carry messages (newer conventions and deprecated ones)
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_CONTENT_EVENTS = {"gen_ai.content.prompt": "gen_ai.prompt", "gen_ai.content.completion": "gen_ai.completion"}
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


@dataclass
class SpanFacts:
    """What Loom needs of a span, whatever dialect it was written in."""

    role: Role
    dialect: Dialect
    model: str = ""
    request_model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    messages: list[dict[str, Any]] | None = None
    completion: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_name: str = ""
    tool_call_id: str | None = None
    tool_arguments: dict[str, Any] = field(default_factory=dict)
    tool_result: Any = None
    agent_name: str | None = None
    session_id: str | None = None
    answer: str | None = None


def first(attrs: Mapping[str, Any], names: Iterable[str]) -> Any:
    """The value of the first of ``names`` that is set (not None, not an empty string)."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _json(value: Any) -> Any:
    """A JSON-encoded attribute decoded; anything else (or text that is not JSON) as it is."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _object(value: Any) -> dict[str, Any]:
    decoded = _json(value)
    if isinstance(decoded, dict):
        return decoded
    return {} if decoded is None or decoded == "" else {"input": decoded}


def classify(attrs: Mapping[str, Any]) -> tuple[Role, Dialect]:
    """Whether a span is an LLM call, a tool call, an agent or something else, and its dialect."""
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation:
        op = operation.lower()
        if op in TOOL_OPERATIONS:
            return "tool", "gen_ai"
        if op in AGENT_OPERATIONS:
            return "agent", "gen_ai"
        if op in LLM_OPERATIONS:
            return "llm", "traceloop" if "traceloop.span.kind" in attrs or _has_indexed(attrs) else "gen_ai"
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind:
        return _OPENINFERENCE_ROLES.get(kind.upper(), "other"), "openinference"
    kind = attrs.get("traceloop.span.kind")
    if isinstance(kind, str) and kind:
        return _TRACELOOP_ROLES.get(kind.lower(), "other"), "traceloop"
    if attrs.get("llm.request.type") or _has_indexed(attrs):
        return "llm", "traceloop"
    if first(attrs, PROVIDER) is not None and first(attrs, REQUEST_MODEL) is not None:
        return "llm", "gen_ai"
    if first(attrs, ("gen_ai.tool.name",)) is not None:
        return "tool", "gen_ai"
    if first(attrs, ("gen_ai.agent.name",)) is not None:
        return "agent", "gen_ai"
    return "other", "otel"


def _has_indexed(attrs: Mapping[str, Any]) -> bool:
    return any(key.startswith(("gen_ai.prompt.", "gen_ai.completion.")) for key in attrs)


def indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Flattened lists (``prefix{i}.rest``) as a list of ``{rest: value}``, in index order."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        match = _INDEX_RE.match(key[len(prefix) :])
        if match:
            items.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [items[i] for i in sorted(items)]


def _with_event_attributes(attrs: Mapping[str, Any], events: Iterable[Any]) -> dict[str, Any]:
    """Attributes plus the message attributes some instrumentations put on span events."""
    merged = dict(attrs)
    loose: list[dict[str, Any]] = []
    for event in events:
        if event.name == _DETAILS_EVENT:
            for key, value in event.attributes.items():
                merged.setdefault(key, value)
        elif event.name in _CONTENT_EVENTS:
            name = _CONTENT_EVENTS[event.name]
            if name in event.attributes:
                merged.setdefault(name, event.attributes[name])
        elif event.name in _MESSAGE_EVENTS:
            loose.append(
                {"role": _MESSAGE_EVENTS[event.name], "content": _text(event.attributes.get("content"))}
            )
        elif event.name == "gen_ai.choice":
            message = _json(event.attributes.get("message"))
            if isinstance(message, dict):
                merged.setdefault("gen_ai.completion", json.dumps([message]))
    if loose and "gen_ai.input.messages" not in merged and "gen_ai.prompt" not in merged:
        merged["gen_ai.prompt"] = json.dumps(loose)
    return merged


# -- messages -----------------------------------------------------------------------------------


def _tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"call_id": _text(call_id) or None, "name": _text(name), "arguments": _object(arguments)}


def _parts_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A GenAI-convention message (``role`` + typed ``parts``) in Loom's message form."""
    out: dict[str, Any] = {"role": _text(message.get("role")) or "user"}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    parts = message.get("parts")
    if isinstance(parts, list):
        for part in parts:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "tool_call":
                calls.append(_tool_call(part.get("id"), part.get("name"), part.get("arguments")))
            elif kind == "tool_call_response":
                out["tool_call_id"] = _text(part.get("id")) or None
                response = part.get("response", part.get("result"))
                texts.append(response if isinstance(response, str) else json.dumps(response))
            elif "content" in part:
                texts.append(_text(part.get("content")))
    elif "content" in message:  # the deprecated {role, content} form
        content = message.get("content")
        texts.append(content if isinstance(content, str) else json.dumps(content))
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                function = call["function"] if isinstance(call.get("function"), dict) else call
                calls.append(_tool_call(call.get("id"), function.get("name"), function.get("arguments")))
        if message.get("tool_call_id"):
            out["tool_call_id"] = _text(message.get("tool_call_id"))
    out["content"] = "".join(texts)
    if calls:
        out["tool_calls"] = calls
    return out


def _message_list(value: Any) -> list[dict[str, Any]] | None:
    decoded = _json(value)
    if isinstance(decoded, str):
        return [{"role": "user", "content": decoded}]
    if isinstance(decoded, dict):
        decoded = decoded.get("messages", [decoded])
    if not isinstance(decoded, list):
        return None
    return [_parts_message(m) for m in decoded if isinstance(m, dict)]


def _indexed_messages(attrs: Mapping[str, Any], prefix: str, inner: str) -> list[dict[str, Any]]:
    """OpenInference (``inner='message.'``) or Traceloop (``inner=''``) indexed messages."""
    out: list[dict[str, Any]] = []
    for flat in indexed(attrs, prefix):
        message: dict[str, Any] = {
            "role": _text(flat.get(f"{inner}role")) or "user",
            "content": _text(flat.get(f"{inner}content")),
        }
        if flat.get(f"{inner}tool_call_id"):
            message["tool_call_id"] = _text(flat.get(f"{inner}tool_call_id"))
        calls = []
        for call in indexed(flat, f"{inner}tool_calls."):
            if inner:  # OpenInference: tool_call.function.name / arguments, tool_call.id
                calls.append(
                    _tool_call(
                        call.get("tool_call.id"),
                        call.get("tool_call.function.name"),
                        call.get("tool_call.function.arguments"),
                    )
                )
            else:
                calls.append(_tool_call(call.get("id"), call.get("name"), call.get("arguments")))
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _messages(attrs: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """(input messages, output messages) in Loom's form, from whichever dialect has them."""
    inputs = _message_list(attrs["gen_ai.input.messages"]) if "gen_ai.input.messages" in attrs else None
    if inputs is None and "gen_ai.prompt" in attrs:
        inputs = _message_list(attrs["gen_ai.prompt"])
    if inputs is None:
        inputs = _indexed_messages(attrs, "llm.input_messages.", "message.") or None
    if inputs is None:
        inputs = _indexed_messages(attrs, "gen_ai.prompt.", "") or None
    if inputs is not None and "gen_ai.system_instructions" in attrs:
        system = _json(attrs["gen_ai.system_instructions"])
        parts = system if isinstance(system, list) else [{"type": "text", "content": _text(system)}]
        inputs = [_parts_message({"role": "system", "parts": parts}), *inputs]
    outputs = _message_list(attrs["gen_ai.output.messages"]) if "gen_ai.output.messages" in attrs else None
    if outputs is None and "gen_ai.completion" in attrs:
        outputs = _message_list(attrs["gen_ai.completion"])
        if outputs is not None:
            outputs = [{**m, "role": "assistant"} if m["role"] == "user" else m for m in outputs]
    if outputs is None:
        outputs = _indexed_messages(attrs, "llm.output_messages.", "message.") or None
    if outputs is None:
        outputs = _indexed_messages(attrs, "gen_ai.completion.", "") or None
    return inputs, outputs


def read(attrs: Mapping[str, Any], events: Iterable[Any] = ()) -> SpanFacts:
    """The facts of a span with these attributes (and span events)."""
    role, dialect = classify(attrs)
    merged = _with_event_attributes(attrs, events)
    facts = SpanFacts(role=role, dialect=dialect)
    facts.session_id = _text(first(merged, SESSION)) or None
    if role == "llm":
        facts.model = _text(first(merged, MODEL))
        facts.request_model = _text(first(merged, REQUEST_MODEL)) or facts.model
        facts.provider = _text(first(merged, PROVIDER))
        facts.input_tokens = _count(first(merged, INPUT_TOKENS))
        facts.output_tokens = _count(first(merged, OUTPUT_TOKENS))
        cost = first(merged, COST)
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            facts.cost_usd = float(cost)
        inputs, outputs = _messages(merged)
        if inputs is None and "input.value" in merged:
            inputs = _message_list(merged["input.value"])
        facts.messages = inputs
        if outputs:
            facts.completion = "".join(m.get("content") or "" for m in outputs)
            facts.tool_calls = [call for m in outputs for call in m.get("tool_calls", [])]
        elif "output.value" in merged:
            facts.completion = _text(merged["output.value"])
        facts.agent_name = _text(first(merged, ("gen_ai.agent.name", "agent.name"))) or None
    elif role == "tool":
        facts.tool_name = _text(first(merged, TOOL_NAME))
        facts.tool_call_id = _text(first(merged, TOOL_CALL_ID)) or None
        facts.tool_arguments = _object(first(merged, TOOL_ARGUMENTS))
        facts.tool_result = _json(first(merged, TOOL_RESULT))
        facts.agent_name = _text(first(merged, ("gen_ai.agent.name", "agent.name"))) or None
    elif role == "agent":
        facts.agent_name = _text(first(merged, AGENT_NAME)) or None
        facts.model = _text(first(merged, REQUEST_MODEL))
        facts.provider = _text(first(merged, PROVIDER))
        _, outputs = _messages(merged)
        if outputs:
            facts.answer = "".join(m.get("content") or "" for m in outputs)
        else:
            output = first(merged, AGENT_OUTPUT)
            facts.answer = None if output is None else _text(output)
    else:
        facts.agent_name = _text(first(merged, ("gen_ai.agent.name",))) or None
    return facts
