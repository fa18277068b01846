"""Tools: the ``@tool`` decorator and the registry that validates, runs and times calls.

A tool is a plain function (async or sync) with type-annotated parameters. Its JSON
schema and its argument validation both come from a pydantic model built from the
signature, so what the LLM is told and what is accepted cannot drift apart.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from loom_protocol import McpToolCall, McpToolDefinition, McpToolResult
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

DEFAULT_TIMEOUT_S = 30.0
MAX_RESULT_CHARS = 16_000
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI accepts for function names


class ToolExecutor(Protocol):
    """What an agent needs from its tools: their definitions and a way to call them.

    ``ToolRegistry`` runs real tools; ``RecordedTools`` answers from a recording.
    """

    def definitions(self) -> list[McpToolDefinition]: ...

    async def call(self, call: McpToolCall) -> McpToolResult: ...


@dataclass(frozen=True)
class Tool:
    """A callable tool: its MCP definition, the function and its argument model.

    ``requires_approval`` marks a tool whose calls a person must approve before they run: the
    agent stops the task (``input_required``) until the call is approved or rejected.
    """

    definition: McpToolDefinition
    fn: Callable[..., Any]
    arguments_model: type[BaseModel]
    timeout_s: float
    requires_approval: bool = False

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@typing.overload
def tool(name: Callable[..., Any], /) -> Tool: ...


@typing.overload
def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    name: str | Callable[..., Any] | None = None,
    *,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (async or sync) into a :class:`Tool`.

    Use it bare (``@tool``) or with options (``@tool("name", timeout_s=5.0)``). The name defaults to the
    function's name, the description to the first paragraph of its docstring. Every parameter
    needs a type annotation: the tool's JSON schema (what the LLM is shown) and the validation
    of the arguments the LLM sends both come from them. Parameters may carry constraints and
    descriptions with ``Annotated[int, Field(ge=0, description=...)]``. A call that outlasts
    ``timeout_s`` seconds becomes an error result. ``requires_approval`` marks the tool as one
    whose calls need a person's approval before they run (see docs/durable.md).
    """

    if callable(name):
        return tool()(name)

    def decorate(fn: Callable[..., Any]) -> Tool:
        tool_name = name or fn.__name__
        if not _NAME_RE.match(tool_name):
            raise ValueError(f"invalid tool name {tool_name!r}: use 1..64 characters of [A-Za-z0-9_-]")
        if timeout_s <= 0:
            raise ValueError(f"tool {tool_name!r}: timeout_s must be > 0")
        model = _arguments_model(tool_name, fn)
        doc = inspect.getdoc(fn) or ""
        definition = McpToolDefinition(
            name=tool_name,
            description=description or doc.split("\n\n", 1)[0].replace("\n", " "),
            input_schema=model.model_json_schema(),
        )
        return Tool(
            definition=definition,
            fn=fn,
            arguments_model=model,
            timeout_s=timeout_s,
            requires_approval=requires_approval,
        )

    return decorate


def _arguments_model(tool_name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs parameters are not supported")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {tool_name!r}: positional-only parameters are not supported")
        if param.name not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {param.name!r} needs a type annotation")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model_name = "".join(part.capitalize() for part in re.split(r"[_-]", tool_name)) + "Arguments"
    config = ConfigDict(extra="forbid")
    return create_model(model_name, __config__=config, **fields)


def describe_validation_error(exc: ValidationError) -> str:
    """``field: message; other: message`` for the first few errors of a ValidationError."""
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "arguments"
        parts.append(f"{location}: {error['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def render_content(value: Any, *, max_chars: int = MAX_RESULT_CHARS) -> str:
    """A tool's return value as the text the LLM sees (JSON for non-strings), bounded."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > max_chars:
        text = f"{text[:max_chars]}... [truncated {len(text) - max_chars} characters]"
    return text


class ToolRegistry:
    """The tools an agent may call, by name. ``call`` never raises (except on cancellation)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Tool) -> Tool:
        if item.name in self._tools:
            raise ValueError(f"tool {item.name!r} is already registered")
        self._tools[item.name] = item
        return item

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def requires_approval(self, name: str) -> bool:
        """Whether the tool ``name`` is marked ``requires_approval``."""
        item = self._tools.get(name)
        return item is not None and item.requires_approval

    def names(self) -> list[str]:
        return list(self._tools)

    def definitions(self) -> list[McpToolDefinition]:
        return [item.definition for item in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def call(self, call: McpToolCall) -> McpToolResult:
        """Validate the arguments, run the tool under its timeout, and report the outcome.

        Unknown tools, invalid arguments, exceptions and timeouts become ``is_error``
        results whose content says what went wrong. A sync tool runs in a thread; on
        timeout the caller stops waiting but the thread runs to its end.
        """
        started = time.perf_counter()

        def result(content: str, *, is_error: bool) -> McpToolResult:
            duration_ms = (time.perf_counter() - started) * 1000.0
            return McpToolResult(
                call_id=call.call_id,
                name=call.name,
                content=content,
                is_error=is_error,
                duration_ms=duration_ms,
            )

        item = self._tools.get(call.name)
        if item is None:
            available = ", ".join(sorted(self._tools)) or "none"
            return result(f"unknown tool {call.name!r} (available: {available})", is_error=True)
        try:
            arguments = item.arguments_model.model_validate(call.arguments)
        except ValidationError as exc:
            return result(
                f"invalid arguments for tool {call.name!r}: {describe_validation_error(exc)}", is_error=True
            )
        kwargs = {field: getattr(arguments, field) for field in type(arguments).model_fields}
        deadline = asyncio.timeout(item.timeout_s)
        try:
            async with deadline:
                if item.is_async:
                    value = await item.fn(**kwargs)
                else:
                    value = await asyncio.to_thread(item.fn, **kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                return result(f"tool {call.name!r} timed out after {item.timeout_s:g}s", is_error=True)
            return result(f"tool {call.name!r} failed: TimeoutError: {exc}", is_error=True)
        except Exception as exc:
            return result(f"tool {call.name!r} failed: {type(exc).__name__}: {exc}", is_error=True)
        return result(render_content(value), is_error=False)
