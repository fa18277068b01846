"""Streaming answers (``action: "stream"``): the providers' ``stream``, the ReAct loop's use of
it, and the worker's chunk publisher."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from fake_openai import FakeOpenAI, Reply, streamed, tool_call
from loom_agent_worker.runtime import (
    ChatMessage,
    LLMResponse,
    OpenAICompatibleProvider,
    ProviderError,
    ReActAgent,
    ScriptedProvider,
    StreamingProvider,
    builtin_registry,
)
from loom_agent_worker.runtime.providers.scripted import text_pieces
from loom_agent_worker.streaming import NatsAnswerStream
from loom_protocol import (
    AgentCard,
    McpToolCall,
    McpToolDefinition,
    Task,
    TaskAction,
    TaskStatus,
    TaskStreamChunk,
)

TOOLS = builtin_registry().definitions()
CARD = AgentCard(agent_id="calculator", name="Calculator")


def user(content: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content=content)]


@dataclass
class Collected:
    """An AnswerStream that keeps what it is told."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)

    async def delta(self, text: str, *, step: int) -> None:
        self.calls.append(("delta", text, step))

    async def discard(self, step: int) -> None:
        self.calls.append(("discard", "", step))

    async def done(self) -> None:
        self.calls.append(("done", "", 0))

    def answer(self) -> str:
        """The text a reader ends with: deltas, minus those a discard took back."""
        kept: list[tuple[str, int]] = []
        for kind, text, step in self.calls:
            if kind == "delta":
                kept.append((text, step))
            elif kind == "discard":
                kept = [(t, s) for t, s in kept if s != step]
        return "".join(text for text, _ in kept)


@pytest.mark.parametrize("text", ["", "x", "hello world", "  two  spaces  ", "a\nb\tc "])
def test_text_pieces_join_to_the_text(text: str) -> None:
    assert "".join(text_pieces(text)) == text


async def test_scripted_streams_an_answer_word_by_word_and_a_tool_step_not_at_all() -> None:
    provider = ScriptedProvider()
    assert isinstance(provider, StreamingProvider)
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    first = await provider.stream(user("what is (2+3)*4?"), TOOLS, on_delta)
    assert first.tool_calls and pieces == []
    answer = await provider.stream(user("say hello to the whole world"), [], on_delta)
    assert answer.content == "say hello to the whole world" and not answer.tool_calls
    assert pieces == ["say", " hello", " to", " the", " whole", " world"]
    assert "".join(pieces) == answer.content


async def test_openai_stream_hands_over_each_delta_as_it_arrives() -> None:
    gate = asyncio.Event()
    pieces = ["The ", "answer ", "is ", "42."]
    replies = [
        Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        streamed(pieces, prompt_tokens=1_000_000, completion_tokens=1_000_000, gate=gate),
    ]
    async with FakeOpenAI(replies).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", max_retries=2)
        seen: list[str] = []

        async def on_delta(text: str) -> None:
            seen.append(text)
            gate.set()  # the server holds the rest until the first text got here

        response = await provider.stream(user("what is 6*7?"), TOOLS, on_delta)
        await provider.aclose()
    assert not replies[1].gate_timed_out, "the first delta only came with the whole answer"
    assert seen == pieces
    assert response.content == "The answer is 42." and response.tool_calls == []
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1_000_000, 1_000_000)
    assert response.usage.cost_usd == pytest.approx(0.15 + 0.60)
    assert response.retries == 1
    body = server.seen[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in body["tools"]] == [d.name for d in TOOLS]


async def test_openai_stream_assembles_tool_calls_from_their_deltas() -> None:
    call = tool_call("call_7", "calculator", {"expression": "6*7"})
    async with FakeOpenAI([streamed(["Let me ", "compute."], [call])]).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "local-model", max_retries=0)
        seen: list[str] = []

        async def on_delta(text: str) -> None:
            seen.append(text)

        response = await provider.stream(user("what is 6*7?"), TOOLS, on_delta)
        await provider.aclose()
    assert seen == ["Let me ", "compute."]
    assert response.content == "Let me compute."
    assert response.tool_calls == [
        McpToolCall(call_id="call_7", name="calculator", arguments={"expression": "6*7"})
    ]
    assert response.model == "gpt-4o-mini"  # as the chunks name it


async def test_openai_stream_error_names_endpoint_and_model() -> None:
    replies = [Reply(status=500, body={"error": {"message": "boom"}})]
    async with FakeOpenAI(replies).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "m-1", max_retries=0)

        async def on_delta(text: str) -> None:
            raise AssertionError("no delta expected")

        with pytest.raises(ProviderError) as info:
            await provider.stream(user("hi"), [], on_delta)
        await provider.aclose()
    assert info.value.status == 500
    assert f"{server.base_url}/chat/completions" in str(info.value) and "'m-1'" in str(info.value)


def stream_task(prompt: str) -> Task:
    return Task(
        target_agent="calculator",
        action=TaskAction.STREAM,
        parameters={"prompt": prompt},
        status=TaskStatus.RUNNING,
    )


async def test_react_streams_only_the_answer_step(new_context) -> None:
    task = stream_task("what is (2+3)*4?")
    ctx = new_context(task)
    ctx.stream = Collected()
    done = await ReActAgent(CARD, ScriptedProvider(), builtin_registry()).execute_task(task, ctx)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert ctx.stream.calls == [("delta", "20", 2), ("done", "", 0)]  # the tool step (1) streamed nothing


async def test_react_discards_text_of_a_step_that_turned_into_tool_calls(new_context) -> None:
    call = tool_call("call_1", "calculator", {"expression": "6*7"})
    replies = [streamed(["Let me ", "compute."], [call]), streamed(["It ", "is ", "42."])]
    async with FakeOpenAI(replies).serving() as server:
        provider = OpenAICompatibleProvider(server.base_url, "gpt-4o-mini", max_retries=0)
        task = stream_task("what is 6*7?")
        ctx = new_context(task)
        ctx.stream = Collected()
        done = await ReActAgent(CARD, provider, builtin_registry()).execute_task(task, ctx)
        await provider.aclose()
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["answer"] == "It is 42."
    kinds = [(kind, step) for kind, _, step in ctx.stream.calls]
    assert kinds == [
        ("delta", 1),
        ("delta", 1),
        ("discard", 1),
        ("delta", 2),
        ("delta", 2),
        ("delta", 2),
        ("done", 0),
    ]
    assert ctx.stream.answer() == done.result["answer"]
    usage = ctx.events.of_type("llm.usage")
    assert [u.data["completion"] for u in usage] == ["Let me compute.", "It is 42."]


class WholeProvider:
    """A provider without ``stream``."""

    name = "whole"
    model = "whole-1"

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        return LLMResponse(content="all at once", model=self.model)


async def test_react_streams_a_provider_without_stream_as_one_chunk(new_context) -> None:
    task = stream_task("hi")
    ctx = new_context(task)
    ctx.stream = Collected()
    done = await ReActAgent(CARD, WholeProvider(), builtin_registry()).execute_task(task, ctx)
    assert done.result["answer"] == "all at once"
    assert ctx.stream.calls == [("delta", "all at once", 1), ("done", "", 0)]


async def test_react_without_a_stream_does_not_stream(new_context) -> None:
    task = stream_task("what is 6*7?")
    ctx = new_context(task)  # no stream in the context (as for an execute task): nothing streams
    assert ctx.stream is None
    done = await ReActAgent(CARD, ScriptedProvider(), builtin_registry()).execute_task(task, ctx)
    assert done.result["answer"] == "42"


@dataclass
class FakeOutbox:
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    fail: bool = False

    async def core(self, subject: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        if self.fail:
            raise ConnectionError("nats down")
        self.sent.append((subject, body))


async def test_the_worker_publishes_numbered_chunks_on_the_task_subject_and_done_once() -> None:
    outbox = FakeOutbox()
    task = Task(task_id="t-9", target_agent="calculator", action=TaskAction.STREAM, attempt=2)
    stream = NatsAnswerStream(outbox, task)  # type: ignore[arg-type]
    await stream.delta("Hel", step=1)
    await stream.delta("", step=1)  # nothing to say: no chunk
    await stream.discard(1)
    await stream.delta("lo", step=2)
    await stream.done()
    await stream.done()
    await stream.delta("late", step=2)
    assert {subject for subject, _ in outbox.sent} == {"loom.stream.t-9"}
    chunks = [TaskStreamChunk.from_json(body) for _, body in outbox.sent]
    assert [(c.index, c.delta, c.step, c.discard, c.done, c.attempt) for c in chunks] == [
        (0, "Hel", 1, False, False, 2),
        (1, "", 1, True, False, 2),
        (2, "lo", 2, False, False, 2),
        (3, "", 1, False, True, 2),
    ]
    assert json.loads(outbox.sent[0][1])["taskId"] == "t-9"  # camelCase on the wire

    outbox.fail = True  # best effort: a failed publish never fails the task
    failing = NatsAnswerStream(outbox, task)  # type: ignore[arg-type]
    await failing.delta("x", step=1)
    await failing.done()
