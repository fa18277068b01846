"""A deterministic, offline LLM provider for demos, tests and load runs.

With a script (``task.parameters["script"]``) it plays the steps in order: step ``i`` is
the answer to the ``i``-th call, i.e. the number of assistant turns so far. Without one it
answers arithmetic questions through the ``calculator`` tool and echoes anything else.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from loom_protocol import McpToolCall, McpToolDefinition, Task
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loom_agent_worker.runtime.providers.base import (
    ChatMessage,
    LLMResponse,
    OnDelta,
    ProviderError,
    TokenUsage,
    count_tokens,
)

_CANDIDATE_RE = re.compile(r"[0-9.\s+\-*/%()]+")
_OPERATOR_BETWEEN_RE = re.compile(r"[0-9.)]\s*(\*\*|//|[+\-*/%])\s*[-+]*\s*[0-9.(]")


def extract_expression(text: str) -> str | None:
    """The longest run of digits, spaces, operators and parentheses that is an expression.

    ``"what is (2+3)*4?"`` gives ``"(2+3)*4"``; text with numbers but no operator between
    two operands (``"I have 2 apples"``) gives None.
    """
    best: str | None = None
    for match in _CANDIDATE_RE.finditer(text):
        candidate = _balance(match.group().strip(" \t\r\n."))
        if _OPERATOR_BETWEEN_RE.search(candidate) and (best is None or len(candidate) > len(best)):
            best = candidate
    return best


def text_pieces(text: str) -> list[str]:
    """``text`` cut before each word (each piece keeps the whitespace before its word), so
    ``"".join(text_pieces(text)) == text``."""
    pieces: list[str] = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]  # trailing whitespace
    if tail and pieces:
        pieces[-1] += tail
    elif tail:
        pieces.append(tail)
    return pieces


def _balance(candidate: str) -> str:
    # Drop unmatched parentheses at the edges: "(see 2+3)" yields "2+3)" -> "2+3".
    while candidate.count(")") > candidate.count("(") and candidate.endswith(")"):
        candidate = candidate[:-1].rstrip()
    while candidate.count("(") > candidate.count(")") and candidate.startswith("("):
        candidate = candidate[1:].lstrip()
    return candidate


class ScriptStep(BaseModel):
    """One scripted model turn: a tool call or a final answer, with an optional thought."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thought: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    answer: str | None = None

    @model_validator(mode="after")
    def _tool_xor_answer(self) -> ScriptStep:
        if (self.tool is None) == (self.answer is None):
            raise ValueError("a script step needs exactly one of 'tool' or 'answer'")
        return self


def parse_script(raw: Any) -> list[ScriptStep]:
    """Validate a script, raising ProviderError with the reason when it is malformed."""
    if not isinstance(raw, list) or not raw:
        raise ProviderError("script must be a non-empty list of steps")
    try:
        return [ScriptStep.model_validate(step) for step in raw]
    except ValidationError as exc:
        raise ProviderError(
            f"invalid script: {exc.errors()[0]['msg']} (at {exc.errors()[0]['loc']})"
        ) from None


class ScriptedProvider:
    """The default provider: deterministic, offline, free (``cost_usd`` 0)."""

    name = "scripted"

    def __init__(self, model: str = "scripted-v1", script: list[ScriptStep] | None = None) -> None:
        self.model = model
        self._script = script

    def for_task(self, task: Task) -> ScriptedProvider:
        """This provider bound to ``task.parameters["script"]`` (or itself when there is none)."""
        raw = task.parameters.get("script")
        if raw is None:
            return self
        return ScriptedProvider(self.model, parse_script(raw))

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        started = time.perf_counter()
        step = sum(1 for message in messages if message.role == "assistant")
        if self._script is not None:
            content, calls = self._scripted(step)
        else:
            content, calls = self._improvised(messages, tools, step)
        output = (content or "") + "".join(f" {c.name} {json.dumps(c.arguments)}" for c in calls)
        usage = TokenUsage(
            input_tokens=sum(count_tokens(message.content) for message in messages),
            output_tokens=count_tokens(output),
            cost_usd=0.0,
        )
        return LLMResponse(
            content=content,
            tool_calls=calls,
            usage=usage,
            latency_s=time.perf_counter() - started,
            model=self.model,
        )

    async def stream(
        self, messages: list[ChatMessage], tools: list[McpToolDefinition], on_delta: OnDelta
    ) -> LLMResponse:
        """``complete``, handing the answer to ``on_delta`` word by word (a turn that calls
        tools streams nothing, as models mostly do)."""
        response = await self.complete(messages, tools)
        if response.content and not response.tool_calls:
            for piece in text_pieces(response.content):
                await on_delta(piece)
        return response

    def _scripted(self, step: int) -> tuple[str | None, list[McpToolCall]]:
        assert self._script is not None
        if step >= len(self._script):
            raise ProviderError(
                f"script exhausted: no step {step} (the script has {len(self._script)} steps)"
            )
        entry = self._script[step]
        if entry.answer is not None:
            return entry.answer, []
        assert entry.tool is not None
        return entry.thought, [
            McpToolCall(call_id=f"call_{step}_0", name=entry.tool, arguments=entry.arguments)
        ]

    def _improvised(
        self, messages: list[ChatMessage], tools: list[McpToolDefinition], step: int
    ) -> tuple[str | None, list[McpToolCall]]:
        last = messages[-1] if messages else None
        if last is not None and last.role == "tool":
            return last.content, []
        prompt = next((message.content for message in reversed(messages) if message.role == "user"), "")
        expression = extract_expression(prompt)
        if expression is not None and any(definition.name == "calculator" for definition in tools):
            call = McpToolCall(
                call_id=f"call_{step}_0", name="calculator", arguments={"expression": expression}
            )
            return f"I will evaluate {expression} with the calculator.", [call]
        return prompt, []
