"""A followed task as A2A stream responses: the Task as it stands, then a status update for each
change its worker reports and for each step it takes (thoughts, tool calls and results,
approvals, retries), then the answer artifact and the final status. The stream ends at a terminal
state or at INPUT_REQUIRED (the task then waits for a message, possibly for long)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from typing import Any

from loom_protocol import EventType, Task, TaskStatus, is_terminal

from ..store import TaskStore
from .feed import StepEvent, TaskFeed
from .mapping import (
    agent_message,
    answer_artifact,
    artifact_update,
    data_part,
    state_of,
    status_of,
    status_update,
    task_of,
    text_part,
    timestamp,
)
from .wire import TaskState

_REPORTED: dict[TaskStatus, TaskState] = {
    TaskStatus.RUNNING: TaskState.WORKING,
    TaskStatus.PENDING: TaskState.SUBMITTED,  # handed back by a draining worker
}
_STEPS: dict[str, TaskState] = {
    EventType.AGENT_THOUGHT: TaskState.WORKING,
    EventType.AGENT_ACTION: TaskState.WORKING,
    EventType.TOOL_CALL: TaskState.WORKING,
    EventType.TOOL_RESULT: TaskState.WORKING,
    EventType.TASK_RESUMED: TaskState.WORKING,
    EventType.APPROVAL_GRANTED: TaskState.SUBMITTED,  # back in the queue, decided
    EventType.APPROVAL_DENIED: TaskState.SUBMITTED,
    EventType.TASK_RETRIED: TaskState.SUBMITTED,
}
_MAX_TEXT = 2000
_POLL_S = 0.02


def ends_stream(task: Task) -> bool:
    """True once the task is terminal or waits for input: where a stream closes."""
    return is_terminal(task.status) or task.status is TaskStatus.INPUT_REQUIRED


def closing(task: Task) -> Iterator[dict[str, Any]]:
    """The last responses of a stream: the answer artifact (completed) and the status."""
    if (artifact := answer_artifact(task)) is not None:
        yield artifact_update(task, artifact)
    yield status_update(task, status_of(task))


async def progress(
    store: TaskStore, feed: TaskFeed, first: Task, *, tick_s: float, record_wait_s: float
) -> AsyncGenerator[dict[str, Any] | None, None]:
    """The stream responses of ``first`` (read after ``feed`` started), and None every ``tick_s``
    of quiet (a keep-alive; the store is read again then, in case a NATS message was lost)."""
    task = first
    yield {"task": task_of(task)}
    if ends_stream(task):
        return
    shown = state_of(task)
    attempt = task.attempt
    while True:
        try:
            item = await asyncio.wait_for(feed.queue.get(), tick_s)
        except TimeoutError:
            current = await store.get(task.task_id)
            if current is not None and ends_stream(current):
                for response in closing(current):
                    yield response
                return
            yield None
            continue
        if isinstance(item, StepEvent):
            if (state := _STEPS.get(item.type)) is not None and (message := _step(task, item)) is not None:
                shown = state
                yield status_update(
                    task, {"state": state.value, "timestamp": _event_time(item), "message": message}
                )
            continue
        if item.final:
            current = await store.get(task.task_id)
            if current is None or not is_terminal(current.status):
                update = {
                    "status": item.status,
                    "result": item.result,
                    "error": item.error,
                    "updated_at": item.at,
                }
                current = task.model_copy(update=update)
            for response in closing(current):
                yield response
            return
        if item.attempt < attempt:
            continue  # a superseded attempt
        attempt = item.attempt
        if item.status is TaskStatus.INPUT_REQUIRED:
            if (current := await _recorded_wait(store, task.task_id, record_wait_s)) is not None:
                for response in closing(current):
                    yield response
                return
            continue
        state = _REPORTED.get(item.status)
        if state is not None and state is not shown:
            shown = state
            yield status_update(task, {"state": state.value, "timestamp": timestamp(item.at)})


async def _recorded_wait(store: TaskStore, task_id: str, wait_s: float) -> Task | None:
    """The task once the dispatcher recorded the wait its worker reported (or its end), so that a
    message answering it finds it waiting; None if that does not happen within ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        current = await store.get(task_id)
        if current is not None and ends_stream(current):
            return current
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_POLL_S)


def _event_time(event: StepEvent) -> str:
    try:
        return timestamp(datetime.fromisoformat(event.time or ""))
    except ValueError:
        return timestamp(datetime.now(UTC))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


def _describe(event: StepEvent) -> str | None:
    """One line saying what the step was; None for a step told by another (an agent's decision to
    call a tool, which its ``tool.call`` tells)."""
    d = event.data if isinstance(event.data, dict) else {}
    match event.type:
        case EventType.AGENT_THOUGHT:
            return _short(d.get("content") or {"plan": d.get("plan")})
        case EventType.AGENT_ACTION:
            return (
                f"delegates to {d['agent']}: {_short(d.get('parameters') or {})}" if d.get("agent") else None
            )
        case EventType.TOOL_CALL:
            return f"calls {d.get('name')}({_short(d.get('arguments') or {})})"
        case EventType.TOOL_RESULT:
            outcome = "failed" if d.get("is_error") else "returned"
            return f"{d.get('name')} {outcome}: {_short(d.get('content'))}"
        case EventType.APPROVAL_GRANTED | EventType.APPROVAL_DENIED:
            verdict = "approved" if event.type == EventType.APPROVAL_GRANTED else "rejected"
            by = f" by {d['by']}" if d.get("by") else ""
            why = f": {d['reason']}" if d.get("reason") else ""
            return f"call {d.get('tool')} {verdict}{by}{why}"
        case EventType.TASK_RETRIED:
            return f"retried: {d.get('reason', '')}"
        case EventType.TASK_RESUMED:
            return "resumed from the steps earlier attempts recorded"
    return event.type


def _step(task: Task, event: StepEvent) -> dict[str, Any] | None:
    """The agent message of a step (its description, and its event data), or None to skip it."""
    if (text := _describe(event)) is None:
        return None
    parts = [text_part(text)]
    if event.data is not None:
        parts.append(data_part(event.data))
    message = agent_message(task, event.id or f"{task.task_id}-{event.type}", parts)
    message["metadata"] = {"loomEventType": event.type}
    return message
