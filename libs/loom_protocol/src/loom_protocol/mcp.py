"""Model Context Protocol data models (seed 001 ``mcp.py``): tools, resources, prompts, calls.

Only the data travels here; MCP servers and clients live in the services. Wire names follow
MCP (``inputSchema``, ``mimeType``, ``isError``).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from loom_protocol.base import LoomModel

__all__ = [
    "McpPrompt",
    "McpPromptArgument",
    "McpResource",
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


class McpResource(LoomModel):
    """A resource an MCP server exposes.

    Attributes:
        uri: Its URI.
        name: Its name.
        description: What it is.
        mime_type: Its media type (wire name ``mimeType``).
    """

    uri: str = Field(min_length=1)
    name: str
    description: str = ""
    mime_type: str | None = None


class McpPromptArgument(LoomModel):
    """An argument of an :class:`McpPrompt`.

    Attributes:
        name: Argument name.
        description: What it is for.
        required: Whether it must be given.
    """

    name: str = Field(min_length=1)
    description: str = ""
    required: bool = False


class McpPrompt(LoomModel):
    """A prompt template an MCP server exposes.

    Attributes:
        name: Prompt name.
        description: What it is for.
        arguments: Its arguments.
    """

    name: str = Field(min_length=1)
    description: str = ""
    arguments: list[McpPromptArgument] = Field(default_factory=list)


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
