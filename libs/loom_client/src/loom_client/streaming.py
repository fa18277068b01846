"""Reading a task's answer stream (the dispatcher's ``GET /api/tasks/{taskId}/stream``,
Server-Sent Events): what each event means, and how the chunks join into the answer.

The stream is one ``data:`` event per :class:`~loom_protocol.TaskStreamChunk`, in order, then
``event: done`` (the task's status, result and error) once the task has ended, or
``event: timeout`` when neither a chunk nor the end came for the stream's ``timeout``. A task
submitted without ``action: "stream"`` streams no chunks: its stream is the ``done`` event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from httpx_sse import ServerSentEvent
from loom_protocol import TaskStreamChunk

from .errors import LoomError, Timeout
from .models import StreamEnd

__all__ = ["PING_S", "StreamItem", "join_answer", "read_event", "stream_params"]

PING_S = 15.0
"""The dispatcher sends a keep-alive comment this often; a read waits at most this long plus the
client's timeout."""

MAX_STREAM_S = 3600.0
"""The longest idle ``timeout`` the dispatcher accepts for a stream."""

StreamItem = TaskStreamChunk | StreamEnd
"""What a task's stream yields: answer chunks, then its end."""


def stream_params(timeout_s: float) -> dict[str, float]:
    """The stream's query: the idle time after which the dispatcher ends it with ``timeout``."""
    return {"timeout": max(0.001, min(timeout_s, MAX_STREAM_S))}


def read_event(sse: ServerSentEvent, task_id: str) -> StreamItem | None:
    """What one Server-Sent Event says.

    Args:
        sse: The event.
        task_id: The task streamed (for messages).

    Returns:
        A chunk, the end of the stream, or None for an event to skip (an unknown name).

    Raises:
        Timeout: The dispatcher ended the stream because nothing came in its ``timeout``.
        LoomError: The event's data is not what the dispatcher sends (code ``bad_answer``).
    """
    try:
        data = json.loads(sse.data) if sse.data else {}
        if sse.event in ("", "message"):
            return TaskStreamChunk.model_validate(data)
        if sse.event == "done":
            return StreamEnd.model_validate({"taskId": task_id, **data})
    except ValueError as exc:
        raise LoomError(f"task {task_id!r}: unreadable stream event ({exc})", code="bad_answer") from exc
    if sse.event == "timeout":
        waited = data.get("waitedS") if isinstance(data, dict) else None
        raise Timeout(f"task {task_id!r}: nothing streamed for {waited or '?'} s and it has not ended")
    return None


def join_answer(chunks: Iterable[TaskStreamChunk]) -> str:
    """The answer text of a task's chunks, as a reader shows it.

    A ``discard`` chunk drops what its step streamed so far (the model went on to call tools);
    a new attempt (after a retry) starts the answer over.

    Args:
        chunks: The chunks in the order they were streamed.

    Returns:
        The answer streamed so far.
    """
    parts: list[tuple[int, str]] = []
    attempt = 0
    for chunk in chunks:
        if chunk.attempt != attempt:
            parts, attempt = [], chunk.attempt
        if chunk.discard:
            parts = [(step, text) for step, text in parts if step != chunk.step]
        elif chunk.delta:
            parts.append((chunk.step, chunk.delta))
    return "".join(text for _, text in parts)
