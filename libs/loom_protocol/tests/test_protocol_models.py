"""Agents, registry, memory and tool-call models: validation rules."""

import pytest
from loom_protocol import (
    AgentCapability,
    AgentCard,
    Heartbeat,
    InstanceLoad,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    MemberChanged,
    MembershipChange,
    MemoryEntry,
    MemoryTier,
    PickReply,
    PickRequest,
    validation_reason,
)
from pydantic import ValidationError


def test_enum_values_are_pinned() -> None:
    assert [c.value for c in AgentCapability] == ["reflection", "tool_use", "planning", "multi_agent"]
    assert [c.value for c in MembershipChange] == ["up", "down"]
    assert [t.value for t in MemoryTier] == ["session", "working", "long_term"]


# ---------------------------------------------------------------- agents and registry


def test_agent_card_a2a_form() -> None:
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


def test_mcp_call_and_result_wire_names() -> None:
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
