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

The recording is a :class:`loom_protocol.Recording`, sent to the worker in
``metadata.replay.recording`` (a :class:`loom_protocol.ReplaySpec`); the worker parses it with
the same class. Event payloads are read with :func:`loom_protocol.event_data`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loom_protocol import (
    BUS_TASK_DEAD,
    BUS_TASK_SUBMITTED,
    KIND_TASK,
    TERMINAL_STATUSES,
    AgentAction,
    AgentAnswer,
    AgentThought,
    ErrorReported,
    EventPayload,
    LlmRequest,
    LlmUsage,
    McpToolCall,
    McpToolResult,
    RecordedChild,
    RecordedLlmStep,
    RecordedOutcome,
    RecordedToolStep,
    Recording,
    Task,
    TaskDeadLettered,
    TaskEventData,
    TaskStatus,
    TaskStatusChanged,
    ToolCalled,
    ToolReturned,
    event_data,
    status_of_bus_type,
    validation_reason,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from .errors import Invalid

_PROVIDER_ERROR = re.compile(r"^LLM provider error at step (\d+): (.*)$", re.DOTALL)


@dataclass
class TaskHistory:
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


def task_history(task_id: str, rows: Iterable[tuple[str, datetime, dict[str, Any]]]) -> TaskHistory:
    """Fold a task's rows, ``(kind, time, cloud event)`` in event order, into a TaskHistory."""
    record = TaskHistory(task_id=task_id)
    for kind, time, event in rows:
        record.rows += 1
        record.first_time = record.first_time or time
        record.last_time = time
        record.trace_id = record.trace_id or event.get("traceid")
        record.agent = record.agent or event.get("agentid")
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kind_type = str(event.get("type") or "")
        if kind == KIND_TASK:
            _task_row(record, kind_type, time, data)
        else:
            if kind_type.startswith("task."):
                change = _task_event(kind_type, data)
                if change is not None and change.status is not None:
                    _status(record, change.status, time)
            record.events.append(event)
    return record


def _task_event(kind: str, data: Mapping[str, Any]) -> TaskEventData | None:
    try:
        parsed = event_data(kind, data)
    except ValidationError:
        return None
    return parsed if isinstance(parsed, TaskEventData) else None


def _task_row(record: TaskHistory, kind: str, time: datetime, data: dict[str, Any]) -> None:
    # ingest stored the message only after it validated, so it parses back; a row that does not
    # is left out
    try:
        if kind == BUS_TASK_SUBMITTED:
            task = Task.model_validate(data)
            record.parameters = task.parameters
            record.metadata = task.metadata
            record.agent = task.target_agent
            record.session_id = task.session_id or record.session_id
            record.parent_task_id = task.parent_task_id or record.parent_task_id
            record.created_at = task.created_at
        elif status_of_bus_type(kind) is not None:
            change = TaskStatusChanged.model_validate(data)
            if record.final and not change.final:
                return
            _status(
                record,
                change.status.value,
                change.at,
                error=change.error,
                result=change.result,
                final=change.final,
            )
        elif kind == BUS_TASK_DEAD:
            dead = TaskDeadLettered.model_validate(data)
            _status(record, TaskStatus.DEAD.value, dead.at, error=dead.reason, final=True)
    except ValidationError:
        return


def _status(
    record: TaskHistory,
    status: str,
    time: datetime,
    *,
    error: Any = None,
    result: Any = None,
    final: bool = False,
) -> None:
    if record.status in TERMINAL_STATUSES and status not in TERMINAL_STATUSES:
        return
    record.status = status
    record.final = record.final or final
    if isinstance(error, str):
        record.error = error
    if result is not None:
        record.result = result
    if status in TERMINAL_STATUSES:
        record.finished_at = time


# -- the recording -------------------------------------------------------------------------------


def payload_of(event: Mapping[str, Any]) -> EventPayload | None:
    """The typed ``data`` of an agent event, or None (an unknown type, or data that does not fit)."""
    try:
        data = event_data(str(event.get("type") or ""), event.get("data"))
    except ValidationError:
        return None
    return data if isinstance(data, EventPayload) else None


@dataclass
class _Delegation:
    index: int
    agent: str
    parameters: dict[str, Any]


def build_recording(record: TaskHistory, child_records: Iterable[TaskHistory] = ()) -> Recording:
    """The recording of ``record``, as the worker replays it."""
    llm: dict[int, dict[str, Any]] = {}
    digests: dict[int, list[str] | None] = {}
    tools: list[RecordedToolStep] = []
    calls: dict[str, McpToolCall] = {}
    step_of_call: dict[str, int] = {}
    delegations: list[_Delegation] = []
    system_prompt: str | None = None
    step = 0
    for event in record.events:
        data = payload_of(event)
        if isinstance(data, LlmRequest):
            # a new attempt that starts over asks step 1 again (a resumed one goes on from its
            # first unrecorded step, after a task.resumed event, and emits nothing it restored)
            if data.step == 1 and (llm or tools):
                llm, digests, tools, calls, step_of_call = {}, {}, [], {}, {}
            step = data.step
            digests[step] = data.message_digests
            if data.step == 1 and data.messages and data.messages[0].get("role") == "system":
                content = data.messages[0].get("content")
                system_prompt = content if isinstance(content, str) else None
        elif isinstance(data, LlmUsage) and data.step is not None:
            llm[data.step] = {
                "step": data.step,
                "tool_calls": [],
                "input_tokens": data.input_tokens,
                "output_tokens": data.output_tokens,
                "cost_usd": data.cost_usd,
                "latency_s": max(data.latency_s, 0.0),
                "model": data.model,
                "request_digests": digests.get(data.step),
            }
            if data.completion is not None:
                llm[data.step]["content"] = data.completion
        elif isinstance(data, AgentThought) and data.step in llm and data.content is not None:
            llm[data.step]["content"] = data.content
        elif isinstance(data, AgentAction) and data.tool is not None:
            if data.step in llm:
                call = _call(data.call_id, data.tool, data.arguments)
                known_ids = {c.call_id for c in llm[data.step]["tool_calls"]}
                if data.call_id is None or call.call_id not in known_ids:  # a resumed attempt ran it again
                    llm[data.step]["tool_calls"].append(call)
                step_of_call[call.call_id] = data.step
        elif isinstance(data, AgentAction) and data.agent is not None:
            if data.index == 0:  # a new attempt plans again
                delegations = []
            index = data.index if data.index is not None else len(delegations)
            delegations.append(_Delegation(index, data.agent, data.parameters or {}))
        elif isinstance(data, AgentAnswer) and data.steps in llm and data.answer is not None:
            llm[data.steps]["content"] = data.answer
        elif isinstance(data, ToolCalled) and data.name:
            call = _call(data.call_id, data.name, data.arguments)
            calls[call.call_id] = call
        elif isinstance(data, ToolReturned):
            call_id = str(data.call_id)
            known = calls.get(call_id)
            name = data.name or (known.name if known is not None else None)
            if not name:
                continue
            returned = McpToolResult(
                call_id=call_id,
                name=name,
                content=data.content,
                is_error=data.is_error,
                duration_ms=data.duration_ms,
            )
            tools.append(
                RecordedToolStep(
                    step=step_of_call.get(call_id, step),
                    call=known or _call(call_id, name, {}),
                    result=returned,
                )
            )
        elif isinstance(data, ErrorReported) and data.error is not None:
            match = _PROVIDER_ERROR.match(data.error)
            if match is not None:
                failed_step = int(match.group(1))
                llm[failed_step] = {
                    "step": failed_step,
                    "error": match.group(2),
                    "request_digests": digests.get(failed_step),
                }

    result = record.result if isinstance(record.result, dict) else {}
    answer = result.get("answer") if isinstance(result.get("answer"), str) else None
    if llm and answer is not None:
        # events recorded without content (LOOM_CAPTURE_CONTENT=false): the final step's text is
        # the answer the task returned
        last = llm[max(llm)]
        if last.get("content") is None and not last.get("tool_calls") and "error" not in last:
            last["content"] = answer
    return Recording(
        agent=record.agent,
        system_prompt=system_prompt,
        llm=[RecordedLlmStep.model_validate(llm[k]) for k in sorted(llm) if k >= 1],
        tools=tools,
        children=_children(delegations, list(child_records), result.get("children")),
        outcome=RecordedOutcome(
            status=record.status,
            answer=answer,
            steps=result.get("steps") if isinstance(result.get("steps"), int) else None,
            error=record.error,
        ),
    )


def _call(call_id: str | None, name: str, arguments: dict[str, Any] | None) -> McpToolCall:
    if call_id:
        return McpToolCall(call_id=call_id, name=name, arguments=arguments or {})
    return McpToolCall(name=name, arguments=arguments or {})


def _children(
    delegations: list[_Delegation], children: list[TaskHistory], listed: Any
) -> list[RecordedChild]:
    listed = listed if isinstance(listed, list) else []
    unmatched = list(children)
    out = []
    for delegation in delegations:
        index = delegation.index
        key = _key(delegation.agent, delegation.parameters)
        child = next((c for c in unmatched if _key(c.agent, c.parameters or {}) == key), None)
        if child is not None:
            unmatched.remove(child)
            out.append(
                RecordedChild(
                    index=index,
                    agent=delegation.agent,
                    parameters=delegation.parameters,
                    task_id=child.task_id,
                    status=child.status or TaskStatus.FAILED.value,
                    result=child.result,
                    error=child.error,
                )
            )
            continue
        # no rows of that child: fall back to what the orchestrator's result says of it
        entry = listed[index] if index < len(listed) and isinstance(listed[index], dict) else {}
        answer = entry.get("answer")
        out.append(
            RecordedChild(
                index=index,
                agent=delegation.agent,
                parameters=delegation.parameters,
                task_id=entry.get("task_id"),
                status=entry.get("status") or TaskStatus.FAILED.value,
                result={"answer": answer} if answer is not None else None,
                error=entry.get("error"),
            )
        )
    return out


def _key(agent: Any, parameters: Any) -> str:
    return f"{agent}\x00{json.dumps(parameters, sort_keys=True, default=str)}"


def render(value: Any) -> str:
    """A tool result as the LLM saw it (the runtime's render_content, without the cut)."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def conversation(recording: Recording, prompt: Any) -> list[dict[str, Any]]:
    """The original run's conversation without the system message, as the digests count it."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for step in recording.llm:
        if step.error is not None:
            break
        messages.append(
            {
                "role": "assistant",
                "content": step.content or "",
                "toolCalls": [call.to_wire() for call in step.tool_calls],
            }
        )
        for index, tool in enumerate(recording.tools):
            if tool.step == step.step:
                messages.append(
                    {
                        "role": "tool",
                        "content": render(tool.result.content),
                        "name": tool.result.name,
                        "toolCall": index,
                    }
                )
    return messages


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

    def apply(self, recording: Recording) -> Recording:
        """A tampered copy of ``recording``; Invalid when an override names what is not there."""
        tampered = recording.model_dump(mode="json", by_alias=True)
        for key, content in self.tool_results.items():
            _entry(tampered["tools"], key, "toolResults", "tool calls")["result"]["content"] = content
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
            _entry(tampered["children"], key, "childResults", "delegations")["result"] = result
        if self.answer is not None:
            tampered["outcome"]["answer"] = self.answer
        try:
            return Recording.model_validate(tampered)
        except ValidationError as exc:
            raise Invalid(f"overrides: {validation_reason(exc)}") from None


# -- summaries (the side-by-side comparison) ---------------------------------------------------------


def _entry(entries: list[dict[str, Any]], key: str, override: str, what: str) -> dict[str, Any]:
    """The recorded entry an override's index key names; Invalid when there is none."""
    index = int(key)
    if not 0 <= index < len(entries):
        raise Invalid(
            f"overrides.{override}[{key}]: the recording has {len(entries)} {what} "
            f"(indexes 0..{len(entries) - 1})"
        )
    return entries[index]


def summary_of_record(record: TaskHistory) -> dict[str, Any]:
    llm_calls, input_tokens, output_tokens, latency_s = 0, 0, 0, 0.0
    cost_usd: float | None = None
    for event in record.events:
        usage = payload_of(event)
        if isinstance(usage, LlmUsage):
            llm_calls += 1
            input_tokens += usage.input_tokens
            output_tokens += usage.output_tokens
            latency_s += usage.latency_s
            if usage.cost_usd is not None:
                cost_usd = (cost_usd or 0.0) + usage.cost_usd
    result = record.result if isinstance(record.result, dict) else {}
    start, end = record.created_at or record.first_time, record.finished_at or record.last_time
    steps = result.get("steps")
    if not isinstance(steps, int):
        steps = len(result["children"]) if isinstance(result.get("children"), list) else llm_calls or None
    return {
        "taskId": record.task_id,
        "traceId": record.trace_id,
        "agent": record.agent,
        "status": record.status,
        "answer": result.get("answer"),
        "error": record.error,
        "steps": steps,
        "usage": {
            "llmCalls": llm_calls,
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "costUsd": cost_usd,
            "latencyS": latency_s,
        },
        "latencyS": (end - start).total_seconds() if start and end else None,
        "events": record.rows,
    }


def summary_of_task(task: Task) -> dict[str, Any]:
    """The summary of a task as the dispatcher returns it."""
    result = task.result if isinstance(task.result, dict) else {}
    raw_usage = result.get("usage")
    usage = {to_camel(k): v for k, v in raw_usage.items()} if isinstance(raw_usage, dict) else {}
    steps = result.get("steps")
    if not isinstance(steps, int) and isinstance(result.get("children"), list):
        steps = len(result["children"])
    return {
        "taskId": task.task_id,
        "traceId": task.trace.trace_id,
        "agent": task.target_agent,
        "status": task.status.value,
        "answer": result.get("answer"),
        "error": task.error,
        "steps": steps if isinstance(steps, int) else None,
        "usage": usage or None,
        "latencyS": (task.updated_at - task.created_at).total_seconds(),
    }
