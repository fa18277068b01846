"""Typed event payloads, stored row names and the replay contract."""

from __future__ import annotations

import pytest
from loom_protocol import (
    EVENT_PAYLOADS,
    TERMINAL_STATUSES,
    TERMINAL_TASK_EVENT_TYPES,
    AgentAction,
    ApprovalDecided,
    ApprovalRequested,
    EventType,
    LlmUsage,
    MemberChanged,
    MemoryConsolidated,
    Recording,
    ReplayMode,
    ReplaySpec,
    TaskEventData,
    TaskResumed,
    ToolReturned,
    bus_member_type,
    bus_task_status_type,
    event_data,
    new_event,
    status_of_bus_type,
)
from pydantic import ValidationError


def test_event_data_reads_the_stored_snake_case_keys_as_the_model() -> None:
    usage = event_data(
        "llm.usage",
        {"step": 2, "input_tokens": 5, "output_tokens": 1, "cost_usd": None, "latency_s": 0.5, "model": "m"},
    )
    assert usage == LlmUsage(step=2, input_tokens=5, output_tokens=1, latency_s=0.5, model="m")
    result = event_data("tool.result", {"call_id": "c", "name": "add", "content": 3, "is_error": True})
    assert isinstance(result, ToolReturned) and result.is_error and result.content == 3
    # unknown types and non-object data come back untouched
    assert event_data("custom.thing", {"a": 1}) == {"a": 1}
    assert event_data("llm.usage", "text") == "text"
    with pytest.raises(ValidationError):
        event_data("llm.usage", {"input_tokens": -1})


def test_payloads_emit_the_keys_the_producer_set_and_read_through_the_event() -> None:
    action = AgentAction(index=0, agent="calc", parameters={"prompt": "1+1"})
    assert action.to_data() == {"index": 0, "agent": "calc", "parameters": {"prompt": "1+1"}}
    assert action.is_delegation
    usage = LlmUsage(step=1, cost_usd=None)
    assert usage.to_data() == {"step": 1, "cost_usd": None}
    event = new_event(LlmUsage.TYPE, "loom://w", data=usage.to_data())
    assert LlmUsage.of(event) == usage


def test_task_events_and_membership_rows_have_their_models() -> None:
    assigned = event_data("task.assigned", {"status": "dispatched", "attempt": 1, "instanceId": "w-1"})
    assert assigned == TaskEventData(status="dispatched", attempt=1, instance_id="w-1")
    assert assigned.to_data() == {"status": "dispatched", "attempt": 1, "instance_id": "w-1"}
    assert EVENT_PAYLOADS[bus_member_type("up")] is MemberChanged


def test_task_resumed_has_its_own_model_not_the_task_event_data() -> None:
    data = {"attempt": 3, "restored_steps": 4, "llm_steps": 2, "tool_steps": 1, "child_steps": 1}
    resumed = event_data("task.resumed", data)
    assert type(resumed) is TaskResumed
    assert resumed == TaskResumed(attempt=3, restored_steps=4, llm_steps=2, tool_steps=1, child_steps=1)
    assert resumed.to_data() == data
    assert EVENT_PAYLOADS[EventType.TASK_RESUMED] is TaskResumed and TaskResumed.TYPE == "task.resumed"
    with pytest.raises(ValidationError):
        event_data("task.resumed", {"restored_steps": -1})


def test_approval_requested_reads_the_waiting_call() -> None:
    data = {"key": "2.0", "tool": "transfer", "arguments": {"amount": 5}, "call_id": "c1", "step": 2}
    requested = event_data("approval.requested", data)
    assert type(requested) is ApprovalRequested and requested.TYPE == "approval.requested"
    assert (requested.key, requested.tool, requested.arguments, requested.step) == (
        "2.0",
        "transfer",
        {"amount": 5},
        2,
    )
    assert requested.reasoning is None
    assert requested.to_data() == data
    with pytest.raises(ValidationError):
        event_data("approval.requested", {"key": "1.0"})  # no tool
    with pytest.raises(ValidationError):
        event_data("approval.requested", {"key": "1.0", "tool": "t", "step": 0})


@pytest.mark.parametrize(("event_type", "approved"), [("approval.granted", True), ("approval.denied", False)])
def test_both_approval_decisions_read_as_approval_decided(event_type: str, approved: bool) -> None:
    data = {
        "key": "1.0",
        "tool": "add",
        "approved": approved,
        "by": "alice",
        "reason": "r",
        "edited": approved,
    }
    decided = event_data(event_type, data)
    assert type(decided) is ApprovalDecided
    assert decided.approved is approved and decided.edited is approved and decided.by == "alice"
    assert decided.to_data() == data
    event = new_event(event_type, "loom://dispatcher", data=decided.to_data())
    assert ApprovalDecided.of(event) == decided
    with pytest.raises(ValidationError):
        event_data(event_type, {"key": "1.0", "tool": "add"})  # no decision


def test_every_task_event_type_but_resumed_reads_as_task_event_data() -> None:
    for kind in EventType:
        if kind.value.startswith("task.") and kind is not EventType.TASK_RESUMED:
            assert EVENT_PAYLOADS[kind.value] is TaskEventData, kind


def test_stored_row_names_and_the_one_terminal_set() -> None:
    assert bus_task_status_type("completed") == "loom.task.status.completed"
    assert status_of_bus_type("loom.task.status.dead") == "dead"
    assert status_of_bus_type("loom.task.dead") is None
    assert bus_member_type("down") == "loom.registry.member.down"
    with pytest.raises(ValueError):
        bus_task_status_type("teleported")
    assert {t.removeprefix("task.") for t in TERMINAL_TASK_EVENT_TYPES} == set(TERMINAL_STATUSES)
    assert "completed" in TERMINAL_STATUSES and "running" not in TERMINAL_STATUSES


def _tiers() -> dict[str, list[dict[str, object]]]:
    return {
        "session": [{"id": "s1", "i": 0.9}, {"id": "s2", "i": 0.1}, {"id": "s3", "i": 0.8}],
        "working": [{"id": "w1", "i": 0.3}, {"id": "w2", "i": 0.3}, {"id": "w3", "i": 0.3}],
        "long_term": [{"id": "l1", "i": 1.0}],
    }


def _ids(tiers: dict[str, list[dict[str, object]]]) -> dict[str, list[object]]:
    return {tier: [note["id"] for note in notes] for tier, notes in tiers.items()}


def test_memory_consolidate_is_applied_by_its_ids() -> None:
    event = MemoryConsolidated(
        promoted_ids=["s3", "s1"], dropped_ids=["w1"], session=1, working=2, long_term=3
    )
    tiers = _tiers()
    applied = event.apply(tiers, lambda n: n["id"], lambda n: float(n["i"]))  # type: ignore[arg-type]
    assert _ids(applied) == {"session": ["s2"], "working": ["w2", "w3"], "long_term": ["l1", "s1", "s3"]}
    assert event.sizes_match(applied)
    assert _ids(tiers)["session"] == ["s1", "s2", "s3"]  # the input is left alone

    # a reader that missed s1's memory.add still places the rest exactly, and can tell
    tiers["session"] = tiers["session"][1:]
    applied = event.apply(tiers, lambda n: n["id"], lambda n: float(n["i"]))  # type: ignore[arg-type]
    assert _ids(applied) == {"session": ["s2"], "working": ["w2", "w3"], "long_term": ["l1", "s3"]}
    assert not event.sizes_match(applied)


def test_memory_consolidate_without_ids_is_applied_by_its_counts() -> None:
    event = MemoryConsolidated(promoted=2, dropped_working=2)
    assert not event.has_ids
    applied = event.apply(_tiers(), lambda n: n["id"], lambda n: float(n["i"]))  # type: ignore[arg-type]
    assert _ids(applied) == {"session": ["s2"], "working": ["w3"], "long_term": ["l1", "s1", "s3"]}


def test_the_replay_spec_reads_the_camel_case_metadata() -> None:
    spec = ReplaySpec.model_validate(
        {
            "mode": "fork",
            "fromStep": 2,
            "originalTaskId": "t1",
            "changes": {"systemPrompt": "brief", "maxSteps": 4, "script": ["ignored"]},
            "recording": {"llm": [{"step": 1, "toolCalls": [{"callId": "c", "name": "add"}]}]},
        }
    )
    assert spec.mode is ReplayMode.FORK and spec.from_step == 2
    assert (spec.changes.system_prompt, spec.changes.max_steps) == ("brief", 4)
    assert spec.recording.llm[0].tool_calls[0].call_id == "c"
    assert ReplaySpec.model_validate(spec.to_wire()) == spec
    assert Recording().steps == 1 and spec.recording.steps == 1
    with pytest.raises(ValidationError):
        ReplaySpec.model_validate({"mode": "rewind"})
