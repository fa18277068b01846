"""Human approval of tool calls, as the dispatcher decides it: how long a task may wait in
``input_required``, what a timed-out wait does, and the task a decision resumes.

Pure functions on :class:`~loom_protocol.Task`; the transitions that use them are in
dispatching.py. A decision travels inside the task (``Task.approvals``): the attempt that
resumes it, on any instance, reads it there with ``task.decision_for(key)``.
"""

from __future__ import annotations

from typing import Any

from loom_protocol import (
    APPROVAL_TIMEOUT_ACTION_KEY,
    APPROVAL_TIMEOUT_KEY,
    ApprovalDecided,
    ApprovalDecision,
    ApprovalInput,
    ApprovalRequest,
    ApprovalTimeoutAction,
    EventType,
    Task,
    TaskStatus,
)

MAX_APPROVAL_TIMEOUT_S = 7 * 86_400.0
"""The longest wait ``metadata.approvalTimeoutS`` may ask for; a larger value is ignored."""

TIMEOUT_BY = "timeout"
"""``ApprovalDecision.by`` of a rejection the timeout made."""


def approval_timeout_of(task: Task, default_s: float) -> float:
    """Seconds ``task`` may wait for a decision: ``metadata.approvalTimeoutS`` when it is a
    number in (0, 7 days], else ``default_s``."""
    value = task.metadata.get(APPROVAL_TIMEOUT_KEY)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_APPROVAL_TIMEOUT_S:
        return float(value)
    return default_s


def timeout_action_of(task: Task, default: ApprovalTimeoutAction) -> ApprovalTimeoutAction:
    """What a timed-out wait does to ``task``: ``metadata.approvalTimeoutAction`` when it is
    ``"reject"`` or ``"dead"``, else ``default``."""
    value = task.metadata.get(APPROVAL_TIMEOUT_ACTION_KEY)
    try:
        return ApprovalTimeoutAction(value) if isinstance(value, str) else default
    except ValueError:
        return default


def timed_out_reason(task: Task, default_s: float) -> str:
    """Why a wait ran out: ``approval timed out after N s`` (what the agent is told on a reject)."""
    return f"approval timed out after {approval_timeout_of(task, default_s):g} s"


def decision_on(request: ApprovalRequest, approved: bool, given: ApprovalInput) -> ApprovalDecision:
    """The decision ``given`` makes on ``request`` (edited arguments count only when approved)."""
    return ApprovalDecision(
        key=request.key,
        tool=request.tool,
        approved=approved,
        arguments=given.arguments if approved else None,
        by=given.by,
        reason=given.reason,
    )


def resumed(task: Task, decision: ApprovalDecision) -> Task:
    """``task`` (input_required) back in the queue with ``decision`` recorded: pending, no
    pending approval, no instance."""
    return task.with_status(
        TaskStatus.PENDING,
        pending_approval=None,
        approvals=[*task.approvals, decision],
        instance_id=None,
        error=None,
    )


def decided_event(request: ApprovalRequest, decision: ApprovalDecision) -> tuple[str, dict[str, Any]]:
    """The event type (``approval.granted`` / ``approval.denied``) and data of a decision."""
    edited = decision.approved and decision.arguments is not None and decision.arguments != request.arguments
    data = ApprovalDecided(
        key=decision.key,
        tool=decision.tool,
        approved=decision.approved,
        by=decision.by,
        reason=decision.reason,
        edited=edited,
    ).to_data()
    kind = EventType.APPROVAL_GRANTED if decision.approved else EventType.APPROVAL_DENIED
    return kind.value, data


def failed_attempts(task: Task) -> int:
    """The attempts of ``task`` that count towards dead-lettering: every attempt but those that
    resumed it after a decision (stopping for approval is not a failure)."""
    return max(0, task.attempt - len(task.approvals))
