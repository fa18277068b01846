"""OTLP/HTTP into ingest: the OpenTelemetry SDK's own exporter sends GenAI-convention spans, an
OpenAI client instrumented by OpenInference calls a fake OpenAI-compatible server, and the spans
land in TimescaleDB as Loom's LLM, tool and agent events, in ``/api/topology``, exactly once."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import uuid
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.component.test_llm_path import THOUGHT, TOKENS, FakeModel
from tests.integration.events_support import (
    database_url_fixture,  # noqa: F401 (fixture)
    fetch,
    start_pipeline,
    wait_count,
)
from tests.integration.harness import Stack

pytestmark = pytest.mark.component

_BY_TRACE = "SELECT count(*) FROM events WHERE trace_id = $1"
_ROWS = (
    "SELECT type, subject, agent_id, instance_id, input_tokens, output_tokens, cost_usd, data, attributes "
    "FROM events WHERE trace_id = $1 ORDER BY time, type"
)


def _resource(service: str) -> Resource:
    return Resource.create({"service.name": service, "service.instance.id": f"{service}-1"})


def _agent_trace(tracer: Any, agent: str = "researcher") -> str:
    """An agent span with a chat span and a tool span inside, in GenAI conventions; its trace id."""
    with tracer.start_as_current_span(
        f"invoke_agent {agent}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": "conv-1",
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Paris."}]}]
            ),
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {
                                    "type": "tool_call",
                                    "id": "c1",
                                    "name": "search",
                                    "arguments": {"q": "France"},
                                }
                            ],
                        }
                    ]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
                "gen_ai.tool.call.id": "c1",
                "gen_ai.tool.call.arguments": json.dumps({"q": "France"}),
                "gen_ai.tool.call.result": "Paris is the capital",
            },
        ) as tool:
            tool.set_status(Status(StatusCode.OK))
        return format(root.get_span_context().trace_id, "032x")


async def _flush(provider: TracerProvider) -> None:
    # the exporter is synchronous (requests): run it off the loop that serves ingest
    assert await asyncio.to_thread(provider.force_flush, 10_000)


async def test_real_sdk_exporter_spans_become_events_topology_and_once(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    await stack.nats()
    ingest, query = await start_pipeline(stack, database_url)
    provider = TracerProvider(resource=_resource("research-app"))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces")))
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(captured))
    trace_id = _agent_trace(provider.get_tracer("test"))
    await _flush(provider)

    await wait_count(database_url, _BY_TRACE, 5, 20, trace_id)
    rows = await fetch(database_url, _ROWS, trace_id)
    types = [r["type"] for r in rows]
    assert sorted(types) == sorted(["llm.request", "llm.usage", "tool.call", "tool.result", "agent.answer"])
    by_type = {r["type"]: r for r in rows}
    usage = by_type["llm.usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (120, 30)
    assert usage["subject"] == "llm:openai/gpt-4o-mini"
    usage_data = json.loads(usage["data"]) if isinstance(usage["data"], str) else usage["data"]
    assert usage_data["model"] == "gpt-4o-mini-2024-07-18"
    assert usage_data["provider"] == "openai"
    assert usage_data["tool_calls"][0]["name"] == "search"
    assert usage_data["otel"]["attributes"]["gen_ai.operation.name"] == "chat"  # the raw map is kept
    request_data = by_type["llm.request"]["data"]
    request_data = json.loads(request_data) if isinstance(request_data, str) else request_data
    assert request_data["messages"] == [{"role": "user", "content": "Capital of France?"}]
    assert {r["agent_id"] for r in rows} == {"researcher"}  # children inherit the agent span's name
    assert {r["instance_id"] for r in rows} == {"research-app-1"}
    # parent/child: the chat and tool spans' events name the agent span as their parent
    spans = {s.name: s for s in captured.get_finished_spans()}
    root_id = format(spans["invoke_agent researcher"].context.span_id, "016x")
    for row in rows:
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        if row["type"] == "agent.answer":
            assert attributes["spanid"] == root_id and "parentspanid" not in attributes
        else:
            assert attributes["parentspanid"] == root_id
    tool_result = json.loads(by_type["tool.result"]["data"])
    assert tool_result["content"] == "Paris is the capital" and tool_result["is_error"] is False

    resp = await http.get(f"{query.url}/api/topology", params={"trace_id": trace_id})
    assert resp.status_code == 200, resp.text
    graph = resp.json()
    assert "agent:researcher" in {n["id"] for n in graph["nodes"]}, graph
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert ("agent:researcher", "tool:search") in edges and (
        "agent:researcher",
        "llm:openai/gpt-4o-mini",
    ) in edges

    # the same export again, as protobuf and as gzipped OTLP/JSON: no second row
    spans_list = list(captured.get_finished_spans())
    again = OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces")
    assert (await asyncio.to_thread(again.export, spans_list)).name == "SUCCESS"
    resp = await http.post(
        f"{ingest.url}/v1/traces",
        content=gzip.compress(_otlp_json(spans_list)),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}  # full success: no partialSuccess
    await wait_count(database_url, "SELECT count(*) FROM events", 5, 5)  # the same five rows
    provider.shutdown()


def _otlp_json(spans: list[ReadableSpan]) -> bytes:
    """The OTLP/JSON body of ``spans`` (hex ids, as OTLP/JSON requires, not protobuf's base64)."""
    document = json_format.MessageToDict(encode_spans(spans))

    def hexed(value: Any) -> Any:
        if isinstance(value, list):
            return [hexed(v) for v in value]
        if isinstance(value, dict):
            return {
                k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hexed(v)
                for k, v in value.items()
            }
        return value

    return json.dumps(hexed(document)).encode()


async def test_bad_bodies_get_reasons_and_oversize_is_413(database_url: str, stack: Stack) -> None:
    await stack.nats()
    ingest, _ = await start_pipeline(stack, database_url)
    url = f"{ingest.url}/v1/traces"
    async with httpx.AsyncClient(timeout=10) as client:
        cases: list[tuple[bytes, dict[str, str], int, str]] = [
            (b"\x0a\xff\xff", {"content-type": "application/x-protobuf"}, 400, "not a protobuf"),
            (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
            (b"[]", {"content-type": "application/json"}, 400, "must be a JSON object"),
            (b'{"resourceSpans": 3}', {"content-type": "application/json"}, 400, "OTLP/JSON"),
            (b"abc", {"content-type": "application/json", "content-encoding": "gzip"}, 400, "not valid gzip"),
            (b"{}", {"content-type": "text/plain"}, 415, "not supported"),
        ]
        for body, headers, status, reason in cases:
            resp = await client.post(url, content=body, headers=headers)
            assert resp.status_code == status, (body, resp.text)
            if headers["content-type"] == "application/json":
                assert reason in resp.json()["message"], resp.text
            else:
                assert reason in resp.text, resp.text
        # a gzip bomb: small on the wire, over the limit once inflated
        bomb = gzip.compress(b" " * (17 * 1024 * 1024))
        resp = await client.post(
            url, content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
        assert resp.status_code == 413, resp.text
        # a span with a zero trace id is rejected alone: partial success with the count and reason
        good = uuid.uuid4().hex
        body = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "p"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {"traceId": "0" * 32, "spanId": "1" * 16, "name": "bad", "kind": 1},
                                {
                                    "traceId": good,
                                    "spanId": "2" * 16,
                                    "name": "plain work",
                                    "kind": 1,
                                    "startTimeUnixNano": "1700000000000000000",
                                    "endTimeUnixNano": "1700000000500000000",
                                },
                            ]
                        }
                    ],
                }
            ]
        }
        resp = await client.post(url, json=body)
        assert resp.status_code == 200, resp.text
        partial = resp.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "1" and "trace id" in partial["errorMessage"], partial
    await wait_count(database_url, _BY_TRACE, 1, 10, good)
    rows = await fetch(database_url, "SELECT type, subject FROM events WHERE trace_id = $1", good)
    assert rows[0]["type"] == "otel.span"


# -- a real instrumentation: OpenInference's OpenAI instrumentor and the fake OpenAI server ------


async def test_openinference_instrumented_openai_client(database_url: str, stack: Stack) -> None:
    openai = pytest.importorskip("openai")
    from openinference.instrumentation.openai import OpenAIInstrumentor

    await stack.nats()
    ingest, _ = await start_pipeline(stack, database_url)
    provider = TracerProvider(resource=_resource("oi-app"))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{ingest.url}/v1/traces")))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        async with FakeModel(rate_limited=0).serving() as fake:
            client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "What is 6*7?"}]
            )
        assert reply.choices[0].message.content == THOUGHT
        await _flush(provider)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    usage_sql = "SELECT count(*) FROM events WHERE type = 'llm.usage' AND source = 'otlp://oi-app'"
    await wait_count(database_url, usage_sql, 1, 20)
    rows = await fetch(
        database_url,
        "SELECT type, input_tokens, output_tokens, cost_usd, data FROM events WHERE source = 'otlp://oi-app'",
    )
    by_type = {r["type"]: r for r in rows}
    assert set(by_type) == {"llm.request", "llm.usage"}, rows
    usage = by_type["llm.usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == TOKENS[0]
    usage_data = json.loads(usage["data"])
    assert usage_data["completion"] == THOUGHT
    assert [c["name"] for c in usage_data["tool_calls"]] == ["calculator"]
    # no cost attribute on the span: priced by the table (gpt-4o-mini, $0.15 / $0.60 per Mtok)
    assert usage["cost_usd"] == pytest.approx((TOKENS[0][0] * 0.15 + TOKENS[0][1] * 0.60) / 1_000_000)
    assert usage_data["otel"]["dialect"] == "openinference"
    request = json.loads(by_type["llm.request"]["data"])
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"] == [{"role": "user", "content": "What is 6*7?"}]


# -- Loom's own spans in GenAI conventions --------------------------------------------------------


async def test_worker_spans_carry_genai_attributes_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from loom_agent_worker import emitter
    from loom_ingest.normalise import Normaliser
    from loom_ingest.otlp_wire import spans_of
    from loom_protocol import LlmRequest, LlmUsage, McpToolCall, Task, ToolCalled, ToolReturned

    provider = TracerProvider(resource=_resource("loom-agent-worker"))
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(captured))
    tracer = provider.get_tracer("loom.agent-worker")
    monkeypatch.setattr(emitter, "tracer", tracer)
    sink = emitter.EventEmitter(None, "loom://w", capacity=100, instance_id="w1", outbox=object())  # type: ignore[arg-type]
    task = Task(target_agent="calculator", session_id="sess-1", parameters={})
    with tracer.start_as_current_span("agent calculator"):
        events = sink.for_task(task, "calculator", "w-1")
        messages = [{"role": "user", "content": "6*7?"}]
        events.emit(
            LlmRequest(step=1, provider="openai", model="gpt-4o-mini", messages=messages), subject="llm:x"
        )
        call = McpToolCall(call_id="c1", name="calculator", arguments={"expression": "6*7"})
        events.emit(
            LlmUsage(
                step=1,
                input_tokens=40,
                output_tokens=12,
                model="gpt-4o-mini",
                completion="ok",
                tool_calls=[call],
            )
        )
        events.emit(ToolCalled.from_call(call), subject="tool:calculator")
        events.emit(ToolReturned(call_id="c1", name="calculator", content="42"), subject="tool:calculator")
    spans = {s.name: s for s in captured.get_finished_spans()}
    names = ("invoke_agent calculator", "chat gpt-4o-mini", "execute_tool calculator")
    agent, llm, tool = (spans[name] for name in names)
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.agent.name"] == "calculator"
    assert agent.attributes["gen_ai.conversation.id"] == "sess-1"
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert llm.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert (llm.attributes["gen_ai.usage.input_tokens"], llm.attributes["gen_ai.usage.output_tokens"]) == (
        40,
        12,
    )
    assert json.loads(llm.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "6*7?"}]}
    ]
    assert json.loads(llm.attributes["gen_ai.output.messages"])[0]["parts"][1]["type"] == "tool_call"
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"
    # and Loom's OTLP ingest reads them back as the same kinds of events
    records = [s for s in spans_of(encode_spans(list(spans.values()))) if not isinstance(s, str)]
    made = [e for group in Normaliser().events_of(records) for e in group]  # type: ignore[union-attr]
    assert sorted(e.type for e in made) == sorted(
        ["agent.answer", "llm.request", "llm.usage", "tool.call", "tool.result"]
    )
    assert {e.agentid for e in made} == {"calculator"}
    provider.shutdown()


async def test_worker_spans_without_content_capture_carry_no_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loom_agent_worker import emitter
    from loom_protocol import LlmRequest, LlmUsage, Task

    provider = TracerProvider()
    captured = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(captured))
    monkeypatch.setattr(emitter, "tracer", provider.get_tracer("t"))
    sink = emitter.EventEmitter(None, "loom://w", capacity=10, instance_id="w1", outbox=object())  # type: ignore[arg-type]
    events = sink.for_task(Task(target_agent="a", parameters={}), "a", "w-1")
    events.emit(LlmRequest(step=1, provider="p", model="m", messages=None))
    events.emit(LlmUsage(step=1, input_tokens=1, output_tokens=1, completion=None, content_captured=False))
    (llm,) = captured.get_finished_spans()
    assert "gen_ai.input.messages" not in llm.attributes and "gen_ai.output.messages" not in llm.attributes
    assert llm.attributes["gen_ai.usage.input_tokens"] == 1
