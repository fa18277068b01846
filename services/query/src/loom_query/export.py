"""Stored events leaving Loom: a trace (or a time range) as OTLP/JSON spans or as CloudEvents JSON lines.

* ``GET /api/export/otlp`` answers an ``ExportTraceServiceRequest`` in OTLP/JSON (hex ids,
  integer enums, 64-bit integers as strings), ready to be POSTed to any OTLP/HTTP receiver's
  ``/v1/traces``. Loom's own events become spans in the OpenTelemetry GenAI conventions: a task
  run by an agent is an ``invoke_agent <agent>`` span, ``llm.request`` … ``llm.usage`` a
  ``chat <model>`` span, ``tool.call`` … ``tool.result`` an ``execute_tool <tool>`` span; the
  task's other events (thoughts, actions, errors, memory) are span events of its agent span.
  Events that came in over OTLP keep their span under ``data.otel``: that span is exported as it
  came (name, kind, status, attributes, resource, scope). Span ids of Loom's own spans are
  derived from event ids, so exporting the same events twice gives the same spans.
* ``GET /api/export/cloudevents`` streams the events as JSON lines (one CloudEvent per line,
  ``application/x-ndjson``), oldest first, read a page at a time.

Both take ``trace_id`` or a time range (``since``, ``until``; both may narrow a trace) and read
at most ``limit`` events; the answer says so in ``Loom-Export-Truncated: true`` when more matched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from loom_protocol.http import ErrorBody
from pydantic import AfterValidator

from . import store
from .state import State, StateDep

router = APIRouter(tags=["export"], responses={code: {"model": ErrorBody} for code in (422, 503)})

TRUNCATED_HEADER = "Loom-Export-Truncated"
MAX_EXPORT_EVENTS = 100_000
"""The most events one CloudEvents export streams."""
MAX_OTLP_EVENTS = 20_000
"""The most events one OTLP export reads (they are held in memory to pair each span's events)."""

# OpenTelemetry GenAI semantic-convention attribute names (the ones ingest's normaliser reads first)
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
COST = "gen_ai.usage.cost"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION = "gen_ai.conversation.id"

_SPAN_KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}
_SCOPE = {"name": "loom.export", "version": "1"}
_SERVICE = "loom"


def _utc(value: datetime | None) -> datetime | None:
    """Query times: RFC 3339 or Unix seconds; a time without a zone is taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


Time = Annotated[datetime | None, AfterValidator(_utc)]
TraceId = Annotated[
    str | None, Query(pattern="^[0-9a-fA-F]{32}$", description="the 32-hex trace id of the trace to export")
]
Since = Annotated[Time, Query(description="RFC 3339 time or Unix seconds (inclusive)")]
Until = Annotated[Time, Query(description="RFC 3339 time or Unix seconds (inclusive); default: now")]
Limit = Annotated[int, Query(ge=1, le=MAX_EXPORT_EVENTS, description="the most events streamed")]
OtlpLimit = Annotated[int, Query(ge=1, le=MAX_OTLP_EVENTS, description="the most events read")]


def _unprocessable(reason: str, name: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": reason, "type": "value_error"}])


def export_filter(trace_id: str | None, since: datetime | None, until: datetime | None) -> store.EventFilter:
    """The events a request asks for; a request must name a trace or the start of a time range."""
    if trace_id is None and since is None:
        raise _unprocessable("give trace_id, or a time range from since (until: default now)", "trace_id")
    if since is not None and until is None and trace_id is None:
        until = datetime.now(UTC)
    if since is not None and until is not None and since > until:
        raise _unprocessable("since is after until", "since")
    return store.EventFilter(
        trace_id=trace_id.lower() if trace_id else None, start_time=since, end_time=until, kinds=("event",)
    )


async def read_page(
    state: State, f: store.EventFilter, size: int, after: tuple[datetime, str] | None
) -> tuple[list[store.EventRowOut], bool]:
    async with state.connection() as conn:
        return await store.events_page(conn, f, limit=size, order="asc", after=after)


async def read_events(state: State, f: store.EventFilter, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """At most ``limit`` matching events (decoded), oldest first, and whether more matched."""
    events: list[dict[str, Any]] = []
    after = None
    while len(events) < limit:
        size = min(state.settings.export_page_size, limit - len(events))
        rows, more = await read_page(state, f, size, after)
        events.extend(json.loads(r.json) for r in rows)
        if not more or not rows:
            return events, False
        after = (rows[-1].time, rows[-1].id)
    return events, True


# -- OTLP/JSON values ---------------------------------------------------------------------------


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP/JSON ``AnyValue``."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": str(value)}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": any_value(v)} for k, v in attributes.items() if v is not None]


def _nanos(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1_000


def _time_of(event: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(str(event["time"]))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def derived_id(*parts: str, size: int = 8) -> str:
    """A stable hex id of ``size`` bytes (never all zero) derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[: size * 2]
    return digest if digest.strip("0") else "1".rjust(size * 2, "0")


def _trace_id(event: dict[str, Any]) -> str:
    trace_id = event.get("traceid")
    if isinstance(trace_id, str) and len(trace_id) == 32:
        return trace_id
    parts = str(event.get("traceparent") or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return derived_id("trace", str(event.get("taskid") or event.get("id")), size=16)


def _parent_span_of(event: dict[str, Any]) -> str | None:
    """The span id the event's ``traceparent`` names (the context the task ran in)."""
    parts = str(event.get("traceparent") or "").split("-")
    return parts[2] if len(parts) == 4 and len(parts[2]) == 16 and parts[2].strip("0") else None


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _parts(message: dict[str, Any]) -> dict[str, Any]:
    """A message in Loom's form (role, content, tool_calls, tool_call_id) in the GenAI form (role, parts)."""
    if message.get("tool_call_id"):
        parts = [
            {"type": "tool_call_response", "id": message["tool_call_id"], "response": message.get("content")}
        ]
        return {"role": message.get("role") or "tool", "parts": parts}
    parts = []
    if message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("call_id"),
                    "name": call.get("name"),
                    "arguments": call.get("arguments"),
                }
            )
    return {"role": message.get("role") or "user", "parts": parts}


# -- spans ----------------------------------------------------------------------------------------


@dataclass
class Span:
    """One span being built, with the resource and scope it is exported under."""

    trace_id: str
    span_id: str
    name: str
    start: int
    end: int
    kind: int = _SPAN_KINDS["INTERNAL"]
    parent_span_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    status: tuple[int, str] = (0, "")
    events: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=lambda: dict(_SCOPE))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"traceId": self.trace_id, "spanId": self.span_id}
        if self.parent_span_id:
            out["parentSpanId"] = self.parent_span_id
        out.update(
            name=self.name,
            kind=self.kind,
            startTimeUnixNano=str(self.start),
            endTimeUnixNano=str(max(self.end, self.start)),
            attributes=key_values(self.attributes),
        )
        if self.events:
            out["events"] = self.events
        if self.status != (0, ""):
            out["status"] = {"code": self.status[0], "message": self.status[1]}
        return out


def _otel_span(event: dict[str, Any], otel: dict[str, Any], starts: dict[str, int]) -> Span:
    """The span an OTLP-born event kept (its closing event holds name, kind, status, attributes)."""
    data = _data(event)
    at = _nanos(_time_of(event))
    span_id = str(otel.get("span_id"))
    if event.get("type") == "otel.span":  # stored at the span's start
        start, end = at, at + int(float(data.get("duration_ms") or 0) * 1e6)
    else:  # stored at the span's end
        duration = float(data.get("latency_s") or 0) * 1e9 or float(data.get("duration_ms") or 0) * 1e6
        start, end = min(starts.get(span_id, at), at - int(duration)), at
    status, scope, resource = (_mapping(otel.get(name)) for name in ("status", "scope", "resource"))
    attributes = otel.get("attributes")
    span = Span(
        trace_id=_trace_id(event),
        span_id=span_id,
        name=str(otel.get("name") or event.get("type")),
        start=start,
        end=end,
        kind=_SPAN_KINDS.get(str(otel.get("kind") or "").upper(), 0),
        parent_span_id=otel.get("parent_span_id") or None,
        status=(
            _STATUS_CODES.get(str(status.get("code") or "UNSET").upper(), 0),
            str(status.get("message") or ""),
        ),
        resource=dict(resource),
        scope={k: v for k, v in scope.items() if v},
    )
    if isinstance(attributes, dict):
        span.attributes = attributes
    else:  # the raw map was dropped to fit the size limit: say what Loom knows in GenAI terms
        span.attributes = _native_attributes(event, data)
    return span


def _native_attributes(event: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """GenAI attributes of a span closed by one of Loom's llm.usage / tool.result / agent.answer events."""
    kind = event.get("type")
    common = {AGENT_NAME: event.get("agentid"), CONVERSATION: event.get("sessionid")}
    if kind == "llm.usage":
        return {OPERATION: "chat", **common, **_usage_attributes(data)}
    if kind == "tool.result":
        return {OPERATION: "execute_tool", **common, **_result_attributes(data)}
    if kind == "agent.answer":
        return {OPERATION: "invoke_agent", **common, **_answer_attributes(data)}
    return common


def _request_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {PROVIDER: data.get("provider") or None, REQUEST_MODEL: data.get("model") or None}
    messages = data.get("messages")
    if isinstance(messages, list):
        out[INPUT_MESSAGES] = json.dumps([_parts(m) for m in messages if isinstance(m, dict)])
    return out


def _usage_attributes(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        INPUT_TOKENS: int(data.get("input_tokens") or 0),
        OUTPUT_TOKENS: int(data.get("output_tokens") or 0),
        RESPONSE_MODEL: data.get("model") or None,
        COST: data.get("cost_usd"),
    }
    if data.get("provider"):
        out[PROVIDER] = data["provider"]
    if data.get("completion") is not None or data.get("tool_calls"):
        message = {
            "role": "assistant",
            "content": data.get("completion"),
            "tool_calls": data.get("tool_calls"),
        }
        out[OUTPUT_MESSAGES] = json.dumps([_parts(message)])
    return out


def _call_attributes(data: dict[str, Any]) -> dict[str, Any]:
    return {
        TOOL_NAME: data.get("name") or None,
        TOOL_TYPE: "function",
        TOOL_CALL_ID: data.get("call_id") or None,
        TOOL_ARGUMENTS: json.dumps(data.get("arguments") or {}),
    }


def _result_attributes(data: dict[str, Any]) -> dict[str, Any]:
    content = data.get("content")
    return {
        TOOL_NAME: data.get("name") or None,
        TOOL_CALL_ID: data.get("call_id") or None,
        TOOL_RESULT: None if content is None else _json_text(content),
    }


def _answer_attributes(data: dict[str, Any]) -> dict[str, Any]:
    answer = data.get("answer")
    if answer is None:
        return {}
    return {
        OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}])
    }


@dataclass
class _Task:
    """The spans of one task's own events, while they are read in order."""

    agent: Span
    task_id: str
    parent_task_id: str | None
    open_llm: tuple[dict[str, Any], Span] | None = None
    open_tools: dict[str, Span] = field(default_factory=dict)


class SpanBuilder:
    """Spans of stored events, read oldest first (see the module docstring)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._tasks: dict[str, _Task] = {}
        self._otel_starts: dict[str, int] = {}

    def add_all(self, events: list[dict[str, Any]]) -> list[Span]:
        for event in events:
            otel = _data(event).get("otel")
            span_id = event.get("spanid")
            if isinstance(otel, dict) and isinstance(span_id, str):
                self._add_otel(event, otel, span_id)
            else:
                self._add_native(event)
        for task in self._tasks.values():
            parent = self._tasks.get(task.parent_task_id or "")
            if parent is not None and parent.agent.trace_id == task.agent.trace_id:
                task.agent.parent_span_id = parent.agent.span_id
        return self.spans

    def _add_otel(self, event: dict[str, Any], otel: dict[str, Any], span_id: str) -> None:
        at = _nanos(_time_of(event))
        self._otel_starts[span_id] = min(self._otel_starts.get(span_id, at), at)
        if "name" in otel:  # the closing event of the span holds it whole
            self.spans.append(_otel_span(event, otel, self._otel_starts))

    def _task(self, event: dict[str, Any], at: int) -> _Task | None:
        task_id, agent_id = event.get("taskid"), event.get("agentid")
        if not isinstance(task_id, str) or not isinstance(agent_id, str):
            return None
        task = self._tasks.get(task_id)
        if task is None:
            attributes = {OPERATION: "invoke_agent", AGENT_NAME: agent_id, "loom.task_id": task_id}
            if event.get("sessionid"):
                attributes[CONVERSATION] = event["sessionid"]
            span = Span(
                trace_id=_trace_id(event),
                span_id=derived_id("agent", task_id),
                name=f"invoke_agent {agent_id}",
                start=at,
                end=at,
                parent_span_id=_parent_span_of(event),
                attributes=attributes,
                resource=self._resource(event),
            )
            task = self._tasks[task_id] = _Task(span, task_id, event.get("parenttaskid"))
            self.spans.append(span)
        return task

    @staticmethod
    def _resource(event: dict[str, Any]) -> dict[str, Any]:
        resource: dict[str, Any] = {"service.name": _SERVICE}
        if event.get("instanceid"):
            resource["service.instance.id"] = event["instanceid"]
        return resource

    def _child(self, task: _Task, event: dict[str, Any], name: str, at: int, kind: str) -> Span:
        span = Span(
            trace_id=task.agent.trace_id,
            span_id=derived_id("span", str(event.get("id"))),
            name=name,
            start=at,
            end=at,
            kind=_SPAN_KINDS[kind],
            parent_span_id=task.agent.span_id,
            attributes={AGENT_NAME: event.get("agentid"), CONVERSATION: event.get("sessionid")},
            resource=self._resource(event),
        )
        self.spans.append(span)
        return span

    def _add_native(self, event: dict[str, Any]) -> None:
        at = _nanos(_time_of(event))
        task = self._task(event, at)
        if task is None:
            return
        agent = task.agent
        agent.start, agent.end = min(agent.start, at), max(agent.end, at)
        kind, data = event.get("type"), _data(event)
        if kind == "llm.request":
            span = self._child(task, event, f"chat {data.get('model') or ''}".strip(), at, "CLIENT")
            span.attributes.update({OPERATION: "chat", **_request_attributes(data)})
            task.open_llm = (event, span)
        elif kind == "llm.usage":
            if task.open_llm is not None:
                span = task.open_llm[1]
                task.open_llm = None
            else:
                span = self._child(task, event, f"chat {data.get('model') or ''}".strip(), at, "CLIENT")
                span.attributes[OPERATION] = "chat"
                span.start = at - int(float(data.get("latency_s") or 0) * 1e9)
            span.end = at
            span.attributes.update(_usage_attributes(data))
        elif kind == "tool.call":
            span = self._child(task, event, f"execute_tool {data.get('name') or ''}".strip(), at, "INTERNAL")
            span.attributes.update({OPERATION: "execute_tool", **_call_attributes(data)})
            task.open_tools[str(data.get("call_id") or "")] = span
        elif kind == "tool.result":
            opened = task.open_tools.pop(str(data.get("call_id") or ""), None)
            if opened is None:
                span = self._child(
                    task, event, f"execute_tool {data.get('name') or ''}".strip(), at, "INTERNAL"
                )
                span.attributes.update({OPERATION: "execute_tool", TOOL_TYPE: "function"})
                span.start = at - int(float(data.get("duration_ms") or 0) * 1e6)
            else:
                span = opened
            span.end = at
            span.attributes.update(_result_attributes(data))
            if data.get("is_error"):
                span.status = (_STATUS_CODES["ERROR"], "the tool returned an error")
        elif kind == "agent.answer":
            agent.attributes.update(_answer_attributes(data))
        else:
            attributes = {"loom.event.id": event.get("id")}
            if kind == "error" and data.get("error"):
                attributes["error.message"] = data["error"]
            agent.events.append(
                {"timeUnixNano": str(at), "name": str(kind), "attributes": key_values(attributes)}
            )


def export_request(spans: list[Span]) -> dict[str, Any]:
    """The OTLP/JSON ``ExportTraceServiceRequest`` of ``spans``: one resource entry per resource, one
    scope entry per scope, in first-seen order."""
    resources: dict[str, tuple[dict[str, Any], dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]]] = {}
    for span in spans:
        resource_key = json.dumps(span.resource, sort_keys=True, default=str)
        _, scopes = resources.setdefault(resource_key, (span.resource, {}))
        scope_key = json.dumps(span.scope, sort_keys=True, default=str)
        _, members = scopes.setdefault(scope_key, (span.scope, []))
        members.append(span.to_json())
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource)},
                "scopeSpans": [
                    {"scope": {k: str(v) for k, v in scope.items()}, "spans": members}
                    for scope, members in scopes.values()
                ],
            }
            for resource, scopes in resources.values()
        ]
    }


# -- routes ---------------------------------------------------------------------------------------


@router.get(
    "/api/export/otlp",
    summary="Export a trace or a time range as OTLP/JSON spans (an ExportTraceServiceRequest)",
    responses={200: {"content": {"application/json": {}}, "description": "ready to POST to /v1/traces"}},
)
async def export_otlp(
    state: StateDep,
    trace_id: TraceId = None,
    since: Since = None,
    until: Until = None,
    limit: OtlpLimit = 10_000,
) -> Response:
    f = export_filter(trace_id, since, until)
    events, more = await read_events(state, f, limit)
    body = export_request(SpanBuilder().add_all(events))
    headers = {TRUNCATED_HEADER: "true"} if more else {}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json", headers=headers)


async def _lines(
    state: State, f: store.EventFilter, first: list[store.EventRowOut], more: bool, limit: int
) -> AsyncIterator[bytes]:
    rows, sent = first, 0
    while rows:
        yield "".join(r.json + "\n" for r in rows).encode()
        sent += len(rows)
        if not more or sent >= limit:
            return
        size = min(state.settings.export_page_size, limit - sent)
        rows, more = await read_page(state, f, size, (rows[-1].time, rows[-1].id))


@router.get(
    "/api/export/cloudevents",
    summary="Export a trace or a time range as CloudEvents JSON lines, oldest first",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one CloudEvent per line"}},
)
async def export_cloudevents(
    state: StateDep,
    trace_id: TraceId = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 10_000,
) -> StreamingResponse:
    """The first page is read before the answer starts, so a database that is down answers 503;
    ``Loom-Export-Truncated`` is set when the first page already shows more than ``limit`` match."""
    f = export_filter(trace_id, since, until)
    size = min(state.settings.export_page_size, limit)
    first, more = await read_page(state, f, size, None)
    headers = {}
    if more and size >= limit:
        headers[TRUNCATED_HEADER] = "true"
    return StreamingResponse(
        _lines(state, f, first, more, limit), media_type="application/x-ndjson", headers=headers
    )
