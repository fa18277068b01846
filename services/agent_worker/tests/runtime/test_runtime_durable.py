"""Resume from the journal and approvals, in the runtime alone (no NATS): a first attempt records
its steps, a second one restores them and goes live at the first unrecorded step."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from loom_agent_worker import idempotency_key
from loom_agent_worker.runtime import (
    MemoryStore,
    NullEventSink,
    ReActAgent,
    ScriptedProvider,
    TaskContext,
    ToolRegistry,
    run_with_interceptors,
    tool,
)
from loom_agent_worker.runtime.durable import AwaitingApproval, StepJournal
from loom_agent_worker.runtime.providers.base import ChatMessage, LLMResponse
from loom_protocol import (
    AgentCard,
    ApprovalDecision,
    EventPayload,
    McpToolDefinition,
    Task,
    TaskStatus,
)

SCRIPT = [
    {"thought": "first", "tool": "add", "arguments": {"a": 1, "b": 2}},
    {"tool": "fail_once", "arguments": {}},
    {"tool": "add", "arguments": {"a": 3, "b": 4}},
    {"answer": "done"},
]


class Counting:
    """A provider that counts calls per step (the number of assistant turns so far)."""

    name = "counting"
    model = "scripted-v1"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._inner = ScriptedProvider()

    def for_task(self, task: Task) -> Counting:
        self._inner = ScriptedProvider().for_task(task)
        return self

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        self.calls.append(sum(1 for m in messages if m.role == "assistant") + 1)
        return await self._inner.complete(messages, tools)


class Events:
    def __init__(self) -> None:
        self.types: list[str] = []
        self.data: list[dict[str, Any]] = []

    def emit(self, payload: EventPayload, *, subject: str | None = None) -> None:
        self.types.append(payload.TYPE)
        self.data.append(payload.to_data())


class Crash(BaseException):
    """Stands for the worker dying in the middle of a tool (nothing after it runs)."""


def build(effects: list[tuple[str, str | None]], *, crash_on_fail_once: bool) -> tuple[ReActAgent, Counting]:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        effects.append(("add", idempotency_key()))
        return a + b

    @tool
    def fail_once() -> str:
        """Dies the first time (the worker is killed while it runs)."""
        effects.append(("fail_once", idempotency_key()))
        if crash_on_fail_once:
            raise Crash
        return "ok"

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Moves money (needs a person's approval)."""
        effects.append(("wire_money", str(amount)))
        return f"wired {amount}"

    provider = Counting()
    card = AgentCard(agent_id="durable", name="Durable")
    return ReActAgent(card, provider, ToolRegistry([add, fail_once, wire_money])), provider


def context(
    task: Task, journal: StepJournal, events: Events, approval_tools: frozenset[str] = frozenset()
) -> TaskContext:
    return TaskContext(
        task=task,
        events=events,
        children=NullChildren(),
        memory=MemoryStore().for_task(task),
        instance_id="test",
        journal=journal,
        approval_tools=approval_tools,
    )


class NullChildren:
    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        raise AssertionError("no child tasks here")


def new_task(script: list[dict[str, Any]], attempt: int = 1, **fields: Any) -> Task:
    return Task(
        task_id=uuid.uuid4().hex,
        target_agent="durable",
        parameters={"script": script},
        status=TaskStatus.RUNNING,
        attempt=attempt,
        **fields,
    )


async def test_a_second_attempt_restores_recorded_steps_and_goes_live_after_them() -> None:
    effects: list[tuple[str, str | None]] = []
    agent, provider = build(effects, crash_on_fail_once=True)
    task = new_task(SCRIPT)
    first = StepJournal(attempt=1)
    with pytest.raises(Crash):
        await run_with_interceptors(agent, task, context(task, first, Events()), [])
    assert provider.calls == [1, 2]
    # step 1 (LLM + its tool) and step 2's LLM response were recorded; fail_once's result was not
    assert [kind.value for kind in (e.kind for _, e in first.entries)] == ["llm", "tool", "llm"]

    agent2, provider2 = build(effects, crash_on_fail_once=False)
    resumed = task.model_copy(update={"attempt": 2})
    second = StepJournal(first.entries, attempt=2)
    events = Events()
    done = await run_with_interceptors(agent2, resumed, context(resumed, second, events), [])

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["answer"] == "done"
    assert provider2.calls == [3, 4]  # steps 1 and 2 came from the journal
    assert second.restored.llm == 2 and second.restored.tools == 1
    # the first add ran once; fail_once ran again (its result was never recorded), same key both times
    names = [name for name, _ in effects]
    assert names == ["add", "fail_once", "fail_once", "add"]
    keys = [key for name, key in effects if name == "fail_once"]
    assert keys[0] == keys[1] == f"{task.task_id}/2.0"
    # restored steps emitted nothing again: one llm.request per live step, tool.call for live calls only
    assert events.types.count("llm.request") == 2
    assert [d["name"] for t, d in zip(events.types, events.data, strict=True) if t == "tool.call"] == [
        "fail_once",
        "add",
    ]
    # usage covers the whole task, restored steps included
    assert done.result["usage"]["llm_calls"] == 4


async def test_a_tool_needing_approval_stops_the_task_and_runs_only_when_approved() -> None:
    effects: list[tuple[str, str | None]] = []
    agent, _ = build(effects, crash_on_fail_once=False)
    script = [
        {"thought": "pay the bill", "tool": "wire_money", "arguments": {"amount": 100}},
        {"answer": "paid"},
    ]
    task = new_task(script)
    journal = StepJournal(attempt=1)
    events = Events()
    with pytest.raises(AwaitingApproval) as stop:
        await run_with_interceptors(agent, task, context(task, journal, events), [])
    request = stop.value.request
    assert (request.key, request.tool, request.arguments, request.reasoning) == (
        "1.0",
        "wire_money",
        {"amount": 100},
        "pay the bill",
    )
    assert "approval.requested" in events.types and effects == []

    decision = ApprovalDecision(
        key="1.0", tool="wire_money", approved=True, arguments={"amount": 90}, by="ann"
    )
    approved = task.model_copy(update={"attempt": 2, "approvals": [decision]})
    done = await run_with_interceptors(
        agent, approved, context(approved, StepJournal(journal.entries, attempt=2), Events()), []
    )
    assert done.status is TaskStatus.COMPLETED
    assert effects == [("wire_money", "90")]  # once, with the edited arguments


async def test_a_rejected_call_is_never_run_and_the_agent_is_told() -> None:
    effects: list[tuple[str, str | None]] = []
    agent, _ = build(effects, crash_on_fail_once=False)
    script = [{"tool": "add", "arguments": {"a": 1, "b": 1}}, {"answer": "gave up"}]
    task = new_task(script, metadata={"approvalTools": ["add"]})
    journal = StepJournal(attempt=1)
    with pytest.raises(AwaitingApproval):
        await run_with_interceptors(agent, task, context(task, journal, Events(), frozenset({"add"})), [])
    decision = ApprovalDecision(key="1.0", tool="add", approved=False, by="bob", reason="not today")
    rejected = task.model_copy(update={"attempt": 2, "approvals": [decision]})
    ctx = context(rejected, StepJournal(journal.entries, attempt=2), Events(), frozenset({"add"}))
    done = await run_with_interceptors(agent, rejected, ctx, [])
    assert done.status is TaskStatus.COMPLETED
    assert effects == []
    observation = [m for m in ctx.memory.messages if m.role == "tool"][0]
    assert "rejected by bob: not today" in observation.content


def test_null_event_sink_is_public() -> None:
    NullEventSink().emit(EventPayload())
