"""From JetStream messages to database rows: pure functions, no I/O.

Every message read becomes exactly one of:

* an ``events`` row: a CloudEvent from ``loom.event.>`` (kind ``event``); a task message from
  ``loom.task.>`` converted to a CloudEvent-shaped row (kind ``task``, type
  ``loom.task.<submitted|assigned|cancel|dead>``, ``loom.task.status.<status>`` or
  ``loom.task.report.<status>``, id = its
  ``Nats-Msg-Id``, data = the message as published) which also updates the ``tasks`` table;
  a membership change from ``loom.registry.member.>`` (kind ``member``, type
  ``loom.registry.member.<up|down>``). Kinds and row types are named in
  :mod:`loom_protocol.stored`, which the readers (query, replay) use too;
* a ``dead_letters`` row: a malformed message (not JSON, not the model its subject promises,
  over the size limit), or a :class:`~loom_protocol.RejectedMessage` another service published
  on ``loom.rejected.<service>``.

A worker's report (``loom.task.report.<instance>.<task>``) becomes an ``events`` row typed
``loom.task.report.<status>`` and changes no task row: the dispatcher's
``loom.task.status.<task>`` says what it accepted of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loom_protocol import (
    BUS_TASK_ASSIGNED,
    BUS_TASK_CANCEL,
    BUS_TASK_CANCEL_REQUEST,
    BUS_TASK_DEAD,
    BUS_TASK_SUBMITTED,
    KIND_EVENT,
    KIND_MEMBER,
    KIND_TASK,
    MSG_ID_HEADER,
    ApprovalRequest,
    CloudEvent,
    EventType,
    MemberChanged,
    RejectedMessage,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    TraceContext,
    bus_member_type,
    bus_task_report_type,
    bus_task_status_type,
    subjects,
    validation_reason,
)
from loom_protocol.base import trace_id_of
from pydantic import ValidationError

EVENT_COLUMNS = (
    "time",
    "id",
    "kind",
    "type",
    "source",
    "subject",
    "trace_id",
    "task_id",
    "session_id",
    "parent_task_id",
    "node_id",
    "agent_id",
    "instance_id",
    "seq",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "raw",
    "stream_seq",
)
"""The columns of an event as ingest sends it to the database: ``raw`` is the event's JSON text,
from which the database derives the stored ``data`` and ``attributes`` (JSON work PostgreSQL
does in C)."""
DEAD_LETTER_COLUMNS = (
    "time",
    "stream",
    "stream_seq",
    "subject",
    "reason",
    "raw",
    "truncated",
    "rejected_by",
    "rejected_at",
)
TASK_COLUMNS = (
    "task_id",
    "target_agent",
    "source_agent",
    "action",
    "status",
    "final",
    "attempt",
    "instance_id",
    "parent_task_id",
    "session_id",
    "trace_id",
    "parameters",
    "result",
    "error",
    "metadata",
    "created_at",
    "updated_at",
    "cancel_requested_at",
    "pending_approval",
    "approvals",
)

# Attributes that are indexed (a btree entry has a size limit) or that the API groups by.
MAX_ATTRIBUTE_CHARS = 1024
_LIMITED_ATTRIBUTES = ("type", "source", "subject", "sessionid", "agentid")
_INT64_MAX = 2**63 - 1
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # task columns

EventRow = tuple[Any, ...]
TaskRow = tuple[Any, ...]
DeadLetterRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Incoming:
    """The parts of a JetStream message that decoding needs."""

    stream: str
    subject: str
    data: bytes
    stream_seq: int
    timestamp: datetime  # JetStream's (stable across redeliveries)
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one message becomes: an event row (and maybe a task update), or a dead letter."""

    event: EventRow | None = None
    task: TaskRow | None = None
    dead: DeadLetterRow | None = None


def dead_letter(
    inc: Incoming,
    reason: str,
    *,
    subject: str | None = None,
    raw: bytes | None = None,
    truncated: bool = False,
    rejected_by: str = "ingest",
    rejected_at: datetime | None = None,
) -> DeadLetterRow:
    return (
        inc.timestamp,
        inc.stream,
        inc.stream_seq,
        (subject if subject is not None else inc.subject).replace("\x00", ""),
        reason.replace("\x00", ""),
        inc.data if raw is None else raw,
        truncated,
        rejected_by.replace("\x00", ""),
        rejected_at,
    )


def decode(inc: Incoming, max_bytes: int) -> Decoded:
    """Turn one message into rows, by the subject it arrived on."""
    if len(inc.data) > max_bytes:
        return Decoded(
            dead=dead_letter(inc, f"message is {len(inc.data)} bytes, over the limit of {max_bytes} bytes")
        )
    subject = inc.subject
    if subject.startswith("loom.event."):
        return _decode_event(inc)
    if subject.startswith("loom.task."):
        return _decode_task(inc)
    if subject.startswith("loom.registry.member."):
        return _decode_member(inc)
    if subject.startswith("loom.rejected."):
        return _decode_rejected(inc)
    return Decoded(dead=dead_letter(inc, f"ingest does not store messages of subject {subject!r}"))


def _invalid(exc: ValidationError, what: str) -> str:
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return f"not valid JSON: {validation_reason(exc)}"
    return f"not a valid {what}: {validation_reason(exc)}"


def _decode_event(inc: Incoming) -> Decoded:
    try:
        event = CloudEvent.model_validate_json(inc.data)
    except ValidationError as exc:
        return Decoded(dead=dead_letter(inc, _invalid(exc, "CloudEvent")))
    if (problem := attribute_problem(event)) is not None:
        return Decoded(dead=dead_letter(inc, problem))
    if (problem := subjects.event_sender_problem(inc.subject, event.type, event.instanceid)) is not None:
        return Decoded(dead=dead_letter(inc, problem))
    if event.instanceid is None:  # a worker's event is its instance's, named or not
        instance_id = subjects.event_sender(inc.subject).instance_id
        if instance_id is not None:
            event = event.model_copy(update={"instanceid": instance_id})
    raw = inc.data.decode("utf-8")  # validated JSON, so valid UTF-8
    return Decoded(event=event_row(event, fallback_time=inc.timestamp, stream_seq=inc.stream_seq, raw=raw))


def attribute_problem(event: CloudEvent) -> str | None:
    """Why ``event`` cannot be stored although it is a valid CloudEvent, or None."""
    for name in _LIMITED_ATTRIBUTES:
        value = getattr(event, name)
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_CHARS:
            return f"attribute {name!r} is {len(value)} characters; at most {MAX_ATTRIBUTE_CHARS} are stored"
    return None


def event_row(event: CloudEvent, *, fallback_time: datetime, stream_seq: int | None, raw: str) -> EventRow:
    """The row ingest sends for a validated CloudEvent (columns in :data:`EVENT_COLUMNS` order); ``raw``
    is the JSON text it was validated from. Bus messages make theirs with :func:`_bus_row`."""
    data = event.data
    seq = (event.model_extra or {}).get("seq")
    input_tokens = output_tokens = None
    cost_usd = latency_s = None
    if isinstance(data, dict):
        if event.type == EventType.LLM_USAGE:
            input_tokens = _count(data.get("input_tokens"))
            output_tokens = _count(data.get("output_tokens"))
            cost_usd = _number(data.get("cost_usd"))
            latency_s = _duration(data.get("latency_s"))
        elif event.type == EventType.TOOL_RESULT:
            ms = _duration(data.get("duration_ms"))
            latency_s = None if ms is None else ms / 1000.0
    return (
        event.time or fallback_time,
        event.id,
        KIND_EVENT,
        event.type,
        event.source,
        event.subject,
        event.traceid,
        event.taskid,
        event.sessionid,
        event.parenttaskid,
        event.agentid or event.source,
        event.agentid,
        event.instanceid,
        seq if isinstance(seq, int) and not isinstance(seq, bool) and abs(seq) <= _INT64_MAX else None,
        input_tokens,
        output_tokens,
        cost_usd,
        latency_s,
        raw,
        stream_seq,
    )


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX:
        return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _duration(value: Any) -> float | None:
    number = _number(value)
    return None if number is None or number < 0 else number


# -- task and membership messages -------------------------------------------------------------

_TASK_KINDS = ("submitted", "assigned", "report", "status", "cancel", "cancelrequest", "dead")


def _bus_row(
    inc: Incoming,
    kind: str,
    type_: str,
    time: datetime,
    *,
    task_id: str | None = None,
    session_id: str | None = None,
    parent_task_id: str | None = None,
    trace: TraceContext | None = None,
    instance_id: str | None = None,
    agent_id: str | None = None,
    node_id: str | None = None,
) -> EventRow:
    """The ``events`` row a bus message is stored as: a CloudEvent whose data is the message.

    Built directly rather than through :class:`CloudEvent` (whose validation cost more than the
    message's own): every value is the message's subject and stream position or a field of the
    wire model it was validated as. The message's JSON text is spliced in as ``data``.
    """
    event_id = inc.msg_id or f"{inc.stream}:{inc.stream_seq}"
    source = f"/nats/{inc.stream}"
    traceparent = trace.traceparent if trace else None
    trace_id = trace_id_of(traceparent)
    envelope = {
        "id": event_id,
        "source": source,
        "specversion": "1.0",
        "type": type_,
        "subject": inc.subject,
        "time": time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "taskid": task_id,
        "sessionid": session_id,
        "parenttaskid": parent_task_id,
        "traceparent": traceparent,
        "tracestate": trace.tracestate if trace else None,
        "traceid": trace_id,
        "instanceid": instance_id,
        "agentid": agent_id,
    }
    head = _JSON.encode({k: v for k, v in envelope.items() if v is not None})
    if b"NaN" in inc.data or b"Infinity" in inc.data:
        # literals Python's and pydantic's JSON parsers accept and PostgreSQL's jsonb refuses:
        # parsed and written again, those numbers become null
        data = _JSON.encode(_finite(json.loads(inc.data)))
    else:
        data = inc.data.decode("utf-8")  # validated JSON, so valid UTF-8
    return (
        time,
        event_id,
        kind,
        type_,
        source,
        inc.subject,
        trace_id,
        task_id,
        session_id,
        parent_task_id,
        node_id or agent_id or source,
        agent_id,
        instance_id,
        None,
        None,
        None,
        None,
        None,
        f'{head[:-1]},"data":{data}}}',
        inc.stream_seq,
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _task_bus_row(inc: Incoming, type_: str, time: datetime, of: Task | TaskStatusChanged) -> EventRow:
    return _bus_row(
        inc,
        KIND_TASK,
        type_,
        time,
        task_id=of.task_id,
        session_id=of.session_id,
        parent_task_id=of.parent_task_id,
        trace=of.trace,
        instance_id=of.instance_id,
        agent_id=of.target_agent,
    )


def _task_row(
    task: Task, *, status: str | None, final: bool, updated_at: datetime, error: str | None
) -> TaskRow:
    return (
        task.task_id,
        task.target_agent,
        task.source_agent,
        task.action.value,
        status,
        final,
        task.attempt,
        task.instance_id,
        task.parent_task_id,
        task.session_id,
        task.trace.trace_id,
        _JSON.encode(task.parameters),
        None if task.result is None else _JSON.encode(task.result),
        error,
        _JSON.encode(task.metadata),
        task.created_at,
        updated_at,
        None,
        _pending_approval(status, task.pending_approval),
        _JSON.encode([d.to_wire() for d in task.approvals]),
    )


def _pending_approval(status: str | None, request: ApprovalRequest | None) -> str | None:
    """The stored ``pending_approval``: the call waited on, only while the status says so."""
    if status != TaskStatus.INPUT_REQUIRED.value or request is None:
        return None
    return _JSON.encode(request.to_wire())


def _decode_task(inc: Incoming) -> Decoded:
    parts = inc.subject.split(".")  # loom.task.<kind>.<id>, or loom.task.report.<instance>.<id>
    kind = parts[2] if len(parts) > 2 else ""
    if len(parts) != (5 if kind == "report" else 4):
        kind = ""
    if kind not in _TASK_KINDS:
        return Decoded(dead=dead_letter(inc, f"unknown task subject {inc.subject!r}"))
    try:
        if kind in ("submitted", "assigned"):
            task = Task.model_validate_json(inc.data)
            event = _task_bus_row(
                inc,
                BUS_TASK_SUBMITTED if kind == "submitted" else BUS_TASK_ASSIGNED,
                task.updated_at,
                task,
            )
            row = _task_row(
                task, status=task.status.value, final=False, updated_at=task.updated_at, error=task.error
            )
        elif kind == "report":  # a worker's, to the dispatcher: what it accepts comes as a status
            change = TaskStatusChanged.model_validate_json(inc.data)
            event = _task_bus_row(inc, bus_task_report_type(change.status), change.at, change)
            row = None
        elif kind == "status":
            change = TaskStatusChanged.model_validate_json(inc.data)
            event = _task_bus_row(inc, bus_task_status_type(change.status), change.at, change)
            row = (
                change.task_id,
                change.target_agent,
                None,
                None,
                change.status.value,
                bool(getattr(change, "final", False)),
                change.attempt,
                change.instance_id,
                change.parent_task_id,
                change.session_id,
                change.trace.trace_id,
                None,
                None if change.result is None else _JSON.encode(change.result),
                change.error,
                None,
                change.at,  # the task's creation, if its submission is not stored (the earliest wins)
                change.at,
                None,
                _pending_approval(change.status.value, change.approval),
                None,
            )
        elif kind == "dead":
            record = TaskDeadLettered.model_validate_json(inc.data)
            task = record.task
            event = _task_bus_row(inc, BUS_TASK_DEAD, record.at, task)
            row = _task_row(
                task, status=TaskStatus.DEAD.value, final=True, updated_at=record.at, error=record.reason
            )
        elif kind == "cancelrequest":  # a request to the dispatcher: its decision changes the task
            request = TaskCancelRequested.model_validate_json(inc.data)
            event = _bus_row(inc, KIND_TASK, BUS_TASK_CANCEL_REQUEST, request.at, task_id=request.task_id)
            row = None
        else:
            cancel = TaskCancelRequested.model_validate_json(inc.data)
            event = _bus_row(inc, KIND_TASK, BUS_TASK_CANCEL, cancel.at, task_id=cancel.task_id)
            # created_at, updated_at, cancel_requested_at: the request's time
            row = (cancel.task_id, *([None] * 4), False, *([None] * 9), *([cancel.at] * 3), None, None)
    except ValidationError as exc:
        return Decoded(dead=dead_letter(inc, _invalid(exc, f"task {kind} message")))
    return Decoded(event=event, task=row)


def _decode_member(inc: Incoming) -> Decoded:
    try:
        change = MemberChanged.model_validate_json(inc.data)
    except ValidationError as exc:
        return Decoded(dead=dead_letter(inc, _invalid(exc, "MemberChanged")))
    # a membership row belongs to the instance (node_id), not to the bus "source"
    return Decoded(
        event=_bus_row(
            inc,
            KIND_MEMBER,
            bus_member_type(change.change),
            change.at,
            instance_id=change.instance_id,
            node_id=change.instance_id,
        )
    )


def _decode_rejected(inc: Incoming) -> Decoded:
    service = inc.subject[len("loom.rejected.") :] or "unknown"
    try:
        record = RejectedMessage.model_validate_json(inc.data)
    except ValidationError as exc:
        return Decoded(dead=dead_letter(inc, _invalid(exc, "RejectedMessage")))
    return Decoded(
        dead=dead_letter(
            inc,
            record.reason,
            subject=record.subject,
            raw=record.raw.encode("utf-8", errors="replace"),
            truncated=record.truncated,
            rejected_by=service,
            rejected_at=record.at,
        )
    )


def msg_id_of(headers: dict[str, str] | None) -> str | None:
    if not headers:
        return None
    value = headers.get(MSG_ID_HEADER)
    return value or None
