"""A provider for any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama,
llama.cpp's server, ...), on the official ``openai`` SDK.

The SDK retries 408/409/429/5xx answers, timeouts and connection errors with exponential
backoff (0.5 s doubling, at most 8 s, minus up to 25 % jitter) and honours ``Retry-After`` /
``retry-after-ms`` up to 60 s; ``max_retries`` bounds the retries and ``timeout_s`` each
attempt. The retries a call took are reported on the response (``LLMResponse.retries``)
and in the error of a failed call, read from the ``x-stainless-retry-count`` header the SDK
sets on every attempt.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
from loom_protocol import McpToolCall, McpToolDefinition

from loom_agent_worker.runtime.providers.base import (
    ChatMessage,
    LLMResponse,
    OnDelta,
    ProviderError,
    TokenUsage,
)
from loom_agent_worker.runtime.providers.pricing import PriceTable

_BODY_EXCERPT = 500
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_S = 60.0


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A ChatMessage in the OpenAI chat format."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    payload: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        # "" rather than null: OpenAI takes both, llama.cpp's server refuses null
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


def _excerpt(response: Any) -> str:
    try:
        return str(response.text)[:_BODY_EXCERPT]
    except Exception:  # the SDK's httpx ResponseNotRead: a streamed error answer, body unread
        return ""


def _retries_of(exc: openai.APIError) -> int:
    request = getattr(exc, "request", None)
    if request is None:
        return 0
    try:
        return int(request.headers.get("x-stainless-retry-count", "0"))
    except ValueError:
        return 0


class OpenAICompatibleProvider:
    """Calls ``POST {base_url}/chat/completions`` through ``openai.AsyncOpenAI``.

    Args:
        base_url: The API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: The model name sent with every request.
        api_key: The bearer token (local servers accept any; empty sends ``"none"``).
        timeout_s: The timeout of one attempt.
        max_retries: Retries after the first attempt (0: none).
        prices: Prices per model; the default table when None.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        temperature: float | None = None,
        tool_choice: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.model = model
        self.temperature = temperature  # None: the server's default
        self.tool_choice = tool_choice or None  # None: not sent (some servers refuse "auto")
        self.base_url = base_url.rstrip("/")
        self._where = f"{self.base_url}/chat/completions (model {model!r})"
        self._prices = prices or PriceTable()
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "none",
            timeout=timeout_s,
            max_retries=max_retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    def request_body(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> dict[str, Any]:
        """The JSON body of the chat-completions request for ``messages`` and ``tools``."""
        body: dict[str, Any] = {"model": self.model, "messages": [message_to_openai(m) for m in messages]}
        if tools:
            body["tools"] = [tool_to_openai(definition) for definition in tools]
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def complete(self, messages: list[ChatMessage], tools: list[McpToolDefinition]) -> LLMResponse:
        started = time.perf_counter()
        body = self.request_body(messages, tools)
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**body)
        except openai.OpenAIError as exc:
            raise self._call_error(exc) from None
        latency_s = time.perf_counter() - started
        try:
            data = json.loads(raw.text)
        except ValueError:
            raise ProviderError(
                f"{self._where} answered with invalid JSON: {raw.text[:_BODY_EXCERPT]}",
                status=raw.status_code,
                retries=raw.retries_taken,
            ) from None
        return self._parse(data, latency_s, raw.retries_taken)

    async def stream(
        self, messages: list[ChatMessage], tools: list[McpToolDefinition], on_delta: OnDelta
    ) -> LLMResponse:
        """``complete`` with ``stream=True``: each content delta goes to ``on_delta`` as it
        arrives; tool calls are assembled from their deltas and returned with the text and the
        usage (asked with ``stream_options.include_usage``; 0 tokens when the server omits it).
        The SDK retries the request until the first byte; a failure after it is not retried."""
        started = time.perf_counter()
        body = self.request_body(messages, tools)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        retries = 0
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        model = self.model
        input_tokens = output_tokens = 0
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**body)
            retries = raw.retries_taken
            chunks = raw.parse()
            async for chunk in chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    input_tokens = chunk.usage.prompt_tokens or 0
                    output_tokens = chunk.usage.completion_tokens or 0
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        await on_delta(delta.content)
                    for part in delta.tool_calls or []:
                        call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = part.id or call["id"]
                        if part.function is not None:
                            call["name"] += part.function.name or ""
                            call["arguments"] += part.function.arguments or ""
        except openai.OpenAIError as exc:
            raise self._call_error(exc, retries) from None
        except (ValueError, TypeError, AttributeError) as exc:
            reason = f"unexpected stream chunk from {self._where}: {exc!r}"
            raise ProviderError(reason, retries=retries) from None
        tool_calls = [
            self._parse_call({"id": call["id"] or f"call_{index}", "function": call})
            for index, call in sorted(calls.items())
        ]
        return LLMResponse(
            content="".join(text) if text or not tool_calls else None,
            tool_calls=tool_calls,
            usage=TokenUsage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=self._prices.cost(model, input_tokens, output_tokens),
            ),
            latency_s=time.perf_counter() - started,
            model=model,
            retries=retries,
        )

    def _call_error(self, exc: openai.OpenAIError, retries: int = 0) -> ProviderError:
        """The ProviderError for a failed call: which endpoint and model, what happened, retries."""
        if isinstance(exc, openai.APIStatusError):
            excerpt = _excerpt(exc.response)
            return ProviderError(
                f"{self._where} answered HTTP {exc.status_code} after {_retries_of(exc)} retries: {excerpt}",
                status=exc.status_code,
                body=excerpt,
                retries=_retries_of(exc),
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(
                f"{self._where} timed out after {_retries_of(exc)} retries", retries=_retries_of(exc)
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            return ProviderError(
                f"{self._where} unreachable after {_retries_of(exc)} retries: {detail}",
                retries=_retries_of(exc),
            )
        return ProviderError(f"{self._where} failed: {type(exc).__name__}: {exc}", retries=retries)

    def _parse(self, data: Any, latency_s: float, retries: int) -> LLMResponse:
        try:
            message = data["choices"][0]["message"]
            calls = [self._parse_call(raw) for raw in message.get("tool_calls") or []]
            usage = data.get("usage") or {}
            input_tokens = int(usage.get("prompt_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or 0)
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError(f"content is {type(content).__name__}, not a string")
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ProviderError(f"unexpected response shape from {self._where}: {exc!r}") from None
        model = str(data.get("model") or self.model)
        return LLMResponse(
            content=content,
            tool_calls=calls,
            usage=TokenUsage(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=self._prices.cost(model, input_tokens, output_tokens),
            ),
            latency_s=latency_s,
            model=model,
            retries=retries,
        )

    def _parse_call(self, raw: dict[str, Any]) -> McpToolCall:
        function = raw["function"]
        arguments_text = function.get("arguments") or "{}"
        try:
            arguments = json.loads(arguments_text)
        except json.JSONDecodeError:
            raise ProviderError(
                f"{self._where}: tool call {function.get('name')!r} has invalid JSON arguments: "
                f"{arguments_text[:200]}"
            ) from None
        if not isinstance(arguments, dict):
            raise ProviderError(
                f"{self._where}: tool call {function.get('name')!r} arguments are not a JSON object"
            )
        return McpToolCall(call_id=raw["id"], name=function["name"], arguments=arguments)
