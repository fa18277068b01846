"""Observation events: the CloudEvents 1.0 envelope, Loom's event types and ingest batches.

Every observable step (a thought, a tool call, an LLM usage report, a task state change)
is a :class:`CloudEvent` in the CloudEvents 1.0 JSON format, published on a subject that names
its sender and ends in its type (``loom.event.worker.<instance>.<type>``, see
:mod:`loom_protocol.subjects`) and stored by ingest. Producers outside NATS send them to ingest's
WebSocket as an :class:`EventBatch` and get an :class:`EventBatchAck` back.

CloudEvents attribute names are already lower case (``specversion``, ``datacontenttype``),
so unlike every other Loom model a CloudEvent is *not* camelCased. Extension attributes sit
at the top level of the JSON object, as the JSON format requires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import AwareDatetime, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, to_json

from loom_protocol.base import (
    AgentId,
    InstanceId,
    LoomModel,
    TaskId,
    check_traceparent,
    is_valid_traceparent,
    new_id,
    trace_id_of,
    utc_now,
)

__all__ = [
    "ALL_EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "BatchError",
    "CloudEvent",
    "EventBatch",
    "EventBatchAck",
    "EventType",
    "encode_event",
    "new_event",
]

MAX_EVENT_BYTES = 1_048_576
"""Largest accepted encoded event, in bytes (1 MiB, the NATS default max payload).

:meth:`CloudEvent.from_json` enforces it on input; a producer should check
``len(event.to_json())`` before publishing (and trim ``data`` if needed).
"""


class EventType(StrEnum):
    """The event types Loom itself emits (the CloudEvent ``type`` attribute).

    Other producers may use other types; these are the ones Loom's services and dashboards
    know. Each is also the tail of its subject (``loom.event.worker.<instance>.<type>``).

    Attributes:
        TASK_SUBMITTED: A task was accepted.
        TASK_ASSIGNED: A task was assigned to an instance.
        TASK_STARTED: An instance started a task.
        TASK_COMPLETED: A task completed.
        TASK_FAILED: A task failed.
        TASK_CANCELLED: A task was cancelled.
        TASK_DEAD: A task was dead-lettered.
        TASK_RETRIED: A task was put back for another attempt.
        TASK_RESUMED: An attempt restored the steps earlier attempts recorded.
        APPROVAL_REQUESTED: A tool call waits for a person's approval.
        APPROVAL_GRANTED: A person approved a tool call.
        APPROVAL_DENIED: A person (or the timeout) rejected a tool call.
        AGENT_THOUGHT: An agent's reasoning step.
        AGENT_ACTION: An agent decided on an action.
        AGENT_ANSWER: An agent's final answer.
        TOOL_CALL: A tool was called.
        TOOL_RESULT: A tool returned.
        LLM_REQUEST: A request was sent to an LLM provider.
        LLM_USAGE: Token usage and cost of an LLM call.
        MEMORY_ADD: An entry was added to memory.
        MEMORY_CONSOLIDATE: Memory was consolidated / compressed.
        REGISTRY_MEMBER_UP: An instance joined.
        REGISTRY_MEMBER_DOWN: An instance left.
        ERROR: An error worth recording.
    """

    TASK_SUBMITTED = "task.submitted"
    TASK_ASSIGNED = "task.assigned"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_DEAD = "task.dead"
    TASK_RETRIED = "task.retried"
    TASK_RESUMED = "task.resumed"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_DENIED = "approval.denied"
    AGENT_THOUGHT = "agent.thought"
    AGENT_ACTION = "agent.action"
    AGENT_ANSWER = "agent.answer"
    TOOL_CALL = "tool.call"
    TOOL_RESULT = "tool.result"
    LLM_REQUEST = "llm.request"
    LLM_USAGE = "llm.usage"
    MEMORY_ADD = "memory.add"
    MEMORY_CONSOLIDATE = "memory.consolidate"
    REGISTRY_MEMBER_UP = "registry.member.up"
    REGISTRY_MEMBER_DOWN = "registry.member.down"
    ERROR = "error"


ALL_EVENT_TYPES: frozenset[str] = frozenset(member.value for member in EventType)
"""Every :class:`EventType` value, as plain strings."""

_EXTENSION_NAME_RE = re.compile(r"^[a-z0-9]{1,20}$")
_EXTENSION_NAME_RULE = "^[a-z0-9]{1,20}$ (lower-case ASCII letters and digits, 1 to 20 characters)"
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")

# Names the spec gives to core attributes and to the JSON format's data members. They are all
# fields of CloudEvent, so input can never turn them into extensions; new_event() refuses them
# in its ``extensions`` argument.
_RESERVED_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "specversion",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
    }
)


# Loom's own extension attributes, typed fields of CloudEvent.
_LOOM_EXTENSIONS = (
    "traceparent",
    "tracestate",
    "taskid",
    "sessionid",
    "parenttaskid",
    "traceid",
    "instanceid",
    "agentid",
)


def _extension_problem(name: object, value: object) -> str | None:
    """Return why ``name: value`` is not a valid CloudEvents extension attribute, or None."""
    if not isinstance(name, str) or not _EXTENSION_NAME_RE.fullmatch(name):
        return f"extension attribute {name!r}: name must match {_EXTENSION_NAME_RULE}"
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            return None
        return f"extension attribute {name!r}: integer {value} is outside the 32-bit signed range"
    return (
        f"extension attribute {name!r}: value of type {type(value).__name__} is not allowed; "
        "extension values must be a string, an integer or a boolean"
    )


class CloudEvent(LoomModel):
    """A CloudEvents 1.0 event in the JSON format.

    Core attributes keep their spec names (no camelCase). Any other top-level member is an
    extension attribute: its name must match ``^[a-z0-9]{1,20}$`` and its value must be a
    string, an integer (32-bit) or a boolean, per the CloudEvents type system; extensions
    whose value is null are treated as absent. Extensions are kept at the top level and
    available through :attr:`extensions`.

    Loom's own extensions are typed fields: the W3C distributed-tracing extension
    (``traceparent``, ``tracestate``) and ``taskid``, ``sessionid``, ``parenttaskid``,
    ``traceid`` (derived from ``traceparent`` when not given), ``instanceid``, ``agentid``.

    Attributes:
        id: Event id, unique per source (also the JetStream ``Nats-Msg-Id``).
        source: URI-reference of the producer, e.g. ``loom://agent-worker/w-1``.
        specversion: Always ``"1.0"``.
        type: Event type, e.g. ``"agent.thought"`` (see :class:`EventType`).
        subject: What the event is about within the source (e.g. a tool name).
        time: When it happened (tz-aware; serialised as RFC 3339).
        datacontenttype: Media type of ``data``.
        dataschema: URI of the schema ``data`` follows.
        data: The payload (JSON value).
        data_base64: A binary payload, base64-encoded (exclusive with ``data``).
        traceparent: W3C traceparent of the step that emitted the event.
        tracestate: W3C tracestate.
        taskid: The task the event belongs to.
        sessionid: The session it belongs to.
        parenttaskid: The task's parent task.
        traceid: The 32-hex trace id (the trace id part of ``traceparent``).
        instanceid: The instance that emitted it.
        agentid: The agent that emitted it.
    """

    model_config = ConfigDict(alias_generator=None, extra="allow")

    id: str = Field(min_length=1)
    source: str = Field(min_length=1, pattern=r"^\S+$")
    specversion: Literal["1.0"]
    type: str = Field(min_length=1)
    subject: str | None = None
    time: AwareDatetime | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    taskid: TaskId | None = None
    sessionid: str | None = None
    parenttaskid: TaskId | None = None
    traceid: str | None = None
    instanceid: InstanceId | None = None
    agentid: AgentId | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_extensions(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        problems: list[str] = []
        cleaned: dict[Any, Any] = {}
        for name, value in data.items():
            if name in fields:
                cleaned[name] = value
            elif value is None:
                continue  # the spec treats a null attribute as absent
            elif (problem := _extension_problem(name, value)) is not None:
                problems.append(problem)
            else:
                cleaned[name] = value
        if problems:
            raise PydanticCustomError("cloudevent_extension", "{problems}", {"problems": "; ".join(problems)})
        traceparent = cleaned.get("traceparent")
        # An invalid traceparent is reported by its field validator; derive only from a valid one.
        derivable = isinstance(traceparent, str) and is_valid_traceparent(traceparent)
        if derivable and cleaned.get("traceid") is None:
            cleaned["traceid"] = trace_id_of(traceparent)
        return cleaned

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str | None) -> str | None:
        return None if value is None else check_traceparent(value)

    @field_validator("traceid")
    @classmethod
    def _check_traceid(cls, value: str | None) -> str | None:
        if value is not None and (not _TRACE_ID_RE.fullmatch(value) or value == "0" * 32):
            raise PydanticCustomError(
                "traceid_format", "traceid must be 32 lower-case hex digits, not all zero"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.data is not None and self.data_base64 is not None:
            raise PydanticCustomError("cloudevent_data", "'data' and 'data_base64' are mutually exclusive")
        if self.traceparent is not None and self.traceid != trace_id_of(self.traceparent):
            raise PydanticCustomError(
                "traceid_mismatch",
                "traceid '{traceid}' does not match the trace id of traceparent",
                {"traceid": self.traceid},
            )
        return self

    @property
    def trace_id(self) -> str | None:
        """The 32-hex trace id (``traceid``, derived from ``traceparent``), or None."""
        return self.traceid

    @property
    def extensions(self) -> dict[str, str | int | bool]:
        """All extension attributes that are set: Loom's typed ones and any others."""
        typed = {name: getattr(self, name) for name in _LOOM_EXTENSIONS if getattr(self, name) is not None}
        return {**typed, **(self.model_extra or {})}

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse and validate an event from its JSON form, enforcing :data:`MAX_EVENT_BYTES`.

        Args:
            data: JSON text or UTF-8 bytes.

        Returns:
            The validated event.

        Raises:
            pydantic.ValidationError: If the payload is larger than :data:`MAX_EVENT_BYTES`,
                not valid JSON, or not a valid CloudEvent.
        """
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", errors="replace"))
        if size > MAX_EVENT_BYTES:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "event_too_large",
                            "event is {size} bytes, over the limit of {limit} bytes",
                            {"size": size, "limit": MAX_EVENT_BYTES},
                        ),
                        loc=(),
                        input=f"<{size} bytes>",
                    )
                ],
            )
        return cls.model_validate_json(data)


def new_event(
    type: str,  # named after the CloudEvents attribute
    source: str,
    *,
    data: Any = None,
    subject: str | None = None,
    task_id: str | None = None,
    session_id: str | None = None,
    parent_task_id: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    instance_id: str | None = None,
    agent_id: str | None = None,
    time: datetime | None = None,
    id: str | None = None,  # named after the CloudEvents attribute
    extensions: Mapping[str, str | int | bool] | None = None,
) -> CloudEvent:
    """Build a validated CloudEvent with Loom's extensions filled in.

    Args:
        type: Event type, e.g. ``EventType.AGENT_THOUGHT``.
        source: URI-reference of the producer.
        data: The payload.
        subject: The CloudEvents ``subject``.
        task_id: Sets the ``taskid`` extension.
        session_id: Sets ``sessionid``.
        parent_task_id: Sets ``parenttaskid``.
        traceparent: Sets ``traceparent`` (and so ``traceid``).
        tracestate: Sets ``tracestate``.
        instance_id: Sets ``instanceid``.
        agent_id: Sets ``agentid``.
        time: When it happened; defaults to now (UTC).
        id: The event id; defaults to a new time-ordered id (UUIDv7 hex).
        extensions: Further extension attributes. They may not use a name the spec reserves
            (``id``, ``type``, ``data``, ...) or one of Loom's typed extensions (use the keyword
            arguments for those).

    Returns:
        The event.

    Raises:
        pydantic.ValidationError: If any attribute is invalid.
        ValueError: If ``extensions`` uses a reserved name or a Loom extension's name.
    """
    payload: dict[str, Any] = {
        "id": id if id is not None else new_id(),
        "source": source,
        "specversion": "1.0",
        "type": str(type),
        "time": time if time is not None else utc_now(),
        "subject": subject,
        "data": data,
        "taskid": task_id,
        "sessionid": session_id,
        "parenttaskid": parent_task_id,
        "traceparent": traceparent,
        "tracestate": tracestate,
        "instanceid": instance_id,
        "agentid": agent_id,
    }
    for name, value in (extensions or {}).items():
        if name in _RESERVED_ATTRIBUTES:
            raise ValueError(f"extension attribute {name!r}: the name is reserved by the CloudEvents spec")
        if name in _LOOM_EXTENSIONS:
            raise ValueError(f"extension attribute {name!r} is a Loom extension; pass it as its own argument")
        payload[name] = value
    return CloudEvent.model_validate({k: v for k, v in payload.items() if v is not None})


def encode_event(
    type: str,  # named after the CloudEvents attribute
    source: str,
    *,
    data: Any = None,
    subject: str | None = None,
    task_id: str | None = None,
    session_id: str | None = None,
    parent_task_id: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    instance_id: str | None = None,
    agent_id: str | None = None,
    time: datetime | None = None,
    id: str | None = None,  # named after the CloudEvents attribute
) -> tuple[str, bytes]:
    """The id and the JSON of the event :func:`new_event` builds from the same arguments,
    without validating them: for a producer whose every attribute comes from a validated model
    (the dispatcher's task lifecycle events, taken from a stored :class:`~loom_protocol.Task`).

    Validating and dumping a :class:`CloudEvent` cost about seven times as much as the encoding
    itself, on a path that publishes three events per task. The bytes are those of
    ``new_event(...).to_json()``: the attributes in the model's order, absent ones left out,
    ``traceid`` derived from ``traceparent``, the values serialised by pydantic's serialiser.

    Args:
        type: Event type, e.g. ``EventType.TASK_COMPLETED``.
        source: URI-reference of the producer.
        data: The payload (any value pydantic serialises).
        subject: The CloudEvents ``subject``.
        task_id: The ``taskid`` extension.
        session_id: ``sessionid``.
        parent_task_id: ``parenttaskid``.
        traceparent: ``traceparent`` (a valid one; ``traceid`` is derived from it).
        tracestate: ``tracestate``.
        instance_id: ``instanceid``.
        agent_id: ``agentid``.
        time: When it happened (timezone-aware); defaults to now (UTC).
        id: The event id; defaults to a new time-ordered id (UUIDv7 hex).

    Returns:
        ``(id, json_bytes)``.
    """
    event_id = id if id is not None else new_id()
    attributes: dict[str, Any] = {
        "id": event_id,
        "source": source,
        "specversion": "1.0",
        "type": str(type),
        "subject": subject,
        "time": time if time is not None else utc_now(),
        "datacontenttype": "application/json",
        "data": data,
        "traceparent": traceparent,
        "tracestate": tracestate,
        "taskid": task_id,
        "sessionid": session_id,
        "parenttaskid": parent_task_id,
        "traceid": trace_id_of(traceparent),
        "instanceid": instance_id,
        "agentid": agent_id,
    }
    return event_id, to_json({k: v for k, v in attributes.items() if v is not None})


class BatchError(LoomModel):
    """Why one event of an :class:`EventBatch` was rejected.

    Attributes:
        index: Position of the event in the batch.
        reason: Why it was rejected.
    """

    index: int = Field(ge=0)
    reason: str


class EventBatch(LoomModel):
    """A batch of events sent to ingest's WebSocket (``{"type": "event_batch", ...}``).

    The events are kept raw: the receiver validates them one by one, so one bad event is
    reported in the :class:`EventBatchAck` instead of rejecting the whole batch.

    Attributes:
        type: Always ``"event_batch"``.
        events: The events, as JSON objects.
    """

    type: Literal["event_batch"] = "event_batch"
    events: list[dict[str, Any]] = Field(default_factory=list)


class EventBatchAck(LoomModel):
    """Ingest's answer to an :class:`EventBatch`.

    Attributes:
        type: Always ``"ack"``.
        accepted: How many events were accepted.
        rejected: How many were rejected.
        errors: One entry per rejected event.
    """

    type: Literal["ack"] = "ack"
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    errors: list[BatchError] = Field(default_factory=list)
