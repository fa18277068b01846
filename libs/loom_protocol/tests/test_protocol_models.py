"""Agents, registry, memory, MCP and streaming models: validation rules."""

import pytest
from loom_protocol import (
    AgentCapability,
    AgentCard,
    Heartbeat,
    InstanceLoad,
    McpPrompt,
    McpResource,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    MemberChanged,
    MembershipChange,
    MemoryEntry,
    MemoryOperation,
    MemoryRequest,
    MemoryTier,
    PickReply,
    PickRequest,
    StreamChunk,
    StreamChunkKind,
    validation_reason,
)
from pydantic import ValidationError


def test_enum_values_are_pinned() -> None:
    assert [c.value for c in AgentCapability] == ["reflection", "tool_use", "planning", "multi_agent"]
    assert [c.value for c in MembershipChange] == ["up", "down"]
    assert [t.value for t in MemoryTier] == ["session", "working", "long_term"]
    assert [o.value for o in MemoryOperation] == [
        "store",
        "retrieve",
        "update",
        "delete",
        "search",
        "compress",
    ]
    assert [k.value for k in StreamChunkKind] == [
        "text",
        "tool_call_start",
        "tool_call_delta",
        "tool_call_end",
        "error",
        "done",
    ]


# ---------------------------------------------------------------- agents and registry


def test_agent_card_seed_form() -> None:
    card = AgentCard.model_validate(
        {"agentId": "calc", "name": "Calculator", "capabilities": ["tool_use", "planning"], "tools": ["add"]}
    )
    assert card.capabilities == [AgentCapability.TOOL_USE, AgentCapability.PLANNING]
    assert card.version == "0.1.0" and card.description == ""
    with pytest.raises(ValidationError) as exc_info:
        AgentCard.model_validate({"agentId": "calc.v2", "name": "x"})
    assert validation_reason(exc_info.value).startswith("field 'agentId': String should match pattern")
    with pytest.raises(ValidationError):
        AgentCard.model_validate({"agentId": "calc", "name": "x", "capabilities": ["telepathy"]})


def test_instance_load_free() -> None:
    assert InstanceLoad(in_flight=1, capacity=4).free == 3
    assert InstanceLoad(in_flight=9, capacity=4).free == 0
    with pytest.raises(ValidationError):
        InstanceLoad(in_flight=0, capacity=0)
    with pytest.raises(ValidationError):
        InstanceLoad(in_flight=-1, capacity=1)


def test_heartbeat() -> None:
    heartbeat = Heartbeat.model_validate(
        {
            "instanceId": "worker-1",
            "agents": [{"agentId": "calc", "name": "c"}, {"agentId": "echo", "name": "e"}],
            "host": "node-a",
            "pid": 1234,
            "load": {"inFlight": 1, "capacity": 2},
            "intervalS": 0.5,
        }
    )
    assert heartbeat.agent_ids == ["calc", "echo"]
    assert heartbeat.draining is False and heartbeat.sent_at.tzinfo is not None
    wire = heartbeat.to_wire()
    assert wire["intervalS"] == 0.5 and wire["load"] == {"inFlight": 1, "capacity": 2}
    for bad in ({"instanceId": "w.1"}, {"intervalS": 0}, {"pid": -1}):
        with pytest.raises(ValidationError):
            Heartbeat.model_validate({**heartbeat.to_wire(), **bad})


def test_pick_request_and_reply() -> None:
    request = PickRequest.model_validate({"agentId": "calc", "taskId": "t1", "exclude": ["w1"]})
    assert request.exclude == ["w1"]
    assert PickRequest(agent_id="calc").exclude == []
    reply = PickReply(agent_id="calc", reason="no healthy instance")
    assert reply.instance_id is None and reply.candidates == 0
    assert reply.to_wire() == {"agentId": "calc", "reason": "no healthy instance", "candidates": 0}


def test_member_changed() -> None:
    change = MemberChanged.model_validate(
        {"instanceId": "w1", "change": "down", "reason": "missed 3 heartbeats"}
    )
    assert change.change is MembershipChange.DOWN and change.agents == []
    with pytest.raises(ValidationError):
        MemberChanged.model_validate({"instanceId": "w1", "change": "sideways"})


# ---------------------------------------------------------------- memory


def test_memory_entry() -> None:
    entry = MemoryEntry(node_id="calc", content="6*7=42")
    assert entry.tier is MemoryTier.SESSION and entry.importance == 0.5 and entry.entry_id
    for importance in (-0.1, 1.1):
        with pytest.raises(ValidationError):
            MemoryEntry(node_id="calc", content="x", importance=importance)


@pytest.mark.parametrize(
    ("operation", "fields", "missing"),
    [
        ("store", {}, "'entry'"),
        ("update", {"entryId": "e1"}, "'entry'"),
        ("update", {"entry": {"nodeId": "n", "content": "c"}}, "'entryId'"),
        ("update", {}, "'entryId', 'entry'"),
        ("delete", {}, "'entryId'"),
        ("search", {}, "'query'"),
        ("search", {"query": ""}, "'query'"),
    ],
)
def test_memory_request_requires_fields_per_operation(
    operation: str, fields: dict[str, object], missing: str
) -> None:
    with pytest.raises(ValidationError) as exc_info:
        MemoryRequest.model_validate({"operation": operation, "nodeId": "n", **fields})
    assert validation_reason(exc_info.value) == f"operation '{operation}' requires {missing}"


@pytest.mark.parametrize(
    "fields",
    [
        {"operation": "store", "entry": {"nodeId": "n", "content": "c"}},
        {"operation": "update", "entryId": "e1", "entry": {"nodeId": "n", "content": "c"}},
        {"operation": "delete", "entryId": "e1"},
        {"operation": "search", "query": "cats", "limit": 1000},
        {"operation": "retrieve"},
        {"operation": "compress", "tier": "long_term"},
    ],
)
def test_memory_request_valid_operations(fields: dict[str, object]) -> None:
    request = MemoryRequest.model_validate({"nodeId": "n", **fields})
    assert request.operation == fields["operation"]


def test_memory_request_limit_bounds() -> None:
    for limit in (0, 1001):
        with pytest.raises(ValidationError):
            MemoryRequest(operation=MemoryOperation.RETRIEVE, node_id="n", limit=limit)


# ---------------------------------------------------------------- MCP


def test_mcp_tool_definition_uses_mcp_wire_names() -> None:
    tool = McpToolDefinition(name="add", description="Add numbers")
    assert tool.to_wire() == {
        "name": "add",
        "description": "Add numbers",
        "inputSchema": {"type": "object", "properties": {}},
    }
    parsed = McpToolDefinition.model_validate(
        {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}}
    )
    assert parsed.input_schema["properties"] == {"a": {"type": "number"}}
    # The default schema is not shared between instances.
    tool.input_schema["properties"]["x"] = {}
    assert McpToolDefinition(name="other").input_schema == {"type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "dot.ted", "slash/ed"])
def test_mcp_tool_name_pattern(name: str) -> None:
    with pytest.raises(ValidationError):
        McpToolDefinition(name=name)


def test_mcp_other_models_wire_names() -> None:
    assert (
        McpResource(uri="file:///a", name="a", mime_type="text/plain").to_wire()["mimeType"] == "text/plain"
    )
    prompt = McpPrompt.model_validate({"name": "p", "arguments": [{"name": "x", "required": True}]})
    assert prompt.arguments[0].required is True
    call = McpToolCall(name="add", arguments={"a": 1})
    result = McpToolResult(call_id=call.call_id, name="add", content=3, is_error=False, duration_ms=1.5)
    assert result.to_wire() == {
        "callId": call.call_id,
        "name": "add",
        "content": 3,
        "isError": False,
        "durationMs": 1.5,
    }
    assert McpToolCall(name="add").call_id != call.call_id
    with pytest.raises(ValidationError):
        McpToolResult(call_id="c", name="add", duration_ms=-1)


# ---------------------------------------------------------------- streaming


def test_stream_chunk_kinds_require_their_payload() -> None:
    assert StreamChunk(task_id="t", seq=0, kind=StreamChunkKind.TEXT, text="hi").text == "hi"
    assert StreamChunk(task_id="t", seq=5, kind=StreamChunkKind.DONE).kind is StreamChunkKind.DONE
    for kind, field in (("text", "text"), ("error", "error"), ("tool_call_start", "toolCall")):
        with pytest.raises(ValidationError) as exc_info:
            StreamChunk.model_validate({"taskId": "t", "seq": 0, "kind": kind})
        assert validation_reason(exc_info.value) == f"a '{kind}' chunk requires '{field}'"
    with pytest.raises(ValidationError):
        StreamChunk(task_id="t", seq=-1, kind=StreamChunkKind.DONE)
    with pytest.raises(ValidationError):
        StreamChunk(task_id="bad.id", seq=0, kind=StreamChunkKind.DONE)
