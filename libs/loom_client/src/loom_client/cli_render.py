"""How ``loom`` shows things: a task, a task list, agents, one event per line, a trace tree."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from loom_protocol import ApiKeyRecord, CloudEvent, Task, TaskStreamChunk
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .models import AgentInfo, Dropped, LiveMessage, SessionDetail, TaskPage, TaskSummary
from .trace import TraceNode, TraceStep, preview

__all__ = [
    "STATUS_STYLES",
    "agents_table",
    "event_line",
    "event_summary",
    "keys_table",
    "session_view",
    "status_text",
    "task_view",
    "tasks_table",
    "trace_tree",
]

STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "dead": "bold red",
    "cancelled": "yellow",
    "input_required": "bold magenta",
    "running": "cyan",
    "dispatched": "blue",
    "pending": "dim",
}

_TYPE_STYLES = (
    ("task.completed", "green"),
    ("task.failed", "red"),
    ("task.dead", "bold red"),
    ("task.cancelled", "yellow"),
    ("task.", "blue"),
    ("loom.task.", "dim blue"),
    ("approval.", "bold magenta"),
    ("agent.", "magenta"),
    ("tool.", "cyan"),
    ("llm.", "yellow"),
    ("memory.", "dim"),
    ("registry.", "dim"),
    ("error", "bold red"),
)


def status_text(status: str | None) -> Text:
    """A status, coloured."""
    value = status or "?"
    return Text(value, style=STATUS_STYLES.get(value, ""))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def _time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def task_view(task: Task) -> RenderableType:
    """One task: its id, agent, status and outcome, as a two-column table."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("task", task.task_id)
    table.add_row("agent", task.target_agent)
    table.add_row("status", status_text(task.status.value))
    if task.action.value != "execute":
        table.add_row("action", task.action.value)
    if task.attempt:
        table.add_row("attempt", f"{task.attempt} on {task.instance_id or '?'}")
    if task.session_id:
        table.add_row("session", task.session_id)
    if task.parent_task_id:
        table.add_row("parent", task.parent_task_id)
    table.add_row("parameters", Text(preview(task.parameters, 200)))
    if task.result is not None:
        answer = task.result.get("answer") if isinstance(task.result, dict) else None
        table.add_row("answer" if answer is not None else "result", Text(preview(answer or task.result, 400)))
    if task.error:
        table.add_row("error", Text(task.error, style="red"))
    if task.pending_approval is not None:
        call = task.pending_approval
        table.add_row(
            "waiting for",
            Text(
                f"approval of {call.tool}({preview(call.arguments, 120)}) [key {call.key}]", style="magenta"
            ),
        )
    if task.trace.trace_id:
        table.add_row("trace", task.trace.trace_id)
    table.add_row("created", _time(task.created_at))
    return table


_ANSWER = re.compile(r'"answer":\s*"((?:[^"\\]|\\.)*)')


def _outcome(task: TaskSummary) -> str:
    """The error, else the answer in the result's preview, else the preview itself."""
    if task.error:
        return task.error
    preview_text = task.result_preview or ""
    found = _ANSWER.search(preview_text)
    return found.group(1) if found else preview_text or task.parameters_preview or ""


def _summary_row(task: TaskSummary) -> list[RenderableType]:
    outcome = _outcome(task)
    return [
        task.task_id,
        task.target_agent or "",
        status_text(task.status),
        _time(task.created_at),
        _duration(task.duration_s),
        Text(preview(outcome, 60)),
    ]


def tasks_table(tasks: list[TaskSummary], page: TaskPage | None = None) -> RenderableType:
    """Tasks as a table, newest first, with the per-status counts under it."""
    table = Table(title="tasks", title_justify="left")
    for name in ("task", "agent", "status", "created", "duration", "result / error"):
        table.add_column(name, overflow="fold")
    for task in tasks:
        table.add_row(*_summary_row(task))
    if page is None or not page.counts:
        return table
    counts = Text("  ".join(f"{name} {n}" for name, n in page.counts.items() if n), style="dim")
    total = f"{page.total} matching" if page.total is not None else ""
    return Group(table, Text(f"{total}  ", style="dim") + counts)


def session_view(detail: SessionDetail) -> RenderableType:
    """A session's tasks and totals."""
    table = Table(title=f"session {detail.session_id}", title_justify="left")
    for name in ("task", "agent", "status", "created", "duration", "tokens in/out", "cost $"):
        table.add_column(name, overflow="fold")
    for task in detail.tasks:
        usage = task.usage
        table.add_row(
            task.task_id,
            task.target_agent or "",
            status_text(task.status),
            _time(task.created_at),
            _duration(task.duration_s),
            f"{usage.input_tokens}/{usage.output_tokens}",
            f"{usage.cost_usd:.4f}",
        )
    t = detail.totals
    totals = Text(
        f"{t.tasks} tasks, {t.llm_calls} LLM calls, {t.input_tokens}/{t.output_tokens} tokens, "
        f"${t.cost_usd:.4f}, {_duration(t.duration_s) or 'still open'}",
        style="dim",
    )
    return Group(table, totals)


def agents_table(agents: list[AgentInfo]) -> RenderableType:
    """Agents with their instances and load."""
    table = Table(title="agents", title_justify="left")
    for name in ("agent", "description", "instances", "load", "tools"):
        table.add_column(name, overflow="fold")
    for agent in agents:
        card = agent.card
        in_flight = sum(i.load.in_flight for i in agent.instances if i.load is not None)
        capacity = sum(i.load.capacity for i in agent.instances if i.load is not None)
        names = ", ".join(i.instance_id + (" (draining)" if i.draining else "") for i in agent.instances)
        table.add_row(
            agent.agent_id,
            card.description if card is not None else "",
            names,
            f"{in_flight}/{capacity}",
            ", ".join(card.tools) if card is not None else "",
        )
    return table


def keys_table(keys: list[ApiKeyRecord]) -> RenderableType:
    """Stored API keys: id, name, scopes, when created and the key's first characters."""
    table = Table(title="API keys", title_justify="left")
    for name in ("id", "name", "scopes", "created", "hint"):
        table.add_column(name, overflow="fold")
    for key in keys:
        table.add_row(
            key.id, key.name, ", ".join(s.value for s in key.scopes), _time(key.created_at), key.hint
        )
    return table


def _event_style(kind: str) -> str:
    return next((style for prefix, style in _TYPE_STYLES if kind.startswith(prefix)), "")


def _args(arguments: Any) -> str:
    if not isinstance(arguments, dict):
        return ""
    return ", ".join(f"{k}={preview(v, 40)}" for k, v in arguments.items())


def event_summary(event: CloudEvent) -> str:
    """What an event says, in one line (its type decides which fields)."""
    data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
    kind = event.type
    if kind == "llm.usage":
        cost = data.get("cost_usd")
        price = f" ${cost:.4f}" if isinstance(cost, int | float) else ""
        latency = data.get("latency_s")
        took = f" {_duration(latency)}" if isinstance(latency, int | float) else ""
        return (
            f"step {data.get('step', '?')} {data.get('model') or ''} "
            f"in {data.get('input_tokens', 0)} out {data.get('output_tokens', 0)}{price}{took}"
        )
    if kind == "llm.request":
        messages = data.get("message_count", 0)
        return f"step {data.get('step', '?')} {data.get('model') or ''} ({messages} messages)"
    if kind in ("agent.thought", "agent.answer"):
        text = data.get("content") if kind == "agent.thought" else data.get("answer")
        return preview(text if text is not None else data)
    if kind == "agent.action":
        if data.get("agent") and not data.get("tool"):
            return f"delegate → {data['agent']} {preview(data.get('parameters') or {}, 60)}"
        return f"{data.get('tool')}({_args(data.get('arguments'))})"
    if kind == "tool.call":
        return f"{data.get('name')}({_args(data.get('arguments'))})"
    if kind == "tool.result":
        ms = data.get("duration_ms")
        took = f" ({_duration(ms / 1000)})" if isinstance(ms, int | float) else ""
        flag = "error: " if data.get("is_error") else ""
        return f"{data.get('name')} → {flag}{preview(data.get('content'), 60)}{took}"
    if kind.startswith("task."):
        parts = [str(data[k]) for k in ("status", "reason") if data.get(k)]
        if data.get("instance_id") or data.get("instanceId"):
            parts.append(f"on {data.get('instance_id') or data.get('instanceId')}")
        if data.get("attempt"):
            parts.append(f"attempt {data['attempt']}")
        return " ".join(parts)
    if kind.startswith("loom.task."):  # a task message as stored (replays): the task itself
        parts = [str(data[k]) for k in ("status", "instanceId", "error") if data.get(k)]
        return " ".join(parts)
    if kind.startswith("approval."):
        who = f" by {data['by']}" if data.get("by") else ""
        why = f": {data['reason']}" if data.get("reason") else ""
        return f"{data.get('tool', '')}({_args(data.get('arguments'))}){who}{why}"
    if kind == "memory.add":
        return f"{data.get('tier', '')}: {preview(data.get('content'), 60)}"
    if kind == "error":
        return preview(data.get("error") or data.get("reason") or data)
    return preview(data) if data else ""


def event_line(message: LiveMessage) -> Text:
    """One live message as one coloured line: time, type, agent, task, summary."""
    if isinstance(message, Dropped):
        return Text(f"… {message.count} events dropped (reading too slowly)", style="bold red")
    if isinstance(message, TaskStreamChunk):
        flag = " [done]" if message.done else " [discard]" if message.discard else ""
        return Text.assemble(
            (f"{'':12} ", "dim"),
            ("task.stream".ljust(18), "dim cyan"),
            (f" {'':14}", ""),
            (f" {message.task_id[:12]:12}", "dim"),
            f" {message.delta!r}{flag}",
        )
    when = message.time.astimezone().strftime("%H:%M:%S.%f")[:12] if message.time else " " * 12
    agent = message.agentid or ""
    task = (message.taskid or "")[:12]
    return Text.assemble(
        (when, "dim"),
        " ",
        (message.type.ljust(18), _event_style(message.type)),
        (f" {agent[:14]:14}", "bold"),
        (f" {task:12}", "dim"),
        f" {event_summary(message)}",
    )


def _step_text(step: TraceStep) -> Text:
    style = (
        "red" if step.is_error else {"llm": "yellow", "tool": "cyan", "answer": "green"}.get(step.kind, "")
    )
    text = Text(step.label, style=style)
    figures = []
    if step.kind == "llm":
        figures.append(f"{step.input_tokens or 0}/{step.output_tokens or 0} tokens")
        if step.cost_usd is not None:
            figures.append(f"${step.cost_usd:.4f}")
    if step.duration_s is not None:
        figures.append(_duration(step.duration_s))
    if figures:
        text.append("  " + ", ".join(figures), style="dim")
    return text


def _node_label(node: TraceNode) -> Text:
    task = node.task
    label = Text.assemble(
        (task.target_agent if task is not None and task.target_agent else "?", "bold"),
        " ",
        (node.task_id, "dim"),
        " ",
        status_text(task.status if task is not None else None),
    )
    figures = [f"{node.input_tokens}/{node.output_tokens} tokens", f"${node.cost_usd:.4f}"]
    if node.duration_s is not None:
        figures.append(_duration(node.duration_s))
    label.append("  " + ", ".join(figures), style="dim")
    if task is not None and task.error:
        label.append(f"  {preview(task.error, 80)}", style="red")
    if node.truncated:
        label.append("  (events truncated)", style="yellow")
    return label


def trace_tree(node: TraceNode, tree: Tree | None = None) -> Tree:
    """The trace as a rich Tree: each task (agent, status, tokens, cost, duration of it and its
    descendants), its steps, then its child tasks."""
    branch = Tree(_node_label(node)) if tree is None else tree.add(_node_label(node))
    for step in node.steps:
        branch.add(_step_text(step))
    for child in node.children:
        trace_tree(child, branch)
    return branch
