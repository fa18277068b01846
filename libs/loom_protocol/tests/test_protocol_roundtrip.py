"""Every wire model survives to_json -> from_json, to_wire -> model_validate and snake_case input."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from loom_protocol import (
    WIRE_MODELS,
    AgentCapability,
    AgentCard,
    BatchError,
    CloudEvent,
    EventBatch,
    EventBatchAck,
    Heartbeat,
    InstanceLoad,
    LoomModel,
    McpPrompt,
    McpPromptArgument,
    McpResource,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    MemberChanged,
    MembershipChange,
    MemoryEntry,
    MemoryOperation,
    MemoryRequest,
    MemoryResponse,
    MemoryTier,
    PickReply,
    PickRequest,
    RejectedMessage,
    StreamChunk,
    StreamChunkKind,
    Task,
    TaskAction,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    TraceContext,
    new_event,
)
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

AT = datetime(2025, 6, 1, 8, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=-4)))
TRACE = TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate="k=v")
TASK = Task(
    task_id="t:1",
    source_agent="concierge",
    target_agent="calc",
    action=TaskAction.STREAM,
    parameters={"x": [1, 2.5, None, {"y": "z"}], "unicode": "日本語"},
    status=TaskStatus.RUNNING,
    result={"partial": True},
    error="",
    metadata={"k": None},
    parent_task_id="t:0",
    session_id="s-1",
    attempt=3,
    instance_id="w-1",
    created_at=AT,
    updated_at=AT + timedelta(seconds=1),
    trace=TRACE,
)
CARD = AgentCard(
    agent_id="calc",
    name="Calculator",
    description="adds",
    version="1.2.3",
    capabilities=[AgentCapability.TOOL_USE],
    tools=["add"],
    metadata={"lang": "en"},
)
ENTRY = MemoryEntry(
    entry_id="e1",
    node_id="calc",
    tier=MemoryTier.LONG_TERM,
    content="c",
    importance=0.9,
    metadata={"a": 1},
    created_at=AT,
)
CALL = McpToolCall(call_id="c1", name="add", arguments={"a": 1, "b": 2})

EXAMPLES: dict[str, LoomModel] = {
    "Task": TASK,
    "TraceContext": TRACE,
    "TaskStatusChanged": TaskStatusChanged.from_task(TASK),
    "TaskCancelRequested": TaskCancelRequested(task_id="t:1", reason="user", at=AT),
    "TaskDeadLettered": TaskDeadLettered(task=TASK, reason="exhausted", at=AT),
    "RejectedMessage": RejectedMessage(subject="loom.task.submitted.calc", reason="bad", raw=b"\xff{", at=AT),
    "AgentCard": CARD,
    "InstanceLoad": InstanceLoad(in_flight=1, capacity=4),
    "Heartbeat": Heartbeat(
        instance_id="w-1",
        agents=[CARD],
        host="h",
        pid=42,
        load=InstanceLoad(in_flight=1, capacity=4),
        version="0.2.0",
        draining=True,
        interval_s=0.25,
        sent_at=AT,
    ),
    "PickRequest": PickRequest(agent_id="calc", task_id="t:1", exclude=["w-2"]),
    "PickReply": PickReply(agent_id="calc", instance_id="w-1", reason=None, candidates=2),
    "MemberChanged": MemberChanged(
        instance_id="w-1", change=MembershipChange.DOWN, agents=["calc"], reason="missed 3 heartbeats", at=AT
    ),
    "CloudEvent": new_event(
        "tool.result",
        "loom://agent-worker/w-1",
        data={"value": 3},
        subject="add",
        task_id="t:1",
        session_id="s-1",
        parent_task_id="t:0",
        traceparent=TRACE.traceparent,
        tracestate="k=v",
        instance_id="w-1",
        agent_id="calc",
        time=AT,
        id="ev-1",
        extensions={"studiophase": "post", "attempt": 3, "replayed": False},
    ),
    "EventBatch": EventBatch(events=[{"id": "1"}, {"anything": ["goes", 1]}]),
    "EventBatchAck": EventBatchAck(accepted=1, rejected=1, errors=[BatchError(index=0, reason="r")]),
    "BatchError": BatchError(index=3, reason="field 'id': Field required"),
    "MemoryEntry": ENTRY,
    "MemoryRequest": MemoryRequest(
        operation=MemoryOperation.UPDATE,
        node_id="calc",
        tier=MemoryTier.WORKING,
        entry=ENTRY,
        entry_id="e1",
        limit=5,
    ),
    "MemoryResponse": MemoryResponse(success=False, entries=[ENTRY], error="nope"),
    "McpToolDefinition": McpToolDefinition(
        name="add", description="d", input_schema={"type": "object", "properties": {"a": {"type": "number"}}}
    ),
    "McpResource": McpResource(uri="file:///x", name="x", description="d", mime_type="text/plain"),
    "McpPromptArgument": McpPromptArgument(name="a", description="d", required=True),
    "McpPrompt": McpPrompt(name="p", description="d", arguments=[McpPromptArgument(name="a")]),
    "McpToolCall": CALL,
    "McpToolResult": McpToolResult(
        call_id="c1", name="add", content=[{"type": "text", "text": "3"}], is_error=True, duration_ms=2.5
    ),
    "StreamChunk": StreamChunk(
        task_id="t:1", seq=7, kind=StreamChunkKind.TOOL_CALL_START, tool_call=CALL, at=AT
    ),
}


def test_examples_cover_every_wire_model() -> None:
    assert set(EXAMPLES) == set(WIRE_MODELS)
    for name, example in EXAMPLES.items():
        assert type(example) is WIRE_MODELS[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_json_round_trip(name: str) -> None:
    model = EXAMPLES[name]
    again = type(model).from_json(model.to_json())
    assert again == model
    assert again.to_json() == model.to_json()
    assert json.loads(model.to_json()) == model.to_wire()
    assert type(model).from_json(model.to_json().decode()) == model


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_wire_dict_round_trip(name: str) -> None:
    model = EXAMPLES[name]
    assert type(model).model_validate(model.to_wire()) == model


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_snake_case_round_trip(name: str) -> None:
    model = EXAMPLES[name]
    snake = model.model_dump(mode="json", by_alias=False)
    assert type(model).model_validate(snake) == model


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - {"CloudEvent"}))
def test_wire_keys_are_the_camel_case_aliases(name: str) -> None:
    model = EXAMPLES[name]
    fields = type(model).model_fields
    assert all(info.alias == to_camel(field) for field, info in fields.items())
    wire = model.to_wire()
    assert set(wire) <= {info.alias for info in fields.values()}
    # Every field that is not None is on the wire, under its camelCase name.
    assert set(wire) == {info.alias for field, info in fields.items() if getattr(model, field) is not None}


def test_json_round_trip_preserves_instants_across_offsets() -> None:
    again = Task.from_json(TASK.to_json())
    assert again.created_at == AT and again.created_at.utcoffset() == timedelta(hours=-4)
    assert again.updated_at.astimezone(UTC) == (AT + timedelta(seconds=1)).astimezone(UTC)


def test_cloudevent_round_trip_keeps_extensions_top_level() -> None:
    event = EXAMPLES["CloudEvent"]
    assert isinstance(event, CloudEvent)
    wire = event.to_wire()
    assert wire["studiophase"] == "post" and wire["attempt"] == 3 and wire["replayed"] is False
    assert "extensions" not in wire
    again = CloudEvent.from_json(event.to_json())
    assert again.extensions == event.extensions
    assert again.model_extra == {"studiophase": "post", "attempt": 3, "replayed": False}


def test_models_are_base_models() -> None:
    for model in WIRE_MODELS.values():
        assert issubclass(model, BaseModel)
