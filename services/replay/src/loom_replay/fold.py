"""Reconstructed state: the fold of a trace's events, 0..index (pure; no I/O).

The state is what the agents had at that moment, as far as the events tell it:

* ``tasks[task_id]``: agent, parent, status (from the dispatcher's ``task.*`` events and the
  ``loom.task.*`` bus rows ingest stores), parameters, result or error, the ReAct
  conversation (``messages``: user, assistant turns with their tool calls, tool observations),
  the ``toolResults``, thoughts, the orchestrator's delegations, the answer and the LLM usage;
* ``memory[session]``: the notes by tier (``session``, ``working``, ``long_term``) of each
  session memory (``sessionid``, else the task id, as the worker keys them), with
  ``memory.consolidate`` applied as the worker applies it (promotion threshold, working-set
  size).

The system message is not in the events (it depends on the worker's memory), so
``messages`` starts at the user message. Every list is bounded like the runtime's own
(500 messages / notes per tier) so a checkpoint of the state stays small on deep traces.

The state is plain JSON (dicts, lists, str, numbers) so it can be checkpointed in Redis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_MESSAGES = 500
MAX_NOTES_PER_TIER = 500
MAX_TOOL_RESULTS = 200
MAX_ITEMS = 100  # thoughts, delegations, errors per task
MAX_TEXT = 16_000  # what the runtime shows the LLM of a tool result
DEFAULT_PROMOTION_THRESHOLD = 0.7
TIERS = ("session", "working", "long_term")
TERMINAL = frozenset({"completed", "failed", "cancelled", "dead"})
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
    kind = event.get("type") or ""
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    if kind.startswith("loom.task."):
        _bus_row(state, kind, event, data)
        return state
    handler = _HANDLERS.get(kind)
    if handler is not None:
        handler(state, event, data)
    elif kind in _TASK_EVENT_STATUS:
        task = _task(state, event)
        if task is not None:
            status = data.get("status") if isinstance(data.get("status"), str) else _TASK_EVENT_STATUS[kind]
            _set_status(task, status, attempt=data.get("attempt"), error=data.get("error"))
    return state


# -- tasks ---------------------------------------------------------------------------------------


def _task(state: State, event: Event, task_id: str | None = None) -> dict[str, Any] | None:
    task_id = task_id or event.get("taskid")
    if not isinstance(task_id, str):
        return None
    tasks = state["tasks"]
    task = tasks.get(task_id)
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
    if current in TERMINAL and status not in TERMINAL:
        return
    task["status"] = status
    if isinstance(attempt, int):
        task["attempt"] = attempt
    if isinstance(error, str):
        task["error"] = error
    if result is not None:
        task["result"] = result


def _bus_row(state: State, kind: str, event: Event, data: dict[str, Any]) -> None:
    if kind == "loom.task.dead":
        inner = data.get("task") if isinstance(data.get("task"), dict) else {}
        task = _task(state, event, inner.get("taskId"))
        if task is not None:
            _set_status(task, "dead", error=data.get("reason"))
        return
    task = _task(state, event, data.get("taskId") if isinstance(data.get("taskId"), str) else None)
    if task is None:
        return
    if kind in ("loom.task.submitted", "loom.task.assigned"):
        if isinstance(data.get("parameters"), dict):
            task["parameters"] = data["parameters"]
        task["agent"] = data.get("targetAgent") or task["agent"]
        task["parentTaskId"] = data.get("parentTaskId") or task["parentTaskId"]
        task["sessionId"] = data.get("sessionId") or task["sessionId"]
        _set_status(
            task,
            "pending" if kind == "loom.task.submitted" else data.get("status"),
            attempt=data.get("attempt"),
        )
    elif kind.startswith("loom.task.status."):
        _set_status(
            task,
            data.get("status") or kind.rsplit(".", 1)[-1],
            attempt=data.get("attempt"),
            error=data.get("error"),
            result=data.get("result"),
        )
    elif kind == "loom.task.cancel":
        task["cancelRequested"] = True


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


def _llm_request(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    if data.get("step") == 1 and not task["messages"]:
        parameters = task["parameters"] or {}
        prompt = parameters.get("prompt") if isinstance(parameters, dict) else None
        _append(task["messages"], {"role": "user", "content": prompt}, MAX_MESSAGES)


def _llm_usage(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    step = data.get("step")
    usage = task["usage"]
    usage["llmCalls"] += 1
    usage["inputTokens"] += _int(data.get("input_tokens"))
    usage["outputTokens"] += _int(data.get("output_tokens"))
    usage["latencyS"] += _float(data.get("latency_s"))
    if isinstance(data.get("cost_usd"), int | float):
        usage["costUsd"] = (usage["costUsd"] or 0.0) + float(data["cost_usd"])
    if isinstance(step, int):
        task["steps"] = max(task["steps"], step)
    # the assistant turn exists from here on; its text and tool calls follow in later events
    _append(
        task["messages"], {"role": "assistant", "content": "", "toolCalls": [], "step": step}, MAX_MESSAGES
    )


def _thought(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    _append(task["thoughts"], {"step": data.get("step"), "content": data.get("content")}, MAX_ITEMS)
    if "step" in data:
        message = _last_assistant(task, data.get("step"))
        if message is not None:
            message["content"] = data.get("content") or ""


def _action(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    if "tool" in data:  # a ReAct tool call
        message = _last_assistant(task, data.get("step"))
        if message is not None:
            message["toolCalls"].append(
                {"callId": data.get("call_id"), "name": data.get("tool"), "arguments": data.get("arguments")}
            )
    else:  # an orchestrator delegation
        delegation = {
            "index": data.get("index"),
            "agent": data.get("agent"),
            "parameters": data.get("parameters"),
        }
        _append(task["delegations"], delegation, MAX_ITEMS)


def _tool_result(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    result = {
        "callId": data.get("call_id"),
        "name": data.get("name"),
        "content": data.get("content"),
        "isError": bool(data.get("is_error")),
        "durationMs": data.get("duration_ms"),
    }
    _append(task["toolResults"], result, MAX_TOOL_RESULTS)
    task["toolResultCount"] += 1
    message = {
        "role": "tool",
        "content": _text(data.get("content")),
        "toolCallId": data.get("call_id"),
        "name": data.get("name"),
    }
    _append(task["messages"], message, MAX_MESSAGES)


def _answer(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is None:
        return
    task["answer"] = data.get("answer")
    if isinstance(data.get("steps"), int):
        task["steps"] = data["steps"]
        message = _last_assistant(task, data["steps"])
        if message is not None:
            message["content"] = data.get("answer") or ""


def _error(state: State, event: Event, data: dict[str, Any]) -> None:
    task = _task(state, event)
    if task is not None:
        _append(task["errors"], data.get("error") or data.get("reason"), MAX_ITEMS)


# -- memory ----------------------------------------------------------------------------------------


def _memory_of(state: State, event: Event) -> dict[str, Any] | None:
    key = event.get("sessionid") or event.get("taskid")
    if not isinstance(key, str):
        return None
    memory = state["memory"].get(key)
    if memory is None:
        memory = state["memory"][key] = {tier: [] for tier in TIERS}
    return memory


def _memory_add(state: State, event: Event, data: dict[str, Any]) -> None:
    memory = _memory_of(state, event)
    tier = data.get("tier")
    if memory is None or tier not in TIERS:
        return
    note = {
        "entryId": data.get("entry_id"),
        "nodeId": data.get("node_id"),
        "content": data.get("content"),
        "importance": _float(data.get("importance")),
        "role": data.get("role"),
        "createdAt": data.get("created_at"),
    }
    _append(memory[tier], note, MAX_NOTES_PER_TIER)


def _memory_consolidate(state: State, event: Event, data: dict[str, Any]) -> None:
    memory = _memory_of(state, event)
    if memory is None:
        return
    threshold = data.get("threshold")
    threshold = float(threshold) if isinstance(threshold, int | float) else DEFAULT_PROMOTION_THRESHOLD
    promoted = [note for note in memory["session"] if note["importance"] >= threshold]
    if promoted:
        memory["session"] = [note for note in memory["session"] if note["importance"] < threshold]
        for note in promoted:
            _append(memory["long_term"], note, MAX_NOTES_PER_TIER)
    keep = data.get("keep_working")
    if isinstance(keep, int):
        drop = max(len(memory["working"]) - keep, 0)
    else:
        drop = _int(data.get("dropped_working"))
    if drop:
        del memory["working"][:drop]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


_HANDLERS = {
    "llm.request": _llm_request,
    "llm.usage": _llm_usage,
    "agent.thought": _thought,
    "agent.action": _action,
    "tool.result": _tool_result,
    "agent.answer": _answer,
    "error": _error,
    "memory.add": _memory_add,
    "memory.consolidate": _memory_consolidate,
}


def is_error(event: Event) -> bool:
    """Whether an event reports a failure (breakpoint filter ``error=true``)."""
    kind = event.get("type") or ""
    data = event.get("data")
    if kind in (
        "error",
        "task.failed",
        "task.dead",
        "loom.task.dead",
        "loom.task.status.failed",
        "loom.task.status.dead",
    ):
        return True
    return isinstance(data, dict) and bool(data.get("is_error"))
