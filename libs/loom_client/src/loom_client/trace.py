"""A task's trace as a tree: the task, the steps its events record, and its child tasks.

Built from the query service's stored events (:class:`~loom_client.models.TaskDetail`): each
LLM call (``llm.usage``: model, tokens, cost, latency), each tool call (``tool.call`` with its
``tool.result``), approvals, resumptions, errors and the final answer become one
:class:`TraceStep`; delegated tasks become child :class:`TraceNode` s.
"""

from __future__ import annotations

import json
from typing import Any

from loom_protocol import CloudEvent, LoomModel
from pydantic import Field, computed_field

from .models import TaskDetail, TaskRecord

__all__ = ["TraceNode", "TraceStep", "build_node", "preview", "steps_of"]

PREVIEW_CHARS = 80


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A value as one short line: strings as they are, anything else as compact JSON."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TraceStep(LoomModel):
    """One step of a task.

    Attributes:
        kind: ``llm``, ``tool``, ``answer``, ``approval``, ``resumed`` or ``error``.
        step: The ReAct step it belongs to, when known.
        label: What happened, in one line.
        input_tokens: Prompt tokens (``llm``).
        output_tokens: Completion tokens (``llm``).
        cost_usd: Cost in USD (``llm``; None: the model has no price).
        duration_s: How long it took (``llm``, ``tool``).
        is_error: The step failed (a tool error, an error event).
        call_id: The tool call id (``tool``).
    """

    kind: str
    step: int | None = None
    label: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    duration_s: float | None = None
    is_error: bool = False
    call_id: str | None = None


class TraceNode(LoomModel):
    """A task in a trace tree, its steps and its child tasks.

    Attributes:
        task_id: The task.
        task: Its stored record (None when only events name it).
        steps: Its steps, in causal order.
        children: The tasks it delegated, oldest first.
        truncated: The service returned only part of its events.
    """

    task_id: str
    task: TaskRecord | None = None
    steps: list[TraceStep] = Field(default_factory=list)
    children: list[TraceNode] = Field(default_factory=list)
    truncated: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_tokens(self) -> int:
        """Prompt tokens of this task and its descendants."""
        own = sum(s.input_tokens or 0 for s in self.steps)
        return own + sum(c.input_tokens for c in self.children)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def output_tokens(self) -> int:
        """Completion tokens of this task and its descendants."""
        own = sum(s.output_tokens or 0 for s in self.steps)
        return own + sum(c.output_tokens for c in self.children)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        """LLM cost (USD) of this task and its descendants (unpriced calls count 0)."""
        own = sum(s.cost_usd or 0.0 for s in self.steps)
        return own + sum(c.cost_usd for c in self.children)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        """Creation to end of the task, once it has ended."""
        return self.task.duration_s if self.task is not None else None

    def walk(self) -> list[TraceNode]:
        """This node and every descendant, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


def _data(event: CloudEvent) -> dict[str, Any]:
    return event.data if isinstance(event.data, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tool_label(name: Any, arguments: Any) -> str:
    args = (
        ", ".join(f"{k}={preview(v, 40)}" for k, v in arguments.items())
        if isinstance(arguments, dict)
        else ""
    )
    return f"{name or '?'}({args})"


def steps_of(events: list[CloudEvent]) -> list[TraceStep]:
    """The steps the events of one task record, in their order."""
    steps: list[TraceStep] = []
    calls: dict[str, int] = {}  # call id -> index in steps
    for event in events:
        data = _data(event)
        kind = event.type
        if kind == "llm.usage":
            model = data.get("model") or data.get("provider") or "llm"
            steps.append(
                TraceStep(
                    kind="llm",
                    step=_int(data.get("step")),
                    label=f"llm {model}",
                    input_tokens=_int(data.get("input_tokens")) or 0,
                    output_tokens=_int(data.get("output_tokens")) or 0,
                    cost_usd=_float(data.get("cost_usd")),
                    duration_s=_float(data.get("latency_s")),
                )
            )
        elif kind == "tool.call":
            call_id = data.get("call_id") if isinstance(data.get("call_id"), str) else None
            if call_id is not None:
                calls[call_id] = len(steps)
            label = _tool_label(data.get("name"), data.get("arguments"))
            steps.append(TraceStep(kind="tool", label=f"tool {label}", call_id=call_id))
        elif kind == "tool.result":
            call_id = data.get("call_id") if isinstance(data.get("call_id"), str) else None
            ms = _float(data.get("duration_ms"))
            outcome = f" → {'error: ' if data.get('is_error') else ''}{preview(data.get('content'), 60)}"
            index = calls.get(call_id) if call_id is not None else None
            if index is not None:
                step = steps[index]
                steps[index] = step.model_copy(
                    update={
                        "label": step.label + outcome,
                        "duration_s": ms / 1000 if ms is not None else None,
                        "is_error": bool(data.get("is_error")),
                    }
                )
            else:
                steps.append(
                    TraceStep(
                        kind="tool",
                        label=f"tool {data.get('name') or '?'}{outcome}",
                        duration_s=ms / 1000 if ms is not None else None,
                        is_error=bool(data.get("is_error")),
                        call_id=call_id,
                    )
                )
        elif kind == "agent.answer":
            steps.append(TraceStep(kind="answer", label=f"answer: {preview(data.get('answer'))}"))
        elif kind.startswith("approval."):
            verb = kind.removeprefix("approval.")
            who = data.get("by")
            label = f"approval {verb}: {data.get('tool') or data.get('key') or ''}"
            steps.append(TraceStep(kind="approval", label=label + (f" by {who}" if who else "")))
        elif kind == "task.resumed":
            label = (
                f"resumed attempt {data.get('attempt', '?')}, {data.get('restored_steps', 0)} steps restored"
            )
            steps.append(TraceStep(kind="resumed", label=label))
        elif kind == "error":
            message = data.get("error") or data.get("reason") or "error"
            steps.append(TraceStep(kind="error", label=f"error: {preview(message)}", is_error=True))
    return steps


def build_node(detail: TaskDetail, children: list[TraceNode]) -> TraceNode:
    """The node of one task: its record, the steps of its events and its (already built) children."""
    return TraceNode(
        task_id=detail.task_id,
        task=detail.task,
        steps=steps_of(detail.events),
        children=children,
        truncated=detail.truncated,
    )
