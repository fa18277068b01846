"""Human approval of tool calls (human in the loop), as the task and its messages carry it.

A tool call that needs approval stops its task in status ``input_required`` (the A2A state
name) with an :class:`ApprovalRequest` in ``Task.pending_approval``. A person answers with
``POST /api/tasks/{taskId}/approve`` or ``/reject`` (body :class:`ApprovalInput`); the
dispatcher appends an :class:`ApprovalDecision` to ``Task.approvals`` and the task resumes on any
instance, where the call is run (approved, with the edited arguments when given) or answered
with the rejection (never run).

A call is named by its ``key``, ``"<step>.<index>"``: the LLM step that asked for it and its
position among that step's tool calls. A resumed run reaches the same call under the same key,
because its earlier steps are restored from the task's journal (:mod:`loom_protocol.journal`).

Task metadata that steers approvals (all optional):

* ``approvalTools``: tool names that need approval in this task, besides the tools marked
  ``requires_approval`` and the worker's ``LOOM_APPROVAL_TOOLS``;
* ``approvalTimeoutS``: how long an approval may wait (else the dispatcher's setting);
* ``approvalTimeoutAction``: ``"reject"`` (the agent is told the call was rejected) or
  ``"dead"`` (the task ends dead), when the wait runs out.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, ConfigDict, Field

from loom_protocol.base import LoomModel, utc_now

__all__ = [
    "APPROVAL_TIMEOUT_ACTION_KEY",
    "APPROVAL_TIMEOUT_KEY",
    "APPROVAL_TOOLS_KEY",
    "RESUME_KEY",
    "ApprovalDecision",
    "ApprovalInput",
    "ApprovalRequest",
    "ApprovalTimeoutAction",
    "approval_key",
]

APPROVAL_TOOLS_KEY = "approvalTools"
"""Task metadata: tool names that need approval in this task."""

APPROVAL_TIMEOUT_KEY = "approvalTimeoutS"
"""Task metadata: seconds an approval may wait."""

APPROVAL_TIMEOUT_ACTION_KEY = "approvalTimeoutAction"
"""Task metadata: what a timed-out approval does (:class:`ApprovalTimeoutAction`)."""

RESUME_KEY = "resume"
"""Task metadata: ``false`` makes every attempt start from scratch (no restored steps)."""


class ApprovalTimeoutAction(StrEnum):
    """What happens to a task whose approval waited too long.

    Attributes:
        REJECT: The call counts as rejected (reason: the timeout); the agent goes on.
        DEAD: The task ends dead with the reason.
    """

    REJECT = "reject"
    DEAD = "dead"


def approval_key(step: int, index: int) -> str:
    """The key of the ``index``-th tool call (from 0) of LLM step ``step`` (from 1).

    Args:
        step: The LLM step that asked for the call, from 1.
        index: The call's position among that step's tool calls, from 0.

    Returns:
        ``"<step>.<index>"``.
    """
    return f"{step}.{index}"


class ApprovalRequest(LoomModel):
    """A tool call waiting for a person's decision.

    Attributes:
        key: The call within its task (:func:`approval_key`).
        tool: The tool's name.
        arguments: The arguments the agent gave.
        reasoning: What the agent said before asking for the call (None without content capture).
        call_id: The LLM's id of the call.
        step: The LLM step that asked for it.
        attempt: The attempt that stopped on it.
        requested_at: When it was requested.
    """

    key: str = Field(min_length=1, max_length=64)
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    reasoning: str | None = None
    call_id: str | None = None
    step: int = Field(default=1, ge=1)
    attempt: int = Field(default=1, ge=0)
    requested_at: AwareDatetime = Field(default_factory=utc_now)


class ApprovalDecision(LoomModel):
    """A person's (or the timeout's) decision about one call.

    Attributes:
        key: The call decided on (:attr:`ApprovalRequest.key`).
        tool: The tool's name.
        approved: True: run it; False: never run it, tell the agent.
        arguments: Edited arguments to run it with (approved only; None: as requested).
        by: Who decided (free text: a user name, ``"timeout"``).
        reason: Why (a rejection's reason is what the agent is told).
        decided_at: When.
    """

    key: str = Field(min_length=1, max_length=64)
    tool: str
    approved: bool
    arguments: dict[str, Any] | None = None
    by: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None, max_length=4096)
    decided_at: AwareDatetime = Field(default_factory=utc_now)


class ApprovalInput(LoomModel):
    """The body of ``POST /api/tasks/{taskId}/approve`` and ``/reject`` (every field optional).

    Attributes:
        arguments: Approve only: the arguments to run the call with instead of the agent's.
        by: Who decides.
        reason: Why (for a rejection, what the agent is told).
    """

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] | None = None
    by: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None, max_length=4096)
