"""The span normaliser, one dialect at a time, and the OTLP body decoding it reads from."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from google.protobuf import json_format
from loom_ingest.genai_attrs import classify, read
from loom_ingest.normalise import SPAN_EVENT_TYPE, Normaliser
from loom_ingest.otlp_wire import (
    JSON,
    PROTOBUF,
    BadBody,
    SpanRecord,
    TooLarge,
    decompress,
    parse_request,
    spans_of,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACE = "ab" * 16
ROOT, CHILD = "01" * 8, "02" * 8


def span(attrs: dict[str, Any], span_id: str = CHILD, parent: str | None = ROOT, **kw: Any) -> SpanRecord:
    return SpanRecord(
        trace_id=TRACE,
        span_id=span_id,
        parent_span_id=parent,
        name=kw.pop("name", "s"),
        kind="CLIENT",
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_001_500_000_000,
        attributes=attrs,
        resource={"service.name": "my app", "service.instance.id": "pod-1"},
        **kw,
    )


def events(*spans: SpanRecord, price: Any = None) -> list[Any]:
    out = Normaliser(price).events_of(list(spans))
    assert all(not isinstance(e, str) for e in out), out
    return [e for group in out for e in group]  # type: ignore[union-attr]


def test_genai_chat_span_current_names() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "yo"}]}]
        ),
        "gen_ai.conversation.id": "conv-9",
    }
    request, usage = events(span(attrs), price=lambda m, i, o: (i * 0.15 + o * 0.6) / 1e6)
    assert (request.type, usage.type) == ("llm.request", "llm.usage")
    assert request.id == f"{TRACE}-{CHILD}-request" and usage.id == f"{TRACE}-{CHILD}-usage"
    assert request.data["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert usage.data["input_tokens"] == 1000 and usage.data["output_tokens"] == 500
    assert usage.data["cost_usd"] == pytest.approx(0.00045)
    assert usage.data["latency_s"] == pytest.approx(1.5)
    assert usage.data["completion"] == "yo"
    assert usage.subject == "llm:openai/gpt-4o-mini"
    assert usage.sessionid == "conv-9" and usage.instanceid == "pod-1" and usage.agentid == "my-app"
    assert usage.traceid == TRACE and usage.traceparent == f"00-{TRACE}-{CHILD}-01"
    assert usage.extensions["parentspanid"] == ROOT
    assert usage.data["otel"]["attributes"] == attrs  # the raw map
    assert request.time < usage.time


def test_genai_deprecated_aliases() -> None:
    attrs = {
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3-haiku",
        "gen_ai.usage.prompt_tokens": 7,
        "gen_ai.usage.completion_tokens": 3,
        "gen_ai.prompt": json.dumps([{"role": "user", "content": "q"}]),
        "gen_ai.completion": json.dumps([{"role": "assistant", "content": "a"}]),
    }
    facts = read(attrs)
    assert (facts.role, facts.dialect, facts.provider) == ("llm", "gen_ai", "anthropic")
    assert (facts.input_tokens, facts.output_tokens) == (7, 3)
    assert facts.messages == [{"role": "user", "content": "q"}] and facts.completion == "a"


def test_genai_messages_on_span_events() -> None:
    from loom_ingest.otlp_wire import SpanEvent

    details = SpanEvent(
        "gen_ai.client.inference.operation.details",
        1,
        {
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "e"}]}]
            )
        },
    )
    facts = read({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, [details])
    assert facts.messages == [{"role": "user", "content": "e"}]


def test_genai_tool_and_agent_spans_nest() -> None:
    agent = span(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner", "output.value": "done"},
        span_id=ROOT,
        parent=None,
    )
    tool = span(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "search",
            "gen_ai.tool.call.id": "c1",
            "gen_ai.tool.call.arguments": '{"q": "x"}',
            "gen_ai.tool.call.result": '{"hits": 2}',
        },
        status_code="ERROR",
        status_message="boom",
    )
    child_agent = span(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"}, span_id="03" * 8
    )
    out = events(agent, tool, child_agent)
    by_type: dict[str, list[Any]] = {}
    for e in out:
        by_type.setdefault(e.type, []).append(e)
    call, result = by_type["tool.call"][0], by_type["tool.result"][0]
    assert call.data["arguments"] == {"q": "x"} and call.agentid == "planner"  # the enclosing agent
    assert result.data["content"] == {"hits": 2} and result.data["is_error"] is True
    assert result.subject == "tool:search"
    assert by_type["error"][0].data["error"] == "boom"
    delegation = by_type["agent.action"][0]
    assert (delegation.agentid, delegation.subject, delegation.data["agent"]) == (
        "planner",
        "agent:writer",
        "writer",
    )
    answers = {e.agentid: e.data["answer"] for e in by_type["agent.answer"]}
    assert answers == {"planner": "done", "writer": None}


def test_openinference_llm_span() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o",
        "llm.provider": "openai",
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 4,
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "sys",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": "hello",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "t1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "calc",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"e": "1+1"}',
        "llm.cost.total": 0.25,
        "session.id": "s-1",
    }
    request, usage = events(span(attrs))
    assert request.data["messages"][1] == {"role": "user", "content": "hello"}
    assert usage.data["tool_calls"] == [{"call_id": "t1", "name": "calc", "arguments": {"e": "1+1"}}]
    assert usage.data["cost_usd"] == 0.25 and usage.sessionid == "s-1"
    assert usage.data["otel"]["dialect"] == "openinference"


def test_openinference_tool_and_chain_spans() -> None:
    tool = read(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "calc",
            "input.value": '{"e": "2"}',
            "output.value": "2",
        }
    )
    assert (tool.role, tool.tool_name, tool.tool_arguments, tool.tool_result) == (
        "tool",
        "calc",
        {"e": "2"},
        "2",
    )
    assert classify({"openinference.span.kind": "CHAIN"}) == ("other", "openinference")
    assert classify({"openinference.span.kind": "AGENT", "agent.name": "a"}) == ("agent", "openinference")


def test_traceloop_indexed_prompt() -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024",
        "gen_ai.usage.prompt_tokens": 5,
        "gen_ai.usage.completion_tokens": 2,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "ping",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "pong",
        "gen_ai.completion.0.tool_calls.0.name": "f",
        "gen_ai.completion.0.tool_calls.0.id": "x",
        "gen_ai.completion.0.tool_calls.0.arguments": "{}",
        "traceloop.association.properties.session_id": "tl-session",
    }
    facts = read(attrs)
    assert (facts.role, facts.dialect) == ("llm", "traceloop")
    assert facts.messages == [{"role": "user", "content": "ping"}] and facts.completion == "pong"
    assert facts.model == "gpt-4o-mini-2024" and facts.request_model == "gpt-4o-mini"
    assert facts.tool_calls == [{"call_id": "x", "name": "f", "arguments": {}}]
    assert facts.session_id == "tl-session"
    tool = read(
        {
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "lookup",
            "traceloop.entity.input": '{"k": 1}',
        }
    )
    assert (tool.role, tool.tool_name, tool.tool_arguments) == ("tool", "lookup", {"k": 1})
    assert classify({"traceloop.span.kind": "workflow"}) == ("other", "traceloop")


def test_plain_span_and_fixed_identity() -> None:
    plain = span({"http.method": "GET"}, name="GET /x")
    (first,) = events(plain)
    (again,) = events(plain)
    assert first.type == SPAN_EVENT_TYPE and first.data["name"] == "GET /x"
    assert first.model_dump() == again.model_dump()  # exported twice: the same event


def _request(hex_ids: bool) -> dict[str, Any]:
    trace_id, span_id = TRACE, CHILD
    if not hex_ids:
        trace_id = base64.b64encode(bytes.fromhex(TRACE)).decode()
        span_id = base64.b64encode(bytes.fromhex(CHILD)).decode()
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "sc"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "chat m",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
                                    {"key": "list", "value": {"arrayValue": {"values": [{"intValue": 1}]}}},
                                ],
                                "status": {"code": 2, "message": "bad"},
                                "unknownField": 1,
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_json_and_protobuf_bodies_give_the_same_events() -> None:
    from_json = parse_request(json.dumps(_request(hex_ids=True)).encode(), JSON)
    message = ExportTraceServiceRequest()
    json_format.ParseDict(_request(hex_ids=False), message, ignore_unknown_fields=True)
    from_proto = parse_request(message.SerializeToString(), PROTOBUF)
    a = [s for s in spans_of(from_json)]
    b = [s for s in spans_of(from_proto)]
    assert a == b
    (record,) = a
    assert isinstance(record, SpanRecord)
    assert record.kind == "CLIENT" and record.status_code == "ERROR" and record.attributes["list"] == [1]
    assert [e.model_dump() for e in events(record)] == [e.model_dump() for e in events(b[0])]  # type: ignore[arg-type]


def test_bad_bodies_and_limits() -> None:
    with pytest.raises(BadBody, match="not hex"):
        parse_request(
            json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}).encode(), JSON
        )
    with pytest.raises(BadBody, match="not a protobuf"):
        parse_request(b"\x0a\xff", PROTOBUF)
    with pytest.raises(BadBody, match="not supported"):
        decompress(b"x", "br", 100)
    with pytest.raises(TooLarge):
        decompress(gzip.compress(b"a" * 1000), "gzip", 100)
    with pytest.raises(BadBody, match="truncated"):
        decompress(gzip.compress(b"a" * 1000)[:-12], "gzip", 10_000)
    assert decompress(gzip.compress(b"abc"), "gzip", 100) == b"abc"
