from __future__ import annotations

import asyncio

import pytest
from loom_agent_worker.runtime import (
    ChatMessage,
    LLMResponse,
    MemoryStore,
    MetricsInterceptor,
    ReActAgent,
    ScriptedProvider,
    builtin_registry,
    run_with_interceptors,
)
from loom_agent_worker.runtime.providers.base import message_digest
from loom_agent_worker.runtime.react import MAX_CAPTURED_CHARS, captured_messages
from loom_protocol import AgentCapability, AgentCard, MemoryTier, TaskStatus

CARD = AgentCard(agent_id="calculator", name="Calculator", capabilities=[AgentCapability.TOOL_USE])


def calculator_agent(**options) -> ReActAgent:
    return ReActAgent(CARD, ScriptedProvider(), builtin_registry(), **options)


@pytest.mark.parametrize("where", ["context", "agent"])
async def test_without_content_capture_no_prompt_or_completion_text_is_in_any_event(
    new_task, new_context, where: str
) -> None:
    task = new_task("calculator", {"prompt": "what is (2+3)*4?"}, session_id="s-1")
    ctx = new_context(task, capture_content=where != "context")
    agent = calculator_agent(capture_content=False) if where == "agent" else calculator_agent()

    done = await agent.execute_task(task, ctx)

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["answer"] == "20"  # the task's own result is not an observation event
    events = ctx.events.events
    assert "agent.thought" not in [e.type for e in events]
    texts = ["what is (2+3)*4?", agent.system_prompt, "I will evaluate"]
    for event in events:
        dumped = str(event.data)
        assert not any(text in dumped for text in texts), (event.type, dumped)
    requests = [e.data for e in events if e.type == "llm.request"]
    usages = [e.data for e in events if e.type == "llm.usage"]
    assert [r["messages"] for r in requests] == [None, None]
    assert all(r["message_digests"] and r["system_digest"] for r in requests)
    assert [(u["completion"], u["content_captured"]) for u in usages] == [(None, False), (None, False)]
    assert usages[0]["tool_calls"][0]["name"] == "calculator"  # tool calls stay: replay needs them
    assert next(e.data for e in events if e.type == "agent.answer")["answer"] is None
    # the digests are those of a capturing run: a deterministic replay still checks them
    captured_ctx = new_context(new_task("calculator", {"prompt": "what is (2+3)*4?"}, session_id="s-2"))
    await calculator_agent().execute_task(captured_ctx.task, captured_ctx)
    captured = [e.data for e in captured_ctx.events.events if e.type == "llm.request"]
    assert [r["message_digests"] for r in captured] == [r["message_digests"] for r in requests]


async def test_calculator_answers_20_with_the_react_event_sequence(new_task, new_context) -> None:
    task = new_task("calculator", {"prompt": "what is (2+3)*4?"}, session_id="s-1")
    ctx = new_context(task)

    done = await calculator_agent().execute_task(task, ctx)

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["answer"] == "20"
    assert done.result["steps"] == 2
    assert done.result["usage"]["llm_calls"] == 2
    assert done.result["usage"]["input_tokens"] > 0 and done.result["usage"]["output_tokens"] > 0
    assert done.result["usage"]["cost_usd"] == 0.0  # the scripted provider is free
    assert done.result["usage"]["retries"] == 0

    events = ctx.events.events
    assert [e.type for e in events] == [
        "llm.request",
        "llm.usage",
        "agent.thought",
        "agent.action",
        "tool.call",
        "tool.result",
        "memory.add",
        "llm.request",
        "llm.usage",
        "agent.answer",
        "memory.consolidate",
    ]
    by_type: dict = {}
    for event in events:
        by_type.setdefault(event.type, event)  # the first event of each type
    assert by_type["llm.request"].subject == "llm:scripted/scripted-v1"
    assert by_type["llm.request"].data["message_count"] == 2
    assert events[7].data["message_count"] == 4  # system, user, assistant, tool
    assert by_type["llm.usage"].data.keys() >= {
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_s",
        "model",
    }
    # content capture (the default): the messages sent, system prompt included, and the completion
    request = by_type["llm.request"].data
    assert request["messages"] == [
        {"role": "system", "content": calculator_agent().system_prompt},
        {"role": "user", "content": "what is (2+3)*4?"},
    ]
    assert "calculator" in request["tools"]
    prompt = ChatMessage(role="system", content=calculator_agent().system_prompt)
    assert request["system_digest"] == message_digest(prompt)  # the agent's prompt, in every request
    assert events[7].data["system_digest"] == request["system_digest"]
    other = ChatMessage(role="system", content=calculator_agent(system_prompt="be terse").system_prompt)
    assert message_digest(other) != request["system_digest"]
    assert [m["role"] for m in events[7].data["messages"]] == ["system", "user", "assistant", "tool"]
    assert events[7].data["messages"][2]["tool_calls"][0]["name"] == "calculator"
    usage = by_type["llm.usage"].data
    assert usage["completion"] == "I will evaluate (2+3)*4 with the calculator."
    assert usage["tool_calls"] == [
        {"call_id": "call_0_0", "name": "calculator", "arguments": {"expression": "(2+3)*4"}}
    ]
    assert (usage["cost_usd"], usage["retries"], usage["provider"], usage["content_captured"]) == (
        0.0,
        0,
        "scripted",
        True,
    )
    assert events[8].data["completion"] == "20"
    assert by_type["agent.thought"].data["content"] == "I will evaluate (2+3)*4 with the calculator."
    assert by_type["agent.answer"].data["answer"] == "20"
    assert by_type["agent.action"].data["tool"] == "calculator"
    assert by_type["agent.action"].data["arguments"] == {"expression": "(2+3)*4"}
    assert by_type["tool.call"].subject == "tool:calculator"
    assert by_type["tool.call"].data == {
        "call_id": "call_0_0",
        "name": "calculator",
        "arguments": {"expression": "(2+3)*4"},
    }
    result = by_type["tool.result"].data
    assert (result["call_id"], result["name"], result["content"], result["is_error"]) == (
        "call_0_0",
        "calculator",
        "20",
        False,
    )
    assert result["duration_ms"] >= 0
    note = by_type["memory.add"].data
    assert (note["tier"], note["node_id"], note["role"]) == ("working", "calculator", "observation")
    assert note["content"] == "calculator(expression='(2+3)*4') -> 20"
    assert by_type["agent.answer"].data == {"answer": "20", "steps": 2}

    assert [m.role for m in ctx.memory.messages] == ["user", "assistant", "tool", "assistant"]
    assert [n.content for n in ctx.memory.notes(MemoryTier.WORKING)] == [note["content"]]


async def test_follows_a_script_across_several_tools(new_task, new_context) -> None:
    script = [
        {"thought": "count the words", "tool": "word_count", "arguments": {"text": "the quick brown fox"}},
        {"tool": "calculator", "arguments": {"expression": "4 * 10"}},
        {"answer": "4 words, times ten is 40"},
    ]
    task = new_task("calculator", {"prompt": "count and multiply", "script": script})
    ctx = new_context(task)
    done = await calculator_agent().execute_task(task, ctx)
    assert done.result["answer"] == "4 words, times ten is 40"
    assert [e.data["content"] for e in ctx.events.of_type("tool.result")] == ["4", "40"]
    # The second step has no content, so it has no thought.
    assert [e.data["content"] for e in ctx.events.of_type("agent.thought")] == ["count the words"]


async def test_tool_errors_are_observed_not_fatal(new_task, new_context) -> None:
    task = new_task("calculator", {"prompt": "what is 1/0"})
    ctx = new_context(task)
    done = await calculator_agent().execute_task(task, ctx)
    assert done.status is TaskStatus.COMPLETED
    assert done.result["answer"] == "tool 'calculator' failed: CalculatorError: division by zero"
    (result,) = ctx.events.of_type("tool.result")
    assert result.data["is_error"] is True
    (note,) = ctx.events.of_type("memory.add")
    assert note.data["importance"] == 0.6
    assert note.data["content"].startswith("calculator(expression='1/0') -> error: ")


async def test_exceeding_max_steps_fails_with_a_clear_error(new_task, new_context) -> None:
    loop = [{"tool": "echo", "arguments": {"text": "again"}}] * 5
    task = new_task("calculator", {"prompt": "loop", "script": loop})
    ctx = new_context(task)
    done = await calculator_agent(max_steps=3).execute_task(task, ctx)
    assert done.status is TaskStatus.FAILED
    assert done.error == "no answer after max_steps=3 LLM calls"
    assert len(ctx.events.of_type("llm.request")) == 3
    assert ctx.events.types()[-1] == "error"


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        (
            {"prompt": "x", "script": [{"tool": "echo", "arguments": {"text": "a"}}]},
            "script exhausted: no step 1",
        ),
        ({"prompt": "x", "script": [{"bogus": 1}]}, "LLM provider error: invalid script"),
        ({}, "parameters.prompt must be a string"),
        ({"prompt": 42}, "parameters.prompt must be a string"),
    ],
)
async def test_bad_input_and_provider_errors_fail_the_task(parameters, error, new_task, new_context) -> None:
    task = new_task("calculator", parameters)
    ctx = new_context(task)
    done = await calculator_agent().execute_task(task, ctx)
    assert done.status is TaskStatus.FAILED
    assert error in done.error
    assert ctx.events.of_type("error")[0].data == {"error": done.error}


class CapturingProvider:
    """A fake provider that records the messages it is sent and answers 'ok'."""

    name = "capture"
    model = "capture-1"

    def __init__(self) -> None:
        self.sent: list[list[ChatMessage]] = []

    async def complete(self, messages, tools) -> LLMResponse:
        self.sent.append(list(messages))
        return LLMResponse(content="ok", model=self.model)


async def test_long_term_notes_of_the_session_reach_the_system_prompt(new_task, new_context) -> None:
    store = MemoryStore()
    memory = store.session("s-42")
    memory.add_note("the user's name is Ada", node_id="orchestrator", importance=0.9)
    memory.add_note("unimportant chatter", node_id="orchestrator", importance=0.1)
    memory.consolidate()
    provider = CapturingProvider()
    agent = ReActAgent(CARD, provider, builtin_registry(), system_prompt="Be exact.")
    task = new_task("calculator", {"prompt": "hi"}, session_id="s-42")
    done = await agent.execute_task(task, new_context(task, memory=store))
    assert done.result["answer"] == "ok"
    system = provider.sent[0][0]
    assert system.role == "system"
    assert system.content.startswith("Be exact.")
    assert "- the user's name is Ada" in system.content
    assert "chatter" not in system.content


class RecordingInterceptor:
    def __init__(self) -> None:
        self.after_calls: list[tuple] = []

    async def before(self, task, ctx) -> None:
        return None

    async def after(self, task, ctx, ended) -> None:
        self.after_calls.append((ended.result, ended.error))


async def test_cancelling_a_task_in_the_sleep_tool_propagates_and_runs_after_hooks(
    new_task, new_context
) -> None:
    script = [{"tool": "sleep", "arguments": {"seconds": 60}}, {"answer": "woke up"}]
    task = new_task("calculator", {"prompt": "nap", "script": script})
    ctx = new_context(task)
    recorder = RecordingInterceptor()
    observed: list[tuple[str, str, float]] = []
    metrics = MetricsInterceptor(lambda agent, status, duration: observed.append((agent, status, duration)))

    job = asyncio.create_task(run_with_interceptors(calculator_agent(), task, ctx, [metrics, recorder]))
    await ctx.events.wait_for("tool.call")  # the agent is now awaiting the sleep tool
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    assert job.cancelled()
    ((result, error),) = recorder.after_calls
    assert result is None
    assert isinstance(error, asyncio.CancelledError)
    assert [(agent, status) for agent, status, _ in observed] == [("calculator", "cancelled")]
    assert "tool.result" not in ctx.events.types()
    assert "agent.answer" not in ctx.events.types()


def test_captured_messages_are_bounded_newest_first() -> None:
    messages = [
        ChatMessage(role="system", content="s" * 100),
        ChatMessage(role="user", content="u" * 50_000),
        ChatMessage(role="tool", content="t" * 300, tool_call_id="c1", name="calculator"),
    ]
    captured = captured_messages(messages, budget=1_000)
    assert [m["role"] for m in captured] == ["system", "user", "tool"]
    assert captured[2] == {"role": "tool", "content": "t" * 300, "tool_call_id": "c1", "name": "calculator"}
    assert captured[1]["content"] == "u" * 700 + "...[49300 more characters]"
    assert captured[0]["content"] == "...[100 more characters]"
    whole = captured_messages(messages)
    assert (
        whole[1]["content"]
        == "u" * MAX_CAPTURED_CHARS + f"...[{50_000 - MAX_CAPTURED_CHARS} more characters]"
    )
    assert whole[0]["content"] == "s" * 100
