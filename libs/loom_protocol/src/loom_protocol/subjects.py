"""Every NATS subject Loom uses, spelled once.

Constants ending in ``_ALL`` are wildcard subscriptions; the builders produce the concrete
subject for one agent, instance, task or event type and refuse tokens that would change the
subject's shape (``.``, ``*``, ``>``, whitespace, empty).

=====================================  =============================================
subject                                carries
=====================================  =============================================
``loom.task.submitted.<agent>``        a new :class:`~loom_protocol.tasks.Task`
``loom.task.assigned.<instance>``      a Task with its attempt number
``loom.task.report.<instance>.<task>`` :class:`~loom_protocol.tasks.TaskStatusChanged`, a worker's report
``loom.task.status.<task_id>``         :class:`~loom_protocol.tasks.TaskStatusChanged`, the dispatcher's
``loom.task.cancel.<task_id>``         :class:`~loom_protocol.tasks.TaskCancelRequested`
``loom.task.dead.<agent>``             :class:`~loom_protocol.tasks.TaskDeadLettered`
``loom.event.worker.<instance>.<type>`` :class:`~loom_protocol.events.CloudEvent` of one worker instance
``loom.event.<service>.<type>``        a CloudEvent of ``dispatcher`` or ``ingest`` (:data:`EVENT_SERVICES`)
``loom.registry.heartbeat.<instance>`` :class:`~loom_protocol.agents.Heartbeat` (core NATS)
``loom.registry.pick``                 :class:`~loom_protocol.agents.PickRequest` (request/reply)
``loom.registry.agents``               empty request, :class:`~loom_protocol.agents.KnownAgents` reply
``loom.registry.member.<up|down>``     :class:`~loom_protocol.agents.MemberChanged`
``loom.rejected.<service>``            :class:`~loom_protocol.tasks.RejectedMessage`
``loom.stream.<task_id>``              :class:`~loom_protocol.tasks.TaskStreamChunk` (core NATS)
=====================================  =============================================
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from loom_protocol.agents import MembershipChange

__all__ = [
    "EVENT_ALL",
    "EVENT_SERVICES",
    "EVENT_WORKER_ALL",
    "EventSender",
    "PREFIX",
    "REGISTRY_AGENTS",
    "REGISTRY_HEARTBEAT_ALL",
    "REGISTRY_MEMBER_ALL",
    "REGISTRY_MEMBER_DOWN",
    "REGISTRY_MEMBER_UP",
    "REGISTRY_PICK",
    "REJECTED_ALL",
    "TASK_ALL",
    "TASK_ASSIGNED_ALL",
    "TASK_CANCEL_ALL",
    "TASK_CANCEL_REQUEST_ALL",
    "TASK_DEAD_ALL",
    "TASK_REPORT_ALL",
    "TASK_STATUS_ALL",
    "TASK_STREAM_ALL",
    "TASK_SUBMITTED_ALL",
    "event_sender",
    "event_sender_problem",
    "instance_event",
    "instance_events_of",
    "registry_heartbeat",
    "registry_member",
    "rejected",
    "service_event",
    "service_events_of",
    "task_assigned",
    "task_cancel",
    "task_cancel_request",
    "task_dead",
    "task_report",
    "task_reports_of",
    "task_status",
    "task_stream",
    "task_submitted",
    "token_of",
]

PREFIX = "loom"
"""First token of every Loom subject."""

TASK_SUBMITTED_ALL = "loom.task.submitted.*"
"""New tasks, one subject per target agent."""
TASK_ASSIGNED_ALL = "loom.task.assigned.*"
"""Assigned tasks, one subject per worker instance."""
TASK_REPORT_ALL = "loom.task.report.*.*"
"""Workers' reports on their attempts, one subject per instance and task; only the dispatcher
reads them. A worker user bound to an instance may publish only under its own instance token, so
the instance a report names is the connection's identity."""
TASK_STATUS_ALL = "loom.task.status.*"
"""Task status changes as the dispatcher accepted them, one subject per task; only the dispatcher
publishes them."""
TASK_CANCEL_ALL = "loom.task.cancel.*"
"""The dispatcher telling the instance that runs a task to stop it, one subject per task."""
TASK_CANCEL_REQUEST_ALL = "loom.task.cancelrequest.*"
"""Requests to the dispatcher to cancel a task (a parent giving up on a child), one per task."""
TASK_DEAD_ALL = "loom.task.dead.*"
"""Dead-lettered tasks, one subject per target agent."""
TASK_STREAM_ALL = "loom.stream.*"
"""Answer chunks of streaming tasks, one subject per task (core NATS, not persisted: outside
``loom.task.>`` so that no stream stores them)."""
TASK_ALL = "loom.task.>"
"""Everything about tasks (the LOOM_TASKS stream)."""
EVENT_ALL = "loom.event.>"
"""All observation events (the LOOM_EVENTS stream)."""
EVENT_WORKER_ALL = "loom.event.worker.*.>"
"""The events of every worker instance: ``loom.event.worker.<instance>.<type>``. A worker user bound
to an instance may publish only under its own instance token, so the instance an event's subject
names is the connection's identity (ingest refuses an event whose ``instanceid`` says otherwise)."""
EVENT_SERVICES = ("dispatcher", "ingest")
"""The services that publish events under their own name, ``loom.event.<service>.<type>``: the
dispatcher's task lifecycle events, and ingest's events from outside NATS (WebSocket, CloudEvents
HTTP, OTLP)."""
REGISTRY_HEARTBEAT_ALL = "loom.registry.heartbeat.*"
"""Heartbeats, one subject per instance (core NATS, not persisted)."""
REGISTRY_PICK = "loom.registry.pick"
"""Request/reply: pick an instance of an agent (core NATS, not persisted)."""
REGISTRY_AGENTS = "loom.registry.agents"
"""Request/reply: every agent id the registry has ever seen (core NATS, not persisted)."""
REGISTRY_MEMBER_ALL = "loom.registry.member.*"
"""Membership changes (up and down)."""
REGISTRY_MEMBER_UP = "loom.registry.member.up"
"""An instance joined."""
REGISTRY_MEMBER_DOWN = "loom.registry.member.down"
"""An instance left."""
REJECTED_ALL = "loom.rejected.>"
"""Dead-letter records of malformed messages, ``loom.rejected.<service>``."""

_BAD_TOKEN_CHARS = re.compile(r"[.*>\s]")


def _token(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if _BAD_TOKEN_CHARS.search(value):
        raise ValueError(
            f"{what} {value!r} is not a valid subject token: it may not contain '.', '*', '>' or whitespace"
        )
    return value


def task_submitted(agent_id: str) -> str:
    """Subject a new task for ``agent_id`` is submitted on.

    Args:
        agent_id: The target agent.

    Returns:
        ``loom.task.submitted.<agent_id>``.

    Raises:
        ValueError: If ``agent_id`` is not a valid subject token.
    """
    return f"loom.task.submitted.{_token(agent_id, 'agent id')}"


def task_assigned(instance_id: str) -> str:
    """Subject tasks assigned to ``instance_id`` are sent on.

    Args:
        instance_id: The worker instance.

    Returns:
        ``loom.task.assigned.<instance_id>``.

    Raises:
        ValueError: If ``instance_id`` is not a valid subject token.
    """
    return f"loom.task.assigned.{_token(instance_id, 'instance id')}"


def task_status(task_id: str) -> str:
    """Subject the status changes of ``task_id`` are published on.

    Args:
        task_id: The task.

    Returns:
        ``loom.task.status.<task_id>``.

    Raises:
        ValueError: If ``task_id`` is not a valid subject token.
    """
    return f"loom.task.status.{_token(task_id, 'task id')}"


def task_report(instance_id: str, task_id: str) -> str:
    """Subject ``instance_id`` reports on its attempt of ``task_id`` on.

    Args:
        instance_id: The worker instance that runs the attempt.
        task_id: The task.

    Returns:
        ``loom.task.report.<instance_id>.<task_id>``.

    Raises:
        ValueError: If either is not a valid subject token.
    """
    return f"loom.task.report.{_token(instance_id, 'instance id')}.{_token(task_id, 'task id')}"


def task_reports_of(instance_id: str) -> str:
    """Every report subject of ``instance_id`` (what a worker user bound to it may publish).

    Args:
        instance_id: The worker instance.

    Returns:
        ``loom.task.report.<instance_id>.*``.

    Raises:
        ValueError: If ``instance_id`` is not a valid subject token.
    """
    return f"loom.task.report.{_token(instance_id, 'instance id')}.*"


def task_cancel(task_id: str) -> str:
    """Subject a cancel request for ``task_id`` is published on.

    Args:
        task_id: The task.

    Returns:
        ``loom.task.cancel.<task_id>``.

    Raises:
        ValueError: If ``task_id`` is not a valid subject token.
    """
    return f"loom.task.cancel.{_token(task_id, 'task id')}"


def task_cancel_request(task_id: str) -> str:
    """Subject on which anyone asks the dispatcher to cancel ``task_id`` (a
    :class:`~loom_protocol.tasks.TaskCancelRequested`; the dispatcher cancels it and its children).

    Args:
        task_id: The task.

    Returns:
        ``loom.task.cancelrequest.<task_id>``.

    Raises:
        ValueError: If ``task_id`` is not a valid subject token.
    """
    return f"loom.task.cancelrequest.{_token(task_id, 'task id')}"


def task_stream(task_id: str) -> str:
    """Subject the answer chunks of ``task_id`` are published on (core NATS, not stored).

    Args:
        task_id: The task.

    Returns:
        ``loom.stream.<task_id>``.

    Raises:
        ValueError: If ``task_id`` is not a valid subject token.
    """
    return f"loom.stream.{_token(task_id, 'task id')}"


def task_dead(agent_id: str) -> str:
    """Subject dead-lettered tasks of ``agent_id`` are published on.

    Args:
        agent_id: The task's target agent.

    Returns:
        ``loom.task.dead.<agent_id>``.

    Raises:
        ValueError: If ``agent_id`` is not a valid subject token.
    """
    return f"loom.task.dead.{_token(agent_id, 'agent id')}"


def _event_type(event_type: str) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event type must be a non-empty string, got {event_type!r}")
    for part in event_type.split("."):
        _token(part, f"event type {event_type!r}: part")
    return event_type


def _event_service(service: str) -> str:
    if service not in EVENT_SERVICES:
        raise ValueError(f"{service!r} does not publish events: the services that do are {EVENT_SERVICES}")
    return service


@functools.lru_cache(maxsize=1024)  # called per event; its checks, once per pair
def instance_event(instance_id: str, event_type: str) -> str:
    """Subject worker instance ``instance_id`` publishes an event of ``event_type`` on.

    Event types contain dots (``agent.thought``); each dot-separated part must be a valid
    token, so ``("w-1", "agent.thought")`` gives ``loom.event.worker.w-1.agent.thought``.

    Args:
        instance_id: The worker instance that emits the event.
        event_type: The CloudEvent ``type``.

    Returns:
        ``loom.event.worker.<instance_id>.<event_type>``.

    Raises:
        ValueError: If ``instance_id`` is not a valid subject token, or a part of ``event_type``
            is empty or contains ``*``, ``>`` or whitespace.
    """
    return f"loom.event.worker.{_token(instance_id, 'instance id')}.{_event_type(event_type)}"


def instance_events_of(instance_id: str) -> str:
    """Every event subject of ``instance_id`` (what a worker user bound to it may publish).

    Args:
        instance_id: The worker instance.

    Returns:
        ``loom.event.worker.<instance_id>.>``.

    Raises:
        ValueError: If ``instance_id`` is not a valid subject token.
    """
    return f"loom.event.worker.{_token(instance_id, 'instance id')}.>"


@functools.lru_cache(maxsize=1024)  # called per event; its checks, once per pair
def service_event(service: str, event_type: str) -> str:
    """Subject ``service`` publishes an event of ``event_type`` on.

    Args:
        service: One of :data:`EVENT_SERVICES`.
        event_type: The CloudEvent ``type``.

    Returns:
        ``loom.event.<service>.<event_type>``.

    Raises:
        ValueError: If ``service`` is not one of :data:`EVENT_SERVICES`, or a part of
            ``event_type`` is empty or contains ``*``, ``>`` or whitespace.
    """
    return f"loom.event.{_event_service(service)}.{_event_type(event_type)}"


def service_events_of(service: str) -> str:
    """Every event subject of ``service`` (what its user may publish).

    Args:
        service: One of :data:`EVENT_SERVICES`.

    Returns:
        ``loom.event.<service>.>``.

    Raises:
        ValueError: If ``service`` is not one of :data:`EVENT_SERVICES`.
    """
    return f"loom.event.{_event_service(service)}.>"


class EventSender(NamedTuple):
    """Who published an event, and its type, as its subject says."""

    origin: str
    """``"worker"`` or one of :data:`EVENT_SERVICES`."""
    instance_id: str | None
    """The worker instance, for ``origin == "worker"``."""
    event_type: str


@functools.lru_cache(maxsize=4096)  # a few subjects carry nearly every event: parse each once
def event_sender(subject: str) -> EventSender:
    """Read the sender and the event type out of an event subject.

    Args:
        subject: ``loom.event.worker.<instance>.<type>`` or ``loom.event.<service>.<type>``.

    Returns:
        The sender and the type.

    Raises:
        ValueError: If ``subject`` is neither.
    """
    parts = subject.split(".", 4) if isinstance(subject, str) else []
    if len(parts) >= 4 and parts[:2] == ["loom", "event"]:
        try:
            if parts[2] == "worker" and len(parts) == 5:
                return EventSender("worker", _token(parts[3], "instance id"), _event_type(parts[4]))
            if parts[2] in EVENT_SERVICES:
                return EventSender(parts[2], None, _event_type(subject.split(".", 3)[3]))
        except ValueError as exc:
            raise ValueError(f"{subject!r} is not an event subject: {exc}") from None
    raise ValueError(
        f"{subject!r} is not an event subject: events go on loom.event.worker.<instance>.<type> "
        f"or loom.event.<service>.<type> for a service in {EVENT_SERVICES}"
    )


def event_sender_problem(subject: str, event_type: object, instance_id: object) -> str | None:
    """Why an event of ``event_type`` naming ``instance_id`` may not come from ``subject``, or None.

    An event's subject names its sender and ends in its type; a worker's event names no other
    instance than the one its subject does (that token is the publishing connection's identity,
    see :data:`EVENT_WORKER_ALL`). Ingest dead-letters such an event with this reason; the live
    feeds drop it.

    Args:
        subject: The subject the event arrived on.
        event_type: Its ``type`` attribute.
        instance_id: Its ``instanceid`` attribute (``None`` when absent).

    Returns:
        The reason, or ``None`` when the event may come from ``subject``.
    """
    try:
        sender = event_sender(subject)
    except ValueError as exc:
        return str(exc)
    if sender.event_type != event_type:
        return f"an event on {subject} must be of type {sender.event_type!r}, not {str(event_type)[:80]!r}"
    if sender.instance_id is not None and instance_id is not None and instance_id != sender.instance_id:
        return (
            f"an event on {subject} must name instance {sender.instance_id!r}, its sender, "
            f"not {str(instance_id)[:80]!r}"
        )
    return None


def registry_heartbeat(instance_id: str) -> str:
    """Subject ``instance_id`` sends its heartbeats on.

    Args:
        instance_id: The worker instance.

    Returns:
        ``loom.registry.heartbeat.<instance_id>``.

    Raises:
        ValueError: If ``instance_id`` is not a valid subject token.
    """
    return f"loom.registry.heartbeat.{_token(instance_id, 'instance id')}"


def registry_member(change: MembershipChange | str) -> str:
    """Subject membership changes of one kind are published on.

    Args:
        change: ``"up"`` or ``"down"``.

    Returns:
        ``loom.registry.member.up`` or ``loom.registry.member.down``.

    Raises:
        ValueError: If ``change`` is not a :class:`~loom_protocol.agents.MembershipChange`.
    """
    return f"loom.registry.member.{MembershipChange(change).value}"


def rejected(service: str) -> str:
    """Subject ``service`` publishes dead-letter records of malformed messages on.

    Args:
        service: The rejecting service, e.g. ``"dispatcher"``.

    Returns:
        ``loom.rejected.<service>``.

    Raises:
        ValueError: If ``service`` is not a valid subject token.
    """
    return f"loom.rejected.{_token(service, 'service')}"


def token_of(subject: str, prefix_constant: str) -> str:
    """Return what a wildcard matched in a concrete subject.

    For a ``*`` wildcard this is the one last token (the agent id of a
    ``loom.task.submitted.<agent>`` subject); for ``>`` it is the whole remaining tail (the
    event type of a ``loom.event.dispatcher.<type>`` subject for ``loom.event.dispatcher.>``).

    Args:
        subject: A concrete subject, e.g. ``"loom.task.submitted.calculator"``.
        prefix_constant: The wildcard subject it matched, e.g. :data:`TASK_SUBMITTED_ALL`.

    Returns:
        The matched token (or tail), e.g. ``"calculator"``.

    Raises:
        ValueError: If ``prefix_constant`` does not end in a wildcard token, or ``subject``
            does not match it.
    """
    if prefix_constant.endswith(".*"):
        base, single = prefix_constant[:-1], True
    elif prefix_constant.endswith(".>"):
        base, single = prefix_constant[:-1], False
    else:
        raise ValueError(f"{prefix_constant!r} does not end with a '.*' or '.>' wildcard")
    if "*" in base or ">" in base:
        raise ValueError(f"{prefix_constant!r} has a wildcard before its last token")
    if not subject.startswith(base):
        raise ValueError(f"subject {subject!r} does not match {prefix_constant!r}")
    tail = subject[len(base) :]
    if single:
        return _token(tail, f"last token of subject {subject!r}")
    if not tail:
        raise ValueError(f"subject {subject!r} does not match {prefix_constant!r}")
    for part in tail.split("."):
        _token(part, f"token of subject {subject!r}")
    return tail
