from __future__ import annotations

import pytest
from loom_agent_worker.runtime import (
    LLMResponse,
    ReActAgent,
    RecordedProvider,
    RecordedTools,
    RecordingProvider,
    RecordingTools,
    ReplayDivergence,
    ScriptedProvider,
    builtin_registry,
    run_with_interceptors,
)
from loom_protocol import AgentCapability, AgentCard, McpToolCall, McpToolResult, TaskStatus

CARD = AgentCard(agent_id="calculator", name="Calculator", capabilities=[AgentCapability.TOOL_USE])
PARAMETERS = {
    "prompt": "words then maths",
    "script": [
        {"thought": "count", "tool": "word_count", "arguments": {"text": "one two three"}},
        {"thought": "multiply", "tool": "calculator", "arguments": {"expression": "3 * 14"}},
        {"answer": "42"},
    ],
}


async def record(new_task, new_context):
    provider = RecordingProvider(ScriptedProvider())
    tools = RecordingTools(builtin_registry())
    task = new_task("calculator", PARAMETERS)
    ctx = new_context(task)
    done = await ReActAgent(CARD, provider, tools).execute_task(task, ctx)
    assert done.status is TaskStatus.COMPLETED
    return done, ctx, provider, tools


def comparable(events):
    """Event types and data without the measured timings."""
    timing = {"latency_s", "duration_ms", "entry_id", "created_at"}
    return [(e.type, {k: v for k, v in e.data.items() if k not in timing}) for e in events]


async def test_replay_of_a_recorded_run_gives_the_same_answer_and_events(new_task, new_context) -> None:
    original, original_ctx, provider, tools = await record(new_task, new_context)
    assert len(provider.responses) == 3
    assert [c.name for c in tools.calls] == ["word_count", "calculator"]

    replay_provider = RecordedProvider(provider.responses, name="scripted")
    replay_tools = RecordedTools(
        tools.results, calls=tools.calls, definitions=builtin_registry().definitions()
    )
    task = new_task("calculator", PARAMETERS)
    ctx = new_context(task)
    replayed = await ReActAgent(CARD, replay_provider, replay_tools).execute_task(task, ctx)

    assert replayed.status is TaskStatus.COMPLETED
    assert replayed.result["answer"] == original.result["answer"] == "42"
    assert comparable(ctx.events.events) == comparable(original_ctx.events.events)
    assert (replay_provider.calls, replay_tools.calls) == (3, 2)


async def test_tampered_tool_arguments_raise_replay_divergence(new_task, new_context) -> None:
    _, _, provider, tools = await record(new_task, new_context)
    # The recording says the LLM asked for "3 * 14"; make the replayed LLM ask for "3 * 15".
    second = provider.responses[1]
    tampered_call = second.tool_calls[0].model_copy(update={"arguments": {"expression": "3 * 15"}})
    responses = [
        provider.responses[0],
        second.model_copy(update={"tool_calls": [tampered_call]}),
        provider.responses[2],
    ]

    task = new_task("calculator", PARAMETERS)
    agent = ReActAgent(CARD, RecordedProvider(responses), RecordedTools(tools.results, calls=tools.calls))
    with pytest.raises(ReplayDivergence) as caught:
        await agent.execute_task(task, new_context(task))
    assert caught.value.step == 1
    assert caught.value.expected == {"name": "calculator", "arguments": {"expression": "3 * 14"}}
    assert caught.value.got == {"name": "calculator", "arguments": {"expression": "3 * 15"}}

    # Through the interceptor chain the divergence becomes a failed task with the reason.
    agent = ReActAgent(CARD, RecordedProvider(responses), RecordedTools(tools.results, calls=tools.calls))
    task = new_task("calculator", PARAMETERS)
    done = await run_with_interceptors(agent, task, new_context(task), [])
    assert done.status is TaskStatus.FAILED
    assert done.error.startswith("ReplayDivergence: replay diverged at step 1")


async def test_tampered_tool_result_name_diverges_even_without_recorded_calls(new_task, new_context) -> None:
    _, _, provider, tools = await record(new_task, new_context)
    results = [tools.results[0].model_copy(update={"name": "echo"}), tools.results[1]]
    task = new_task("calculator", PARAMETERS)
    agent = ReActAgent(CARD, RecordedProvider(provider.responses), RecordedTools(results))
    with pytest.raises(ReplayDivergence) as caught:
        await agent.execute_task(task, new_context(task))
    assert (caught.value.step, caught.value.expected) == (0, {"name": "echo"})
    assert caught.value.got["name"] == "word_count"


async def test_more_calls_than_recorded_diverge() -> None:
    provider = RecordedProvider([LLMResponse(content="only one", model="m")])
    assert (await provider.complete([], [])).content == "only one"
    with pytest.raises(ReplayDivergence, match="replay diverged at step 1: expected 'no further LLM call'"):
        await provider.complete([], [])

    tools = RecordedTools([McpToolResult(call_id="r1", name="echo", content="hi")])
    first = await tools.call(McpToolCall(call_id="new-id", name="echo", arguments={"text": "hi"}))
    assert (first.call_id, first.content) == ("new-id", "hi")  # answers under the replayed call's id
    with pytest.raises(ReplayDivergence) as caught:
        await tools.call(McpToolCall(call_id="x", name="echo", arguments={"text": "again"}))
    assert caught.value.step == 1


def test_recorded_calls_must_pair_with_results() -> None:
    with pytest.raises(ValueError, match="1 recorded calls for 0 recorded results"):
        RecordedTools([], calls=[McpToolCall(name="echo")])


async def test_a_run_recorded_without_content_capture_replays_without_divergence(
    new_task, new_context
) -> None:
    original, original_ctx, provider, tools = await record(new_task, new_context)
    requests = [e.data["message_digests"] for e in original_ctx.events.events if e.type == "llm.request"]
    # what the events of a run without content capture give: no response text
    redacted = [r.model_copy(update={"content": None}) for r in provider.responses]

    replay_provider = RecordedProvider(redacted, name="scripted", requests=requests)
    replay_tools = RecordedTools(
        tools.results, calls=tools.calls, definitions=builtin_registry().definitions()
    )
    task = new_task("calculator", PARAMETERS)
    replayed = await ReActAgent(CARD, replay_provider, replay_tools).execute_task(task, new_context(task))

    assert replayed.status is TaskStatus.COMPLETED, replayed.error
    assert replay_provider.divergence is None and replay_provider.calls == 3
    assert [c.name for c in tools.calls] == ["word_count", "calculator"]

    # the agent's own messages are still checked: another tool result diverges at once
    other = [tools.results[0].model_copy(update={"content": "4"}), tools.results[1]]
    replay_provider = RecordedProvider(redacted, name="scripted", requests=requests)
    task = new_task("calculator", PARAMETERS)
    agent = ReActAgent(
        CARD,
        replay_provider,
        RecordedTools(other, calls=tools.calls, definitions=builtin_registry().definitions()),
    )
    with pytest.raises(ReplayDivergence) as caught:
        await agent.execute_task(task, new_context(task))
    assert (caught.value.step, caught.value.kind) == (1, "llm")
    assert caught.value.got["role"] == "tool"
