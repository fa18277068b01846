from __future__ import annotations

import asyncio
import threading
from typing import Annotated

import pytest
from loom_agent_worker.runtime import BUILTIN_TOOLS, ToolRegistry, builtin_registry, tool
from loom_protocol import McpToolCall
from pydantic import Field


@tool(name="greet", timeout_s=2.0)
def greet(name: str, times: Annotated[int, Field(ge=1, le=3)] = 1) -> str:
    """Greet someone.

    Longer text that is not part of the description.
    """
    return " ".join([f"hello {name}"] * times) + f" from {threading.current_thread().name}"


@tool(name="never_returns", timeout_s=0.05)
async def never_returns() -> str:
    await asyncio.Event().wait()
    return "unreachable"


@tool(name="boom")
async def boom(reason: str) -> str:
    raise ValueError(reason)


@tool(name="own_timeout")
async def own_timeout() -> str:
    raise TimeoutError("upstream took too long")


def call(tool_name: str, /, **arguments: object) -> McpToolCall:
    return McpToolCall(call_id=f"c-{tool_name}", name=tool_name, arguments=arguments)


def test_schema_comes_from_the_signature() -> None:
    definition = greet.definition
    assert definition.name == "greet"
    assert definition.description == "Greet someone."
    schema = definition.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["name"]
    assert schema["properties"]["name"]["type"] == "string"
    assert schema["properties"]["times"] == {
        "default": 1,
        "maximum": 3,
        "minimum": 1,
        "title": "Times",
        "type": "integer",
    }
    assert schema["additionalProperties"] is False


def test_decorator_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(TypeError, match="parameter 'x' needs a type annotation"):
        tool(name="untyped")(lambda x: x)
    with pytest.raises(ValueError, match="invalid tool name 'has space'"):

        @tool(name="has space")
        def _spaced(x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"\*args/\*\*kwargs"):

        @tool(name="variadic")
        def _variadic(*values: int) -> int:
            return sum(values)


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    registry = ToolRegistry([greet, *BUILTIN_TOOLS])
    result = await registry.call(call("greet", name="ada", times=2))
    assert not result.is_error
    assert result.content.startswith("hello ada hello ada from ")
    assert not result.content.endswith(threading.current_thread().name)
    assert result.call_id == "c-greet"
    assert result.duration_ms is not None and result.duration_ms >= 0

    counted = await registry.call(call("word_count", text="one two  three"))
    assert (counted.content, counted.is_error) == ("3", False)
    echoed = await registry.call(call("echo", text="hi there"))
    assert echoed.content == "hi there"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "invalid arguments for tool 'greet': name: Field required"),
        (
            {"name": "ada", "extra": 1},
            "invalid arguments for tool 'greet': extra: Extra inputs are not permitted",
        ),
        ({"name": "ada", "times": 9}, "times: Input should be less than or equal to 3"),
        ({"name": "ada", "times": "many"}, "times: Input should be a valid integer"),
        ({"name": ["not", "a", "string"]}, "name: Input should be a valid string"),
    ],
)
async def test_invalid_arguments_give_a_clear_error_result(arguments: dict, message: str) -> None:
    registry = ToolRegistry([greet])
    result = await registry.call(McpToolCall(call_id="c1", name="greet", arguments=arguments))
    assert result.is_error
    assert message in result.content


async def test_timeout_becomes_an_error_result() -> None:
    result = await ToolRegistry([never_returns]).call(call("never_returns"))
    assert result.is_error
    assert result.content == "tool 'never_returns' timed out after 0.05s"


async def test_exceptions_become_error_results() -> None:
    registry = ToolRegistry([boom, own_timeout])
    failed = await registry.call(call("boom", reason="kaput"))
    assert (failed.is_error, failed.content) == (True, "tool 'boom' failed: ValueError: kaput")
    # A TimeoutError raised by the tool itself is a failure, not the registry's timeout.
    own = await registry.call(call("own_timeout"))
    assert own.content == "tool 'own_timeout' failed: TimeoutError: upstream took too long"


async def test_unknown_tool_is_an_error_result_listing_the_tools() -> None:
    result = await ToolRegistry([greet, boom]).call(call("nope"))
    assert result.is_error
    assert result.content == "unknown tool 'nope' (available: boom, greet)"


async def test_builtin_calculator_and_sleep_bounds() -> None:
    registry = builtin_registry()
    assert registry.names() == ["calculator", "echo", "sleep", "word_count"]
    ok = await registry.call(call("calculator", expression="(2+3)*4"))
    assert (ok.content, ok.is_error) == ("20", False)
    rejected = await registry.call(call("calculator", expression="__import__('os')"))
    assert rejected.is_error
    assert "function calls are not allowed" in rejected.content
    too_long = await registry.call(call("sleep", seconds=3600))
    assert too_long.is_error
    assert "seconds: Input should be less than or equal to 60" in too_long.content
    slept = await registry.call(call("sleep", seconds=0))
    assert slept.content == "slept 0s"


def test_duplicate_registration_is_refused() -> None:
    registry = ToolRegistry([greet])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(greet)
    assert "greet" in registry and len(registry) == 1
    assert [d.name for d in registry.definitions()] == ["greet"]
