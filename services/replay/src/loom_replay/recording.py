"""A task's recording, rebuilt from its rows in the events table (pure; no I/O).

What the worker's ReAct loop and orchestrator emit is enough to answer every call of a
deterministic replay (see the agent runtime's react.py / orchestrator.py):

- LLM step ``n``: ``llm.request`` (``message_digests``: the conversation sent), ``llm.usage``
  (tokens, latency, model), then ``agent.thought`` (its text, when it called tools),
  ``agent.action`` (each tool call: name, arguments, call id) or ``agent.answer`` (the text
  of the final response); a failed call leaves ``error`` "LLM provider error at step n: ...";
- tool calls: ``tool.call`` / ``tool.result`` (content, is_error);
- delegations: the orchestrator's ``agent.action`` (index, agent, parameters) and the child
  tasks' bus rows (``loom.task.submitted`` with the parameters, ``loom.task.status.*`` with
  the result), else the children listed in the orchestrator's own result;
- the task itself: ``loom.task.submitted`` (parameters) and its final status (result).

The recording is sent to the worker in ``metadata.replay.recording`` (camelCase JSON; the
worker parses it with ``loom_agent_worker.runtime.recorded.Recording``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from .errors import Invalid

TERMINAL = ("completed", "failed", "cancelled", "dead")
_PROVIDER_ERROR = re.compile(r"^LLM provider error at step (\d+): (.*)$", re.DOTALL)


@dataclass
class TaskRecord:
    """One task as its rows tell it."""

    task_id: str
    agent: str | None = None
    trace_id: str | None = None
    session_id: str | None = None
    parent_task_id: str | None = None
    parameters: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    final: bool = False
    result: Any = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    first_time: datetime | None = None
    last_time: datetime | None = None
    rows: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # the agent's own CloudEvents, in order


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def task_record(task_id: str, rows: Iterable[tuple[str, datetime, dict[str, Any]]]) -> TaskRecord:
    """Fold a task's rows, ``(kind, time, cloud event)`` in event order, into a TaskRecord."""
    record = TaskRecord(task_id=task_id)
    for kind, time, event in rows:
        record.rows += 1
        record.first_time = record.first_time or time
        record.last_time = time
        record.trace_id = record.trace_id or event.get("traceid")
        record.agent = record.agent or event.get("agentid")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        kind_type = event.get("type") or ""
        if kind == "task":
            _task_row(record, kind_type, time, data)
        else:
            if kind_type.startswith("task.") and isinstance(data.get("status"), str):
                _status(record, data["status"], time, error=data.get("error"))
            record.events.append(event)
    return record


def _task_row(record: TaskRecord, kind: str, time: datetime, data: dict[str, Any]) -> None:
    if kind == "loom.task.submitted":
        if isinstance(data.get("parameters"), dict):
            record.parameters = data["parameters"]
        if isinstance(data.get("metadata"), dict):
            record.metadata = data["metadata"]
        record.agent = data.get("targetAgent") or record.agent
        record.session_id = data.get("sessionId") or record.session_id
        record.parent_task_id = data.get("parentTaskId") or record.parent_task_id
        record.created_at = _when(data.get("createdAt")) or time
    elif kind.startswith("loom.task.status."):
        final = bool(data.get("final"))
        if record.final and not final:
            return
        _status(
            record,
            data.get("status") or kind.rsplit(".", 1)[-1],
            _when(data.get("at")) or time,
            error=data.get("error"),
            result=data.get("result"),
            final=final,
        )
    elif kind == "loom.task.dead":
        _status(record, "dead", time, error=data.get("reason"), final=True)


def _status(
    record: TaskRecord,
    status: str,
    time: datetime,
    *,
    error: Any = None,
    result: Any = None,
    final: bool = False,
) -> None:
    if record.status in TERMINAL and status not in TERMINAL:
        return
    record.status = status
    record.final = record.final or final
    if isinstance(error, str):
        record.error = error
    if result is not None:
        record.result = result
    if status in TERMINAL:
        record.finished_at = time


# -- the recording -------------------------------------------------------------------------------


def build_recording(record: TaskRecord, child_records: Iterable[TaskRecord] = ()) -> dict[str, Any]:
    """The recording of ``record`` (the worker's Recording model, as camelCase JSON)."""
    llm: dict[int, dict[str, Any]] = {}
    digests: dict[int, Any] = {}
    tools: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    step_of_call: dict[str, int] = {}
    delegations: list[dict[str, Any]] = []
    step = 0
    for event in record.events:
        kind = event.get("type")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if kind == "llm.request" and isinstance(data.get("step"), int):
            if data["step"] == 1 and (llm or tools):  # a new attempt starts over
                llm, digests, tools, calls, step_of_call = {}, {}, [], {}, {}
            step = data["step"]
            raw = data.get("message_digests")
            digests[step] = raw if isinstance(raw, list) else None
        elif kind == "llm.usage" and isinstance(data.get("step"), int):
            llm[data["step"]] = {
                "step": data["step"],
                "content": None,
                "toolCalls": [],
                "inputTokens": _count(data.get("input_tokens")),
                "outputTokens": _count(data.get("output_tokens")),
                "costUsd": data.get("cost_usd") if isinstance(data.get("cost_usd"), int | float) else None,
                "latencyS": max(float(data.get("latency_s") or 0.0), 0.0),
                "model": str(data.get("model") or ""),
                "requestDigests": digests.get(data["step"]),
            }
        elif kind == "agent.thought" and data.get("step") in llm:
            llm[data["step"]]["content"] = data.get("content")
        elif kind == "agent.action" and "tool" in data:
            if data.get("step") in llm:
                call = {
                    "callId": data.get("call_id"),
                    "name": data.get("tool"),
                    "arguments": data.get("arguments") or {},
                }
                llm[data["step"]]["toolCalls"].append(call)
                step_of_call[str(data.get("call_id"))] = data["step"]
        elif kind == "agent.action" and "agent" in data:
            if data.get("index") == 0:  # a new attempt plans again
                delegations = []
            delegations.append(
                {
                    "index": data.get("index"),
                    "agent": data.get("agent"),
                    "parameters": data.get("parameters") or {},
                }
            )
        elif kind == "agent.answer" and data.get("steps") in llm:
            llm[data["steps"]]["content"] = data.get("answer")
        elif kind == "tool.call":
            calls[str(data.get("call_id"))] = {
                "callId": data.get("call_id"),
                "name": data.get("name"),
                "arguments": data.get("arguments") or {},
            }
        elif kind == "tool.result":
            call_id = str(data.get("call_id"))
            tools.append(
                {
                    "step": step_of_call.get(call_id, step),
                    "call": calls.get(call_id)
                    or {"callId": call_id, "name": data.get("name"), "arguments": {}},
                    "result": {
                        "callId": call_id,
                        "name": data.get("name"),
                        "content": data.get("content"),
                        "isError": bool(data.get("is_error")),
                        "durationMs": data.get("duration_ms")
                        if _nonnegative(data.get("duration_ms"))
                        else None,
                    },
                }
            )
        elif kind == "error" and isinstance(data.get("error"), str):
            match = _PROVIDER_ERROR.match(data["error"])
            if match is not None:
                failed_step = int(match.group(1))
                llm[failed_step] = {
                    "step": failed_step,
                    "error": match.group(2),
                    "requestDigests": digests.get(failed_step),
                }

    result = record.result if isinstance(record.result, dict) else {}
    return {
        "version": 1,
        "agent": record.agent,
        "llm": [llm[k] for k in sorted(llm)],
        "tools": tools,
        "children": _children(delegations, list(child_records), result.get("children")),
        "outcome": {
            "status": record.status,
            "answer": result.get("answer") if isinstance(result.get("answer"), str) else None,
            "steps": result.get("steps") if isinstance(result.get("steps"), int) else None,
            "error": record.error,
        },
    }


def _children(
    delegations: list[dict[str, Any]], children: list[TaskRecord], listed: Any
) -> list[dict[str, Any]]:
    listed = listed if isinstance(listed, list) else []
    unmatched = list(children)
    out = []
    for position, delegation in enumerate(delegations):
        index = delegation["index"] if isinstance(delegation["index"], int) else position
        key = _key(delegation["agent"], delegation["parameters"])
        child = next((c for c in unmatched if _key(c.agent, c.parameters or {}) == key), None)
        if child is not None:
            unmatched.remove(child)
            out.append(
                {
                    "index": index,
                    "agent": delegation["agent"],
                    "parameters": delegation["parameters"],
                    "taskId": child.task_id,
                    "status": child.status or "failed",
                    "result": child.result,
                    "error": child.error,
                }
            )
            continue
        # no rows of that child: fall back to what the orchestrator's result says of it
        entry = listed[index] if index < len(listed) and isinstance(listed[index], dict) else {}
        answer = entry.get("answer")
        out.append(
            {
                "index": index,
                "agent": delegation["agent"],
                "parameters": delegation["parameters"],
                "taskId": entry.get("task_id"),
                "status": entry.get("status") or "failed",
                "result": {"answer": answer} if answer is not None else None,
                "error": entry.get("error"),
            }
        )
    return out


def _key(agent: Any, parameters: Any) -> str:
    return f"{agent}\x00{json.dumps(parameters, sort_keys=True, default=str)}"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _nonnegative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def render(value: Any) -> str:
    """A tool result as the LLM saw it (the runtime's render_content, without the cut)."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def conversation(recording: dict[str, Any], prompt: Any) -> list[dict[str, Any]]:
    """The original run's conversation without the system message, as the digests count it."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for step in recording["llm"]:
        if step.get("error") is not None:
            break
        messages.append(
            {"role": "assistant", "content": step.get("content") or "", "toolCalls": step["toolCalls"]}
        )
        for index, tool in enumerate(recording["tools"]):
            if tool["step"] == step["step"]:
                messages.append(
                    {
                        "role": "tool",
                        "content": render(tool["result"]["content"]),
                        "name": tool["result"]["name"],
                        "toolCall": index,
                    }
                )
    return messages


def steps_of(recording: dict[str, Any]) -> int:
    """How many steps a fork can start from: LLM steps, else delegations, else one."""
    return len(recording["llm"]) or len(recording["children"]) or 1


# -- overrides (tampering with a recording, to test what a replay detects) ---------------------------


class Overrides(BaseModel):
    """Changes to a recording before it is replayed. Keys are 0-based indexes as strings."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    tool_results: dict[str, Any] = Field(
        default_factory=dict, description="tool call index -> new result content"
    )
    llm_responses: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="LLM step (1-based) -> {content, toolCalls} to put in its response"
    )
    child_results: dict[str, Any] = Field(
        default_factory=dict, description="delegation index -> new child result"
    )
    answer: str | None = Field(default=None, description="the recorded final answer")

    @field_validator("tool_results", "llm_responses", "child_results")
    @classmethod
    def _integer_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys must be integers, not {key!r}")
        return value

    def apply(self, recording: dict[str, Any]) -> dict[str, Any]:
        tampered = json.loads(json.dumps(recording))
        for key, content in self.tool_results.items():
            index = int(key)
            if not 0 <= index < len(tampered["tools"]):
                raise Invalid(
                    f"overrides.toolResults[{key}]: the recording has {len(tampered['tools'])} tool calls "
                    f"(indexes 0..{len(tampered['tools']) - 1})"
                )
            tampered["tools"][index]["result"]["content"] = content
        steps = {step["step"]: step for step in tampered["llm"]}
        for key, patch in self.llm_responses.items():
            if int(key) not in steps:
                raise Invalid(f"overrides.llmResponses[{key}]: the recording has LLM steps {sorted(steps)}")
            unknown = set(patch) - {"content", "toolCalls"}
            if unknown:
                raise Invalid(
                    f"overrides.llmResponses[{key}]: only content and toolCalls can change, "
                    f"not {sorted(unknown)}"
                )
            steps[int(key)].update(patch)
        for key, result in self.child_results.items():
            index = int(key)
            if not 0 <= index < len(tampered["children"]):
                raise Invalid(
                    f"overrides.childResults[{key}]: the recording has "
                    f"{len(tampered['children'])} delegations"
                )
            tampered["children"][index]["result"] = result
        if self.answer is not None:
            tampered["outcome"]["answer"] = self.answer
        return tampered


# -- summaries (the side-by-side comparison) ---------------------------------------------------------


def summary_of_record(record: TaskRecord) -> dict[str, Any]:
    usage = {"llmCalls": 0, "inputTokens": 0, "outputTokens": 0, "costUsd": None, "latencyS": 0.0}
    for event in record.events:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if event.get("type") == "llm.usage":
            usage["llmCalls"] += 1
            usage["inputTokens"] += _count(data.get("input_tokens"))
            usage["outputTokens"] += _count(data.get("output_tokens"))
            usage["latencyS"] += float(data.get("latency_s") or 0.0)
            if isinstance(data.get("cost_usd"), int | float):
                usage["costUsd"] = (usage["costUsd"] or 0.0) + float(data["cost_usd"])
    result = record.result if isinstance(record.result, dict) else {}
    start, end = record.created_at or record.first_time, record.finished_at or record.last_time
    steps = result.get("steps")
    if not isinstance(steps, int):
        steps = (
            len(result["children"]) if isinstance(result.get("children"), list) else usage["llmCalls"] or None
        )
    return {
        "taskId": record.task_id,
        "traceId": record.trace_id,
        "agent": record.agent,
        "status": record.status,
        "answer": result.get("answer"),
        "error": record.error,
        "steps": steps,
        "usage": usage,
        "latencyS": (end - start).total_seconds() if start and end else None,
        "events": record.rows,
    }


def summary_of_task(task: dict[str, Any]) -> dict[str, Any]:
    """The summary of a task as the dispatcher returns it (camelCase Task JSON)."""
    result = task.get("result") if isinstance(task.get("result"), dict) else {}
    raw_usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    usage = {to_camel(k): v for k, v in raw_usage.items()}
    traceparent = (task.get("trace") or {}).get("traceparent")
    created, updated = _when(task.get("createdAt")), _when(task.get("updatedAt"))
    steps = result.get("steps")
    if not isinstance(steps, int) and isinstance(result.get("children"), list):
        steps = len(result["children"])
    return {
        "taskId": task.get("taskId"),
        "traceId": traceparent[3:35] if isinstance(traceparent, str) and len(traceparent) >= 35 else None,
        "agent": task.get("targetAgent"),
        "status": task.get("status"),
        "answer": result.get("answer"),
        "error": task.get("error"),
        "steps": steps if isinstance(steps, int) else None,
        "usage": usage or None,
        "latencyS": (updated - created).total_seconds() if created and updated else None,
    }
