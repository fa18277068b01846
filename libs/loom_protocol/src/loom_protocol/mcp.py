"""Tool definitions, calls and results, shaped after the Model Context Protocol.

Agents describe their tools with :class:`McpToolDefinition`; the replay recording carries
:class:`McpToolCall` and :class:`McpToolResult`. Wire names follow MCP (``inputSchema``,
``isError``).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from loom_protocol.base import LoomModel

__all__ = [
    "McpToolCall",
    "McpToolDefinition",
    "McpToolResult",
]


def _empty_object_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


class McpToolDefinition(LoomModel):
    """A tool an agent can call.

    Attributes:
        name: Tool name, 1..64 characters of ``[A-Za-z0-9_-]``.
        description: What it does (shown to the LLM).
        input_schema: JSON Schema of its arguments (wire name ``inputSchema``).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=_empty_object_schema)


class McpToolCall(LoomModel):
    """A call of a tool.

    Attributes:
        call_id: Unique id, shared with the matching :class:`McpToolResult`.
        name: The tool called.
        arguments: Its arguments.
    """

    call_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class McpToolResult(LoomModel):
    """The result of an :class:`McpToolCall`.

    Attributes:
        call_id: The call this answers.
        name: The tool called.
        content: What it returned (or the error description when ``is_error``).
        is_error: Whether the call failed (wire name ``isError``).
        duration_ms: How long it took, in milliseconds.
    """

    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    content: Any = None
    is_error: bool = False
    duration_ms: float | None = Field(default=None, ge=0)
