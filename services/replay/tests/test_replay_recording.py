from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from loom_protocol import RecordedChild, RecordedLlmStep, RecordedToolStep, Recording, Task
from loom_replay.errors import Invalid
from loom_replay.recording import (
    Overrides,
    build_recording,
    conversation,
    summary_of_record,
    summary_of_task,
    task_history,
)
from loom_replay.runs import compare
from replay_events import Trace


def rows(events: list[dict[str, Any]], task: str) -> list[tuple[str, datetime, dict[str, Any]]]:
    return [
        ("task" if e["type"].startswith("loom.task.") else "event", datetime.fromisoformat(e["time"]), e)
        for e in events
        if e.get("taskid") == task
    ]


def recorded(trace: Trace, task: str = "t1", children: list[str] = ()) -> tuple[Any, Recording]:
    record = task_history(task, rows(trace.events, task))
    child_records = [task_history(child, rows(trace.events, child)) for child in children]
    return record, build_recording(record, child_records)


def test_a_react_run_gives_every_llm_response_and_tool_result() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    record, recording = recorded(trace)

    assert (record.agent, record.status, record.final) == ("calculator", "completed", True)
    assert record.parameters == {"prompt": "what is (2+3)*4?"}
    assert record.trace_id == trace.trace_id
    assert recording.llm == [
        RecordedLlmStep.model_validate(step)
        for step in [
            {
                "step": 1,
                "content": "I will evaluate (2+3)*4 with the calculator.",
                "toolCalls": [
                    {"callId": "call_0_0", "name": "calculator", "arguments": {"expression": "(2+3)*4"}}
                ],
                "inputTokens": 10,
                "outputTokens": 5,
                "costUsd": None,
                "latencyS": 0.01,
                "model": "scripted-v1",
                "requestDigests": ["u1"],
            },
            {
                "step": 2,
                "content": "20",
                "toolCalls": [],
                "inputTokens": 12,
                "outputTokens": 1,
                "costUsd": 0.5,
                "latencyS": 0.01,
                "model": "scripted-v1",
                "requestDigests": ["u1", "a1", "t1"],
            },
        ]
    ]
    assert recording.tools == [
        RecordedToolStep.model_validate(
            {
                "step": 1,
                "call": {"callId": "call_0_0", "name": "calculator", "arguments": {"expression": "(2+3)*4"}},
                "result": {
                    "callId": "call_0_0",
                    "name": "calculator",
                    "content": "20",
                    "isError": False,
                    "durationMs": 0.2,
                },
            }
        )
    ]
    assert recording.outcome.to_wire() == {"status": "completed", "answer": "20", "steps": 2}
    assert recording.steps == 2
    assert conversation(recording, "what is (2+3)*4?") == [
        {"role": "user", "content": "what is (2+3)*4?"},
        {
            "role": "assistant",
            "content": "I will evaluate (2+3)*4 with the calculator.",
            "toolCalls": [call.to_wire() for call in recording.llm[0].tool_calls],
        },
        {"role": "tool", "content": "20", "name": "calculator", "toolCall": 0},
        {"role": "assistant", "content": "20", "toolCalls": []},
    ]

    summary = summary_of_record(record)
    assert (summary["answer"], summary["steps"], summary["status"]) == ("20", 2, "completed")
    assert summary["usage"]["inputTokens"] == 22 and summary["latencyS"] > 0


def test_a_second_attempt_replaces_what_the_first_recorded() -> None:
    trace = Trace()
    trace.event("llm.request", "t1", {"step": 1, "message_digests": ["x"]})
    trace.event("llm.usage", "t1", {"step": 1, "input_tokens": 1, "output_tokens": 1, "model": "m"})
    trace.event(
        "agent.action", "t1", {"step": 1, "tool": "sleep", "arguments": {"seconds": 9}, "call_id": "c"}
    )
    trace.calculator_run("t1")  # the re-dispatched attempt
    _, recording = recorded(trace)
    assert [s.step for s in recording.llm] == [1, 2]
    assert recording.llm[0].tool_calls[0].name == "calculator"


def test_a_resumed_attempt_adds_its_live_steps_to_what_the_first_recorded() -> None:
    trace = Trace()
    system = {"role": "system", "content": "You are Calculator."}
    user = {"role": "user", "content": "go"}
    trace.event("llm.request", "t1", {"step": 1, "message_digests": ["u"], "messages": [system, user]})
    trace.event("llm.usage", "t1", {"step": 1, "input_tokens": 1, "output_tokens": 1, "model": "m"})
    sleep = {"step": 1, "tool": "sleep", "arguments": {"seconds": 3}, "call_id": "c1"}
    trace.event("agent.action", "t1", sleep)
    trace.event("tool.call", "t1", {"call_id": "c1", "name": "sleep", "arguments": {"seconds": 3}})
    # killed while sleeping; the resumed attempt restores step 1 and runs the call again
    trace.event("task.resumed", "t1", {"attempt": 2, "restored_steps": 1, "llm_steps": 1})
    trace.event("agent.action", "t1", sleep)
    trace.event("tool.call", "t1", {"call_id": "c1", "name": "sleep", "arguments": {"seconds": 3}})
    trace.event("tool.result", "t1", {"call_id": "c1", "name": "sleep", "content": "slept 3s"})
    trace.event("llm.request", "t1", {"step": 2, "message_digests": ["u", "a", "t"]})
    trace.event(
        "llm.usage",
        "t1",
        {"step": 2, "input_tokens": 2, "output_tokens": 1, "model": "m", "completion": "ok"},
    )
    _, recording = recorded(trace)
    assert [s.step for s in recording.llm] == [1, 2]
    assert [c.name for c in recording.llm[0].tool_calls] == ["sleep"]  # not twice
    assert [(t.call.name, t.result.content) for t in recording.tools] == [("sleep", "slept 3s")]
    assert recording.system_prompt == "You are Calculator."


def test_a_failed_llm_call_is_recorded_as_an_error() -> None:
    trace = Trace()
    trace.event("llm.request", "t1", {"step": 1, "message_digests": ["u"]})
    trace.event("error", "t1", {"error": "LLM provider error at step 1: HTTP 500: overloaded"})
    trace.bus(
        "loom.task.status.failed",
        "t1",
        {"status": "failed", "error": "LLM provider error at step 1: HTTP 500"},
    )
    record, recording = recorded(trace)
    assert [s.to_wire() for s in recording.llm] == [
        {
            "step": 1,
            "error": "HTTP 500: overloaded",
            "requestDigests": ["u"],
            "toolCalls": [],
            "inputTokens": 0,
            "outputTokens": 0,
            "latencyS": 0.0,
            "model": "",
        }
    ]
    assert record.status == "failed" and recording.outcome.status == "failed"


def test_delegations_are_matched_with_the_child_tasks() -> None:
    trace = Trace()
    trace.event(
        "agent.action", "o1", {"index": 0, "agent": "calculator", "parameters": {"prompt": "(2+3)*4"}}
    )
    trace.event("agent.action", "o1", {"index": 1, "agent": "echo", "parameters": {"prompt": "hi"}})
    trace.calculator_run("c1", prompt="(2+3)*4", parent="o1")
    trace.bus(
        "loom.task.status.completed",
        "o1",
        {
            "status": "completed",
            "final": True,
            "result": {
                "answer": "20; hi",
                "children": [
                    {
                        "task_id": "c1",
                        "agent": "calculator",
                        "status": "completed",
                        "answer": "20",
                        "error": None,
                    },
                    {"task_id": "e1", "agent": "echo", "status": "completed", "answer": "hi", "error": None},
                ],
            },
        },
    )
    _, recording = recorded(trace, "o1", children=["c1"])
    assert recording.children == [
        RecordedChild.model_validate(child)
        for child in [
            {
                "index": 0,
                "agent": "calculator",
                "parameters": {"prompt": "(2+3)*4"},
                "taskId": "c1",
                "status": "completed",
                "result": {"answer": "20", "steps": 2, "usage": {"llm_calls": 2}},
                "error": None,
            },
            # no rows for the echo child: what the orchestrator's own result says of it
            {
                "index": 1,
                "agent": "echo",
                "parameters": {"prompt": "hi"},
                "taskId": "e1",
                "status": "completed",
                "result": {"answer": "hi"},
                "error": None,
            },
        ]
    ]
    assert recording.steps == 2


def test_overrides_tamper_with_a_copy_and_refuse_what_is_not_there() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    _, recording = recorded(trace)
    tampered = Overrides.model_validate(
        {"toolResults": {"0": "21"}, "llmResponses": {"2": {"content": "21"}}, "answer": "21"}
    ).apply(recording)
    assert tampered.tools[0].result.content == "21"
    assert tampered.llm[1].content == "21" and tampered.outcome.answer == "21"
    assert recording.tools[0].result.content == "20"  # the original is left alone

    for raw, reason in [
        ({"toolResults": {"1": "x"}}, "has 1 tool calls"),
        ({"llmResponses": {"3": {"content": "x"}}}, "has LLM steps [1, 2]"),
        ({"llmResponses": {"1": {"model": "x"}}}, "only content and toolCalls"),
        ({"childResults": {"0": {}}}, "has 0 delegations"),
        (
            {"llmResponses": {"1": {"toolCalls": [{"name": ""}]}}},
            "overrides: field 'llm[0].toolCalls[0].name'",
        ),
    ]:
        with pytest.raises(Invalid, match=re.escape(reason)):
            Overrides.model_validate(raw).apply(recording)
    with pytest.raises(ValueError, match="keys must be integers"):
        Overrides.model_validate({"toolResults": {"first": "x"}})


def test_summaries_and_their_comparison() -> None:
    fork = summary_of_task(
        Task.model_validate(
            {
                "taskId": "f1",
                "targetAgent": "calculator",
                "status": "completed",
                "result": {
                    "answer": "10",
                    "steps": 3,
                    "usage": {"llm_calls": 3, "input_tokens": 30, "output_tokens": 9},
                },
                "createdAt": "2026-01-01T00:00:00+00:00",
                "updatedAt": "2026-01-01T00:00:01.5+00:00",
                "trace": {"traceparent": "00-" + "cd" * 16 + "-" + "1" * 16 + "-01"},
            }
        )
    )
    assert fork["traceId"] == "cd" * 16 and fork["latencyS"] == 1.5
    assert fork["usage"] == {"llmCalls": 3, "inputTokens": 30, "outputTokens": 9}
    original = {
        "answer": "5",
        "steps": 2,
        "status": "completed",
        "usage": {"inputTokens": 20, "outputTokens": 5},
        "latencyS": 0.5,
    }
    comparison = compare(original, fork)
    assert comparison["sameAnswer"] is False
    assert comparison["steps"] == {"original": 2, "fork": 3, "delta": 1}
    assert comparison["tokens"] == {"original": 25, "fork": 39, "delta": 14}
    assert comparison["latencyS"] == {"original": 0.5, "fork": 1.5, "delta": 1.0}


def test_a_run_recorded_without_content_takes_its_texts_from_usage_and_the_result() -> None:
    trace = Trace()
    trace.calculator_run("t1")
    for event in trace.events:  # as a worker with LOOM_CAPTURE_CONTENT=false emits them
        if event["type"] == "agent.thought":
            event["data"]["content"] = None
        elif event["type"] == "agent.answer":
            event["data"]["answer"] = None
    _, recording = recorded(trace)
    assert [step.content for step in recording.llm] == [None, "20"]  # the last from the task's answer

    for event in trace.events:  # content captured in llm.usage: it is the step's text
        if event["type"] == "llm.usage" and event["data"]["step"] == 1:
            event["data"]["completion"] = "I will evaluate (2+3)*4 with the calculator."
    _, recording = recorded(trace)
    assert recording.llm[0].content == "I will evaluate (2+3)*4 with the calculator."
