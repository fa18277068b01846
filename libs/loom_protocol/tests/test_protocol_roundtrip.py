"""Every wire model survives to_json -> from_json, to_wire -> model_validate and snake_case input."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from loom_protocol import (
    EVENT_PAYLOADS,
    WIRE_MODELS,
    AgentAction,
    AgentAnswer,
    AgentCapability,
    AgentCard,
    AgentThought,
    ApiKeyList,
    ApiKeyRecord,
    ApprovalDecided,
    ApprovalDecision,
    ApprovalInput,
    ApprovalRequest,
    ApprovalRequested,
    BatchError,
    CloudEvent,
    CreatedApiKey,
    ErrorBody,
    ErrorDetail,
    ErrorReported,
    EventBatch,
    EventBatchAck,
    FieldError,
    ForkChanges,
    ForkInfo,
    Heartbeat,
    InstanceLoad,
    JournalEntry,
    JournalKind,
    KnownAgents,
    Liveness,
    LlmRequest,
    LlmUsage,
    LoomModel,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    MemberChanged,
    MembershipChange,
    MemoryAdded,
    MemoryConsolidated,
    MemoryEntry,
    MemoryTier,
    NewApiKey,
    PickReply,
    PickRequest,
    Readiness,
    RecordedChild,
    RecordedLlmStep,
    RecordedOutcome,
    RecordedToolStep,
    Recording,
    RejectedMessage,
    ReplayCounts,
    ReplayMode,
    ReplayReport,
    ReplaySpec,
    Scope,
    Task,
    TaskAction,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskEventData,
    TaskResumed,
    TaskStatus,
    TaskStatusChanged,
    TaskStreamChunk,
    TaskSubmission,
    ToolCalled,
    ToolReturned,
    TraceContext,
    new_event,
)
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

AT = datetime(2025, 6, 1, 8, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=-4)))
TRACE = TraceContext(traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate="k=v")
APPROVAL = ApprovalRequest(
    key="2.1",
    tool="transfer",
    arguments={"amount": 10.5, "to": "acct-1"},
    reasoning="pay the invoice",
    call_id="c2",
    step=2,
    attempt=3,
    requested_at=AT,
)
DECISION = ApprovalDecision(
    key="1.0", tool="add", approved=True, arguments={"a": 2}, by="alice", reason="ok", decided_at=AT
)
TASK = Task(
    task_id="t:1",
    source_agent="concierge",
    target_agent="calc",
    action=TaskAction.STREAM,
    parameters={"x": [1, 2.5, None, {"y": "z"}], "unicode": "日本語"},
    status=TaskStatus.INPUT_REQUIRED,
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
    pending_approval=APPROVAL,
    approvals=[DECISION],
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
    "TaskStatusChanged": TaskStatusChanged.from_task(TASK, approval=APPROVAL),
    "TaskCancelRequested": TaskCancelRequested(task_id="t:1", reason="user", at=AT),
    "TaskStreamChunk": TaskStreamChunk(task_id="t:1", index=2, delta="lo ", step=3, attempt=2),
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
    "KnownAgents": KnownAgents(agent_ids=["calculator", "echo"]),
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
    "McpToolDefinition": McpToolDefinition(
        name="add", description="d", input_schema={"type": "object", "properties": {"a": {"type": "number"}}}
    ),
    "McpToolCall": CALL,
    "McpToolResult": McpToolResult(
        call_id="c1", name="add", content=[{"type": "text", "text": "3"}], is_error=True, duration_ms=2.5
    ),
    "LlmRequest": LlmRequest(
        step=1, message_count=2, provider="scripted", model="m", tools=["add"], message_digests=["d"]
    ),
    "LlmUsage": LlmUsage(step=1, input_tokens=3, output_tokens=4, cost_usd=0.5, latency_s=0.1, model="m"),
    "AgentThought": AgentThought(content="think", step=1, plan=[{"agent": "calc", "parameters": {}}]),
    "AgentAction": AgentAction(step=1, tool="add", arguments={"a": 1}, call_id="c1"),
    "AgentAnswer": AgentAnswer(answer="3", steps=2, children=0),
    "ToolCalled": ToolCalled(call_id="c1", name="add", arguments={"a": 1}),
    "ToolReturned": ToolReturned(call_id="c1", name="add", content={"x": 3}, is_error=False, duration_ms=1.5),
    "MemoryAdded": MemoryAdded(
        entry_id="e1",
        node_id="calc",
        tier=MemoryTier.WORKING,
        content="c",
        importance=0.25,
        role="observation",
        metadata={"role": "observation"},
        created_at="2025-06-01T12:30:00Z",
    ),
    "MemoryConsolidated": MemoryConsolidated(
        promoted_ids=["e1"],
        dropped_ids=["e2", "e3"],
        promoted=1,
        dropped_working=2,
        session=0,
        working=1,
        long_term=1,
        threshold=0.7,
        keep_working=1,
    ),
    "ErrorReported": ErrorReported(error="boom", exception="ValueError", reason="r", dropped=2),
    "TaskEventData": TaskEventData(status="dispatched", attempt=2, instance_id="w-1", reason="r"),
    "TaskResumed": TaskResumed(attempt=2, restored_steps=3, llm_steps=1, tool_steps=1, child_steps=1),
    "ApprovalRequested": ApprovalRequested(
        key="2.1", tool="transfer", arguments={"amount": 10.5}, reasoning="pay", call_id="c2", step=2
    ),
    "ApprovalDecided": ApprovalDecided(
        key="2.1", tool="transfer", approved=False, by="timeout", reason="waited too long", edited=False
    ),
    "ApprovalRequest": APPROVAL,
    "ApprovalDecision": DECISION,
    "ApprovalInput": ApprovalInput(arguments={"amount": 5}, by="alice", reason="smaller, please"),
    "JournalEntry": JournalEntry(
        kind=JournalKind.TOOL,
        attempt=2,
        instance_id="w-1",
        at=AT,
        tool=RecordedToolStep(step=2, call=CALL, result=McpToolResult(call_id=CALL.call_id, name="add")),
    ),
    "Recording": Recording(
        agent="calc",
        llm=[
            RecordedLlmStep(step=1, content="c", tool_calls=[CALL], input_tokens=1, request_digests=["d"]),
            RecordedLlmStep(step=2, error="HTTP 500"),
        ],
        tools=[RecordedToolStep(step=1, call=CALL, result=McpToolResult(call_id=CALL.call_id, name="add"))],
        children=[RecordedChild(index=0, agent="echo", parameters={"p": 1}, task_id="t:2", result="r")],
        outcome=RecordedOutcome(status="completed", answer="3", steps=2),
    ),
    "RecordedLlmStep": RecordedLlmStep(step=3, content="x", cost_usd=0.25, latency_s=0.5, model="m"),
    "RecordedToolStep": RecordedToolStep(
        step=2, call=CALL, result=McpToolResult(call_id=CALL.call_id, name="add", content=3)
    ),
    "RecordedChild": RecordedChild(index=1, agent="echo", status="failed", error="e"),
    "RecordedOutcome": RecordedOutcome(status="failed", error="e", result={"a": 1}),
    "ReplaySpec": ReplaySpec(
        mode=ReplayMode.FORK,
        recording=Recording(agent="calc"),
        original_task_id="t:1",
        from_step=2,
        changes=ForkChanges(model="m2", tools=["add"], max_steps=3),
    ),
    "ForkChanges": ForkChanges(provider="scripted", system_prompt="be brief"),
    "ReplayReport": ReplayReport(
        diverged=True,
        step=2,
        at="tool",
        index=0,
        expected={"name": "add"},
        got={"name": "sub"},
        reason="r",
        replayed=ReplayCounts(llm_calls=2, tool_calls=1),
    ),
    "ReplayCounts": ReplayCounts(llm_calls=1, tool_calls=2, children=3),
    "ForkInfo": ForkInfo(original_task_id="t:1", from_step=2, replayed=1),
    "TaskSubmission": TaskSubmission(
        task_id="t:2",
        source_agent="replay",
        target_agent="calc",
        parameters={"x": 1},
        metadata={"forkOf": "t:1"},
        session_id="s-1",
    ),
    "ErrorBody": ErrorBody.of(404, "no task with id 'x'"),
    "ErrorDetail": ErrorDetail(code="not_found", message="no task with id 'x'"),
    "FieldError": FieldError(field="query.limit", reason="too large"),
    "Liveness": Liveness.ok(),
    "ApiKeyRecord": ApiKeyRecord.of("loom_example", "ci", [Scope.SUBMIT, Scope.READ]),
    "NewApiKey": NewApiKey(name="ci", scopes=[Scope.READ]),
    "CreatedApiKey": CreatedApiKey(
        key="loom_example", record=ApiKeyRecord.of("loom_example", "ci", [Scope.ADMIN])
    ),
    "ApiKeyList": ApiKeyList(keys=[ApiKeyRecord.of("loom_example", "ci", [Scope.READ])]),
    "Readiness": Readiness.of("database down", nats=True, database=False),
}

# event payloads keep the snake_case keys of the stored event data
SNAKE_CASE = {model.__name__ for model in EVENT_PAYLOADS.values() if model.__name__ != "MemberChanged"}


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


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - {"CloudEvent"} - SNAKE_CASE))
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
