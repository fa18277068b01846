"""Deterministic replay: answer LLM and tool calls from a recording instead of re-running them.

Agents get their provider and tools injected, so replaying a run means handing them a
:class:`RecordedProvider` and :class:`RecordedTools`. Both raise :class:`ReplayDivergence`
as soon as the agent asks for something the recording does not hold (a different tool or
arguments, or more calls than were recorded). :class:`RecordingProvider` and
:class:`RecordingTools` wrap live ones to capture a recording in the first place; the
same data is also in a run's events (``llm.usage`` + ``agent.thought``/``tool.call``/
``agent.answer`` for responses, ``tool.result`` for tool results).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom_protocol import McpToolCall, McpToolDefinition, McpToolResult, Task

from loom_agent_worker.runtime.providers.base import ChatMessage, LLMProvider, LLMResponse, TaskAwareProvider
from loom_agent_worker.runtime.tools import ToolExecutor


class ReplayDivergence(Exception):
    """The replayed run asked for something other than what was recorded at ``step``."""

    def __init__(self, step: int, expected: Any, got: Any) -> None:
        super().__init__(f"replay diverged at step {step}: expected {expected!r}, got {got!r}")
        self.step = step
        self.expected = expected
        self.got = got


class RecordedProvider:
    """Returns the recorded LLM responses in order, one per ``complete`` call."""

    def __init__(self, responses: Sequence[LLMResponse], *, name: str = "recorded", model: str | None = None):
        self._responses = list(responses)
        self._next = 0
        self.name = name
        self.model = model or (self._responses[0].model if self._responses else "recorded")

    @property
    def calls(self) -> int:
        return self._next

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        step = self._next
        if step >= len(self._responses):
            raise ReplayDivergence(step, "no further LLM call", f"LLM call with {len(messages)} messages")
        self._next += 1
        return self._responses[step]


class RecordedTools:
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
        self._next = 0

    @property
    def calls(self) -> int:
        return self._next

    def definitions(self) -> list[McpToolDefinition]:
        return list(self._definitions)

    async def call(self, call: McpToolCall) -> McpToolResult:
        step = self._next
        got = {"name": call.name, "arguments": call.arguments}
        if step >= len(self._results):
            raise ReplayDivergence(step, "no further tool call", got)
        recorded = self._results[step]
        if self._calls is not None:
            expected_call = self._calls[step]
            expected = {"name": expected_call.name, "arguments": expected_call.arguments}
            if expected != got or recorded.name != call.name:
                raise ReplayDivergence(step, expected, got)
        elif recorded.name != call.name:
            raise ReplayDivergence(step, {"name": recorded.name}, got)
        self._next += 1
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
