"""Names of the rows ingest stores besides the CloudEvents themselves, and the terminal types.

Ingest turns every bus message it stores into a CloudEvent-shaped row of the ``events``
table. Agent events keep their own ``type`` (kind :data:`KIND_EVENT`); task messages become
rows of kind :data:`KIND_TASK` typed ``loom.task.submitted``, ``loom.task.assigned``,
``loom.task.cancel``, ``loom.task.cancelrequest``, ``loom.task.dead``,
``loom.task.status.<status>`` (the dispatcher's) or ``loom.task.report.<status>`` (a worker's
report, which changes no task row) (their ``data`` is the message as published); membership changes
rows of kind :data:`KIND_MEMBER` typed ``loom.registry.member.<up|down>``. Readers (query,
replay) match on these names.
"""

from __future__ import annotations

from loom_protocol.agents import MembershipChange
from loom_protocol.events import EventType
from loom_protocol.tasks import TaskStatus

__all__ = [
    "BUS_MEMBER_DOWN",
    "BUS_MEMBER_UP",
    "BUS_TASK_ASSIGNED",
    "BUS_TASK_CANCEL",
    "BUS_TASK_CANCEL_REQUEST",
    "BUS_TASK_DEAD",
    "BUS_TASK_PREFIX",
    "BUS_TASK_REPORT_PREFIX",
    "BUS_TASK_STATUS_PREFIX",
    "BUS_TASK_SUBMITTED",
    "KIND_EVENT",
    "KIND_MEMBER",
    "KIND_TASK",
    "TERMINAL_TASK_EVENT_TYPES",
    "bus_member_type",
    "bus_task_report_type",
    "bus_task_status_type",
    "status_of_bus_type",
]

KIND_EVENT = "event"
"""Row kind of a CloudEvent published on ``loom.event.>``."""
KIND_TASK = "task"
"""Row kind of a task message from ``loom.task.>``."""
KIND_MEMBER = "member"
"""Row kind of a membership change from ``loom.registry.member.>``."""

BUS_TASK_PREFIX = "loom.task."
"""Prefix of every task row type."""
BUS_TASK_SUBMITTED = "loom.task.submitted"
"""Row type of a submitted :class:`~loom_protocol.tasks.Task`."""
BUS_TASK_ASSIGNED = "loom.task.assigned"
"""Row type of an assigned :class:`~loom_protocol.tasks.Task`."""
BUS_TASK_CANCEL = "loom.task.cancel"
"""Row type of a :class:`~loom_protocol.tasks.TaskCancelRequested`."""
BUS_TASK_CANCEL_REQUEST = "loom.task.cancelrequest"
"""Row type of a :class:`~loom_protocol.tasks.TaskCancelRequested` asking the dispatcher to cancel
(a parent giving up on a child); it changes no task row (the dispatcher's decision does)."""

BUS_TASK_DEAD = "loom.task.dead"
"""Row type of a :class:`~loom_protocol.tasks.TaskDeadLettered`."""
BUS_TASK_STATUS_PREFIX = "loom.task.status."
"""Prefix of the row types of :class:`~loom_protocol.tasks.TaskStatusChanged` (one per status)."""
BUS_TASK_REPORT_PREFIX = "loom.task.report."
"""Prefix of the row types of a worker's reports (one per status): what the worker said about its
attempt, accepted by the dispatcher or not (its ``loom.task.status.<status>`` row says which)."""
BUS_MEMBER_UP = "loom.registry.member.up"
"""Row type of an instance joining (:class:`~loom_protocol.agents.MemberChanged`)."""
BUS_MEMBER_DOWN = "loom.registry.member.down"
"""Row type of an instance leaving (:class:`~loom_protocol.agents.MemberChanged`)."""

TERMINAL_TASK_EVENT_TYPES: frozenset[str] = frozenset(
    {
        EventType.TASK_COMPLETED.value,
        EventType.TASK_FAILED.value,
        EventType.TASK_CANCELLED.value,
        EventType.TASK_DEAD.value,
    }
)
"""The ``task.*`` event types that report a terminal status (one per :data:`TERMINAL_STATUSES`)."""


def bus_task_status_type(status: TaskStatus | str) -> str:
    """Row type of a status change to ``status``.

    Args:
        status: A task status.

    Returns:
        ``loom.task.status.<status>``.

    Raises:
        ValueError: If ``status`` is not a :class:`~loom_protocol.tasks.TaskStatus`.
    """
    return BUS_TASK_STATUS_PREFIX + TaskStatus(status).value


def bus_task_report_type(status: TaskStatus | str) -> str:
    """Row type of a worker's report of ``status``.

    Args:
        status: A task status.

    Returns:
        ``loom.task.report.<status>``.

    Raises:
        ValueError: If ``status`` is not a :class:`~loom_protocol.tasks.TaskStatus`.
    """
    return BUS_TASK_REPORT_PREFIX + TaskStatus(status).value


def status_of_bus_type(row_type: str) -> str | None:
    """The status a ``loom.task.status.<status>`` row type names, or None for other types.

    Args:
        row_type: A stored row's ``type``.

    Returns:
        The status token, e.g. ``"completed"``.
    """
    if row_type.startswith(BUS_TASK_STATUS_PREFIX):
        return row_type[len(BUS_TASK_STATUS_PREFIX) :] or None
    return None


def bus_member_type(change: MembershipChange | str) -> str:
    """Row type of a membership change.

    Args:
        change: ``"up"`` or ``"down"``.

    Returns:
        ``loom.registry.member.up`` or ``loom.registry.member.down``.

    Raises:
        ValueError: If ``change`` is not a :class:`~loom_protocol.agents.MembershipChange`.
    """
    return BUS_MEMBER_UP if MembershipChange(change) is MembershipChange.UP else BUS_MEMBER_DOWN
