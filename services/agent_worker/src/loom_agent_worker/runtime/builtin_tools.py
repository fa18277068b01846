"""The built-in tools: a safe calculator, echo, a bounded sleep and a word counter."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from loom_agent_worker.runtime.calculator import format_number, safe_eval
from loom_agent_worker.runtime.tools import Tool, ToolRegistry, tool

MAX_SLEEP_S = 60.0


# The evaluation is bounded (length, exponent, integer size) and takes microseconds, so it
# runs on the event loop rather than paying for a thread hop.
@tool(name="calculator", timeout_s=5.0)
async def calculator(
    expression: Annotated[
        str, Field(min_length=1, description="e.g. (2+3)*4; + - * / // % ** and parentheses")
    ],
) -> str:
    """Evaluate an arithmetic expression and return the result."""
    return format_number(safe_eval(expression))


@tool(name="echo", timeout_s=5.0)
async def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@tool(name="sleep", timeout_s=MAX_SLEEP_S + 5.0)
async def sleep(seconds: Annotated[float, Field(ge=0.0, le=MAX_SLEEP_S)]) -> str:
    """Wait for the given number of seconds (at most 60), then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}s"


@tool(name="word_count", timeout_s=5.0)
async def word_count(text: str) -> int:
    """Count the whitespace-separated words of a text."""
    return len(text.split())


BUILTIN_TOOLS: tuple[Tool, ...] = (calculator, echo, sleep, word_count)


def builtin_registry() -> ToolRegistry:
    """A new registry holding every built-in tool."""
    return ToolRegistry(BUILTIN_TOOLS)
