"""Deterministic replay: answer LLM, tool and child-task calls from a recording.

Agents get their provider and tools injected, so replaying a run means handing them a
:class:`RecordedProvider` and :class:`RecordedTools` (and, for agents that delegate,
:class:`RecordedChildren` as their context's child tasks). They raise
:class:`ReplayDivergence` as soon as the agent asks for something the recording does not
hold: an LLM request whose conversation differs from the recorded one (``llm.request``
events carry the digests of the messages sent), a different tool or arguments, a different
delegation, or more calls than were recorded.

:class:`SplicedProvider` and :class:`SplicedTools` answer the first calls from a recording
and hand the rest to live ones: a fork that re-runs a task from step N with a new strategy.

:class:`RecordingProvider` and :class:`RecordingTools` wrap live ones to capture a recording
in the first place; the same data is also in a run's events (``llm.usage`` +
``agent.thought``/``agent.action``/``agent.answer`` for responses, ``tool.call``/``tool.result``
for tool calls), and ``loom_protocol.Recording`` is the form the replay service builds from them.
"""

from __future__ import annotations

import json
import typing
from collections import deque
from collections.abc import Sequence
from typing import Any

from loom_protocol import (
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    RecordedChild,
    RecordedLlmStep,
    Recording,
    Task,
    TaskStatus,
)

from loom_agent_worker.runtime.context import ChildTasks
from loom_agent_worker.runtime.providers.base import (
    ChatMessage,
    LLMProvider,
    LLMResponse,
    ProviderError,
    TaskAwareProvider,
    TokenUsage,
    conversation_digests,
)
from loom_agent_worker.runtime.tools import ToolExecutor

EXCERPT_CHARS = 500


class ReplayDivergence(Exception):
    """The replayed run asked for something other than what was recorded at ``step``.

    ``step`` is the 0-based index of the call among the calls of its ``kind``:
    ``llm`` (an LLM call: its request differs, or there is none left), ``tool``, ``child``.
    """

    def __init__(self, step: int, expected: Any, got: Any, *, kind: str = "call") -> None:
        super().__init__(f"replay diverged at step {step}: expected {expected!r}, got {got!r}")
        self.step = step
        self.expected = expected
        self.got = got
        self.kind = kind


class _Recorded:
    """Keeps the first divergence, so that it is reported even if the agent swallowed it
    (the orchestrator turns a failing delegation into a failed child, for instance)."""

    divergence: ReplayDivergence | None = None

    def _diverged(self, exc: ReplayDivergence) -> ReplayDivergence:
        if self.divergence is None:
            self.divergence = exc
        return exc


class RecordedProvider(_Recorded):
    """Returns the recorded LLM responses in order, one per ``complete`` call.

    A recorded entry may be a :class:`ProviderError` (the original call failed): it is
    raised again. When ``requests`` holds the digests of the conversation each recorded call
    was sent (see :func:`conversation_digests`), every call is checked against them first.
    """

    def __init__(
        self,
        responses: Sequence[LLMResponse | ProviderError],
        *,
        name: str = "recorded",
        model: str | None = None,
        requests: Sequence[Sequence[str] | None] | None = None,
    ):
        self._responses = list(responses)
        self._requests = list(requests) if requests is not None else None
        self.calls = 0
        self.name = name
        first = next((r for r in self._responses if isinstance(r, LLMResponse)), None)
        self.model = model or (first.model if first is not None else "recorded")

    @property
    def recorded(self) -> int:
        return len(self._responses)

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        step = self.calls
        if step >= len(self._responses):
            raise self._diverged(
                ReplayDivergence(
                    step, "no further LLM call", f"LLM call with {len(messages)} messages", kind="llm"
                )
            )
        self._check_request(step, messages)
        self.calls += 1
        response = self._responses[step]
        if isinstance(response, ProviderError):
            raise response
        return response

    def _check_request(self, step: int, messages: list[ChatMessage]) -> None:
        if self._requests is None or step >= len(self._requests) or self._requests[step] is None:
            return
        expected = list(self._requests[step] or [])
        conversation = [message for message in messages if message.role != "system"]
        got = conversation_digests(conversation)
        if got == expected:
            return
        index = next(
            (
                i
                for i, (a, b) in enumerate(zip(expected, got, strict=False))
                if a != b and not _redacted_echo(conversation[i])
            ),
            min(len(expected), len(got)),
        )
        if index == len(expected) == len(got):
            return
        message = conversation[index] if index < len(conversation) else None
        raise self._diverged(
            ReplayDivergence(
                step,
                {
                    "messageIndex": index,
                    "messages": len(expected),
                    "digest": expected[index] if index < len(expected) else None,
                },
                {
                    "messageIndex": index,
                    "messages": len(got),
                    "digest": got[index] if index < len(got) else None,
                    "role": message.role if message is not None else None,
                    "content": excerpt(message.content) if message is not None else None,
                },
                kind="llm",
            )
        )


def _redacted_echo(message: ChatMessage) -> bool:
    """An assistant message without text: in a replay it echoes a recorded response, and when
    the run was recorded without content capture its text (hence its digest) is unknown. The
    agent did not write it, so it cannot be where the agent diverged."""
    return message.role == "assistant" and not message.content


class RecordedTools(_Recorded):
    """Returns the recorded tool results in order.

    Each call must name the recorded result's tool; when the recorded ``calls`` are given,
    its arguments must match them too.
    """

    def __init__(
        self,
        results: Sequence[McpToolResult],
        *,
        calls: Sequence[McpToolCall] | None = None,
        definitions: Sequence[McpToolDefinition] = (),
    ) -> None:
        if calls is not None and len(calls) != len(results):
            raise ValueError(f"{len(calls)} recorded calls for {len(results)} recorded results")
        self._results = list(results)
        self._calls = list(calls) if calls is not None else None
        self._definitions = list(definitions)
        self.calls = 0

    @property
    def recorded(self) -> int:
        return len(self._results)

    def definitions(self) -> list[McpToolDefinition]:
        return list(self._definitions)

    async def call(self, call: McpToolCall) -> McpToolResult:
        step = self.calls
        got = {"name": call.name, "arguments": call.arguments}
        if step >= len(self._results):
            raise self._diverged(ReplayDivergence(step, "no further tool call", got, kind="tool"))
        recorded = self._results[step]
        if self._calls is not None:
            expected_call = self._calls[step]
            expected = {"name": expected_call.name, "arguments": expected_call.arguments}
            if expected != got or recorded.name != call.name:
                raise self._diverged(ReplayDivergence(step, expected, got, kind="tool"))
        elif recorded.name != call.name:
            raise self._diverged(ReplayDivergence(step, {"name": recorded.name}, got, kind="tool"))
        self.calls += 1
        return recorded.model_copy(update={"call_id": call.call_id})


class RecordingProvider:
    """Wraps a provider and keeps every response it returns in ``responses``."""

    def __init__(self, inner: LLMProvider, responses: list[LLMResponse] | None = None) -> None:
        self._inner = inner
        self.name = inner.name
        self.model = inner.model
        self.responses: list[LLMResponse] = responses if responses is not None else []

    def for_task(self, task: Task) -> RecordingProvider:
        """Specialise the wrapped provider for ``task``, recording into the same list."""
        if isinstance(self._inner, TaskAwareProvider):
            return RecordingProvider(self._inner.for_task(task), self.responses)
        return self

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        response = await self._inner.complete(messages, tools)
        self.responses.append(response)
        return response


class RecordingTools:
    """Wraps a tool executor and keeps every call and result in ``calls`` and ``results``."""

    def __init__(self, inner: ToolExecutor) -> None:
        self._inner = inner
        self.calls: list[McpToolCall] = []
        self.results: list[McpToolResult] = []

    def definitions(self) -> list[McpToolDefinition]:
        return self._inner.definitions()

    async def call(self, call: McpToolCall) -> McpToolResult:
        result = await self._inner.call(call)
        self.calls.append(call)
        self.results.append(result)
        return result


class RecordedChildren(_Recorded):
    """Answers delegations (``ChildTasks.run``) with the recorded child tasks' outcomes.

    A delegation must match a recorded one (same agent and parameters); recorded children
    are consumed in order per (agent, parameters), since concurrent delegations may start
    in any order. With ``live``, delegations that match nothing recorded go to it (a fork);
    without, they raise :class:`ReplayDivergence`.
    """

    def __init__(self, children: Sequence[RecordedChild], *, live: ChildTasks | None = None) -> None:
        self._pending: dict[str, deque[RecordedChild]] = {}
        for child in children:
            self._pending.setdefault(_child_key(child.agent, child.parameters), deque()).append(child)
        self._recorded = len(children)
        self._live = live
        self.calls = 0
        self.live_calls = 0

    @property
    def recorded(self) -> int:
        return self._recorded

    @property
    def unused(self) -> list[RecordedChild]:
        return [child for queue in self._pending.values() for child in queue]

    async def run(self, target_agent: str, parameters: dict[str, Any], *, timeout_s: float) -> Task:
        queue = self._pending.get(_child_key(target_agent, parameters))
        if not queue:
            if self._live is not None:
                self.live_calls += 1
                return await self._live.run(target_agent, parameters, timeout_s=timeout_s)
            expected = [{"agent": c.agent, "parameters": c.parameters} for c in self.unused[:3]]
            raise self._diverged(
                ReplayDivergence(
                    self.calls,
                    expected or "no further delegation",
                    {"agent": target_agent, "parameters": parameters},
                    kind="child",
                )
            )
        child = queue.popleft()
        self.calls += 1
        task = Task(
            target_agent=target_agent,
            parameters=parameters,
            result=child.result,
            error=child.error,
        )
        if child.task_id:
            task = task.model_copy(update={"task_id": child.task_id})
        try:
            status = TaskStatus(child.status)
        except ValueError:
            status = TaskStatus.FAILED
        return task.model_copy(update={"status": status})


def _child_key(agent: str, parameters: dict[str, Any]) -> str:
    return agent + "\x00" + json.dumps(parameters, sort_keys=True, default=str)


class SplicedProvider:
    """The first ``len(recorded)`` LLM calls answered from the recording, the rest by ``live``.

    ``for_task`` specialises the live provider (a scripted provider reads the task's new
    ``script``), keeping the recorded prefix. One instance serves one task.
    """

    def __init__(self, recorded: Sequence[LLMResponse], live: LLMProvider) -> None:
        self._recorded = list(recorded)
        self._live = live
        self.calls = 0
        self.name = live.name
        self.model = live.model

    @property
    def replayed(self) -> int:
        return min(self.calls, len(self._recorded))

    def for_task(self, task: Task) -> SplicedProvider:
        # one SplicedProvider serves one task: specialise in place so that ``calls`` counts it
        if isinstance(self._live, TaskAwareProvider):
            self._live = self._live.for_task(task)
        return self

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        step = self.calls
        self.calls += 1
        if step < len(self._recorded):
            return self._recorded[step]
        return await self._live.complete(messages, tools)


class SplicedTools:
    """The first recorded tool calls answered from the recording (checked like
    :class:`RecordedTools`), every later call by the live executor."""

    def __init__(self, recorded: RecordedTools, live: ToolExecutor) -> None:
        self._recorded = recorded
        self._live = live
        self.live_calls = 0

    def definitions(self) -> list[McpToolDefinition]:
        return self._live.definitions()

    async def call(self, call: McpToolCall) -> McpToolResult:
        if self._recorded.calls < self._recorded.recorded:
            return await self._recorded.call(call)
        self.live_calls += 1
        return await self._live.call(call)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- the recording (loom_protocol.Recording, as the replay service sends it) --------------------


@typing.overload
def recorded_response(step: RecordedLlmStep, *, errors: typing.Literal[False]) -> LLMResponse: ...


@typing.overload
def recorded_response(step: RecordedLlmStep, *, errors: bool = True) -> LLMResponse | ProviderError: ...


def recorded_response(step: RecordedLlmStep, *, errors: bool = True) -> LLMResponse | ProviderError:
    """The response a recorded LLM step stands for: what a replay or a resumed attempt gets
    instead of calling the provider (with ``errors``, the provider's error when it failed; the
    task journal records only answered calls)."""
    if errors and step.error is not None:
        return ProviderError(step.error)
    return LLMResponse(
        content=step.content,
        tool_calls=step.tool_calls,
        usage=TokenUsage(
            input_tokens=step.input_tokens, output_tokens=step.output_tokens, cost_usd=step.cost_usd
        ),
        latency_s=step.latency_s,
        model=step.model,
    )


def recorded_provider(
    recording: Recording, *, name: str = "recorded", check_requests: bool = True
) -> RecordedProvider:
    """A provider answering every LLM call from ``recording``."""
    requests = [step.request_digests for step in recording.llm] if check_requests else None
    return RecordedProvider(
        [recorded_response(step) for step in recording.llm], name=name, model=None, requests=requests
    )


def recorded_tools(recording: Recording, definitions: Sequence[McpToolDefinition] = ()) -> RecordedTools:
    """A tool executor answering every tool call from ``recording``."""
    return RecordedTools(
        [step.result for step in recording.tools],
        calls=[step.call for step in recording.tools],
        definitions=definitions,
    )
