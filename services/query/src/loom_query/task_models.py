"""Response bodies of the task search (``GET /api/tasks``) and the session view
(``GET /api/sessions/{sessionId}``), and the LLM usage figures they share with /api/metrics.
camelCase on the wire, times ISO 8601 UTC."""

from __future__ import annotations

from datetime import datetime

from loom_protocol import ApprovalRequest, LoomModel
from pydantic import Field


class CostFigures(LoomModel):
    """LLM calls, tokens and cost (USD) of a set of ``llm.usage`` events."""

    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_calls: int = Field(description="calls whose model had no price (counted as 0 in costUsd)")


class TaskSummary(LoomModel):
    """A task as a list shows it: its state and times, with previews of its input and output
    (the full values are in ``GET /api/tasks/{taskId}``)."""

    task_id: str
    target_agent: str | None
    source_agent: str | None
    action: str | None
    status: str
    final: bool = Field(description="the dispatcher recorded this terminal status as the task's last")
    attempt: int | None
    instance_id: str | None
    parent_task_id: str | None
    session_id: str | None
    trace_id: str | None
    created_at: datetime = Field(description="when it was submitted (else when ingest first saw it)")
    updated_at: datetime
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    duration_s: float | None = Field(description="finishedAt - createdAt; null until it finishes")
    error: str | None = Field(description="preview: the first characters of the error")
    parameters_preview: str | None = Field(description="the parameters' JSON text, cut")
    result_preview: str | None = Field(description="the result's JSON text, cut; null without a result")
    pending_approval: ApprovalRequest | None = Field(
        description="the tool call an input_required task waits on (null in any other status)"
    )


class TaskPage(LoomModel):
    """A page of tasks, newest first, and how many tasks each status has under the same
    filters but the status filter (for tabs)."""

    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="pass back as `cursor` for the next page; null on the last")
    counts: dict[str, int] = Field(
        description="tasks per status matching every filter but `status`; every status is present"
    )
    total: int = Field(description="tasks matching every filter, `status` included (over all pages)")


class SessionTask(TaskSummary):
    """A task of a session with the LLM usage of its ``llm.usage`` events."""

    usage: CostFigures


class SessionTotals(CostFigures):
    """A session as a whole: its tasks by status, LLM usage (every ``llm.usage`` event of the
    session, those of no listed task included) and its span."""

    tasks: int
    counts: dict[str, int] = Field(description="tasks per status (statuses with tasks only)")
    started_at: datetime = Field(description="the first task's createdAt")
    ended_at: datetime | None = Field(description="the last finishedAt, once every task has finished")
    duration_s: float | None = Field(description="endedAt - startedAt; null while a task is open")


class SessionDetail(LoomModel):
    """A session's tasks, oldest first, each with its LLM usage, and the session's totals."""

    session_id: str
    tasks: list[SessionTask]
    truncated: bool = Field(description="the session has more tasks than LOOM_SESSION_TASKS_LIMIT")
    totals: SessionTotals
