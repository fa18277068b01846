"""The LLM provider interface and the chat models it speaks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, runtime_checkable

from loom_protocol import McpToolCall, McpToolDefinition, Task
from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    """One message of a chat conversation (OpenAI roles)."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[McpToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


class TokenUsage(BaseModel):
    """Tokens of one LLM call and, when the provider knows its prices, its cost."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = None


class LLMResponse(BaseModel):
    """What the model answered: text, tool calls or both; ``retries`` is how many times the
    provider retried the call (429, 5xx, timeouts) before this answer."""

    model_config = ConfigDict(frozen=True)

    content: str | None = None
    tool_calls: list[McpToolCall] = Field(default_factory=list)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_s: float = 0.0
    model: str = ""
    retries: int = Field(default=0, ge=0)


class ProviderError(Exception):
    """An LLM call failed; ``status`` is the HTTP status when there was a response and
    ``retries`` the retries the provider made before giving up."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str | None = None, retries: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retries = retries


@runtime_checkable
class LLMProvider(Protocol):
    """A chat-completion backend. ``complete`` raises ProviderError when the call fails."""

    name: str
    model: str

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse: ...


OnDelta = Callable[[str], Awaitable[None]]
"""Called with each piece of answer text as the model produces it."""


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that can stream: ``stream`` is ``complete`` that also hands each piece of the
    text to ``on_delta`` as it arrives (tool calls are only in the returned response)."""

    name: str
    model: str

    async def stream(
        self, messages: list[ChatMessage], tools: list[McpToolDefinition], on_delta: OnDelta
    ) -> LLMResponse: ...


@runtime_checkable
class TaskAwareProvider(Protocol):
    """A provider that can specialise itself for one task (the scripted provider reads
    ``parameters["script"]``). Agents call ``for_task`` when a provider offers it."""

    def for_task(self, task: Task) -> LLMProvider: ...


def message_digest(message: ChatMessage) -> str:
    """A short, stable fingerprint of one chat message (role, content, tool calls, ids).

    ``llm.request`` events carry the digests of the conversation sent to the LLM so that a
    deterministic replay can tell, step by step, whether the replayed agent asked the LLM the
    same thing as the original run.
    """
    canonical = json.dumps(
        message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def conversation_digests(messages: list[ChatMessage]) -> list[str]:
    """The digests of the non-system messages (the system message depends on the session's
    memory, which a replay does not reproduce)."""
    return [message_digest(message) for message in messages if message.role != "system"]


def count_tokens(text: str) -> int:
    """A deterministic token count: whitespace-separated words."""
    return len(text.split())
