"""The shapes the client returns besides ``loom_protocol``'s own (``Task``, ``CloudEvent``,
``TaskStreamChunk``, ``AgentCard``): the answers of the query, registry and replay services.

They are tolerant readers: camelCase or snake_case in, unknown fields ignored (kept where
``extra="allow"``), and every field but an id optional, so a newer service that adds or
drops a field does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loom_protocol import AgentCard, ApprovalRequest, CloudEvent, InstanceLoad, LoomModel, TaskStreamChunk
from pydantic import ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "AgentInfo",
    "CostFigures",
    "Dropped",
    "InstanceInfo",
    "LiveMessage",
    "ReplayFrame",
    "ReplaySession",
    "SessionDetail",
    "SessionTask",
    "SessionTotals",
    "StreamEnd",
    "TaskDetail",
    "TaskPage",
    "TaskRecord",
    "TaskSummary",
    "parse_events",
]


def parse_events(raw: Any) -> list[CloudEvent]:
    """The CloudEvents of a list of JSON objects; entries that are not valid events are skipped."""
    events: list[CloudEvent] = []
    for item in raw if isinstance(raw, list) else ():
        try:
            events.append(CloudEvent.model_validate(item))
        except ValidationError:
            continue
    return events


class TaskSummary(LoomModel):
    """A task as the query service lists it (``GET /api/tasks``): its state and times, with
    previews of its input and output (the full task is :meth:`LoomClient.get`)."""

    task_id: str
    target_agent: str | None = None
    source_agent: str | None = None
    action: str | None = None
    status: str | None = None
    final: bool | None = None
    attempt: int | None = None
    instance_id: str | None = None
    parent_task_id: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None
    parameters_preview: str | None = None
    result_preview: str | None = None
    pending_approval: ApprovalRequest | None = None


class TaskPage(LoomModel):
    """One page of a task search, newest first.

    Attributes:
        tasks: The page.
        next_cursor: Pass back as ``cursor`` for the next page; None on the last one.
        counts: Tasks per status under every filter but the status filter.
        total: Tasks under every filter (all pages), when the service says.
    """

    tasks: list[TaskSummary] = Field(default_factory=list)
    next_cursor: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    total: int | None = None


class CostFigures(LoomModel):
    """LLM calls, tokens and cost (USD) of a set of ``llm.usage`` events."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0


class SessionTask(TaskSummary):
    """A task of a session, with the LLM usage of its ``llm.usage`` events."""

    usage: CostFigures = Field(default_factory=CostFigures)


class SessionTotals(CostFigures):
    """A session as a whole: tasks by status, LLM usage and its span."""

    tasks: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None


class SessionDetail(LoomModel):
    """A session's tasks, oldest first, and its totals (``GET /api/sessions/{id}``)."""

    session_id: str
    tasks: list[SessionTask] = Field(default_factory=list)
    truncated: bool = False
    totals: SessionTotals = Field(default_factory=SessionTotals)


class TaskRecord(LoomModel):
    """A task as ingest stored it, with its full parameters, result and error."""

    task_id: str
    target_agent: str | None = None
    source_agent: str | None = None
    action: str | None = None
    status: str | None = None
    final: bool | None = None
    attempt: int | None = None
    instance_id: str | None = None
    parent_task_id: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    parameters: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class TaskDetail(LoomModel):
    """A stored task, its events in causal order and its child tasks (query's
    ``GET /api/tasks/{taskId}``).

    Attributes:
        task_id: The task asked for.
        task: Its record; None when only events carry its id.
        children: The tasks it delegated.
        events: Its events, oldest first.
        truncated: More events exist than the service returns at once.
    """

    task_id: str
    task: TaskRecord | None = None
    children: list[TaskRecord] = Field(default_factory=list)
    events: list[CloudEvent] = Field(default_factory=list)
    truncated: bool = False

    @field_validator("events", mode="before")
    @classmethod
    def _valid_events(cls, value: Any) -> list[CloudEvent]:
        return parse_events(value)


class InstanceInfo(LoomModel):
    """One live instance of an agent, as of its last heartbeat."""

    instance_id: str
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    load: InstanceLoad | None = None
    draining: bool = False
    last_heartbeat_age_s: float | None = None


class AgentInfo(LoomModel):
    """An agent the registry knows: its card and its live instances."""

    agent_id: str
    card: AgentCard | None = None
    instances: list[InstanceInfo] = Field(default_factory=list)


class ReplaySession(LoomModel):
    """A replay session: a cursor over the selected recorded events.

    Attributes:
        session_id: Its id, for the step / jump calls.
        total: Events selected.
        index: The cursor: -1 before the first event.
    """

    model_config = ConfigDict(extra="allow")

    session_id: str
    total: int
    index: int = -1
    selection: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class ReplayFrame(LoomModel):
    """The event at a replay session's cursor after a step or jump, and the state rebuilt up to it.

    Attributes:
        event: The recorded CloudEvent at the cursor (as stored).
        index: The cursor.
        total: Events in the session.
        has_previous: A step backward is possible.
        has_next: A step forward is possible.
        state: The reconstructed state (None when asked for none).
    """

    model_config = ConfigDict(extra="allow")

    session_id: str | None = None
    event: dict[str, Any] = Field(default_factory=dict)
    index: int
    total: int
    has_previous: bool = False
    has_next: bool = False
    state: dict[str, Any] | None = None

    @property
    def cloud_event(self) -> CloudEvent | None:
        """The event as a CloudEvent, or None when it is not a valid one."""
        events = parse_events([self.event])
        return events[0] if events else None


class StreamEnd(LoomModel):
    """The end of a task's answer stream: the task has ended.

    Attributes:
        task_id: The task.
        status: Its terminal status.
        result: Its result (completed).
        error: Its error (failed, cancelled, dead).
    """

    task_id: str
    status: str | None = None
    result: Any = None
    error: str | None = None


class Dropped(LoomModel):
    """The live feed dropped ``count`` events for this client (it read too slowly)."""

    count: int


LiveMessage = CloudEvent | TaskStreamChunk | Dropped
"""What the live feed yields: an event, an answer chunk, or a notice of dropped events."""
