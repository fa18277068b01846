"""The OTLP/JSON export's pure part: stored events in, spans out."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from loom_query.export import SpanBuilder, any_value, export_filter, export_request

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _event(id_: str, type_: str, time: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "type": type_,
        "source": "loom://w",
        "specversion": "1.0",
        "time": f"2030-01-01T00:00:{time}Z",
        "traceid": TRACE,
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
        "data": data,
        **extra,
    }


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def _spans(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    body = export_request(SpanBuilder().add_all(events))
    spans = [s for r in body["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    return {s["name"]: s for s in spans}


def test_loom_events_become_genai_spans_under_the_task_agent_span() -> None:
    ids = {"taskid": "t1", "agentid": "calculator", "instanceid": "w-1", "sessionid": "s1"}
    events = [
        _event("e1", "task.started", "00", {}, **ids),
        _event(
            "e2", "llm.request", "01", {"step": 1, "provider": "openai", "model": "m1", "messages": []}, **ids
        ),
        _event("e3", "llm.usage", "02", {"input_tokens": 40, "output_tokens": 12, "model": "m1"}, **ids),
        _event("e4", "tool.call", "03", {"call_id": "c1", "name": "calc", "arguments": {"x": 1}}, **ids),
        _event(
            "e5",
            "tool.result",
            "04",
            {"call_id": "c1", "name": "calc", "content": 42, "is_error": True},
            **ids,
        ),
        _event("e6", "agent.answer", "05", {"answer": "42"}, **ids),
    ]
    spans = _spans(events)
    assert set(spans) == {"invoke_agent calculator", "chat m1", "execute_tool calc"}
    agent, chat, tool = spans["invoke_agent calculator"], spans["chat m1"], spans["execute_tool calc"]
    assert agent["parentSpanId"] == "00f067aa0ba902b7"  # the context the task ran in
    assert chat["parentSpanId"] == tool["parentSpanId"] == agent["spanId"]
    assert (int(agent["startTimeUnixNano"]), int(agent["endTimeUnixNano"])) == (
        1893456000 * 10**9,
        1893456005 * 10**9,
    )
    assert int(chat["endTimeUnixNano"]) - int(chat["startTimeUnixNano"]) == 10**9
    assert chat["kind"] == 3 and tool["kind"] == 1
    assert (
        _attrs(chat).items()
        >= {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "m1",
            "gen_ai.usage.input_tokens": "40",
            "gen_ai.usage.output_tokens": "12",
            "gen_ai.agent.name": "calculator",
            "gen_ai.conversation.id": "s1",
        }.items()
    )
    assert _attrs(tool)["gen_ai.tool.call.result"] == "42" and tool["status"]["code"] == 2
    assert [e["name"] for e in agent["events"]] == ["task.started"]
    assert "gen_ai.output.messages" in _attrs(agent)
    # stable: the same events give the same ids
    assert _spans(events)["chat m1"]["spanId"] == chat["spanId"]


def test_an_otlp_born_span_is_exported_as_it_came() -> None:
    raw = {
        "span_id": "1111111111111111",
        "parent_span_id": "2222222222222222",
        "name": "ChatOpenAI",
        "kind": "CLIENT",
        "status": {"code": "ERROR", "message": "boom"},
        "attributes": {"openinference.span.kind": "LLM", "llm.token_count.prompt": 3},
        "resource": {"service.name": "app"},
        "scope": {"name": "openinference", "version": "1.0"},
    }
    ext = {
        "spanid": "1111111111111111",
        "parentspanid": "2222222222222222",
        "taskid": TRACE,
        "agentid": "app",
    }
    events = [
        _event("a", "llm.request", "01", {"otel": {"trace_id": TRACE, "span_id": "1111111111111111"}}, **ext),
        _event("b", "llm.usage", "03", {"latency_s": 2.0, "otel": raw}, **ext),
        _event("c", "error", "03", {"otel": {"trace_id": TRACE, "span_id": "1111111111111111"}}, **ext),
    ]
    body = export_request(SpanBuilder().add_all(events))
    [resource] = body["resourceSpans"]
    assert resource["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "app"}}]
    [scope] = resource["scopeSpans"]
    assert scope["scope"] == {"name": "openinference", "version": "1.0"}
    [span] = scope["spans"]
    assert span["name"] == "ChatOpenAI" and span["kind"] == 3
    assert (span["spanId"], span["parentSpanId"]) == ("1111111111111111", "2222222222222222")
    assert span["status"] == {"code": 2, "message": "boom"}
    assert _attrs(span) == {"openinference.span.kind": "LLM", "llm.token_count.prompt": "3"}
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 2 * 10**9


def test_values_and_filters() -> None:
    assert any_value({"a": [1, 2.5, True, None]}) == {
        "kvlistValue": {
            "values": [
                {
                    "key": "a",
                    "value": {
                        "arrayValue": {
                            "values": [{"intValue": "1"}, {"doubleValue": 2.5}, {"boolValue": True}, {}]
                        }
                    },
                }
            ]
        }
    }
    with pytest.raises(RequestValidationError):
        export_filter(None, None, None)
    f = export_filter(TRACE.upper(), None, None)
    assert f.trace_id == TRACE and f.kinds == ("event",)
