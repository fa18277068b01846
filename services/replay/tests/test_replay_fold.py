from __future__ import annotations

import copy

from loom_replay import fold
from replay_events import Trace


def folded(events: list[dict], upto: int | None = None) -> dict:
    state = fold.new_state()
    for event in events[: None if upto is None else upto + 1]:
        fold.apply(state, copy.deepcopy(event))
    return state


def index_of(events: list[dict], kind: str, task: str | None = None) -> int:
    return next(
        k for k, e in enumerate(events) if e["type"] == kind and (task is None or e.get("taskid") == task)
    )


def test_a_react_run_rebuilds_conversation_tool_results_usage_and_status() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    state = folded(trace.events)

    task = state["tasks"]["t1"]
    assert state["eventsApplied"] == len(trace.events)
    assert task["status"] == "completed" and task["answer"] == "20" and task["steps"] == 2
    assert task["result"] == {"answer": "20", "steps": 2, "usage": {"llm_calls": 2}}
    assert task["parameters"] == {"prompt": "what is (2+3)*4?"}
    assert [(m["role"], m["content"]) for m in task["messages"]] == [
        ("user", "what is (2+3)*4?"),
        ("assistant", "I will evaluate (2+3)*4 with the calculator."),
        ("tool", "20"),
        ("assistant", "20"),
    ]
    assert task["messages"][1]["toolCalls"] == [
        {"callId": "call_0_0", "name": "calculator", "arguments": {"expression": "(2+3)*4"}}
    ]
    assert task["toolResults"] == [
        {"callId": "call_0_0", "name": "calculator", "content": "20", "isError": False, "durationMs": 0.2}
    ]
    assert task["usage"] == {
        "llmCalls": 2,
        "inputTokens": 22,
        "outputTokens": 6,
        "costUsd": 0.5,
        "latencyS": 0.02,
    }
    assert [n["content"] for n in state["memory"]["t1"]["working"]] == [
        "calculator(expression='(2+3)*4') -> 20"
    ]


def test_the_state_at_an_index_is_what_the_events_up_to_it_say() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    events = trace.events
    usage = index_of(events, "llm.usage")
    state = folded(events, usage)
    # the assistant turn exists, its text and tool calls come with the next events
    assert [m["role"] for m in state["tasks"]["t1"]["messages"]] == ["user", "assistant"]
    assert state["tasks"]["t1"]["messages"][1] == {
        "role": "assistant",
        "content": "",
        "toolCalls": [],
        "step": 1,
    }
    assert state["tasks"]["t1"]["status"] == "running"
    before_result = folded(events, index_of(events, "tool.result") - 1)
    assert before_result["tasks"]["t1"]["toolResults"] == []
    assert folded(events, index_of(events, "agent.answer"))["tasks"]["t1"]["status"] == "running"
    assert (
        folded(events, index_of(events, "loom.task.status.completed"))["tasks"]["t1"]["status"] == "completed"
    )


def test_a_terminal_status_is_never_replaced_by_a_late_non_terminal_one() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    trace.bus("loom.task.status.running", "t1", {"taskId": "t1", "status": "running"})
    trace.dispatcher("task.retried", "t1", "pending")
    assert folded(trace.events)["tasks"]["t1"]["status"] == "completed"
    trace.bus("loom.task.dead", "t2", {"task": {"taskId": "t2"}, "reason": "no instance of agent calculator"})
    state = folded(trace.events)
    assert (state["tasks"]["t2"]["status"], state["tasks"]["t2"]["error"]) == (
        "dead",
        "no instance of agent calculator",
    )


def test_memory_consolidation_promotes_and_compresses_like_the_worker() -> None:
    trace = Trace()
    for index, (tier, importance) in enumerate(
        [("session", 0.9), ("session", 0.2), ("session", 0.7), *[("working", 0.3)] * 5]
    ):
        trace.event(
            "memory.add",
            "t1",
            {
                "entry_id": f"n{index}",
                "node_id": "a",
                "tier": tier,
                "content": f"note {index}",
                "importance": importance,
                "role": "note",
            },
            session="s1",
        )
    trace.event(
        "memory.consolidate",
        "t1",
        {
            "promoted_ids": ["n0", "n2"],
            "dropped_ids": ["n3", "n4", "n5"],
            "promoted": 2,
            "dropped_working": 3,
            "threshold": 0.7,
            "keep_working": 2,
        },
        session="s1",
    )
    memory = folded(trace.events)["memory"]["s1"]
    assert [n["content"] for n in memory["session"]] == ["note 1"]
    assert [n["content"] for n in memory["long_term"]] == ["note 0", "note 2"]
    assert [n["content"] for n in memory["working"]] == ["note 6", "note 7"]

    # with memory.add events missing, the fold still applies exactly what the worker did to
    # the notes it knows, instead of re-deriving it from what is left
    missing = [e for e in trace.events if (e.get("data") or {}).get("entry_id") not in ("n0", "n3")]
    memory = folded(missing)["memory"]["s1"]
    assert [n["content"] for n in memory["session"]] == ["note 1"]
    assert [n["content"] for n in memory["long_term"]] == ["note 2"]
    assert [n["content"] for n in memory["working"]] == ["note 6", "note 7"]


def test_consolidation_events_stored_before_the_ids_are_applied_by_their_counts() -> None:
    trace = Trace()
    for index in range(4):
        trace.event("memory.add", "t1", {"tier": "working", "content": f"w{index}", "importance": 0.3})
    trace.event("memory.consolidate", "t1", {"promoted": 0, "dropped_working": 3})
    assert [n["content"] for n in folded(trace.events)["memory"]["t1"]["working"]] == ["w3"]


def test_orchestrator_delegations_and_thoughts() -> None:
    trace = Trace()
    trace.event("agent.thought", "o1", {"content": "plan of 2 step(s)", "plan": []}, agent="orchestrator")
    for index, agent in enumerate(["calculator", "echo"]):
        trace.event(
            "agent.action",
            "o1",
            {"index": index, "agent": agent, "parameters": {"prompt": "x"}},
            agent="orchestrator",
        )
    trace.event("agent.answer", "o1", {"answer": "5; x", "children": 2}, agent="orchestrator")
    task = folded(trace.events)["tasks"]["o1"]
    assert [d["agent"] for d in task["delegations"]] == ["calculator", "echo"]
    assert task["thoughts"] == [{"step": None, "content": "plan of 2 step(s)"}]
    assert task["answer"] == "5; x" and task["messages"] == []


def test_lists_are_bounded_like_the_runtime() -> None:
    trace = Trace()
    for index in range(fold.MAX_TOOL_RESULTS + 5):
        trace.event("tool.result", "t1", {"call_id": f"c{index}", "name": "echo", "content": str(index)})
    task = folded(trace.events)["tasks"]["t1"]
    assert len(task["toolResults"]) == fold.MAX_TOOL_RESULTS
    assert task["toolResultCount"] == fold.MAX_TOOL_RESULTS + 5
    assert task["toolResults"][-1]["content"] == str(fold.MAX_TOOL_RESULTS + 4)


def test_unknown_and_malformed_events_only_count() -> None:
    state = fold.new_state()
    for event in [
        {"type": "custom.thing", "data": {"x": 1}},
        {"type": "tool.result", "data": "not an object"},
        {"type": "llm.usage"},
        {"type": "memory.add", "taskid": "t1", "data": {"tier": "nowhere"}},
    ]:
        fold.apply(state, event)
    assert state["eventsApplied"] == 4
    assert set(state["tasks"]) <= {"t1"}


def test_is_error() -> None:
    assert fold.is_error({"type": "error", "data": {"error": "x"}})
    assert fold.is_error({"type": "tool.result", "data": {"is_error": True}})
    assert fold.is_error({"type": "loom.task.status.failed"})
    assert not fold.is_error({"type": "tool.result", "data": {"is_error": False}})
