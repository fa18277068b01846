"""LLM providers: the interface, the scripted default and the OpenAI-compatible client."""

from __future__ import annotations

from loom_agent_worker.runtime.providers.base import (
    ChatMessage,
    LLMProvider,
    LLMResponse,
    OnDelta,
    ProviderError,
    StreamingProvider,
    TaskAwareProvider,
    TokenUsage,
)
from loom_agent_worker.runtime.providers.openai import OpenAICompatibleProvider
from loom_agent_worker.runtime.providers.pricing import DEFAULT_PRICES, Price, PriceTable, load_prices
from loom_agent_worker.runtime.providers.scripted import ScriptedProvider, ScriptStep, extract_expression

__all__ = [
    "DEFAULT_PRICES",
    "ChatMessage",
    "LLMProvider",
    "LLMResponse",
    "OnDelta",
    "OpenAICompatibleProvider",
    "Price",
    "PriceTable",
    "ProviderError",
    "ScriptStep",
    "ScriptedProvider",
    "StreamingProvider",
    "TaskAwareProvider",
    "TokenUsage",
    "extract_expression",
    "load_prices",
    "make_provider",
]


def make_provider(
    name: str,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 3,
    prices: PriceTable | None = None,
    temperature: float | None = None,
    tool_choice: str | None = None,
) -> LLMProvider:
    """Build a provider by name: ``"scripted"`` (offline default, cost 0) or ``"openai"``
    (any OpenAI-compatible endpoint; ``timeout_s`` per attempt, ``max_retries`` retries,
    cost from ``prices``, ``temperature`` and ``tool_choice`` sent when set)."""
    if name == "scripted":
        return ScriptedProvider(model or "scripted-v1")
    if name == "openai":
        if not base_url or not model:
            raise ValueError("the openai provider needs base_url and model")
        return OpenAICompatibleProvider(
            base_url,
            model,
            api_key,
            timeout_s,
            max_retries=max_retries,
            prices=prices,
            temperature=temperature,
            tool_choice=tool_choice,
        )
    raise ValueError(f"unknown LLM provider {name!r} (known: scripted, openai)")
