"""A provider for any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, ...)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from loom_protocol import McpToolCall, McpToolDefinition

from loom_agent_worker.runtime.providers.base import ChatMessage, LLMResponse, ProviderError, TokenUsage

_BODY_EXCERPT = 500


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A ChatMessage in the OpenAI chat format."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    payload: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        payload["content"] = message.content or None
        payload["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.name is not None and message.role == "user":
        payload["name"] = message.name
    return payload


def tool_to_openai(definition: McpToolDefinition) -> dict[str, Any]:
    """An MCP tool definition as an OpenAI function tool."""
    return {
        "type": "function",
        "function": {
            "name": definition.name,
            "description": definition.description,
            "parameters": definition.input_schema,
        },
    }


class OpenAICompatibleProvider:
    """Calls ``POST {base_url}/chat/completions``.

    ``transport`` replaces httpx's network transport (tests pass an ``httpx.MockTransport``).
    Cost is computed only when prices per million tokens are given.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        input_usd_per_mtok: float | None = None,
        output_usd_per_mtok: float | None = None,
    ) -> None:
        self.model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._input_price = input_usd_per_mtok
        self._output_price = output_usd_per_mtok
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    def request_body(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [message_to_openai(m) for m in messages]}
        if tools:
            body["tools"] = [tool_to_openai(definition) for definition in tools]
        return body

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        started = time.perf_counter()
        try:
            response = await self._client.post(self._url, json=self.request_body(messages, tools))
        except httpx.HTTPError as exc:
            raise ProviderError(f"request to {self._url} failed: {type(exc).__name__}: {exc}") from exc
        latency_s = time.perf_counter() - started
        if response.status_code >= 400:
            excerpt = response.text[:_BODY_EXCERPT]
            raise ProviderError(
                f"{self._url} answered HTTP {response.status_code}: {excerpt}",
                status=response.status_code,
                body=excerpt,
            )
        try:
            data = response.json()
        except ValueError:
            raise ProviderError(
                f"{self._url} answered with invalid JSON: {response.text[:_BODY_EXCERPT]}",
                status=response.status_code,
            ) from None
        return self._parse(data, latency_s)

    def _parse(self, data: Any, latency_s: float) -> LLMResponse:
        try:
            message = data["choices"][0]["message"]
            calls = [self._parse_call(raw) for raw in message.get("tool_calls") or []]
            usage = data.get("usage") or {}
            input_tokens = int(usage.get("prompt_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or 0)
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ProviderError(f"unexpected response shape from {self._url}: {exc!r}") from None
        return LLMResponse(
            content=content,
            tool_calls=calls,
            usage=TokenUsage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=self._cost(input_tokens, output_tokens),
            ),
            latency_s=latency_s,
            model=str(data.get("model") or self.model),
        )

    def _parse_call(self, raw: dict[str, Any]) -> McpToolCall:
        function = raw["function"]
        arguments_text = function.get("arguments") or "{}"
        try:
            arguments = json.loads(arguments_text)
        except json.JSONDecodeError:
            raise ProviderError(
                f"tool call {function.get('name')!r} has invalid JSON arguments: {arguments_text[:200]}"
            ) from None
        if not isinstance(arguments, dict):
            raise ProviderError(f"tool call {function.get('name')!r} arguments are not a JSON object")
        return McpToolCall(call_id=raw["id"], name=function["name"], arguments=arguments)

    def _cost(self, input_tokens: int, output_tokens: int) -> float | None:
        if self._input_price is None or self._output_price is None:
            return None
        return (input_tokens * self._input_price + output_tokens * self._output_price) / 1_000_000
