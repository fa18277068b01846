"""Tasks: the A2A task model, its life cycle and the task lifecycle messages.

A :class:`Task` is what a client submits on ``loom.task.submitted.<agent>``, what the
dispatcher assigns on ``loom.task.assigned.<instance>`` and what a worker executes.
Its status moves along :data:`ALLOWED_TRANSITIONS` and ends in exactly one of the
:data:`TERMINAL_STATUSES`. Status changes travel as :class:`TaskStatusChanged`: a worker reports
its attempt's on ``loom.task.report.<instance>.<task_id>``, and the dispatcher announces those it
accepts on ``loom.task.status.<task_id>``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import AwareDatetime, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from loom_protocol.approvals import ApprovalDecision, ApprovalRequest
from loom_protocol.base import (
    AgentId,
    InstanceId,
    Label,
    LoomModel,
    TaskId,
    check_traceparent,
    trace_id_of,
    utc_now,
)
from loom_protocol.limits import check_json_value

__all__ = [
    "ALLOWED_TRANSITIONS",
    "TERMINAL_STATUSES",
    "InvalidTransition",
    "RejectedMessage",
    "Task",
    "TaskAction",
    "TaskCancelRequested",
    "TaskDeadLettered",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskStreamChunk",
    "TaskSubmission",
    "TraceContext",
    "can_transition",
    "is_terminal",
]


class TaskStatus(StrEnum):
    """Where a task is in its life cycle.

    Attributes:
        PENDING: Accepted, waiting for an instance.
        DISPATCHED: Assigned to an instance, not started yet.
        RUNNING: Being executed by an instance.
        INPUT_REQUIRED: Stopped until a person approves or rejects a tool call
            (``Task.pending_approval``); no instance holds it meanwhile.
        COMPLETED: Finished with a result (terminal).
        FAILED: Finished with an error (terminal).
        CANCELLED: Cancelled on request (terminal).
        DEAD: Dead-lettered: attempts exhausted or no instance to run it (terminal).
    """

    PENDING = "pending"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    INPUT_REQUIRED = "input_required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"


TERMINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.DEAD}
)
"""The states a task never leaves; every accepted task ends in exactly one of them."""

_S = TaskStatus
ALLOWED_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.DISPATCHED, _S.CANCELLED, _S.DEAD}),
        _S.DISPATCHED: frozenset(
            {
                _S.RUNNING,
                _S.INPUT_REQUIRED,  # stopped on a call needing approval (no running report seen)
                _S.PENDING,  # the instance went away before starting: back to the queue
                _S.DISPATCHED,  # re-dispatched straight to another instance
                _S.COMPLETED,
                _S.FAILED,
                _S.CANCELLED,
                _S.DEAD,
            }
        ),
        _S.RUNNING: frozenset(
            {_S.COMPLETED, _S.FAILED, _S.CANCELLED, _S.PENDING, _S.DISPATCHED, _S.DEAD, _S.INPUT_REQUIRED}
        ),
        # decided (approved or rejected, resumed on any instance), cancelled, or timed out
        _S.INPUT_REQUIRED: frozenset({_S.PENDING, _S.CANCELLED, _S.DEAD, _S.FAILED}),
        _S.COMPLETED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
        _S.DEAD: frozenset(),
    }
)
"""The task state machine, defined in this one place: ``status -> statuses it may move to``."""


def can_transition(current: TaskStatus | str, new: TaskStatus | str) -> bool:
    """Tell whether a task may move from one status to another.

    Args:
        current: The task's status now.
        new: The status it would move to.

    Returns:
        True if ``ALLOWED_TRANSITIONS`` permits ``current -> new``; False otherwise,
        including for unknown status strings.
    """
    try:
        return TaskStatus(new) in ALLOWED_TRANSITIONS[TaskStatus(current)]
    except ValueError:
        return False


def is_terminal(status: TaskStatus | str) -> bool:
    """Tell whether a status is terminal (completed, failed, cancelled or dead).

    Args:
        status: A task status.

    Returns:
        True for a terminal status.
    """
    return status in TERMINAL_STATUSES


class InvalidTransition(ValueError):
    """Raised when a task is asked to move to a status the state machine forbids."""


class TaskAction(StrEnum):
    """The A2A verb of a task.

    Attributes:
        EXECUTE: Run the task.
        CANCEL: Cancel a running task.
        QUERY: Ask about a task or an agent.
        STREAM: Run the task and stream its output.
    """

    EXECUTE = "execute"
    CANCEL = "cancel"
    QUERY = "query"
    STREAM = "stream"


class TraceContext(LoomModel):
    """W3C trace context carried by every task message.

    Attributes:
        traceparent: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``; all-zero ids
            are rejected.
        tracestate: Vendor-specific trace state, passed through unchanged.
    """

    traceparent: str | None = None
    tracestate: str | None = None

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str | None) -> str | None:
        return None if value is None else check_traceparent(value)

    @property
    def trace_id(self) -> str | None:
        """The 32-hex trace id part of ``traceparent``, or None when there is none."""
        return trace_id_of(self.traceparent)

    @classmethod
    def new(cls) -> TraceContext:
        """Start a new trace: a random trace id and parent id, sampled.

        Returns:
            A context whose ``traceparent`` is ``00-<random 32 hex>-<random 16 hex>-01``.
        """
        return cls(traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")


class Task(LoomModel):
    """An A2A task plus the fields the distributed runtime needs.

    The A2A fields keep their A2A wire names (``taskId``, ``sourceAgent``,
    ``targetAgent``, ``action``, ``parameters``, ``status``, ``result``, ``error``,
    ``metadata``, ``parentTaskId``, ``sessionId``). Unlike other messages a Task is mutable
    (assignments are validated); prefer :meth:`with_status` to change its status.

    Attributes:
        task_id: Unique id, 1..128 characters of ``[A-Za-z0-9_:-]`` (a subject token).
        source_agent: Who submitted it (an agent id, a user, ``None`` for an API client).
        target_agent: The agent that must run it; becomes the subject token of
            ``loom.task.submitted.<agent>`` so it is 1..128 characters of ``[A-Za-z0-9_-]``.
        action: The A2A verb.
        parameters: The input of the task.
        status: Where it is in its life cycle.
        result: The result, once completed.
        error: The error message, once failed, cancelled or dead.
        metadata: Free-form annotations (interceptors write timings here).
        parent_task_id: The task that delegated this one, if any (topology edges).
        session_id: The conversation / session it belongs to.
        attempt: How many times it has been assigned (0 = never).
        instance_id: The worker instance that runs or ran it.
        created_at: When it was created (tz-aware).
        updated_at: When it last changed (tz-aware).
        trace: W3C trace context.
        pending_approval: The tool call it waits on, in status ``input_required``.
        approvals: The decisions taken on its tool calls, oldest first (a resumed attempt
            reads them).
    """

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    task_id: TaskId = Field(default_factory=lambda: uuid.uuid4().hex)
    source_agent: Label | None = None
    target_agent: AgentId
    action: TaskAction = TaskAction.EXECUTE
    parameters: dict[str, Any] = Field(default_factory=dict)
    status: TaskStatus = TaskStatus.PENDING
    result: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_task_id: TaskId | None = None
    session_id: Label | None = None
    attempt: int = Field(default=0, ge=0)
    instance_id: InstanceId | None = None
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    trace: TraceContext = Field(default_factory=TraceContext)
    pending_approval: ApprovalRequest | None = None
    approvals: list[ApprovalDecision] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        """True when the task is in a terminal status."""
        return is_terminal(self.status)

    def decision_for(self, key: str) -> ApprovalDecision | None:
        """The latest decision taken on the call ``key``, if any."""
        return next((d for d in reversed(self.approvals) if d.key == key), None)

    def with_status(self, status: TaskStatus, **changes: Any) -> Task:
        """Return a copy of this task moved to ``status``, with ``updated_at`` set to now.

        The copy is fully validated, so ``changes`` obey the same rules as construction.

        Args:
            status: The new status; must be allowed by :data:`ALLOWED_TRANSITIONS`.
            **changes: Other fields to change at the same time, by Python name
                (e.g. ``result=...``, ``error=...``, ``instance_id=...``, ``attempt=...``).
                ``updated_at`` may be given explicitly.

        Returns:
            The new task; this one is left unchanged.

        Raises:
            InvalidTransition: If ``self.status -> status`` is not allowed.
            TypeError: If ``changes`` names a field Task does not have.
            pydantic.ValidationError: If a changed value is invalid.
        """
        if not can_transition(self.status, status):
            raise InvalidTransition(
                f"task {self.task_id}: cannot move from {self.status.value!r} to {TaskStatus(status).value!r}"
            )
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"Task has no field(s) {sorted(unknown)}")
        data = self.model_dump()
        data.update(changes)
        data["status"] = status
        if "updated_at" not in changes:
            data["updated_at"] = utc_now()
        return type(self).model_validate(data)


class TaskSubmission(LoomModel):
    """The body of the dispatcher's ``POST /api/tasks``: a task as a client submits it.

    Unknown fields are refused (HTTP 422), so that a typo such as ``targetAgnet`` is never
    silently dropped; the dispatcher fills in the rest of the :class:`Task` (id when not given,
    status, trace, times).

    Attributes:
        task_id: The id to give the task (submitting the same id again is idempotent); a new
            one when not given.
        source_agent: Who submits it.
        target_agent: The agent to run it.
        action: The A2A verb.
        parameters: The task's input.
        metadata: Free-form metadata (e.g. ``replay``, a :class:`~loom_protocol.replays.ReplaySpec`).
        parent_task_id: The delegating task, if any.
        session_id: The session, if any.
    """

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId | None = None
    source_agent: Label | None = None
    target_agent: AgentId
    action: TaskAction = TaskAction.EXECUTE
    parameters: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_task_id: TaskId | None = None
    session_id: Label | None = None

    @field_validator("parameters", "metadata")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        # what JSON and PostgreSQL can hold: no NUL or lone surrogate, finite numbers, bounded depth
        if (reason := check_json_value(value)) is not None:
            raise PydanticCustomError("unstorable_value", "{reason}", {"reason": reason})
        return value


class TaskStatusChanged(LoomModel):
    """A task changed status: a worker's report on ``loom.task.report.<instance>.<task_id>``, or
    the dispatcher's announcement on ``loom.task.status.<task_id>``.

    Attributes:
        task_id: The task.
        target_agent: The agent it targets.
        status: The new status.
        attempt: The attempt the change belongs to.
        instance_id: The instance that reported it, if any.
        result: The result (status completed).
        error: The error (status failed, cancelled or dead).
        parent_task_id: The delegating task, if any.
        session_id: The session, if any.
        at: When the change happened.
        trace: W3C trace context.
        final: Set only by the dispatcher when it records the task's one terminal state;
            workers report outcomes with ``final`` unset, and waiters wait for ``final``.
        approval: The call waited on, with status ``input_required``.
    """

    task_id: TaskId
    target_agent: AgentId
    status: TaskStatus
    attempt: int = Field(default=0, ge=0)
    instance_id: InstanceId | None = None
    result: Any = None
    error: str | None = None
    parent_task_id: TaskId | None = None
    session_id: Label | None = None
    at: AwareDatetime = Field(default_factory=utc_now)
    trace: TraceContext = Field(default_factory=TraceContext)
    final: bool = False
    approval: ApprovalRequest | None = None

    @classmethod
    def from_task(cls, task: Task, *, at: datetime | None = None, **changes: Any) -> TaskStatusChanged:
        """Build the status-change message describing a task's current state.

        Args:
            task: The task, already in its new status.
            at: When the change happened; defaults to ``task.updated_at``.
            **changes: Fields of the message that differ from the task's (e.g. ``status``,
                ``result``, ``error``, ``instance_id``, ``final``), by their Python names.

        Returns:
            The message.
        """
        fields: dict[str, Any] = {
            "task_id": task.task_id,
            "target_agent": task.target_agent,
            "status": task.status,
            "attempt": task.attempt,
            "instance_id": task.instance_id,
            "result": task.result,
            "error": task.error,
            "parent_task_id": task.parent_task_id,
            "session_id": task.session_id,
            "at": at or task.updated_at,
            "trace": task.trace,
            "approval": task.pending_approval,
        }
        return cls.model_validate({**fields, **changes})


class TaskCancelRequested(LoomModel):
    """Cancellation of a task: the dispatcher tells the instance running it on
    ``loom.task.cancel.<task_id>``; anyone (a parent giving up on a child) asks the dispatcher
    for it on ``loom.task.cancelrequest.<task_id>``.

    Attributes:
        task_id: The task to cancel.
        reason: Why.
        at: When it was requested.
    """

    task_id: TaskId
    reason: str = "cancelled by user"
    at: AwareDatetime = Field(default_factory=utc_now)


class TaskStreamChunk(LoomModel):
    """A piece of a task's answer as it is produced; core NATS on ``loom.stream.<task_id>``.

    Only tasks with ``action: "stream"`` publish chunks. The subject is outside ``loom.task.>``
    on purpose: chunks are not stored (no stream captures ``loom.stream.*``). They are a live
    view only, worth nothing once the task has ended, and the answer itself is durable in the
    task's result and its ``agent.answer`` event; storing every token would multiply the
    messages JetStream and ingest carry per task.

    Attributes:
        task_id: The task.
        index: Position of this chunk in the task's chunks (0, 1, 2, ...; per attempt).
        delta: Text appended to the answer (empty on a ``done`` or ``discard`` chunk).
        step: The ReAct step (LLM call) the text belongs to.
        done: The last chunk of the answer: nothing follows for this attempt.
        discard: The text of ``step`` streamed so far was not the answer (the model went on to
            call tools): a reader drops it.
        attempt: The attempt that produced the chunk.
    """

    task_id: TaskId
    index: int = Field(ge=0)
    delta: str = ""
    step: int = Field(default=1, ge=1)
    done: bool = False
    discard: bool = False
    attempt: int = Field(default=1, ge=1)


class TaskDeadLettered(LoomModel):
    """A task was given up on; published on ``loom.task.dead.<agent>``.

    Attributes:
        task: The task as it was when given up (status ``dead``).
        reason: Why, e.g. ``"no instance of agent 'calc' after 5 attempts"``.
        at: When it was dead-lettered.
    """

    task: Task
    reason: str
    at: AwareDatetime = Field(default_factory=utc_now)


class RejectedMessage(LoomModel):
    """Dead-letter record of a malformed message; published on ``loom.rejected.<service>``.

    A service that cannot parse a message never drops it silently: it publishes this record
    with the reason (see :func:`loom_protocol.errors.validation_reason`) and acknowledges
    the original so that it is not redelivered forever.

    ``raw`` may be given as ``bytes`` or ``str``: bytes are decoded as UTF-8 with
    ``errors="replace"``, and anything longer than :attr:`MAX_RAW_BYTES` UTF-8 bytes is cut
    (``truncated`` is then set).

    Attributes:
        subject: The subject the message arrived on.
        reason: Why it was rejected.
        raw: The payload as text, at most 64 KiB of UTF-8.
        truncated: Whether ``raw`` was cut.
        at: When it was rejected.
    """

    MAX_RAW_BYTES: ClassVar[int] = 65_536

    subject: str
    reason: str
    raw: str = ""
    truncated: bool = False
    at: AwareDatetime = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _decode_and_truncate(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "raw" not in data:
            return data
        raw = data["raw"]
        if isinstance(raw, bytes | bytearray | memoryview):
            text = bytes(raw).decode("utf-8", errors="replace")
        elif isinstance(raw, str):
            text = raw
        else:
            return data  # let field validation report the wrong type
        encoded = text.encode("utf-8", errors="replace")  # lone surrogates become "?"
        cut = len(encoded) > cls.MAX_RAW_BYTES
        # Cutting may split a multi-byte character; "ignore" drops only that partial tail.
        text = encoded[: cls.MAX_RAW_BYTES].decode("utf-8", errors="ignore")
        return {**data, "raw": text, "truncated": bool(data.get("truncated")) or cut}
