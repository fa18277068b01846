"""Streaming output (seed 001 ``streaming.py``): the chunks a task streams while it runs.

Chunks of one task are numbered by ``seq`` from 0 so a consumer can order them and notice
gaps; the last chunk of a stream has kind ``done`` (or ``error``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from loom_protocol.base import LoomModel, TaskId, utc_now
from loom_protocol.mcp import McpToolCall

__all__ = ["StreamChunk", "StreamChunkKind"]


class StreamChunkKind(StrEnum):
    """What a :class:`StreamChunk` carries.

    Attributes:
        TEXT: A piece of output text (``text`` required).
        TOOL_CALL_START: A tool call begins (``tool_call`` required).
        TOOL_CALL_DELTA: More of a tool call's arguments (in ``text`` or ``tool_call``).
        TOOL_CALL_END: A tool call is complete.
        ERROR: The stream failed (``error`` required).
        DONE: The stream ended normally.
    """

    TEXT = "text"
    TOOL_CALL_START = "tool_call_start"
    TOOL_CALL_DELTA = "tool_call_delta"
    TOOL_CALL_END = "tool_call_end"
    ERROR = "error"
    DONE = "done"


_REQUIRED_FIELD: dict[StreamChunkKind, str] = {
    StreamChunkKind.TEXT: "text",
    StreamChunkKind.TOOL_CALL_START: "tool_call",
    StreamChunkKind.ERROR: "error",
}


class StreamChunk(LoomModel):
    """One piece of a task's streamed output.

    Attributes:
        task_id: The task streaming.
        seq: Position in the stream, from 0.
        kind: What the chunk carries.
        text: Text (kind ``text``, or argument text of ``tool_call_delta``).
        tool_call: The tool call (kinds ``tool_call_*``).
        error: The error (kind ``error``).
        at: When it was produced.
    """

    task_id: TaskId
    seq: int = Field(ge=0)
    kind: StreamChunkKind
    text: str | None = None
    tool_call: McpToolCall | None = None
    error: str | None = None
    at: AwareDatetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _check_kind_payload(self) -> Self:
        needed = _REQUIRED_FIELD.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise PydanticCustomError(
                "stream_chunk",
                "a '{kind}' chunk requires '{field}'",
                {"kind": self.kind.value, "field": type(self).model_fields[needed].alias or needed},
            )
        return self
