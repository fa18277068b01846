"""Reconstructed state: the fold of a trace's events, 0..index (pure; no I/O).

The state is what the agents had at that moment, as far as the events tell it:

* ``tasks[task_id]``: agent, parent, status (from the dispatcher's ``task.*`` events and the
  ``loom.task.*`` bus rows ingest stores), parameters, result or error, the ReAct
  conversation (``messages``: user, assistant turns with their tool calls, tool observations),
  the ``toolResults``, thoughts, the orchestrator's delegations, the answer and the LLM usage;
* ``memory[session]``: the notes by tier (``session``, ``working``, ``long_term``) of each
  session memory (``sessionid``, else the task id, as the worker keys them), with each
  ``memory.consolidate`` applied by the ids it says the worker promoted and dropped.

The system message is not in the events (it depends on the worker's memory), so
``messages`` starts at the user message. Every list is bounded like the runtime's own
(500 messages / notes per tier) so a checkpoint of the state stays small on deep traces.

Event payloads are read with :func:`loom_protocol.event_data`; one whose ``data`` does not fit
its type's model only counts as applied. The state is plain JSON (dicts, lists, str, numbers)
so it can be checkpointed in Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from loom_protocol import (
    BUS_TASK_ASSIGNED,
    BUS_TASK_CANCEL,
    BUS_TASK_DEAD,
    BUS_TASK_PREFIX,
    BUS_TASK_SUBMITTED,
    TERMINAL_STATUSES,
    AgentAction,
    AgentAnswer,
    AgentThought,
    ErrorReported,
    EventPayload,
    EventType,
    LlmRequest,
    LlmUsage,
    MemoryAdded,
    MemoryConsolidated,
    MemoryTier,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskEventData,
    TaskStatus,
    TaskStatusChanged,
    ToolReturned,
    bus_task_status_type,
    event_data,
    status_of_bus_type,
)
from pydantic import ValidationError

MAX_MESSAGES = 500
MAX_NOTES_PER_TIER = 500
MAX_TOOL_RESULTS = 200
MAX_ITEMS = 100  # thoughts, delegations, errors per task
MAX_TEXT = 16_000  # what the runtime shows the LLM of a tool result
TIERS = tuple(tier.value for tier in MemoryTier)
_TASK_EVENT_STATUS = {
    "task.submitted": "pending",
    "task.assigned": "dispatched",
    "task.started": "running",
    "task.completed": "completed",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
    "task.dead": "dead",
    "task.retried": "pending",
}

State = dict[str, Any]
Event = Mapping[str, Any]  # a CloudEvent-shaped dict, or a database row read for the fold


def new_state() -> State:
    return {"eventsApplied": 0, "tasks": {}, "memory": {}}


def apply(state: State, event: Event) -> State:
    """Fold one event into ``state``: a CloudEvent-shaped mapping (``type``, ``taskid``,
    ``sessionid``, ``agentid``, ``parenttaskid``, ``data``; a dict or a database row).

    Mutates and returns ``state``. Unknown types only count as applied.
    """
    state["eventsApplied"] += 1
    kind = str(event.get("type") or "")
    raw = event.get("data")
    if kind.startswith(BUS_TASK_PREFIX):
        _bus_row(state, kind, event, raw if isinstance(raw, dict) else {})
        return state
    try:
        data = event_data(kind, raw)
    except ValidationError:
        return state
    if isinstance(data, TaskEventData):
        task = _task(state, event)
        if task is not None and kind in _TASK_EVENT_STATUS:
            _set_status(task, data.status or _TASK_EVENT_STATUS[kind], attempt=data.attempt)
    elif isinstance(data, EventPayload):
        handler = _HANDLERS.get(type(data))
        if handler is not None:
            handler(state, event, data)
    return state


# -- tasks ---------------------------------------------------------------------------------------


def _task(state: State, event: Event, task_id: str | None = None) -> dict[str, Any] | None:
    task_id = task_id or event.get("taskid")
    if not isinstance(task_id, str):
        return None
    tasks = state["tasks"]
    task: dict[str, Any] | None = tasks.get(task_id)
    if task is None:
        task = tasks[task_id] = {
            "taskId": task_id,
            "agent": event.get("agentid"),
            "parentTaskId": event.get("parenttaskid"),
            "sessionId": event.get("sessionid"),
            "status": None,
            "attempt": None,
            "parameters": None,
            "result": None,
            "error": None,
            "messages": [],
            "toolResults": [],
            "toolResultCount": 0,
            "thoughts": [],
            "delegations": [],
            "answer": None,
            "steps": 0,
            "usage": {"llmCalls": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": None, "latencyS": 0.0},
            "errors": [],
        }
    elif task["agent"] is None and event.get("agentid"):
        task["agent"] = event.get("agentid")
    return task


def _set_status(
    task: dict[str, Any], status: Any, *, attempt: Any = None, error: Any = None, result: Any = None
) -> None:
    if not isinstance(status, str):
        return
    current = task["status"]
    # as ingest's task table: a terminal status is never replaced by a non-terminal one
    if current in TERMINAL_STATUSES and status not in TERMINAL_STATUSES:
        return
    task["status"] = status
    if isinstance(attempt, int):
        task["attempt"] = attempt
    if isinstance(error, str):
        task["error"] = error
    if result is not None:
        task["result"] = result


def _bus_row(state: State, kind: str, event: Event, data: dict[str, Any]) -> None:
    # ingest stored the message only after it validated, so it parses back; a row that does not
    # (written by hand, or by an older producer) only counts as applied
    try:
        if kind == BUS_TASK_DEAD:
            dead = TaskDeadLettered.model_validate(data)
            task = _task(state, event, dead.task.task_id)
            if task is not None:
                _set_status(task, TaskStatus.DEAD.value, error=dead.reason)
        elif kind in (BUS_TASK_SUBMITTED, BUS_TASK_ASSIGNED):
            message = Task.model_validate(data)
            task = _task(state, event, message.task_id)
            if task is not None:
                task["parameters"] = message.parameters
                task["agent"] = message.target_agent
                task["parentTaskId"] = message.parent_task_id or task["parentTaskId"]
                task["sessionId"] = message.session_id or task["sessionId"]
                status = TaskStatus.PENDING if kind == BUS_TASK_SUBMITTED else message.status
                _set_status(task, status.value, attempt=message.attempt)
        elif status_of_bus_type(kind) is not None:
            change = TaskStatusChanged.model_validate(data)
            task = _task(state, event, change.task_id)
            if task is not None:
                new = change.status.value
                _set_status(task, new, attempt=change.attempt, error=change.error, result=change.result)
        elif kind == BUS_TASK_CANCEL:
            task = _task(state, event, TaskCancelRequested.model_validate(data).task_id)
            if task is not None:
                task["cancelRequested"] = True
    except ValidationError:
        return


# -- agent events ----------------------------------------------------------------------------------


def _append(items: list[Any], item: Any, limit: int) -> None:
    items.append(item)
    if len(items) > limit:
        del items[: len(items) - limit]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}... [truncated {len(text) - MAX_TEXT} characters]"
    return text


def _last_assistant(task: dict[str, Any], step: Any) -> dict[str, Any] | None:
    for message in reversed(task["messages"]):
        if message["role"] == "assistant":
            return message if step is None or message.get("step") == step else None
    return None


def _llm_request(state: State, event: Event, data: LlmRequest) -> None:
    task = _task(state, event)
    if task is None:
        return
    if data.step == 1 and not task["messages"]:
        parameters = task["parameters"] or {}
        prompt = parameters.get("prompt") if isinstance(parameters, dict) else None
        _append(task["messages"], {"role": "user", "content": prompt}, MAX_MESSAGES)


def _llm_usage(state: State, event: Event, data: LlmUsage) -> None:
    task = _task(state, event)
    if task is None:
        return
    usage = task["usage"]
    usage["llmCalls"] += 1
    usage["inputTokens"] += data.input_tokens
    usage["outputTokens"] += data.output_tokens
    usage["latencyS"] += data.latency_s
    if data.cost_usd is not None:
        usage["costUsd"] = (usage["costUsd"] or 0.0) + data.cost_usd
    if data.step is not None:
        task["steps"] = max(task["steps"], data.step)
    # the assistant turn exists from here on; its text and tool calls follow in later events
    _append(
        task["messages"],
        {"role": "assistant", "content": "", "toolCalls": [], "step": data.step},
        MAX_MESSAGES,
    )


def _thought(state: State, event: Event, data: AgentThought) -> None:
    task = _task(state, event)
    if task is None:
        return
    _append(task["thoughts"], {"step": data.step, "content": data.content}, MAX_ITEMS)
    if data.step is not None:
        message = _last_assistant(task, data.step)
        if message is not None:
            message["content"] = data.content or ""


def _action(state: State, event: Event, data: AgentAction) -> None:
    task = _task(state, event)
    if task is None:
        return
    if data.tool is not None:  # a ReAct tool call
        message = _last_assistant(task, data.step)
        if message is not None:
            message["toolCalls"].append(
                {"callId": data.call_id, "name": data.tool, "arguments": data.arguments}
            )
    else:  # an orchestrator delegation
        delegation = {"index": data.index, "agent": data.agent, "parameters": data.parameters}
        _append(task["delegations"], delegation, MAX_ITEMS)


def _tool_result(state: State, event: Event, data: ToolReturned) -> None:
    task = _task(state, event)
    if task is None:
        return
    result = {
        "callId": data.call_id,
        "name": data.name,
        "content": data.content,
        "isError": data.is_error,
        "durationMs": data.duration_ms,
    }
    _append(task["toolResults"], result, MAX_TOOL_RESULTS)
    task["toolResultCount"] += 1
    message = {
        "role": "tool",
        "content": _text(data.content),
        "toolCallId": data.call_id,
        "name": data.name,
    }
    _append(task["messages"], message, MAX_MESSAGES)


def _answer(state: State, event: Event, data: AgentAnswer) -> None:
    task = _task(state, event)
    if task is None:
        return
    task["answer"] = data.answer
    if data.steps is not None:
        task["steps"] = data.steps
        message = _last_assistant(task, data.steps)
        if message is not None:
            message["content"] = data.answer or ""


def _error(state: State, event: Event, data: ErrorReported) -> None:
    task = _task(state, event)
    if task is not None:
        _append(task["errors"], data.error or data.reason, MAX_ITEMS)


# -- memory ----------------------------------------------------------------------------------------


def _memory_of(state: State, event: Event) -> dict[str, Any] | None:
    key = event.get("sessionid") or event.get("taskid")
    if not isinstance(key, str):
        return None
    memory: dict[str, Any] | None = state["memory"].get(key)
    if memory is None:
        memory = state["memory"][key] = {tier: [] for tier in TIERS}
    return memory


def _memory_add(state: State, event: Event, data: MemoryAdded) -> None:
    memory = _memory_of(state, event)
    if memory is None:
        return
    note = {
        "entryId": data.entry_id,
        "nodeId": data.node_id,
        "content": data.content,
        "importance": data.importance,
        "role": data.role,
        "createdAt": data.created_at,
    }
    _append(memory[data.tier.value], note, MAX_NOTES_PER_TIER)


def _memory_consolidate(state: State, event: Event, data: MemoryConsolidated) -> None:
    memory = _memory_of(state, event)
    if memory is None:
        return
    applied = data.apply(memory, lambda note: note["entryId"], lambda note: float(note["importance"]))
    for tier, notes in applied.items():
        memory[tier] = notes[-MAX_NOTES_PER_TIER:]


_HANDLERS: dict[type[EventPayload], Callable[[State, Event, Any], None]] = {
    LlmRequest: _llm_request,
    LlmUsage: _llm_usage,
    AgentThought: _thought,
    AgentAction: _action,
    ToolReturned: _tool_result,
    AgentAnswer: _answer,
    ErrorReported: _error,
    MemoryAdded: _memory_add,
    MemoryConsolidated: _memory_consolidate,
}


def is_error(event: Event) -> bool:
    """Whether an event reports a failure (breakpoint filter ``error=true``)."""
    kind = event.get("type") or ""
    data = event.get("data")
    if kind in _ERROR_TYPES:
        return True
    return isinstance(data, dict) and bool(data.get("is_error"))


_ERROR_TYPES = frozenset(
    {
        ErrorReported.TYPE,
        EventType.TASK_FAILED.value,
        EventType.TASK_DEAD.value,
        BUS_TASK_DEAD,
        bus_task_status_type(TaskStatus.FAILED),
        bus_task_status_type(TaskStatus.DEAD),
    }
)
