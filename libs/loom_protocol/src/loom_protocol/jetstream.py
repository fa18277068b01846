"""JetStream stream definitions and the ``Nats-Msg-Id`` rule, as plain data (no nats-py).

Streams:

* ``LOOM_TASKS`` keeps everything under ``loom.task.>`` (submitted, assigned, status,
  cancel, dead).
* ``LOOM_EVENTS`` keeps the observation events, ``loom.event.>``.
* ``LOOM_REGISTRY`` keeps membership changes, ``loom.registry.member.>``.
* ``LOOM_REJECTED`` keeps dead-letter records of malformed messages, ``loom.rejected.>``.

Heartbeats (``loom.registry.heartbeat.<instance>``) and picks (``loom.registry.pick``) are
core NATS and deliberately not persisted: a heartbeat is only worth something while it is
fresh, and a pick is a request/reply whose requester retries on timeout.

The ``Nats-Msg-Id`` rule: **the id names the fact, not the attempt to publish it.** A
publisher that retries (after a timeout, a reconnect or a crash and restart) computes the
same id for the same fact, so the broker drops the duplicate if it arrives within the
stream's duplicate window. Two different facts never share an id: an assignment is
identified by task and attempt, a status change by task, attempt and status, an event by
its CloudEvent id. Ids are only compared within one stream.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from loom_protocol.agents import MembershipChange
from loom_protocol.base import LoomModel
from loom_protocol.events import MAX_EVENT_BYTES
from loom_protocol.subjects import EVENT_ALL, REJECTED_ALL, TASK_ALL
from loom_protocol.tasks import TaskStatus

__all__ = [
    "ALL_STREAMS",
    "EVENTS_STREAM",
    "MSG_ID_HEADER",
    "REGISTRY_STREAM",
    "REJECTED_STREAM",
    "SUPERSEDED_ATTEMPT_HEADER",
    "SUPERSEDED_INSTANCE_HEADER",
    "TASKS_STREAM",
    "StreamSpec",
    "assigned_msg_id",
    "cancel_msg_id",
    "cancel_request_msg_id",
    "dead_msg_id",
    "event_msg_id",
    "member_msg_id",
    "status_msg_id",
    "stream_config",
    "stream_create_error",
    "stream_create_request",
    "stream_direct_update",
    "submitted_msg_id",
]

MSG_ID_HEADER = "Nats-Msg-Id"
"""The header JetStream deduplicates on."""

SUPERSEDED_ATTEMPT_HEADER = "Loom-Superseded-Attempt"
"""On a message on ``loom.task.cancel.<task_id>``: the attempt that is no longer the task's
current one; its instance stops it and reports nothing. A cancel without it stops whatever
attempt runs and reports ``cancelled``."""

SUPERSEDED_INSTANCE_HEADER = "Loom-Superseded-Instance"
"""With :data:`SUPERSEDED_ATTEMPT_HEADER`: the instance that ran the superseded attempt."""

_DAY_S = 86_400.0


class StreamSpec(LoomModel):
    """What a JetStream stream must look like; services create or update streams from it.

    Attributes:
        name: Stream name (``[A-Za-z0-9_-]``).
        subjects: Subjects the stream captures.
        retention: Retention policy.
        max_age_s: How long messages are kept, in seconds.
        duplicate_window_s: How long ``Nats-Msg-Id`` values are remembered, in seconds
            (at most ``max_age_s``).
        storage: File or memory storage.
        max_msg_size: Largest message accepted, in bytes.
        allow_direct: Whether the last message of a subject can be read with the direct get API
            (``$JS.API.DIRECT.GET.<stream>.<subject>``): the subject is in the API's own
            subject, so NATS permissions can allow reading some subjects and not others.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    subjects: tuple[str, ...] = Field(min_length=1)
    retention: Literal["limits", "interest", "workqueue"]
    max_age_s: float = Field(gt=0)
    duplicate_window_s: float = Field(gt=0)
    storage: Literal["file", "memory"] = "file"
    max_msg_size: int = Field(default=MAX_EVENT_BYTES, ge=1)
    allow_direct: bool = False

    @model_validator(mode="after")
    def _window_within_age(self) -> Self:
        if self.duplicate_window_s > self.max_age_s:
            raise PydanticCustomError(
                "duplicate_window",
                "duplicate_window_s ({window}) may not exceed max_age_s ({age})",
                {"window": self.duplicate_window_s, "age": self.max_age_s},
            )
        return self


TASKS_STREAM = StreamSpec(
    name="LOOM_TASKS",
    subjects=(TASK_ALL,),
    retention="limits",
    max_age_s=7 * _DAY_S,
    duplicate_window_s=120.0,
    allow_direct=True,
)
"""Tasks and their life cycle (``loom.task.>``); a task's last status is read with a direct get
(workers may read statuses, never another instance's assignments)."""

EVENTS_STREAM = StreamSpec(
    name="LOOM_EVENTS",
    subjects=(EVENT_ALL,),
    retention="limits",
    max_age_s=7 * _DAY_S,
    duplicate_window_s=120.0,
)
"""Observation events (``loom.event.>``)."""

REGISTRY_STREAM = StreamSpec(
    name="LOOM_REGISTRY",
    subjects=("loom.registry.member.>",),
    retention="limits",
    max_age_s=7 * _DAY_S,
    duplicate_window_s=120.0,
)
"""Membership changes (``loom.registry.member.>``); heartbeats and picks are not persisted."""

REJECTED_STREAM = StreamSpec(
    name="LOOM_REJECTED",
    subjects=(REJECTED_ALL,),
    retention="limits",
    max_age_s=7 * _DAY_S,
    duplicate_window_s=120.0,
)
"""Dead-letter records of malformed messages (``loom.rejected.>``)."""

ALL_STREAMS: tuple[StreamSpec, ...] = (TASKS_STREAM, EVENTS_STREAM, REGISTRY_STREAM, REJECTED_STREAM)
"""Every stream Loom needs."""

_NS_PER_S = 1_000_000_000


def stream_config(spec: StreamSpec, replicas: int = 1) -> dict[str, Any]:
    """The JetStream API stream configuration of a spec (the body of ``$JS.API.STREAM.CREATE``).

    Plain JSON data, durations in nanoseconds as the server wants them; a client turns it into
    its own type (nats-py: ``StreamConfig.from_response(stream_config(spec))``). Creating a
    stream that exists with exactly this configuration succeeds; one that exists with another
    configuration is refused by the server (error code 10058) and left as it is.

    Args:
        spec: The stream to create.
        replicas: How many servers of a cluster keep a copy (``LOOM_NATS_REPLICAS``; 1 on a
            single server).
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 5:
        raise ValueError(f"replicas must be an integer from 1 to 5, got {replicas!r}")
    return {
        "name": spec.name,
        "subjects": list(spec.subjects),
        "retention": spec.retention,
        "storage": spec.storage,
        "max_age": round(spec.max_age_s * _NS_PER_S),
        "duplicate_window": round(spec.duplicate_window_s * _NS_PER_S),
        "max_msg_size": spec.max_msg_size,
        "num_replicas": replicas,
        "allow_direct": spec.allow_direct,
    }


def stream_create_request(spec: StreamSpec, replicas: int = 1) -> tuple[str, bytes]:
    """The JetStream API request that creates a stream: its subject and JSON body.

    Send it as a core NATS request (``await nc.request(*stream_create_request(spec))``) and
    read the reply with :func:`stream_create_error`. Creating is idempotent for an identical
    configuration, and never changes a stream that exists with another one.

    Args:
        spec: The stream to create.
        replicas: How many servers of a cluster keep a copy.

    Returns:
        (``$JS.API.STREAM.CREATE.<name>``, the body of :func:`stream_config`).
    """
    return f"$JS.API.STREAM.CREATE.{spec.name}", json.dumps(stream_config(spec, replicas)).encode()


def stream_direct_update(spec: StreamSpec, info_reply: bytes) -> tuple[str, bytes] | None:
    """The request that turns on direct gets for a stream made without them, or None.

    A stream that exists keeps its configuration when it is created again; ``allow_direct`` alone
    is turned on where the spec wants it (a stream made by an earlier version), with the rest of the
    stream's own configuration as it is.

    Args:
        spec: The stream as the protocol wants it.
        info_reply: The body of the server's reply to ``$JS.API.STREAM.INFO.<name>``.

    Returns:
        (``$JS.API.STREAM.UPDATE.<name>``, the stream's configuration with ``allow_direct``), or
        None when nothing is to change (or the reply holds no configuration).
    """
    if not spec.allow_direct:
        return None
    try:
        answer = json.loads(info_reply)
    except ValueError:
        return None
    config = answer.get("config") if isinstance(answer, dict) else None
    if not isinstance(config, dict) or config.get("name") != spec.name or config.get("allow_direct"):
        return None
    return f"$JS.API.STREAM.UPDATE.{spec.name}", json.dumps({**config, "allow_direct": True}).encode()


def stream_create_error(reply: bytes) -> str | None:
    """Why a stream create request did not leave the stream as specified, or None if it did.

    Args:
        reply: The body of the server's reply to :func:`stream_create_request`.

    Returns:
        None when the stream now exists with the spec's configuration; otherwise the server's
        description and code, e.g. ``"stream name already in use with a different
        configuration (10058)"`` (the stream is then left as it was), or a note that the reply
        was not a JetStream API answer.
    """
    try:
        answer = json.loads(reply)
    except ValueError:
        return f"not a JetStream API reply: {reply[:200]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None
    return f"{error.get('description', 'error')} ({error.get('err_code', error.get('code'))})"


def _part(value: str, what: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} must be non-empty and contain no whitespace, got {value!r}")
    return value


def _attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"attempt must be a non-negative integer, got {attempt!r}")
    return attempt


def submitted_msg_id(task_id: str) -> str:
    """Msg id of a task's submission: one per task.

    Args:
        task_id: The task.

    Returns:
        ``submitted:<task_id>``.

    Raises:
        ValueError: If ``task_id`` is empty or contains whitespace.
    """
    return f"submitted:{_part(task_id, 'task id')}"


def assigned_msg_id(task_id: str, attempt: int) -> str:
    """Msg id of a task's assignment: one per task and attempt.

    Args:
        task_id: The task.
        attempt: The attempt number the assignment starts.

    Returns:
        ``assigned:<task_id>:<attempt>``.

    Raises:
        ValueError: If ``task_id`` is empty or ``attempt`` is negative.
    """
    return f"assigned:{_part(task_id, 'task id')}:{_attempt(attempt)}"


def status_msg_id(task_id: str, attempt: int, status: TaskStatus | str) -> str:
    """Msg id of a status change: one per task, attempt and status.

    Args:
        task_id: The task.
        attempt: The attempt the change belongs to.
        status: The new status.

    Returns:
        ``status:<task_id>:<attempt>:<status>``.

    Raises:
        ValueError: If ``status`` is not a :class:`~loom_protocol.tasks.TaskStatus`, ``task_id``
            is empty or ``attempt`` is negative.
    """
    return f"status:{_part(task_id, 'task id')}:{_attempt(attempt)}:{TaskStatus(status).value}"


def cancel_request_msg_id(task_id: str) -> str:
    """Msg id of a request to the dispatcher to cancel a task: one per task.

    Args:
        task_id: The task.

    Returns:
        ``cancelrequest:<task_id>``.

    Raises:
        ValueError: If ``task_id`` is empty or contains whitespace.
    """
    return f"cancelrequest:{_part(task_id, 'task id')}"


def cancel_msg_id(task_id: str) -> str:
    """Msg id of a cancel request: one per task (asking twice is the same fact).

    Args:
        task_id: The task.

    Returns:
        ``cancel:<task_id>``.

    Raises:
        ValueError: If ``task_id`` is empty or contains whitespace.
    """
    return f"cancel:{_part(task_id, 'task id')}"


def dead_msg_id(task_id: str) -> str:
    """Msg id of a task's dead-lettering: one per task (it happens at most once).

    Args:
        task_id: The task.

    Returns:
        ``dead:<task_id>``.

    Raises:
        ValueError: If ``task_id`` is empty or contains whitespace.
    """
    return f"dead:{_part(task_id, 'task id')}"


def event_msg_id(event_id: str) -> str:
    """Msg id of an event: the CloudEvent id itself.

    Args:
        event_id: The event's ``id``.

    Returns:
        ``event_id`` unchanged.

    Raises:
        ValueError: If ``event_id`` is empty.
    """
    if not event_id:
        raise ValueError("event id must be non-empty")
    return event_id


def member_msg_id(instance_id: str, change: MembershipChange | str, at: datetime) -> str:
    """Msg id of a membership change: one per instance, kind of change and moment.

    Args:
        instance_id: The instance.
        change: Up or down.
        at: When the change was noticed (tz-aware; normalised to UTC).

    Returns:
        ``member:<instance_id>:<change>:<at as UTC ISO 8601 with microseconds>``.

    Raises:
        ValueError: If ``at`` is naive or ``change`` is not a membership change.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be timezone-aware")
    stamp = at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"member:{_part(instance_id, 'instance id')}:{MembershipChange(change).value}:{stamp}"
